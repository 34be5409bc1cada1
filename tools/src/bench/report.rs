//! The report of a run: its types, how it is assembled from the measurements, and its text and
//! chart renderings (the JSON is the types' `Serialize`).

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use raftpay_client::Consistency;
use serde::Serialize;

use super::args::BenchArgs;
use super::failover::KillEvent;
use super::stats::{
    kill_windows, per_second, FailoverSummary, KillTimes, KillWindow, LatencySummary, RequestEvent,
    SecondStats,
};
use super::tasks::Clock;
use super::workload::Plan;
use super::{EXIT_CONSERVATION_VIOLATED, EXIT_ERRORS, EXIT_UNVERIFIED};
use crate::cli::ClientOpts;
use crate::plot;

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

/// The inputs of the report.
pub(super) struct ReportParts<'a> {
    pub(super) args: &'a BenchArgs,
    pub(super) opts: &'a ClientOpts,
    pub(super) plan: &'a Plan,
    pub(super) started_unix_s: u64,
    pub(super) clock: Clock,
    pub(super) events: Vec<RequestEvent>,
    pub(super) request_latency: Histogram<u64>,
    pub(super) transfer_latency: Histogram<u64>,
    pub(super) errors: ErrorReport,
    pub(super) kills: Vec<KillEvent>,
    pub(super) elections: Elections,
    pub(super) cpu: CpuReport,
    pub(super) conservation: Conservation,
}

pub(super) fn report_make(parts: ReportParts<'_>) -> BenchReport {
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

pub(super) fn kills_report(
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

pub(super) fn label_default(args: &BenchArgs) -> String {
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

pub(super) fn elections_text(elections: &Elections, kills: usize) -> String {
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

pub(super) fn latency_line(name: &str, latency: &LatencySummary) -> String {
    format!(
        "{name:<18}p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms\n",
        latency.p50_ms, latency.p90_ms, latency.p99_ms, latency.p999_ms, latency.max_ms
    )
}

pub(super) fn failover_text(report: &BenchReport, failover: &FailoverSummary) -> String {
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

pub(super) fn cpu_text(cpu: &CpuReport) -> String {
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

pub(super) fn conservation_text(check: &Conservation) -> String {
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
