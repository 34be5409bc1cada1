//! The run loop: starts the client tasks, the killer and the progress bar, samples CPU and terms
//! at the window's edges, and collects what the tasks measured.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use raftpay_client::Client;
use tokio::time::Instant;

use super::args::BenchArgs;
use super::cpu::CpuSample;
use super::failover::{killer_run, term_highest, KillEvent, KillSetup};
use super::report::{CpuReport, Elections};
use super::tasks::{client_run, micros, Clock, Progress, TaskOutcome};
use super::workload::{Plan, Source};

/// Refresh period of the progress bar.
pub(super) const PROGRESS_TICK: Duration = Duration::from_millis(250);

// ---------------------------------------------------------------------------------------------
// The progress bar.

/// Draws elapsed time, phase, transfers/s and errors on stderr until the window ends or `stop`.
pub(super) async fn progress_run(progress: Arc<Progress>, clock: Clock, stop: Arc<AtomicBool>) {
    let total_ms = micros(clock.window_end - clock.start) / 1000;
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(total_ms),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("[{elapsed_precise}] {bar:30.cyan/blue} {msg}")
    {
        bar.set_style(style);
    }
    let mut acked_before = 0_u64;
    let mut ticker = tokio::time::interval(PROGRESS_TICK);
    loop {
        ticker.tick().await;
        let now = Instant::now();
        if now >= clock.window_end || stop.load(Ordering::Relaxed) {
            break;
        }
        let acked = progress.acked.load(Ordering::Relaxed);
        let errors = progress.errors.load(Ordering::Relaxed);
        let rate = (acked - acked_before) as f64 / PROGRESS_TICK.as_secs_f64();
        acked_before = acked;
        let phase = if now < clock.window_start {
            "warm-up"
        } else {
            "measuring"
        };
        bar.set_position(micros(now - clock.start) / 1000);
        bar.set_message(format!(
            "{phase} | {acked} transfers | {rate:.0}/s | errors {errors}"
        ));
    }
    bar.finish_and_clear();
}

// ---------------------------------------------------------------------------------------------
// The run.

/// Runs the client tasks (and the killer and the progress bar) through warm-up and window.
pub(super) async fn load_run(
    client: &Client,
    nodes: &[String],
    plan: &Arc<Plan>,
    args: &BenchArgs,
) -> anyhow::Result<LoadOutcome> {
    let start = Instant::now();
    let clock = Clock {
        start,
        window_start: start + args.warmup,
        window_end: start + args.warmup + args.duration,
    };
    let progress = Arc::new(Progress::default());
    let stop = Arc::new(AtomicBool::new(false));
    eprintln!(
        "bench: {} clients, {:.0} s warm-up, {:.0} s measured",
        args.clients,
        args.warmup.as_secs_f64(),
        args.duration.as_secs_f64()
    );
    // The client tasks: each ends at the window's end (or on `stop`) after its request in
    // flight is answered; all are awaited below.
    let tasks: Vec<_> = (0..plan.clients)
        .map(|index| {
            let source = Source::new(Arc::clone(plan), index);
            let task_client = client.with_node_first(usize::try_from(index).unwrap_or(0));
            tokio::spawn(client_run(
                task_client,
                source,
                clock,
                Arc::clone(&progress),
                Arc::clone(&stop),
            ))
        })
        .collect();
    // The killer: ends by itself at the window's end; awaited below.
    let killer = args.kill_leader_every.map(|every| {
        let setup = KillSetup {
            every,
            restart_after: args.restart_after,
            kill_command: args.kill_command.clone(),
            restart_command: args.restart_command.clone(),
        };
        tokio::spawn(killer_run(
            client.with_node_first(0),
            setup,
            clock,
            Arc::clone(&stop),
        ))
    });
    // The progress bar, on a terminal only: ends at the window's end; awaited below.
    let bar = std::io::stderr().is_terminal().then(|| {
        tokio::spawn(progress_run(
            Arc::clone(&progress),
            clock,
            Arc::clone(&stop),
        ))
    });
    // Ctrl-C stops the load early; the run still settles and verifies. Aborted at the end.
    let interrupt = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.store(true, Ordering::Relaxed);
            }
        })
    };
    tokio::time::sleep_until(clock.window_start).await;
    let cpu_start = CpuSample::take(args.pid_dir.as_deref());
    let term_start = term_highest(client, nodes).await;
    tokio::time::sleep_until(clock.window_end).await;
    let cpu = CpuSample::take(args.pid_dir.as_deref()).report_since(&cpu_start);
    let term_end = term_highest(client, nodes).await;
    let elections = Elections {
        term_start,
        term_end,
        new_terms: term_end
            .zip(term_start)
            .map(|(end, start)| end.saturating_sub(start)),
    };

    let mut outcomes = Vec::with_capacity(tasks.len());
    let mut failure = None;
    for task in tasks {
        match task.await.context("a bench client task panicked")? {
            Ok(outcome) => outcomes.push(outcome),
            Err(error) => {
                stop.store(true, Ordering::Relaxed);
                failure = Some(error);
            }
        }
    }
    let kills = match killer {
        Some(killer) => killer.await.context("the killer task panicked")?,
        None => Vec::new(),
    };
    if let Some(bar) = bar {
        let _ = bar.await;
    }
    interrupt.abort();
    if let Some(error) = failure {
        return Err(error).context("a bench client cannot send requests");
    }
    Ok(LoadOutcome {
        outcomes,
        kills,
        clock,
        cpu,
        elections,
    })
}

/// What `load_run` collected.
pub(super) struct LoadOutcome {
    pub(super) outcomes: Vec<TaskOutcome>,
    pub(super) kills: Vec<KillEvent>,
    pub(super) clock: Clock,
    pub(super) cpu: CpuReport,
    pub(super) elections: Elections,
}
