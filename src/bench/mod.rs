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

pub mod stats;

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures::stream::{self, StreamExt};
use hdrhistogram::Histogram;
use raftpay_raft::ledger::BATCH_TRANSFERS_MAX;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::time::Instant;

use crate::cli::ClientOpts;
use crate::plot;
use raftpay_client::{BatchItem, Client, ClientError, Consistency, NewAccount, NewTransfer};
use stats::{
    kill_windows, latency_histogram, latency_record, per_second, FailoverSummary, KillTimes,
    KillWindow, LatencySummary, RequestEvent, SecondStats,
};

/// Exit code: the run finished but some transfers ended in errors (4xx, or no definite answer).
pub const EXIT_ERRORS: u8 = 1;
/// Exit code: the conservation check failed — money was created, lost, or posted twice.
pub const EXIT_CONSERVATION_VIOLATED: u8 = 2;
/// Exit code: the conservation check could not be completed (reads failed, or some transfer's
/// outcome stayed unknown).
pub const EXIT_UNVERIFIED: u8 = 3;

/// Largest amount of one generated transfer, in minor units: small, so no total nears overflow.
const TRANSFER_AMOUNT_MAX: u64 = 100;
/// Account creations and verification reads in flight at once.
const SETUP_REQUESTS_IN_FLIGHT: usize = 32;
/// Unanswered requests re-sent at once after the run.
const RESOLVE_REQUESTS_IN_FLIGHT: usize = 16;
/// How long the re-send of a request without a definite answer may keep trying.
const RESOLVE_RETRY_DEADLINE: Duration = Duration::from_secs(30);
/// Deadline of one kill or restart command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest command output kept in the report.
const COMMAND_OUTPUT_CHARS_MAX: usize = 400;
/// Refresh period of the progress bar.
const PROGRESS_TICK: Duration = Duration::from_millis(250);
/// Account mismatches listed by name in the report (all are counted).
const MISMATCHES_LISTED_MAX: usize = 10;
/// Longest accepted `--duration`, `--warmup`, `--kill-leader-every`, `--restart-after`.
const SECONDS_MAX: f64 = 86_400.0;
/// `/proc` reports CPU time in USER_HZ ticks, which the kernel ABI fixes at 100 per second.
const PROC_TICKS_PER_SECOND: f64 = 100.0;

/// `raftpay bench`: load, latency, failover and a conservation check against a running cluster.
/// Nodes, token and read consistency come from the global `--node`, `--token` and
/// `--consistency`; the global `--json` prints the report as JSON instead of text.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Accounts that receive transfers (plus one treasury account).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub accounts: u32,
    /// Concurrent clients, spread over the nodes (they move to the leader once a node names it,
    /// unless `--no-follow-leader`).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub clients: u32,
    /// Keep each client on its node, so followers forward its writes to the leader (measures
    /// the forwarding hop).
    #[arg(long)]
    pub no_follow_leader: bool,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value = "20", value_parser = parse_seconds)]
    pub duration: Duration,
    /// Warm-up seconds: load runs but is not measured.
    #[arg(long, default_value = "3", value_parser = parse_seconds)]
    pub warmup: Duration,
    /// Send K transfers per request through POST /v1/transfers/batch (non-atomic) instead of
    /// one per POST /v1/transfers.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..=BATCH_TRANSFERS_MAX as i64))]
    pub batch: Option<u32>,
    /// Percent of transfers that go from one account to another instead of from the treasury.
    #[arg(long, value_name = "PERCENT", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub mix: u8,
    /// Currency of the bench's accounts.
    #[arg(long, default_value = "CNY", value_parser = parse_currency)]
    pub currency: String,
    /// SIGKILL the leader every S seconds of the measured window (and restart it).
    #[arg(long, value_name = "S", value_parser = parse_seconds)]
    pub kill_leader_every: Option<Duration>,
    /// Shell command that kills the leader; `{node}` is replaced by the leader's id as
    /// GET /v1/cluster reported it. Run from the current directory.
    #[arg(long, default_value = "scripts/cluster.sh kill-leader")]
    pub kill_command: String,
    /// Shell command that restarts a killed node; `{node}` is replaced by its id.
    #[arg(long, default_value = "scripts/cluster.sh restart {node}")]
    pub restart_command: String,
    /// Seconds between a kill and the restart of the killed node.
    #[arg(long, default_value = "2", value_parser = parse_seconds)]
    pub restart_after: Duration,
    /// Write the full results (config, totals, percentiles, per second, kills) as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
    /// Write an SVG plot here: transfers/s and p99 per second, kills marked.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Name of this run in reports and the plot title (default: derived from the options).
    #[arg(long)]
    pub label: Option<String>,
    /// Seed of the workload's random choices (default: random; the report shows it).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Directory with the nodes' pid files (`node<N>.pid`, as scripts/cluster.sh writes them
    /// under RAFTPAY_DATA): the report then shows each node's CPU use in the window.
    #[arg(long, value_name = "DIR")]
    pub pid_dir: Option<PathBuf>,
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !seconds.is_finite() || !(0.0..=SECONDS_MAX).contains(&seconds) {
        return Err(format!("seconds must be between 0 and {SECONDS_MAX}"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn parse_currency(text: &str) -> Result<String, String> {
    raftpay_api::rules::currency_check(text)
        .map(|()| text.to_owned())
        .map_err(|error| format!("{text:?}: {error}"))
}

// ---------------------------------------------------------------------------------------------
// The report.

/// Everything a run measured; written by `--json-out`.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub label: String,
    pub started_unix_s: u64,
    pub config: ReportConfig,
    /// Acknowledged transfers whose answer arrived in the measured window.
    pub transfers_acked: u64,
    /// Requests answered (or given up on) in the measured window.
    pub requests: u64,
    pub transfers_per_s: f64,
    pub requests_per_s: f64,
    /// Latency of each request in the window (failed ones included).
    pub latency_request: LatencySummary,
    /// Latency of each acknowledged transfer in the window (a batch's latency, once per transfer).
    pub latency_transfer: LatencySummary,
    /// Every transfer that ended in an error, over the whole run (warm-up included).
    pub errors: ErrorReport,
    pub per_second: Vec<SecondStats>,
    pub kills: Vec<KillReport>,
    /// Over the successful kills; `None` without `--kill-leader-every`.
    pub failover: Option<FailoverSummary>,
    pub elections: Elections,
    pub cpu: CpuReport,
    pub conservation: Conservation,
}

/// Elections during the measured window, from the Raft term (every election, won or not,
/// starts a new term). Without faults a healthy cluster starts none.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Elections {
    /// The highest term any node reported when the window began; `None` if none answered.
    pub term_start: Option<u64>,
    /// The same when the window ended.
    pub term_end: Option<u64>,
    /// `term_end - term_start`: the elections started in the window.
    pub new_terms: Option<u64>,
}

/// The highest term any of `nodes` reports now (each asked once, directly).
async fn term_highest(client: &Client, nodes: &[String]) -> Option<u64> {
    let mut highest = None;
    for node in nodes {
        if let Ok(status) = client.cluster_status(Some(node)).await {
            highest = highest.max(Some(status.term));
        }
    }
    highest
}

/// The options of the run, as used.
#[derive(Debug, Clone, Serialize)]
pub struct ReportConfig {
    pub nodes: Vec<String>,
    pub clients: u32,
    /// Clients moved to the leader a node named (else they stayed on their node).
    pub follow_leader: bool,
    pub accounts: u32,
    pub batch: Option<u32>,
    pub mix_percent: u8,
    pub currency: String,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub kill_leader_every_s: Option<f64>,
    pub restart_after_s: f64,
    pub prefix: String,
    pub seed: u64,
    pub consistency: String,
}

/// Errors by code: the server's error code for a 4xx, `unavailable` for no definite answer
/// before the client's retry deadline, `decode` for an answer that was not what the contract
/// says, `mismatched_answer` for a 2xx that names another transfer or amount.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ErrorReport {
    pub total: u64,
    pub by_code: BTreeMap<String, u64>,
}

