//! `raftpay chaos`: one chaos run from start to verdict.
//!
//! Phases (each logged with `tracing::info!`): set up the network namespace (when root) and
//! re-execute inside it; start three real `raftpay serve` processes; create the accounts; start
//! the workload; inject faults on the seeded schedule until the time is up; heal everything;
//! probe liveness; stop the workload; wait for the replicas to converge; fetch every node's
//! final state; check; report.
//!
//! Network isolation needs root, `ip` and `iptables`: the outer process creates a private
//! namespace `raftpay-chaos-<pid>`, brings its loopback up, runs this very command again inside
//! it (`ip netns exec NS <binary> chaos … --inside-netns NS`) so that nodes AND workload live
//! there, and deletes the namespace afterwards, also on failure or Ctrl-C. Without root the run
//! stays in the host's namespace on 127.0.0.N (fine for every fault but isolate-leader, which
//! then fails clearly instead of being skipped).
//!
//! Must never: add iptables rules outside its own namespace, send traffic beyond 127.0.0.0/8,
//! or report PASS without having checked a final state.
//!
//! Over 800 lines on purpose: the phases of a run, in the order they happen, read top to bottom.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::sync::watch;
use tokio::time::Instant;

use super::checker::{self, Bounds, NodeAccount, NodeState, Observations, PostedTransfer};
use super::cluster::{Api, Cluster, Firewall};
use super::history::{FaultKind, History};
use super::nemesis::{self, Schedule};
use super::report::{self, RunFacts};
use super::workload::{self, Recorder, WorkloadConfig};
use raftpay_client::{Account, ApiRequest, Consistency, Transfer, TransferPage};

/// The cluster may take this long to elect its first leader.
const FIRST_LEADER_DEADLINE: Duration = Duration::from_secs(30);
/// After healing, the replicas must converge within this.
const CONVERGE_DEADLINE: Duration = Duration::from_secs(60);
/// The same in a negative control, where a replica that lost its log may never converge.
const CONVERGE_DEADLINE_NEGATIVE_CONTROL: Duration = Duration::from_secs(10);
/// Timeout of one request while fetching the final state.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Reads of the final state before giving up on a stable one.
const FETCH_ATTEMPTS: u32 = 5;
/// Page size for account histories (the server's maximum).
const HISTORY_PAGE: u32 = 1000;
/// Writes of the liveness probe after healing.
const PROBE_WRITES: u32 = 10;
/// Negative control: acknowledged transfers looked up after each kill-all.
const LOSS_PROBE_TRANSFERS: usize = 200;
/// Negative control: the lookups after one kill-all stop after this long.
const LOSS_PROBE_DEADLINE: Duration = Duration::from_secs(30);
/// Negative control: at most this many kill-alls before the control is declared not caught.
/// (Each kill-all caught the loss with a probability of about 1/6 in our runs: 60 leave a
/// chance of about 1e-5 to miss it; the expected cost is a few kill-alls of about 3 s each.)
const NEGATIVE_CONTROL_KILL_ALLS_MAX: u64 = 60;
/// Negative control: how long the nodes stay down in each kill-all.
const NEGATIVE_CONTROL_HOLD: Duration = Duration::from_millis(300);
/// Pause between two faults, at least, whatever the interval.
const QUIET_MIN: Duration = Duration::from_millis(1000);

