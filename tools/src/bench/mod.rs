//! `raftpay bench`: the load generator and failover meter of issue 4.
//!
//! A run creates a treasury (overdraft allowed) and `--accounts` accounts under a random
//! per-run id prefix, then `--clients` concurrent client tasks send transfers — one per request,
//! or `--batch K` per `POST /v1/transfers/batch` — for a warm-up and a measured window, spread
//! over every `--node` and sharing one keep-alive connection pool. Optionally a killer task
//! SIGKILLs the leader every `--kill-leader-every` seconds through a shell command and restarts
//! it a little later. At the end the bench re-sends every request that got no definite answer
//! (same ids, so each takes effect once), reads every account back and checks that money was
//! conserved and every acknowledged transfer posted exactly once.
//!
//! Owns: the workload (ids, amounts, which accounts may pay), the measurements (HDR histograms,
//! the request log, kill windows — the arithmetic is in [`stats`]), the conservation check, and
//! the text, JSON and SVG reports.
//!
//! Must never: count a transfer as acknowledged without a 201/200 for it; drop an error without
//! counting it under its code; send a transfer that could be rejected by a ledger rule (the
//! treasury may overdraw, and an account pays only from money this client saw arrive there);
//! re-send an id with different content; retry on its own (the [`Client`] does, definitely or
//! not at all).
//!
//! Layout: `args` the command line, `setup` the plan and the accounts, `workload` the
//! transfers each client generates, `tasks` the client tasks, `failover` the leader kills,
//! `cpu` CPU accounting, `run.rs` the run loop, `verify` the re-sends and the conservation
//! check, `report` the report and its renderings, [`stats`] the arithmetic; this file wires
//! them into [`execute`] and [`run`].

mod args;
mod cpu;
mod failover;
mod report;
mod run;
mod setup;
pub mod stats;
mod tasks;
mod verify;
mod workload;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use raftpay_client::Client;

use crate::cli::ClientOpts;
use crate::plot;

pub use args::BenchArgs;
pub use report::{
    chart, report_text, BenchReport, Conservation, CpuReport, Elections, ErrorReport, KillReport,
    ReportConfig, Verdict,
};

use report::{report_make, ReportParts};
use run::{load_run, LoadOutcome};
use setup::{accounts_create, plan_make};
use stats::latency_histogram;
use verify::{conservation_check, unresolved_settle};
use workload::Expected;

/// Exit code: the run finished but some transfers ended in errors (4xx, or no definite answer).
pub const EXIT_ERRORS: u8 = 1;
/// Exit code: the conservation check failed — money was created, lost, or posted twice.
pub const EXIT_CONSERVATION_VIOLATED: u8 = 2;
/// Exit code: the conservation check could not be completed (reads failed, or some transfer's
/// outcome stayed unknown).
pub const EXIT_UNVERIFIED: u8 = 3;

/// Account creations and verification reads in flight at once.
const SETUP_REQUESTS_IN_FLIGHT: usize = 32;

// ---------------------------------------------------------------------------------------------
// The run.

/// Runs the benchmark and returns its report (printing only phase lines and the progress bar
/// to stderr). Use [`run`] for the CLI.
///
/// # Errors
/// Bad options, a cluster that does not accept the bench's accounts, a client task that
/// panicked, or a request the client could not even build.
pub async fn execute(opts: &ClientOpts, args: &BenchArgs) -> anyhow::Result<BenchReport> {
    anyhow::ensure!(!args.duration.is_zero(), "--duration must be above 0");
    if let Some(every) = args.kill_leader_every {
        anyhow::ensure!(!every.is_zero(), "--kill-leader-every must be above 0");
    }
    let client =
        Client::new(&opts.node, opts.token.as_deref())?.with_follow_leader(!args.no_follow_leader);
    let seed = args.seed.unwrap_or_else(rand::random);
    let plan = Arc::new(plan_make(args, seed));
    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    eprintln!(
        "bench: creating {} accounts and a treasury (prefix {})",
        args.accounts, plan.prefix
    );
    accounts_create(&client, &plan, &args.currency).await?;

    let LoadOutcome {
        outcomes,
        kills,
        clock,
        cpu,
        elections,
    } = load_run(&client, &opts.node, &plan, args).await?;

    let mut expected = Expected::default();
    let mut request_latency = latency_histogram();
    let mut transfer_latency = latency_histogram();
    let mut events = Vec::new();
    let mut errors = ErrorReport::default();
    let mut unresolved = Vec::new();
    for outcome in outcomes {
        expected.absorb(outcome.expected);
        request_latency.add(&outcome.request_latency)?;
        transfer_latency.add(&outcome.transfer_latency)?;
        events.extend(outcome.events);
        for (code, count) in outcome.errors {
            errors.total += count;
            *errors.by_code.entry(code).or_default() += count;
        }
        unresolved.extend(outcome.unresolved);
    }
    if !unresolved.is_empty() {
        eprintln!(
            "bench: re-sending {} requests that got no definite answer",
            unresolved.len()
        );
    }
    let settled = unresolved_settle(&client, unresolved, &mut expected).await;
    eprintln!("bench: reading every account back");
    let consistency = opts.consistency.into();
    let conservation = conservation_check(&client, &plan, &expected, consistency, settled).await;
    Ok(report_make(ReportParts {
        args,
        opts,
        plan: &plan,
        started_unix_s,
        clock,
        events,
        request_latency,
        transfer_latency,
        errors,
        kills,
        elections,
        cpu,
        conservation,
    }))
}

/// `raftpay bench`: runs, prints the summary (text, or JSON with the global `--json`), writes
/// `--json-out` and `--svg`, and returns the exit code: 0 all good, 1 errors, 2 conservation
/// violated, 3 conservation not verifiable.
///
/// # Errors
/// As [`execute`], and files that cannot be written.
pub async fn run(opts: ClientOpts, args: BenchArgs) -> anyhow::Result<ExitCode> {
    let report = execute(&opts, &args).await?;
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &args.json_out {
        std::fs::write(path, format!("{json}\n"))
            .with_context(|| format!("write {}", path.display()))?;
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, plot::svg(&chart(&report)))
            .with_context(|| format!("write {}", path.display()))?;
    }
    if opts.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report_text(&report));
    }
    Ok(ExitCode::from(report.exit_code()))
}