/// One leader kill.
#[derive(Debug, Clone, Serialize)]
pub struct KillReport {
    /// When the kill command returned, seconds since the measured window began.
    pub at_s: f64,
    /// The killed node (from the command's output, else from GET /v1/cluster before the kill).
    pub node: Option<u64>,
    pub ok: bool,
    pub command_ms: f64,
    pub output: String,
    pub restart_ok: Option<bool>,
    pub restart_output: String,
    /// When the restart command returned (the node serves /health again), seconds since the
    /// measured window began.
    pub restart_at_s: Option<f64>,
    /// How long before this kill the node killed previously was back: a short time means this
    /// kill hit a cluster whose third node may still be catching up.
    pub previous_back_s: Option<f64>,
    /// `None` when the kill failed.
    pub window: Option<KillWindow>,
}

/// CPU use during the measured window, in cores (1.0 = one core busy all the time).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuReport {
    /// This bench process (all its threads).
    pub bench_cores: Option<f64>,
    /// The whole machine: the nodes, the bench and whatever else runs.
    pub machine_busy_cores: Option<f64>,
    pub machine_cpus: usize,
    /// Each node process (by node number) found through `--pid-dir` that ran with the same pid
    /// for the whole window (a killed node is left out).
    pub nodes_cores: BTreeMap<String, f64>,
}

/// The outcome of the conservation check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Sum of balances 0, treasury debits == acknowledged amounts, every account as expected.
    Ok,
    /// Money was created or lost, or a transfer posted twice or not at all.
    Violated,
    /// Could not check: reads failed, or some transfer's outcome stayed unknown.
    Unverified,
}

/// What the final read-back found.
#[derive(Debug, Clone, Serialize)]
pub struct Conservation {
    pub verdict: Verdict,
    /// Accounts read back, treasury included.
    pub accounts_read: u64,
    /// Sum of every bench account's balance, treasury included: must be 0.
    pub balance_sum: i128,
    pub treasury_debits: u64,
    pub treasury_credits: u64,
    /// Sum of the amounts of acknowledged treasury transfers over the whole run.
    pub acknowledged_amount: u128,
    /// Transfers acknowledged over the whole run (warm-up, window, tail and re-sends).
    pub transfers_acknowledged: u64,
    /// Requests without a definite answer during the run that were settled by re-sending them.
    pub requests_resent: u64,
    /// Requests whose outcome is still unknown.
    pub requests_unresolved: u64,
    pub accounts_mismatched: u64,
    pub mismatches: Vec<String>,
    pub problems: Vec<String>,
}