/// Arguments of `raftpay chaos`.
#[derive(Debug, Clone, clap::Args)]
pub struct ChaosArgs {
    /// Length of the fault phase in minutes (instead of --seconds).
    #[arg(long, conflicts_with = "seconds")]
    pub minutes: Option<f64>,
    /// Length of the fault phase in seconds [default: 60].
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Faults to draw from, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "kill-leader,kill-random,pause-leader,isolate-leader,kill-all"
    )]
    pub nemesis: Vec<FaultKind>,
    /// Seconds from one fault's injection to the next (at least 1 s after the previous heal).
    #[arg(long, default_value_t = 5.0)]
    pub interval_secs: f64,
    /// Seed of the fault schedule and of the workload's choices [default: random, printed].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Concurrent workload clients.
    #[arg(long, default_value_t = 8)]
    pub clients: u32,
    /// Non-overdraft accounts per currency (two currencies, each with a treasury).
    #[arg(long, default_value_t = 6)]
    pub accounts: usize,
    /// Fraction of operations that are linearizable balance reads.
    #[arg(long, default_value_t = 0.25)]
    pub read_fraction: f64,
    /// Fraction of the other operations that are batches of transfers (half of them small,
    /// half large, up to --batch-max transfers).
    #[arg(long, default_value_t = 0.0)]
    pub batch_fraction: f64,
    /// Most transfers in one batch (the API allows 8190).
    #[arg(long, default_value_t = 8190)]
    pub batch_max: usize,
    /// Stop the fault phase after this many faults (it also ends when the time is up).
    #[arg(long)]
    pub faults: Option<usize>,
    /// The `lossyfs` binary (tools/lossyfs): every node's data directory becomes a lossyfs
    /// mount, which the power-cut faults need. Needs root and /dev/fuse.
    #[arg(long)]
    pub lossyfs: Option<PathBuf>,
    /// Directory for the verdict, history, plot and node logs [default: chaos-out/seed-<seed>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The raftpay binary to run the nodes with [default: this executable].
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Fail the run unless at least this many transfers were acknowledged [default: 10 per
    /// second of the fault phase, at least 100].
    #[arg(long)]
    pub min_acked: Option<usize>,
    /// Fail the run unless at least this many faults were injected [default: half of those
    /// the schedule has room for, at least 1].
    #[arg(long)]
    pub min_faults: Option<usize>,
    /// After healing, the first write must be acknowledged within this many seconds.
    #[arg(long, default_value_t = 15.0)]
    pub liveness_secs: f64,
    /// Keep the nodes' data directories even when the run passes.
    #[arg(long)]
    pub keep_data: bool,
    /// Negative control (for a build with `unsafe-ack-before-flush`): repeat kill-all until
    /// acknowledged transfers are lost, and pass only if the checker reports them lost.
    #[arg(long)]
    pub negative_control: bool,
    /// Run nothing: redraw the plots of the earlier run in --out from its history.json and
    /// summary.json.
    #[arg(long, requires = "out")]
    pub replot: bool,
    /// Internal: already inside the private network namespace with this name.
    #[arg(long, hide = true)]
    pub inside_netns: Option<String>,
}

impl ChaosArgs {
    fn fault_phase(&self) -> Duration {
        let seconds = match (self.minutes, self.seconds) {
            (Some(minutes), _) => minutes * 60.0,
            (None, Some(seconds)) => seconds,
            (None, None) => 60.0,
        };
        Duration::from_secs_f64(seconds.max(0.0))
    }

    fn acked_min(&self) -> usize {
        let floor = (self.fault_phase().as_secs_f64() * 10.0) as usize;
        self.min_acked.unwrap_or(floor.max(100))
    }

    fn faults_min(&self) -> usize {
        let room = self.fault_phase().as_secs_f64() / self.interval_secs.max(0.1);
        let room = match self.faults {
            Some(faults) => room.min(faults as f64 * 2.0),
            None => room,
        };
        self.min_faults.unwrap_or(((room / 2.0) as usize).max(1))
    }

    fn kinds(&self) -> Vec<FaultKind> {
        if self.negative_control {
            if self.lossyfs.is_some() {
                return vec![FaultKind::PowerCutAll];
            }
            return vec![FaultKind::KillAll];
        }
        self.nemesis.clone()
    }

    /// The same arguments as a command line (for the re-execution inside the namespace).
    fn to_command_line(&self, seed: u64, out: &Path, binary: &Path) -> Vec<String> {
        let mut line = vec![
            "chaos".to_owned(),
            "--seconds".to_owned(),
            self.fault_phase().as_secs_f64().to_string(),
            "--nemesis".to_owned(),
            self.kinds()
                .iter()
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(","),
            "--interval-secs".to_owned(),
            self.interval_secs.to_string(),
            "--seed".to_owned(),
            seed.to_string(),
            "--clients".to_owned(),
            self.clients.to_string(),
            "--accounts".to_owned(),
            self.accounts.to_string(),
            "--read-fraction".to_owned(),
            self.read_fraction.to_string(),
            "--out".to_owned(),
            out.display().to_string(),
            "--binary".to_owned(),
            binary.display().to_string(),
            "--min-acked".to_owned(),
            self.acked_min().to_string(),
            "--min-faults".to_owned(),
            self.faults_min().to_string(),
            "--liveness-secs".to_owned(),
            self.liveness_secs.to_string(),
            "--batch-fraction".to_owned(),
            self.batch_fraction.to_string(),
            "--batch-max".to_owned(),
            self.batch_max.to_string(),
        ];
        if let Some(faults) = self.faults {
            line.push("--faults".to_owned());
            line.push(faults.to_string());
        }
        if let Some(lossyfs) = &self.lossyfs {
            line.push("--lossyfs".to_owned());
            line.push(lossyfs.display().to_string());
        }
        if self.keep_data {
            line.push("--keep-data".to_owned());
        }
        if self.negative_control {
            line.push("--negative-control".to_owned());
        }
        line
    }
}

/// Whether this process may create network namespaces and filter packets in them.
#[derive(Debug, Clone, Copy)]
struct NetCapabilities {
    root: bool,
    ip: bool,
    iptables: bool,
}

fn on_path(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| dir.join(program).is_file())
        || ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
            .iter()
            .any(|dir| Path::new(dir).join(program).is_file())
}

fn net_capabilities() -> NetCapabilities {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|line| line.starts_with("Uid:"))
        .and_then(|line| line.split_whitespace().nth(2))
        == Some("0");
    NetCapabilities {
        root,
        ip: on_path("ip"),
        iptables: on_path("iptables"),
    }
}

/// Runs `raftpay chaos`: the exit code is 0 on PASS, 1 on FAIL.
///
/// # Errors
/// When the run cannot be carried out at all (no binary, no namespace while isolate-leader was
/// asked for, a node that cannot be started); violations are a FAIL verdict, not an error.
pub async fn run(args: ChaosArgs) -> anyhow::Result<ExitCode> {
    if args.replot {
        let out = args.out.clone().context("--replot needs --out")?;
        return replot(&out);
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let binary = match &args.binary {
        Some(binary) => binary.clone(),
        None => std::env::current_exe().context("find the current executable")?,
    };
    let binary = std::fs::canonicalize(&binary)
        .with_context(|| format!("raftpay binary {}", binary.display()))?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("chaos-out/seed-{seed}")));
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    let out = std::fs::canonicalize(&out)?;
    if let Some(netns) = args.inside_netns.clone() {
        return run_here(&args, seed, &binary, &out, Some(netns)).await;
    }
    let kinds = args.kinds();
    if kinds.iter().any(|kind| kind.is_power_cut()) && args.lossyfs.is_none() {
        bail!(
            "the power-cut faults need --lossyfs <path to the lossyfs binary> (cargo build -p lossyfs)"
        );
    }
    let args = &ChaosArgs {
        lossyfs: match &args.lossyfs {
            Some(lossyfs) => Some(
                std::fs::canonicalize(lossyfs)
                    .with_context(|| format!("lossyfs binary {}", lossyfs.display()))?,
            ),
            None => None,
        },
        ..args.clone()
    };
    let capabilities = net_capabilities();
    let netns_possible = capabilities.root && capabilities.ip;
    if kinds.contains(&FaultKind::IsolateLeader) && !(netns_possible && capabilities.iptables) {
        bail!(
            "isolate-leader needs root and the `ip` and `iptables` commands (found: root {}, ip {}, iptables {}); \
             install iproute2 and iptables and run as root, or leave isolate-leader out of --nemesis",
            capabilities.root,
            capabilities.ip,
            capabilities.iptables
        );
    }
    if !netns_possible {
        tracing::info!("not root or no `ip`: running in the host's network namespace on 127.0.0.N");
        return run_here(args, seed, &binary, &out, None).await;
    }
    run_in_namespace(args, seed, &binary, &out).await
}