impl BenchReport {
    /// The process exit code this report calls for: conservation first, then errors.
    pub fn exit_code(&self) -> u8 {
        match self.conservation.verdict {
            Verdict::Violated => EXIT_CONSERVATION_VIOLATED,
            Verdict::Unverified => EXIT_UNVERIFIED,
            Verdict::Ok if self.errors.total > 0 => EXIT_ERRORS,
            Verdict::Ok => 0,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The workload.

/// What every client task shares and never changes.
struct Plan {
    prefix: String,
    treasury: String,
    accounts: Vec<String>,
    batch: Option<usize>,
    mix_percent: u8,
    clients: u32,
    seed: u64,
}

/// Where a transfer's money goes, so an answer can be booked without parsing ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Route {
    /// `None`: from the treasury.
    from: Option<u32>,
    to: u32,
    amount: u64,
}

/// What the bench itself knows was acknowledged: the expectation the read-back is checked
/// against.
#[derive(Debug, Default)]
struct Expected {
    /// Sum of acknowledged treasury → account amounts.
    treasury_debits: u128,
    /// Net change of each account (by index) from acknowledged transfers.
    balances: HashMap<u32, i128>,
    transfers: u64,
}

impl Expected {
    fn post(&mut self, route: Route) {
        let amount = i128::from(route.amount);
        match route.from {
            None => self.treasury_debits += u128::from(route.amount),
            Some(from) => *self.balances.entry(from).or_default() -= amount,
        }
        *self.balances.entry(route.to).or_default() += amount;
        self.transfers += 1;
    }

    fn absorb(&mut self, other: Expected) {
        self.treasury_debits += other.treasury_debits;
        self.transfers += other.transfers;
        for (account, change) in other.balances {
            *self.balances.entry(account).or_default() += change;
        }
    }
}

/// One client task's generator of transfers. Account `i` belongs to client `i % clients`: only
/// its owner pays from it, and only out of money the owner saw arrive (`spendable`, a lower
/// bound of the balance), so no transfer can be refused for insufficient funds.
struct Source {
    plan: Arc<Plan>,
    client_index: u32,
    rng: StdRng,
    n_created: u64,
    /// The accounts this client owns, and what it may still spend from each.
    owned: Vec<u32>,
    spendable: Vec<u64>,
}

impl Source {
    fn new(plan: Arc<Plan>, client_index: u32) -> Self {
        let n_accounts = u32::try_from(plan.accounts.len()).unwrap_or(u32::MAX);
        let owned: Vec<u32> = (client_index..n_accounts)
            .step_by(usize::try_from(plan.clients).unwrap_or(1).max(1))
            .collect();
        let spendable = vec![0; owned.len()];
        let rng = StdRng::seed_from_u64(
            plan.seed ^ u64::from(client_index).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        Self {
            plan,
            client_index,
            rng,
            n_created: 0,
            owned,
            spendable,
        }
    }

    fn account_random(&mut self) -> u32 {
        let n = u32::try_from(self.plan.accounts.len()).unwrap_or(u32::MAX);
        self.rng.gen_range(0..n)
    }

    /// The slot in `owned` of an account this client owns.
    fn slot(&self, account: u32) -> Option<usize> {
        if account % self.plan.clients != self.client_index {
            return None;
        }
        usize::try_from(account / self.plan.clients).ok()
    }

    /// The next transfer, with a fresh id.
    fn next(&mut self) -> (NewTransfer, Route) {
        self.n_created += 1;
        let amount = self.rng.gen_range(1..=TRANSFER_AMOUNT_MAX);
        let route = self.route_choose(amount);
        let name = |index: Option<u32>| match index {
            None => self.plan.treasury.clone(),
            Some(index) => self.plan.accounts[index as usize].clone(),
        };
        let transfer = NewTransfer {
            id: format!(
                "{}-{}-{}",
                self.plan.prefix, self.client_index, self.n_created
            ),
            from: name(route.from),
            to: name(Some(route.to)),
            amount,
            memo: None,
        };
        (transfer, route)
    }

    fn route_choose(&mut self, amount: u64) -> Route {
        let mix = self.plan.mix_percent > 0;
        if mix && self.rng.gen_range(0..100) < self.plan.mix_percent {
            if let Some(route) = self.route_between_accounts(amount) {
                return route;
            }
        }
        // From the treasury. With a mix, fund this client's own accounts so it can pay later.
        let to = match self.owned.len() {
            n if mix && n > 0 => self.owned[self.rng.gen_range(0..n)],
            _ => self.account_random(),
        };
        Route {
            from: None,
            to,
            amount,
        }
    }

    /// An owned account with at least `amount` known funds pays a random other account; the
    /// amount is reserved until the answer.
    fn route_between_accounts(&mut self, amount: u64) -> Option<Route> {
        let n = self.owned.len();
        if n == 0 || self.plan.accounts.len() < 2 {
            return None;
        }
        let offset = self.rng.gen_range(0..n);
        let slot = (0..n)
            .map(|i| (offset + i) % n)
            .find(|&slot| self.spendable[slot] >= amount)?;
        let from = self.owned[slot];
        let mut to = self.account_random();
        if to == from {
            to = (to + 1) % u32::try_from(self.plan.accounts.len()).unwrap_or(u32::MAX);
        }
        self.spendable[slot] -= amount;
        Some(Route {
            from: Some(from),
            to,
            amount,
        })
    }

    /// The transfer was acknowledged: money that arrived in an owned account may be spent.
    fn acked(&mut self, route: Route) {
        if let Some(slot) = self.slot(route.to) {
            self.spendable[slot] += route.amount;
        }
    }

    /// The transfer was definitely not posted: its reservation is free again.
    fn refused(&mut self, route: Route) {
        if let Some(slot) = route.from.and_then(|from| self.slot(from)) {
            self.spendable[slot] += route.amount;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Client tasks.

/// Live counters for the progress bar.
#[derive(Default)]
struct Progress {
    acked: AtomicU64,
    errors: AtomicU64,
}

/// The run's clock: the client tasks start at `start`, measure from `window_start` and stop
/// sending at `window_end`.
#[derive(Clone, Copy)]
struct Clock {
    start: Instant,
    window_start: Instant,
    window_end: Instant,
}

impl Clock {
    fn micros_since_start(&self, at: Instant) -> u64 {
        micros(at.saturating_duration_since(self.start))
    }

    fn in_window(&self, at: Instant) -> bool {
        at >= self.window_start && at < self.window_end
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// A request that got no definite answer: re-sent after the run to learn its outcome.
enum Unresolved {
    Single(NewTransfer, Route),
    Batch(Vec<NewTransfer>, Vec<Route>),
}

/// What one client task measured and learned.
struct TaskOutcome {
    request_latency: Histogram<u64>,
    transfer_latency: Histogram<u64>,
    events: Vec<RequestEvent>,
    errors: BTreeMap<String, u64>,
    expected: Expected,
    unresolved: Vec<Unresolved>,
}

impl TaskOutcome {
    fn new() -> Self {
        Self {
            request_latency: latency_histogram(),
            transfer_latency: latency_histogram(),
            events: Vec::new(),
            errors: BTreeMap::new(),
            expected: Expected::default(),
            unresolved: Vec::new(),
        }
    }

    fn error(&mut self, code: &str, count: u64) {
        *self.errors.entry(code.to_owned()).or_default() += count;
    }
}

/// Counts of one request's transfers.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    acked: u32,
    failed: u32,
}

/// One client task: sends until the window ends (or `stop`), one request at a time.
async fn client_run(
    client: Client,
    mut source: Source,
    clock: Clock,
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
) -> Result<TaskOutcome, ClientError> {
    let mut outcome = TaskOutcome::new();
    let batch = source.plan.batch;
    while Instant::now() < clock.window_end && !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let counts = match batch {
            None => single_send(&client, &mut source, &mut outcome).await?,
            Some(size) => batch_send(&client, &mut source, &mut outcome, size).await?,
        };
        let done = Instant::now();
        let latency_us = micros(done.saturating_duration_since(started));
        outcome.events.push(RequestEvent {
            done_us: clock.micros_since_start(done),
            latency_us,
            transfers_acked: counts.acked,
            transfers_failed: counts.failed,
        });
        if clock.in_window(done) {
            latency_record(&mut outcome.request_latency, latency_us, 1);
            latency_record(
                &mut outcome.transfer_latency,
                latency_us,
                u64::from(counts.acked),
            );
        }
        progress
            .acked
            .fetch_add(u64::from(counts.acked), Ordering::Relaxed);
        progress
            .errors
            .fetch_add(u64::from(counts.failed), Ordering::Relaxed);
    }
    Ok(outcome)
}

/// Sends one transfer and books the answer.
async fn single_send(
    client: &Client,
    source: &mut Source,
    outcome: &mut TaskOutcome,
) -> Result<Counts, ClientError> {
    let (transfer, route) = source.next();
    let failed = Counts {
        acked: 0,
        failed: 1,
    };
    match client.transfer(&transfer).await {
        Ok((posted, _created))
            if posted.id == transfer.id
                && posted.amount == transfer.amount
                && posted.from == transfer.from
                && posted.to == transfer.to =>
        {
            outcome.expected.post(route);
            source.acked(route);
            Ok(Counts {
                acked: 1,
                failed: 0,
            })
        }
        Ok(_) => {
            // A 2xx for something else: not booked; the read-back will show what it did.
            outcome.error("mismatched_answer", 1);
            Ok(failed)
        }
        Err(ClientError::Api { code, .. }) => {
            outcome.error(&code, 1);
            source.refused(route);
            Ok(failed)
        }
        Err(ClientError::Unavailable { .. }) => {
            outcome.error("unavailable", 1);
            outcome.unresolved.push(Unresolved::Single(transfer, route));
            Ok(failed)
        }
        Err(ClientError::Decode(_)) => {
            outcome.error("decode", 1);
            outcome.unresolved.push(Unresolved::Single(transfer, route));
            Ok(failed)
        }
        Err(error @ ClientError::Config(_)) => Err(error),
    }
}

/// Sends one batch of `size` transfers and books each item's answer.
async fn batch_send(
    client: &Client,
    source: &mut Source,
    outcome: &mut TaskOutcome,
    size: usize,
) -> Result<Counts, ClientError> {
    let (transfers, routes): (Vec<NewTransfer>, Vec<Route>) =
        (0..size).map(|_| source.next()).unzip();
    let n = u32::try_from(size).unwrap_or(u32::MAX);
    let all_failed = Counts {
        acked: 0,
        failed: n,
    };
    match client.batch(&transfers, false).await {
        Ok(items) if items.len() == transfers.len() => {
            let mut counts = Counts::default();
            for ((item, transfer), route) in items.iter().zip(&transfers).zip(&routes) {
                match batch_item_outcome(item, transfer) {
                    Ok(()) => {
                        outcome.expected.post(*route);
                        source.acked(*route);
                        counts.acked += 1;
                    }
                    Err(code) => {
                        outcome.error(&code, 1);
                        if item.status != 200 && item.status != 201 {
                            source.refused(*route);
                        }
                        counts.failed += 1;
                    }
                }
            }
            Ok(counts)
        }
        Ok(_) => {
            outcome.error("decode", u64::from(n));
            outcome
                .unresolved
                .push(Unresolved::Batch(transfers, routes));
            Ok(all_failed)
        }
        Err(ClientError::Api { code, .. }) => {
            outcome.error(&code, u64::from(n));
            for route in routes {
                source.refused(route);
            }
            Ok(all_failed)
        }
        Err(ClientError::Unavailable { .. }) => {
            outcome.error("unavailable", u64::from(n));
            outcome
                .unresolved
                .push(Unresolved::Batch(transfers, routes));
            Ok(all_failed)
        }
        Err(ClientError::Decode(_)) => {
            outcome.error("decode", u64::from(n));
            outcome
                .unresolved
                .push(Unresolved::Batch(transfers, routes));
            Ok(all_failed)
        }
        Err(error @ ClientError::Config(_)) => Err(error),
    }
}

/// `Ok` when a batch item acknowledges exactly `transfer`; else the error code to count.
fn batch_item_outcome(item: &BatchItem, transfer: &NewTransfer) -> Result<(), String> {
    if item.status == 200 || item.status == 201 {
        return match &item.transfer {
            Some(posted)
                if posted.id == transfer.id
                    && posted.amount == transfer.amount
                    && posted.from == transfer.from
                    && posted.to == transfer.to =>
            {
                Ok(())
            }
            _ => Err("mismatched_answer".to_owned()),
        };
    }
    Err(match &item.error {
        Some(error) => error.code.clone(),
        None => format!("http_{}", item.status),
    })
}

// ---------------------------------------------------------------------------------------------
// Leader kills.

/// What the killer task needs.
struct KillSetup {
    every: Duration,
    restart_after: Duration,
    kill_command: String,
    restart_command: String,
}

/// One kill as it happened, in µs since the run started.
struct KillEvent {
    times: KillTimes,
    node: Option<u64>,
    ok: bool,
    output: String,
    restart_ok: Option<bool>,
    restart_output: String,
    /// When the restart command returned (the node serves /health again), µs since start.
    restart_done_us: Option<u64>,
}

/// Kills the leader every `every` of the measured window — only while a whole period remains
/// after the kill, so each outage is measured before the next kill or the end — and restarts it
/// `restart_after` later. Ends with the window or on `stop`; a restart in progress is awaited.
async fn killer_run(
    client: Client,
    setup: KillSetup,
    clock: Clock,
    stop: Arc<AtomicBool>,
) -> Vec<KillEvent> {
    let mut kills = Vec::new();
    for k in 1_u32.. {
        let at = clock.window_start + setup.every * k;
        if at + setup.every > clock.window_end {
            break;
        }
        tokio::time::sleep_until(at).await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let event = kill_once(&client, &setup, clock).await;
        tokio::time::sleep(setup.restart_after).await;
        kills.push(restart_once(&setup, clock, event).await);
    }
    kills
}

async fn kill_once(client: &Client, setup: &KillSetup, clock: Clock) -> KillEvent {
    let leader = client
        .cluster_status(None)
        .await
        .ok()
        .and_then(|status| status.leader_id);
    let started = Instant::now();
    let (ok, output) = if setup.kill_command.contains("{node}") && leader.is_none() {
        (false, "no leader known: nothing to kill".to_owned())
    } else {
        let node_text = leader.map(|id| id.to_string()).unwrap_or_default();
        shell_run(&setup.kill_command.replace("{node}", &node_text)).await
    };
    let done = Instant::now();
    let node = killed_node_parse(&output).or(leader);
    tracing::info!(?node, ok, "leader kill");
    KillEvent {
        times: KillTimes {
            started_us: clock.micros_since_start(started),
            done_us: clock.micros_since_start(done),
        },
        node,
        ok,
        output,
        restart_ok: None,
        restart_output: String::new(),
        restart_done_us: None,
    }
}

async fn restart_once(setup: &KillSetup, clock: Clock, mut event: KillEvent) -> KillEvent {
    let Some(node) = event.node.filter(|_| event.ok) else {
        return event;
    };
    let command = setup.restart_command.replace("{node}", &node.to_string());
    let (ok, output) = shell_run(&command).await;
    event.restart_ok = Some(ok);
    event.restart_output = output;
    event.restart_done_us = Some(clock.micros_since_start(Instant::now()));
    event
}

/// `scripts/cluster.sh kill-leader` prints `killed leader node N (pid P)`.
fn killed_node_parse(output: &str) -> Option<u64> {
    let rest = output.split("killed leader node ").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Runs `sh -c command` with no stdin under `COMMAND_TIMEOUT`; success and its output (stdout
/// then stderr, trimmed and shortened). A command still running at the deadline is killed.
async fn shell_run(command: &str) -> (bool, String) {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(COMMAND_TIMEOUT, child).await {
        Ok(Ok(output)) => {
            let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            let text: String = text.trim().chars().take(COMMAND_OUTPUT_CHARS_MAX).collect();
            (output.status.success(), text)
        }
        Ok(Err(error)) => (false, format!("cannot run {command:?}: {error}")),
        Err(_) => (
            false,
            format!("{command:?} still running after {COMMAND_TIMEOUT:?}: killed"),
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Setup and verification.

async fn accounts_create(client: &Client, plan: &Plan, currency: &str) -> anyhow::Result<()> {
    let treasury = NewAccount {
        id: plan.treasury.clone(),
        currency: currency.to_owned(),
        allow_overdraft: true,
    };
    client
        .create_account(&treasury)
        .await
        .context("create the treasury account")?;
    let results: Vec<Result<(), ClientError>> = stream::iter(plan.accounts.iter())
        .map(|id| async move {
            let account = NewAccount {
                id: id.clone(),
                currency: currency.to_owned(),
                allow_overdraft: false,
            };
            client.create_account(&account).await.map(|_| ())
        })
        .buffer_unordered(SETUP_REQUESTS_IN_FLIGHT)
        .collect()
        .await;
    for result in results {
        result.context("create the bench accounts")?;
    }
    Ok(())
}

/// Re-sends every request that got no definite answer (same ids and content, so each takes
/// effect at most once) and books what it learns; returns (re-sent, still unknown).
async fn unresolved_settle(
    client: &Client,
    unresolved: Vec<Unresolved>,
    expected: &mut Expected,
) -> (u64, u64) {
    let n_requests = unresolved.len() as u64;
    let client = client.clone().with_retry_deadline(RESOLVE_RETRY_DEADLINE);
    let answers: Vec<(Vec<Route>, Option<Vec<bool>>)> = stream::iter(unresolved)
        .map(|request| {
            let client = client.clone();
            async move { resend(&client, request).await }
        })
        .buffer_unordered(RESOLVE_REQUESTS_IN_FLIGHT)
        .collect()
        .await;
    let mut unknown = 0;
    for (routes, acked) in answers {
        match acked {
            Some(acked) => {
                for (route, acked) in routes.into_iter().zip(acked) {
                    if acked {
                        expected.post(route);
                    }
                }
            }
            None => unknown += 1,
        }
    }
    (n_requests, unknown)
}

/// One re-send: the routes and, when the answer is definite, which transfers were acknowledged.
async fn resend(client: &Client, request: Unresolved) -> (Vec<Route>, Option<Vec<bool>>) {
    match request {
        Unresolved::Single(transfer, route) => {
            let acked = match client.transfer(&transfer).await {
                Ok(_) => Some(vec![true]),
                Err(ClientError::Api { .. }) => Some(vec![false]),
                Err(_) => None,
            };
            (vec![route], acked)
        }
        Unresolved::Batch(transfers, routes) => {
            let acked = match client.batch(&transfers, false).await {
                Ok(items) if items.len() == transfers.len() => Some(
                    items
                        .iter()
                        .zip(&transfers)
                        .map(|(item, transfer)| batch_item_outcome(item, transfer).is_ok())
                        .collect(),
                ),
                Err(ClientError::Api { .. }) => Some(vec![false; transfers.len()]),
                Ok(_) | Err(_) => None,
            };
            (routes, acked)
        }
    }
}

/// Reads the treasury and every account back and compares them with what was acknowledged.
async fn conservation_check(
    client: &Client,
    plan: &Plan,
    expected: &Expected,
    consistency: Consistency,
    (requests_resent, requests_unresolved): (u64, u64),
) -> Conservation {
    let ids = std::iter::once(&plan.treasury).chain(plan.accounts.iter());
    let reads: Vec<(usize, Result<raftpay_client::Account, ClientError>)> =
        stream::iter(ids.enumerate())
            .map(|(index, id)| async move { (index, client.get_account(id, consistency).await) })
            .buffer_unordered(SETUP_REQUESTS_IN_FLIGHT)
            .collect()
            .await;
    let mut check = Conservation {
        verdict: Verdict::Ok,
        accounts_read: 0,
        balance_sum: 0,
        treasury_debits: 0,
        treasury_credits: 0,
        acknowledged_amount: expected.treasury_debits,
        transfers_acknowledged: expected.transfers,
        requests_resent,
        requests_unresolved,
        accounts_mismatched: 0,
        mismatches: Vec::new(),
        problems: Vec::new(),
    };
    let mut reads_failed = 0_u64;
    for (index, read) in reads {
        let account = match read {
            Ok(account) => account,
            Err(error) => {
                reads_failed += 1;
                if reads_failed <= 3 {
                    check.problems.push(format!("read failed: {error}"));
                }
                continue;
            }
        };
        check.accounts_read += 1;
        check.balance_sum += i128::from(account.balance);
        if index == 0 {
            check.treasury_debits = account.debits;
            check.treasury_credits = account.credits;
            continue;
        }
        let account_index = u32::try_from(index - 1).unwrap_or(u32::MAX);
        let balance_expected = expected.balances.get(&account_index).copied().unwrap_or(0);
        if i128::from(account.balance) != balance_expected {
            check.accounts_mismatched += 1;
            if check.mismatches.len() < MISMATCHES_LISTED_MAX {
                check.mismatches.push(format!(
                    "{}: balance {} expected {balance_expected}",
                    account.id, account.balance
                ));
            }
        }
    }
    conservation_judge(&mut check, reads_failed);
    check
}

/// Sets the verdict from the numbers the read-back collected.
fn conservation_judge(check: &mut Conservation, reads_failed: u64) {
    let mut violated = false;
    if check.balance_sum != 0 {
        violated = true;
        check.problems.push(format!(
            "sum of balances is {}, not 0: money was created or destroyed",
            check.balance_sum
        ));
    }
    if reads_failed > 0 {
        check
            .problems
            .push(format!("{reads_failed} account reads failed"));
    }
    if check.requests_unresolved > 0 {
        check.problems.push(format!(
            "{} requests never got a definite answer: their transfers may or may not exist",
            check.requests_unresolved
        ));
    }
    let complete = reads_failed == 0 && check.requests_unresolved == 0;
    if complete {
        if u128::from(check.treasury_debits) != check.acknowledged_amount {
            violated = true;
            check.problems.push(format!(
                "treasury debits {} != acknowledged amount {}: a transfer posted twice, or one \
                 acknowledged was lost, or one not acknowledged posted",
                check.treasury_debits, check.acknowledged_amount
            ));
        }
        if check.treasury_credits != 0 {
            violated = true;
            check.problems.push(format!(
                "treasury credits {}: the bench never pays into the treasury",
                check.treasury_credits
            ));
        }
        if check.accounts_mismatched > 0 {
            violated = true;
            check.problems.push(format!(
                "{} accounts differ from the acknowledged transfers",
                check.accounts_mismatched
            ));
        }
    }
    check.verdict = match (violated, complete) {
        (true, _) => Verdict::Violated,
        (false, false) => Verdict::Unverified,
        (false, true) => Verdict::Ok,
    };
}

// ---------------------------------------------------------------------------------------------
// CPU accounting (Linux /proc; `None` elsewhere).

/// CPU seconds this process has used (user + system, all threads).
fn process_cpu_seconds() -> Option<f64> {
    pid_cpu_seconds("self")
}

/// CPU seconds process `pid` (a number, or `self`) has used, from `/proc/<pid>/stat`.
fn pid_cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line; the slice starts at field 3.
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some((user + system) as f64 / PROC_TICKS_PER_SECOND)
}

/// (busy, total) ticks of the whole machine since boot, from the `cpu` line of /proc/stat.
fn machine_cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|value| value.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal
    let total: u64 = values.iter().sum();
    let idle = values.get(3)? + values.get(4)?;
    Some((total - idle, total))
}

/// The pids in the `node*.pid` files of `dir` (as `scripts/cluster.sh` writes them).
fn node_pids(dir: &std::path::Path) -> BTreeMap<String, String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let node = name.strip_prefix("node")?.strip_suffix(".pid")?.to_owned();
            let pid = std::fs::read_to_string(entry.path())
                .ok()?
                .trim()
                .to_owned();
            pid.bytes()
                .all(|b| b.is_ascii_digit())
                .then_some((node, pid))
        })
        .collect()
}

#[derive(Clone)]
struct CpuSample {
    at: Instant,
    process_s: Option<f64>,
    machine: Option<(u64, u64)>,
    /// Node → (pid, CPU seconds) for the `--pid-dir` nodes.
    nodes: BTreeMap<String, (String, f64)>,
}

impl CpuSample {
    fn take(pid_dir: Option<&std::path::Path>) -> Self {
        let nodes = pid_dir
            .map(node_pids)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(node, pid)| {
                let seconds = pid_cpu_seconds(&pid)?;
                Some((node, (pid, seconds)))
            })
            .collect();
        Self {
            at: Instant::now(),
            process_s: process_cpu_seconds(),
            machine: machine_cpu_ticks(),
            nodes,
        }
    }

    /// CPU cores used by each node process that ran (with the same pid) through the window.
    fn nodes_since(&self, start: &CpuSample, wall_s: f64) -> BTreeMap<String, f64> {
        self.nodes
            .iter()
            .filter_map(|(node, (pid, after))| {
                let (pid_before, before) = start.nodes.get(node)?;
                (pid_before == pid && wall_s > 0.0)
                    .then(|| (node.clone(), (after - before) / wall_s))
            })
            .collect()
    }

    fn report_since(self, start: &CpuSample) -> CpuReport {
        let wall_s = self.at.saturating_duration_since(start.at).as_secs_f64();
        let machine_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let bench_cores = match (start.process_s, self.process_s) {
            (Some(before), Some(after)) if wall_s > 0.0 => Some((after - before) / wall_s),
            _ => None,
        };
        let machine_busy_cores = match (start.machine, self.machine) {
            (Some((busy_0, total_0)), Some((busy_1, total_1))) if total_1 > total_0 => Some(
                (busy_1.saturating_sub(busy_0)) as f64 / (total_1 - total_0) as f64
                    * machine_cpus as f64,
            ),
            _ => None,
        };
        CpuReport {
            bench_cores,
            machine_busy_cores,
            machine_cpus,
            nodes_cores: self.nodes_since(start, wall_s),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The progress bar.

/// Draws elapsed time, phase, transfers/s and errors on stderr until the window ends or `stop`.
async fn progress_run(progress: Arc<Progress>, clock: Clock, stop: Arc<AtomicBool>) {
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

fn plan_make(args: &BenchArgs, seed: u64) -> Plan {
    let prefix = format!("b{:08x}", rand::random::<u32>());
    Plan {
        treasury: format!("{prefix}-treasury"),
        accounts: (0..args.accounts)
            .map(|i| format!("{prefix}-a{i}"))
            .collect(),
        prefix,
        batch: args.batch.map(|k| usize::try_from(k).unwrap_or(1)),
        mix_percent: args.mix,
        clients: args.clients,
        seed,
    }
}

/// Runs the client tasks (and the killer and the progress bar) through warm-up and window.
async fn load_run(
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
struct LoadOutcome {
    outcomes: Vec<TaskOutcome>,
    kills: Vec<KillEvent>,
    clock: Clock,
    cpu: CpuReport,
    elections: Elections,
}

/// The inputs of the report.
struct ReportParts<'a> {
    args: &'a BenchArgs,
    opts: &'a ClientOpts,
    plan: &'a Plan,
    started_unix_s: u64,
    clock: Clock,
    events: Vec<RequestEvent>,
    request_latency: Histogram<u64>,
    transfer_latency: Histogram<u64>,
    errors: ErrorReport,
    kills: Vec<KillEvent>,
    elections: Elections,
    cpu: CpuReport,
    conservation: Conservation,
}

fn report_make(parts: ReportParts<'_>) -> BenchReport {
    let ReportParts {
        args,
        opts,
        plan,
        clock,
        events,
        ..
    } = &parts;
    let window_start_us = clock.micros_since_start(clock.window_start);
    let window_end_us = clock.micros_since_start(clock.window_end);
    let duration_s = args.duration.as_secs_f64();
    let seconds = args.duration.as_secs_f64().ceil() as u64;
    let in_window =
        |event: &&RequestEvent| event.done_us >= window_start_us && event.done_us < window_end_us;
    let transfers_acked: u64 = events
        .iter()
        .filter(in_window)
        .map(|event| u64::from(event.transfers_acked))
        .sum();
    let requests = events.iter().filter(in_window).count() as u64;
    let mut ack_times: Vec<u64> = events
        .iter()
        .filter(|event| event.transfers_acked > 0)
        .map(|event| event.done_us)
        .collect();
    ack_times.sort_unstable();
    let (kills, failover) = kills_report(&parts.kills, &ack_times, window_start_us, window_end_us);
    let failover = args.kill_leader_every.map(|_| failover);
    BenchReport {
        label: args.label.clone().unwrap_or_else(|| label_default(args)),
        started_unix_s: parts.started_unix_s,
        config: ReportConfig {
            nodes: opts.node.clone(),
            clients: args.clients,
            follow_leader: !args.no_follow_leader,
            accounts: args.accounts,
            batch: args.batch,
            mix_percent: args.mix,
            currency: args.currency.clone(),
            warmup_s: args.warmup.as_secs_f64(),
            duration_s,
            kill_leader_every_s: args.kill_leader_every.map(|every| every.as_secs_f64()),
            restart_after_s: args.restart_after.as_secs_f64(),
            prefix: plan.prefix.clone(),
            seed: plan.seed,
            consistency: Consistency::from(opts.consistency).as_str().to_owned(),
        },
        transfers_acked,
        requests,
        transfers_per_s: transfers_acked as f64 / duration_s,
        requests_per_s: requests as f64 / duration_s,
        latency_request: LatencySummary::from_histogram(&parts.request_latency),
        latency_transfer: LatencySummary::from_histogram(&parts.transfer_latency),
        errors: parts.errors.clone(),
        per_second: per_second(events, window_start_us, seconds),
        kills,
        failover,
        elections: parts.elections.clone(),
        cpu: parts.cpu.clone(),
        conservation: parts.conservation.clone(),
    }
}

fn kills_report(
    kills: &[KillEvent],
    ack_times: &[u64],
    window_start_us: u64,
    window_end_us: u64,
) -> (Vec<KillReport>, FailoverSummary) {
    let succeeded: Vec<KillTimes> = kills.iter().filter(|k| k.ok).map(|k| k.times).collect();
    let windows = kill_windows(ack_times, &succeeded, window_end_us);
    let mut windows_iter = windows.iter();
    let seconds_since_window = |at_us: u64| at_us.saturating_sub(window_start_us) as f64 / 1e6;
    let reports = kills
        .iter()
        .enumerate()
        .map(|(index, kill)| KillReport {
            at_s: seconds_since_window(kill.times.done_us),
            node: kill.node,
            ok: kill.ok,
            command_ms: (kill.times.done_us - kill.times.started_us) as f64 / 1000.0,
            output: kill.output.clone(),
            restart_ok: kill.restart_ok,
            restart_output: kill.restart_output.clone(),
            restart_at_s: kill.restart_done_us.map(seconds_since_window),
            previous_back_s: index
                .checked_sub(1)
                .and_then(|previous| kills[previous].restart_done_us)
                .map(|back_us| kill.times.started_us.saturating_sub(back_us) as f64 / 1e6),
            window: if kill.ok {
                windows_iter.next().copied()
            } else {
                None
            },
        })
        .collect();
    (reports, FailoverSummary::from_windows(&windows))
}

fn label_default(args: &BenchArgs) -> String {
    let mode = match args.batch {
        None => "single".to_owned(),
        Some(k) => format!("batch {k}"),
    };
    let mut label = format!("{mode}, {} clients", args.clients);
    if args.mix > 0 {
        label.push_str(&format!(", mix {}%", args.mix));
    }
    if let Some(every) = args.kill_leader_every {
        label.push_str(&format!(", kill leader every {} s", every.as_secs_f64()));
    }
    label
}

// ---------------------------------------------------------------------------------------------
// Output.

/// The human-readable summary.
pub fn report_text(report: &BenchReport) -> String {
    let config = &report.config;
    let mut out = format!(
        "raftpay bench: {} ({} nodes, {}, {} accounts, {:.0} s measured after {:.0} s warm-up, prefix {}, seed {})\n",
        report.label,
        config.nodes.len(),
        if config.follow_leader {
            "clients follow the leader"
        } else {
            "clients stay on their node (followers forward)"
        },
        config.accounts,
        config.duration_s,
        config.warmup_s,
        config.prefix,
        config.seed
    );
    out += &format!(
        "throughput:       {:.0} transfers/s, {:.0} requests/s ({} transfers acknowledged in the window)\n",
        report.transfers_per_s, report.requests_per_s, report.transfers_acked
    );
    out += &latency_line("latency/request:", &report.latency_request);
    if config.batch.is_some() {
        out += &latency_line("latency/transfer:", &report.latency_transfer);
    }
    out += &format!("errors:           {}", report.errors.total);
    if !report.errors.by_code.is_empty() {
        let codes: Vec<String> = report
            .errors
            .by_code
            .iter()
            .map(|(code, count)| format!("{code} {count}"))
            .collect();
        out += &format!(" ({})", codes.join(", "));
    }
    out.push('\n');
    if let Some(failover) = &report.failover {
        out += &failover_text(report, failover);
    }
    out += &elections_text(&report.elections, report.kills.len());
    out += &cpu_text(&report.cpu);
    out += &conservation_text(&report.conservation);
    out
}

fn elections_text(elections: &Elections, kills: usize) -> String {
    let show = |term: Option<u64>| term.map_or_else(|| "?".to_owned(), |t| t.to_string());
    let new_terms = elections
        .new_terms
        .map_or_else(|| "unknown".to_owned(), |n| n.to_string());
    format!(
        "elections:        {new_terms} new terms in the window (term {} -> {}; {kills} leader kills)\n",
        show(elections.term_start),
        show(elections.term_end)
    )
}

fn latency_line(name: &str, latency: &LatencySummary) -> String {
    format!(
        "{name:<18}p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms\n",
        latency.p50_ms, latency.p90_ms, latency.p99_ms, latency.p999_ms, latency.max_ms
    )
}

fn failover_text(report: &BenchReport, failover: &FailoverSummary) -> String {
    let failed = report.kills.iter().filter(|kill| !kill.ok).count();
    let mut out = format!(
        "failover:         {} kills; kill -> next acknowledged transfer: median {:.0} ms, max {:.0} ms; longest stall: median {:.0} ms, max {:.0} ms",
        failover.kills,
        failover.to_next_ack_ms_median,
        failover.to_next_ack_ms_max,
        failover.longest_gap_ms_median,
        failover.longest_gap_ms_max
    );
    if failover.censored > 0 {
        out += &format!(" ({} with no ack before the next kill)", failover.censored);
    }
    if failed > 0 {
        out += &format!("; {failed} kill commands failed");
    }
    out.push('\n');
    for kill in &report.kills {
        let node = kill.node.map_or("?".to_owned(), |node| node.to_string());
        let previous = kill
            .previous_back_s
            .map(|back| format!(" (previous victim back {back:.1} s before)"))
            .unwrap_or_default();
        match &kill.window {
            Some(window) => {
                out += &format!(
                    "  kill at {:>6.1} s: node {node}, next ack after {:.0} ms, longest stall {:.0} ms{previous}\n",
                    kill.at_s, window.to_next_ack_ms, window.longest_gap_ms
                );
            }
            None => out += &format!("  kill at {:>6.1} s failed: {}\n", kill.at_s, kill.output),
        }
    }
    out
}

fn cpu_text(cpu: &CpuReport) -> String {
    let cores = |value: Option<f64>| value.map_or("?".to_owned(), |v| format!("{v:.2}"));
    let nodes: Vec<String> = cpu
        .nodes_cores
        .iter()
        .map(|(node, cores)| format!("node {node} {cores:.2}"))
        .collect();
    let nodes = match nodes.is_empty() {
        true => String::new(),
        false => format!(" (nodes: {})", nodes.join(", ")),
    };
    format!(
        "cpu:              bench {} cores, whole machine {} of {} cores busy{nodes}\n",
        cores(cpu.bench_cores),
        cores(cpu.machine_busy_cores),
        cpu.machine_cpus
    )
}

fn conservation_text(check: &Conservation) -> String {
    let verdict = match check.verdict {
        Verdict::Ok => "OK",
        Verdict::Violated => "VIOLATED",
        Verdict::Unverified => "UNVERIFIED",
    };
    let mut out = format!(
        "conservation:     {verdict}: {} accounts read, sum of balances {}, treasury debits {} vs acknowledged {} ({} transfers acknowledged in the whole run",
        check.accounts_read,
        check.balance_sum,
        check.treasury_debits,
        check.acknowledged_amount,
        check.transfers_acknowledged
    );
    if check.requests_resent > 0 {
        out += &format!(
            ", {} unanswered requests re-sent, {} still unknown",
            check.requests_resent, check.requests_unresolved
        );
    }
    out += &format!("), {} accounts mismatched\n", check.accounts_mismatched);
    for problem in check.problems.iter().chain(&check.mismatches) {
        out += &format!("  {problem}\n");
    }
    out
}

/// The plot: acknowledged transfers/s (left axis) and p99 ms (right axis) per second of the
/// window, each kill marked.
pub fn chart(report: &BenchReport) -> plot::Chart {
    let throughput = report
        .per_second
        .iter()
        .map(|second| (second.second as f64 + 0.5, second.transfers as f64))
        .collect();
    let p99 = report
        .per_second
        .iter()
        .filter_map(|second| Some((second.second as f64 + 0.5, second.p99_ms?)))
        .collect();
    let markers = report
        .kills
        .iter()
        .map(|kill| plot::Marker {
            x: kill.at_s,
            label: match kill.node {
                Some(node) => format!("kill node {node}"),
                None => "kill".to_owned(),
            },
            color: "#888888".to_owned(),
        })
        .collect();
    plot::Chart {
        title: format!("raftpay bench: {}", report.label),
        x_label: "seconds of the measured window".to_owned(),
        left: plot::Series {
            name: "transfers/s".to_owned(),
            color: "#1f77b4".to_owned(),
            points: throughput,
        },
        right: Some(plot::Series {
            name: "p99 ms (per request)".to_owned(),
            color: "#d62728".to_owned(),
            points: p99,
        }),
        markers,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(accounts: u32, clients: u32, mix_percent: u8) -> Arc<Plan> {
        Arc::new(Plan {
            prefix: "bx".into(),
            treasury: "bx-treasury".into(),
            accounts: (0..accounts).map(|i| format!("bx-a{i}")).collect(),
            batch: None,
            mix_percent,
            clients,
            seed: 7,
        })
    }

    /// Goal: with a mix, an account only ever pays out of money its owner saw arrive, so no
    /// generated transfer can overdraw. Method: simulate acknowledging everything and track the
    /// real balances.
    #[test]
    fn generated_transfers_never_overdraw_an_account() {
        let plan = plan(10, 3, 60);
        let mut sources: Vec<Source> = (0..3).map(|i| Source::new(Arc::clone(&plan), i)).collect();
        let mut balances = [0_i128; 10];
        let mut moves = 0;
        for round in 0..3000 {
            let source = &mut sources[round % 3];
            let (transfer, route) = source.next();
            assert!(transfer.amount >= 1 && transfer.amount <= TRANSFER_AMOUNT_MAX);
            assert_eq!(transfer.to, plan.accounts[route.to as usize]);
            if let Some(from) = route.from {
                moves += 1;
                assert_eq!(transfer.from, plan.accounts[from as usize]);
                assert_ne!(from, route.to);
                balances[from as usize] -= i128::from(route.amount);
                assert!(balances[from as usize] >= 0, "overdrew account {from}");
            } else {
                assert_eq!(transfer.from, "bx-treasury");
            }
            balances[route.to as usize] += i128::from(route.amount);
            source.acked(route);
        }
        assert!(moves > 500, "the mix produced only {moves} moves");
    }

    #[test]
    fn transfer_ids_are_unique_and_within_the_contract() {
        let plan = plan(5, 2, 0);
        let mut first = Source::new(Arc::clone(&plan), 0);
        let mut second = Source::new(Arc::clone(&plan), 1);
        let mut ids = std::collections::BTreeSet::new();
        for _ in 0..100 {
            for source in [&mut first, &mut second] {
                let (transfer, route) = source.next();
                assert!(route.from.is_none(), "no mix: treasury only");
                assert!(transfer.id.len() <= 64);
                assert!(ids.insert(transfer.id));
            }
        }
    }

    #[test]
    fn a_refused_move_frees_its_reservation() {
        let plan = plan(1, 1, 100);
        let mut source = Source::new(plan, 0);
        source.acked(Route {
            from: None,
            to: 0,
            amount: 50,
        });
        // Only one account: nothing to move to, so everything comes from the treasury.
        let (_, route) = source.next();
        assert!(route.from.is_none());
        let plan = self::plan(2, 1, 100);
        let mut source = Source::new(plan, 0);
        source.spendable = vec![100, 0];
        let (_, route) = source.next();
        assert_eq!(route.from, Some(0));
        assert_eq!(source.spendable[0], 100 - route.amount);
        source.refused(route);
        assert_eq!(source.spendable[0], 100);
    }

    #[test]
    fn the_killed_node_is_read_from_the_script_output() {
        assert_eq!(
            killed_node_parse("killed leader node 2 (pid 1234)"),
            Some(2)
        );
        assert_eq!(killed_node_parse("cluster.sh: no leader"), None);
    }

    fn conservation(treasury_debits: u64, acknowledged: u128, sum: i128) -> Conservation {
        Conservation {
            verdict: Verdict::Ok,
            accounts_read: 3,
            balance_sum: sum,
            treasury_debits,
            treasury_credits: 0,
            acknowledged_amount: acknowledged,
            transfers_acknowledged: 2,
            requests_resent: 0,
            requests_unresolved: 0,
            accounts_mismatched: 0,
            mismatches: Vec::new(),
            problems: Vec::new(),
        }
    }

    #[test]
    fn conservation_verdicts() {
        let mut check = conservation(30, 30, 0);
        conservation_judge(&mut check, 0);
        assert_eq!(check.verdict, Verdict::Ok, "{:?}", check.problems);

        let mut check = conservation(40, 30, 0);
        conservation_judge(&mut check, 0);
        assert_eq!(check.verdict, Verdict::Violated, "a transfer posted twice");

        let mut check = conservation(30, 30, 5);
        conservation_judge(&mut check, 0);
        assert_eq!(check.verdict, Verdict::Violated, "money created");

        let mut check = conservation(30, 30, 0);
        check.requests_unresolved = 1;
        conservation_judge(&mut check, 0);
        assert_eq!(check.verdict, Verdict::Unverified);

        let mut check = conservation(30, 30, 0);
        conservation_judge(&mut check, 1);
        assert_eq!(check.verdict, Verdict::Unverified);
    }

    #[test]
    fn expected_balances_follow_acknowledged_routes() {
        let mut expected = Expected::default();
        expected.post(Route {
            from: None,
            to: 1,
            amount: 10,
        });
        expected.post(Route {
            from: Some(1),
            to: 2,
            amount: 4,
        });
        let mut other = Expected::default();
        other.post(Route {
            from: None,
            to: 2,
            amount: 1,
        });
        expected.absorb(other);
        assert_eq!(expected.treasury_debits, 11);
        assert_eq!(expected.transfers, 3);
        assert_eq!(expected.balances[&1], 6);
        assert_eq!(expected.balances[&2], 5);
    }

    #[test]
    fn seconds_parse_with_limits() {
        assert_eq!(parse_seconds("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_seconds("0"), Ok(Duration::ZERO));
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("NaN").is_err());
        assert!(parse_seconds("1e9").is_err());
        assert!(parse_seconds("ten").is_err());
    }
}