/// Redraws the plots of an earlier run from the files it wrote.
fn replot(out: &Path) -> anyhow::Result<ExitCode> {
    let read = |name: &str| -> anyhow::Result<String> {
        let path = out.join(name);
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))
    };
    let history: History = serde_json::from_str(&read("history.json")?).context("history.json")?;
    let summary: report::Summary =
        serde_json::from_str(&read("summary.json")?).context("summary.json")?;
    let (plot, zoom) = report::plots_write(out, &history, &summary)?;
    println!("plot:    {}", plot.display());
    if let Some(zoom) = zoom {
        println!("zoom:    {}", zoom.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Deletes the namespace when dropped (also on an error or a panic).
struct Namespace {
    name: String,
}

impl Drop for Namespace {
    fn drop(&mut self) {
        match std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status()
        {
            Ok(status) if status.success() => {
                tracing::info!(netns = %self.name, "network namespace deleted")
            }
            Ok(status) => {
                tracing::warn!(netns = %self.name, %status, "could not delete the network namespace")
            }
            Err(error) => {
                tracing::warn!(netns = %self.name, %error, "could not delete the network namespace")
            }
        }
    }
}

async fn command_ok(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .with_context(|| format!("run {program}"))?;
    if !output.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

async fn run_in_namespace(
    args: &ChaosArgs,
    seed: u64,
    binary: &Path,
    out: &Path,
) -> anyhow::Result<ExitCode> {
    let name = format!("raftpay-chaos-{}", std::process::id());
    command_ok("ip", &["netns", "add", &name]).await?;
    let namespace = Namespace { name: name.clone() };
    command_ok(
        "ip",
        &["netns", "exec", &name, "ip", "link", "set", "lo", "up"],
    )
    .await?;
    tracing::info!(netns = %name, "private network namespace ready; re-executing inside it");
    let mut command_line = vec!["netns".to_owned(), "exec".to_owned(), name.clone()];
    command_line.push(binary.display().to_string());
    command_line.extend(args.to_command_line(seed, out, binary));
    command_line.push("--inside-netns".to_owned());
    command_line.push(name.clone());
    let mut child = tokio::process::Command::new("ip")
        .args(&command_line)
        .kill_on_drop(true)
        .spawn()
        .context("start the run inside the namespace")?;
    // Waits for the inner run; on Ctrl-C (which the inner run also receives and handles) keep
    // waiting so the namespace is deleted only after everything inside it has stopped.
    let status = tokio::select! {
        status = child.wait() => status?,
        _ = tokio::signal::ctrl_c() => {
            tracing::warn!("interrupted; waiting for the run inside the namespace to stop");
            child.wait().await?
        }
    };
    drop(namespace);
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}

/// The run itself, in this process's network namespace; interrupted cleanly by Ctrl-C (the
/// cluster is dropped, which kills every node).
async fn run_here(
    args: &ChaosArgs,
    seed: u64,
    binary: &Path,
    out: &Path,
    netns: Option<String>,
) -> anyhow::Result<ExitCode> {
    println!("chaos seed: {seed} (replay the fault schedule with --seed {seed})");
    tracing::info!(seed, out = %out.display(), binary = %binary.display(), ?netns, "chaos run starts");
    tokio::select! {
        result = run_phases(args, seed, binary, out, netns) => result,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
    }
}

/// What the fault phase produced besides the history.
struct FaultPhase {
    problems: Vec<String>,
    /// Negative control: acknowledged transfers found gone by the lookups after the faults.
    lost_probed: usize,
}

async fn run_phases(
    args: &ChaosArgs,
    seed: u64,
    binary: &Path,
    out: &Path,
    netns: Option<String>,
) -> anyhow::Result<ExitCode> {
    let data_dir = out.join("data");
    if data_dir.exists() {
        std::fs::remove_dir_all(&data_dir)
            .with_context(|| format!("remove the old {}", data_dir.display()))?;
    }
    let firewall = netns.map(Firewall::new);
    let mut cluster = Cluster::start(binary, &data_dir, out, firewall, args.lossyfs.as_deref())?;
    let first_leader = cluster
        .leader_wait(FIRST_LEADER_DEADLINE)
        .await
        .with_context(|| format!("first election\n{}", cluster.logs_tail(20)))?;
    tracing::info!(leader = first_leader, "phase: cluster up");

    let accounts = workload::accounts(args.accounts.max(2));
    workload::accounts_create(&cluster.api, &accounts).await?;
    let recorder = Arc::new(Recorder::new(Instant::now()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let config = WorkloadConfig {
        clients: args.clients.max(1),
        seed,
        accounts: accounts.clone(),
        read_fraction: args.read_fraction.clamp(0.0, 1.0),
        batch_fraction: args.batch_fraction.clamp(0.0, 1.0),
        batch_max: args.batch_max,
    };
    let clients = workload::start(&config, &cluster.api, &recorder, &stop_rx);
    tracing::info!(clients = config.clients, "phase: workload started");

    let mut history = History {
        seed,
        accounts: accounts.clone(),
        ..History::default()
    };
    let phase = faults_run(args, seed, &mut cluster, &recorder, &mut history).await;
    let mut problems = phase.problems;
    let lost_probed = phase.lost_probed;

    tracing::info!("phase: heal everything");
    for (node, status) in cluster.exited_on_their_own() {
        problems.push(format!(
            "node {node} exited on its own ({status}) at the end of the fault phase"
        ));
    }
    cluster.heal_all().await.context("heal")?;
    let heal_ms = recorder.now_ms();
    let liveness_ms =
        workload::liveness_probe(&cluster.api, &recorder, &accounts, heal_ms, PROBE_WRITES).await;
    tracing::info!(?liveness_ms, "phase: liveness probed");

    let _ = stop_tx.send(true);
    for client in clients {
        if let Err(error) = client.await {
            problems.push(format!("a workload client failed: {error}"));
        }
    }
    tracing::info!("phase: workload stopped");

    let duration_s = recorder.now_ms() / 1000.0;
    let account_ids: Vec<String> = accounts.iter().map(|a| a.id.clone()).collect();
    let converge_deadline = if args.negative_control {
        CONVERGE_DEADLINE_NEGATIVE_CONTROL
    } else {
        CONVERGE_DEADLINE
    };
    let nodes = final_states(&mut cluster, &account_ids, converge_deadline, &mut problems).await;
    for (node, status) in cluster.exited_on_their_own() {
        problems.push(format!(
            "node {node} exited on its own ({status}) after healing"
        ));
    }
    history.ops = recorder.ops();
    let observed = Observations {
        liveness_ms,
        problems,
    };
    let bounds = Bounds {
        acked_min: args.acked_min(),
        faults_min: args.faults_min(),
        liveness_max_ms: args.liveness_secs * 1000.0,
    };
    let findings = checker::check(checker::CheckInput {
        history: &history,
        nodes: &nodes,
        observed: &observed,
        bounds: &bounds,
    });
    tracing::info!(violations = findings.total(), "phase: checked");
    let kinds = args.kinds();
    let summary = report::summarize(
        &history,
        &findings,
        &observed,
        RunFacts {
            nemesis: &kinds,
            clients: config.clients,
            duration_s,
            negative_control: args.negative_control,
        },
    );
    let mut summary = summary;
    if args.negative_control && lost_probed > 0 && summary.negative_control_caught == Some(false) {
        // After a power cut of a build that never fsyncs, the nodes may come back with nothing
        // at all (no accounts, no state to check): the lookups right after the cut saw the loss.
        summary.negative_control_caught = Some(true);
        summary.verdict = "PASS".to_owned();
        summary.violation_examples.push(format!(
            "negative control: {lost_probed} acknowledged transfers not found right after the faults"
        ));
    }
    let files = report::write_files(out, &history, &summary)?;
    let pass = summary.verdict == "PASS";
    if !pass {
        eprintln!("{}", cluster.logs_tail(10));
    }
    cluster.shutdown().await;
    if pass && !args.keep_data {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    println!("{}", report::verdict_line(&summary));
    for line in report::unavailability_lines(&summary) {
        println!("{line}");
    }
    for example in summary.violation_examples.iter().take(30) {
        println!("  violation: {example}");
    }
    println!("summary: {}", files.summary.display());
    println!("history: {}", files.history.display());
    println!("plot:    {}", files.plot.display());
    if let Some(zoom) = &files.plot_zoom {
        println!("zoom:    {}", zoom.display());
    }
    println!("logs:    {}", out.join("node<N>.log").display());
    if kinds.iter().any(|kind| kind.is_power_cut()) {
        let line = power_loss_line(&summary, lost_probed);
        let path = out.join("power-loss.txt");
        std::fs::write(&path, format!("{line}\n"))
            .with_context(|| format!("write {}", path.display()))?;
        println!("{line}");
    }
    Ok(if pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Injects faults on the schedule until the fault phase is over (or, in a negative control,
/// until acknowledged transfers were lost). Problems are recorded, not returned as errors, so
/// the run still heals, checks and reports.
async fn faults_run(
    args: &ChaosArgs,
    seed: u64,
    cluster: &mut Cluster,
    recorder: &Recorder,
    history: &mut History,
) -> FaultPhase {
    let mut problems = Vec::new();
    let mut lost_probed = 0;
    let kinds = args.kinds();
    let mut schedule = Schedule::new(seed, &kinds);
    if args.negative_control {
        schedule = schedule.with_leader_last_always();
    }
    if kinds.iter().all(|kind| kind.is_power_cut()) {
        // Every kind of power cut in turn, so that even a short run has each of them.
        schedule = schedule.with_kinds_in_turn();
    }
    let interval = Duration::from_secs_f64(args.interval_secs.max(0.1));
    let started = Instant::now();
    let phase_end = started + args.fault_phase();
    tracing::info!(
        ?kinds,
        interval_s = interval.as_secs_f64(),
        seconds = args.fault_phase().as_secs_f64(),
        seed,
        "phase: faults"
    );
    let mut next_at = started + interval;
    let mut index = 0u64;
    loop {
        if next_at >= phase_end {
            break;
        }
        // Spacing on the schedule: the cluster runs undisturbed until the next fault.
        tokio::time::sleep_until(next_at).await;
        for (node, status) in cluster.exited_on_their_own() {
            let problem = format!("node {node} exited on its own ({status})");
            tracing::error!(node, %status, "node exited on its own; restarting it");
            problems.push(problem);
            if let Err(error) = cluster.spawn(node) {
                problems.push(format!("cannot restart node {node}: {error:#}"));
            }
        }
        if args.faults.is_some_and(|faults| index >= faults as u64) {
            break;
        }
        let Some(mut fault) = schedule.next_fault() else {
            break;
        };
        if args.negative_control {
            // Many short kill-alls: each catches the loss with some probability (the window is
            // a follower's last unwritten append), so what counts is how many there are.
            fault.hold = NEGATIVE_CONTROL_HOLD;
        }
        index += 1;
        match nemesis::inject(cluster, recorder, index, &fault).await {
            Ok(event) => {
                for problem in &event.problems {
                    problems.push(format!("fault {index} ({}): {problem}", fault.kind));
                }
                history.faults.push(event);
            }
            Err(error) => {
                tracing::error!(index, kind = %fault.kind, error = %format!("{error:#}"), "fault failed; healing");
                problems.push(format!("fault {index} ({}): {error:#}", fault.kind));
                if let Err(error) = cluster.heal_all().await {
                    problems.push(format!("heal after fault {index}: {error:#}"));
                    break;
                }
            }
        }
        if args.negative_control {
            if let Some(event) = history.faults.last() {
                let lost = acks_lost(cluster, recorder, event.inject_ms).await;
                tracing::info!(
                    index,
                    lost,
                    "negative control: acknowledged transfers looked up after kill-all"
                );
                lost_probed += lost;
                if lost > 0 {
                    break;
                }
            }
            if index >= NEGATIVE_CONTROL_KILL_ALLS_MAX {
                break;
            }
        }
        next_at = (next_at + interval).max(Instant::now() + QUIET_MIN);
    }
    FaultPhase {
        problems,
        lost_probed,
    }
}

/// The power-loss verdict, the last line of a run with power cuts:
/// `power-loss: cycles=N acked=A lost=L duplicated=D result=PASS|FAIL` (`CAUGHT` when a
/// negative control saw the loss it must see, `FAIL` when it did not).
fn power_loss_line(summary: &report::Summary, lost_probed: usize) -> String {
    let count = |name: &str| summary.violations.get(name).copied().unwrap_or(0);
    let result = match summary.negative_control_caught {
        Some(true) => "CAUGHT",
        Some(false) => "FAIL",
        None if summary.verdict == "PASS" => "PASS",
        None => "FAIL",
    };
    format!(
        "power-loss: cycles={} acked={} lost={} duplicated={} result={result}",
        summary.faults_total,
        summary.transfers_acked,
        count("lost_ack").max(lost_probed as u64),
        count("double_apply") + count("seq_duplicate"),
    )
}

/// Negative control: how many of the last acknowledged transfers before `before_ms` are gone
/// (not found, or under another seq) once the cluster has a leader again.
async fn acks_lost(cluster: &Cluster, recorder: &Recorder, before_ms: f64) -> usize {
    if let Err(error) = cluster.leader_wait(nemesis::LEADER_DEADLINE).await {
        tracing::warn!(error = %format!("{error:#}"), "negative control: no leader to ask");
        return 0;
    }
    let mut lost = 0;
    let deadline = Instant::now() + LOSS_PROBE_DEADLINE;
    for (i, (id, seq)) in recorder
        .acked_before(before_ms, LOSS_PROBE_TRANSFERS)
        .into_iter()
        .enumerate()
    {
        let request = ApiRequest::get_transfer(&id, Consistency::Linearizable);
        let Ok(answer) = cluster
            .api
            .until_definite(&request, i, workload::ATTEMPT_TIMEOUT, deadline)
            .await
        else {
            continue;
        };
        let found = answer.reply.decode::<Transfer>().ok().map(|t| t.seq);
        if found != Some(seq) {
            tracing::info!(transfer_id = %id, seq, ?found, "negative control: acknowledged transfer lost");
            lost += 1;
        }
    }
    lost
}

/// Waits for convergence, then fetches every node's state. A new leader's blank entry can land
/// while the states are read (an election after healing), so a read that saw the applied index
/// move, or replicas read at different indexes, is started over (at most `FETCH_ATTEMPTS`
/// times, and not when the replicas did not converge at all); what still fails becomes a
/// problem. (The API has no account listing: the accounts
/// are those the run created.)
async fn final_states(
    cluster: &mut Cluster,
    account_ids: &[String],
    converge_deadline: Duration,
    problems: &mut Vec<String>,
) -> Vec<NodeState> {
    let mut nodes = Vec::new();
    for attempt in 1..=FETCH_ATTEMPTS {
        let mut attempt_problems = Vec::new();
        if let Err(error) = cluster.leader_wait(FIRST_LEADER_DEADLINE).await {
            attempt_problems.push(format!("after healing: {error:#}"));
        }
        let converged = match cluster.converged_wait(converge_deadline).await {
            Ok(()) => true,
            Err(error) => {
                attempt_problems.push(format!("after healing: {error:#}"));
                false
            }
        };
        tracing::info!(attempt, converged, "phase: fetching every node's state");
        nodes.clear();
        for id in cluster.ids() {
            match node_state_fetch(&cluster.api, id, account_ids).await {
                Ok(state) => nodes.push(state),
                Err(error) => attempt_problems.push(format!(
                    "node {id}: cannot fetch the final state: {error:#}"
                )),
            }
        }
        let same_index = nodes
            .windows(2)
            .all(|pair| pair[0].state_hash_index == pair[1].state_hash_index);
        // A cluster that did not converge will not by reading again: report what it has.
        if !converged || (attempt_problems.is_empty() && same_index) || attempt == FETCH_ATTEMPTS {
            problems.extend(attempt_problems);
            break;
        }
        tracing::info!(
            attempt,
            ?attempt_problems,
            same_index,
            "state moved while it was read; reading again"
        );
    }
    nodes
}

async fn get_json<T: serde::de::DeserializeOwned>(
    api: &Api,
    node: u64,
    request: &ApiRequest,
) -> anyhow::Result<T> {
    let reply = api
        .once(node, request, FETCH_TIMEOUT)
        .await
        .map_err(|error| anyhow::anyhow!("{}: {error}", request.path))?;
    reply
        .decode()
        .with_context(|| format!("{} on node {node}", request.path))
}

/// One node's final state, read locally (`consistency=local`: this node's own state machine).
async fn node_state_fetch(
    api: &Api,
    node: u64,
    account_ids: &[String],
) -> anyhow::Result<NodeState> {
    let status: serde_json::Value = get_json(api, node, &ApiRequest::cluster_status()).await?;
    let mut accounts = Vec::new();
    let mut transfers: std::collections::BTreeSet<PostedTransfer> =
        std::collections::BTreeSet::new();
    for id in account_ids {
        let account: Account =
            get_json(api, node, &ApiRequest::get_account(id, Consistency::Local)).await?;
        let mut after = None;
        loop {
            let request = ApiRequest::history(id, Some(HISTORY_PAGE), after, Consistency::Local);
            let page: TransferPage = get_json(api, node, &request).await?;
            for transfer in page.transfers {
                transfers.insert(PostedTransfer {
                    seq: transfer.seq,
                    id: transfer.id,
                    from: transfer.from,
                    to: transfer.to,
                    amount: transfer.amount,
                });
            }
            match page.next {
                Some(next) if Some(next) != after => after = Some(next),
                _ => break,
            }
        }
        accounts.push(NodeAccount {
            id: account.id,
            currency: account.currency,
            allow_overdraft: account.allow_overdraft,
            debits: account.debits,
            credits: account.credits,
            balance: account.balance,
        });
    }
    let after: serde_json::Value = get_json(api, node, &ApiRequest::cluster_status()).await?;
    if after["state_hash_index"] != status["state_hash_index"] {
        bail!("node {node} applied more entries while its state was being read");
    }
    Ok(NodeState {
        node,
        state_hash_index: status["state_hash_index"].as_u64().unwrap_or(0),
        state_hash: status["state_hash"].as_str().unwrap_or_default().to_owned(),
        seq_last: status["seq_last"].as_u64().unwrap_or(0),
        accounts,
        transfers: transfers.into_iter().collect(),
    })
}
