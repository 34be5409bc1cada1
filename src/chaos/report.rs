//! The report of a chaos run: the figures (operations, faults by kind, unavailability after each
//! kind of fault, liveness, violations), a one-line verdict, the JSON history and summary, and an
//! SVG chart (`crate::plot`) of acknowledged transfers per second with every fault marked.
//!
//! Unavailability after a fault is the time from its injection to the completion of the first
//! acknowledged transfer that was invoked at or after the injection (answers to requests already
//! in flight do not count as recovery).
//!
//! Building the summary and the chart is pure; only `write_files` touches the disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::checker::{Findings, Observations};
use super::history::{FaultKind, History, Op, OpRequest, Outcome};
use crate::plot::{self, Chart, Marker, Series};

/// Median and maximum of the unavailability after one kind of fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unavailability {
    /// Faults of this kind.
    pub faults: u64,
    /// Faults after which no transfer was acknowledged before the run ended.
    pub never_recovered: u64,
    pub median_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

/// The figures of a run, written as `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// `PASS` or `FAIL`.
    pub verdict: String,
    pub seed: u64,
    pub nemesis: Vec<FaultKind>,
    pub clients: u32,
    pub duration_s: f64,
    pub transfers_acked: u64,
    pub transfers_rejected: u64,
    pub transfers_unknown: u64,
    pub reads_ok: u64,
    pub reads_unknown: u64,
    /// Acknowledged transfers per second over the whole run.
    pub acked_per_s_mean: f64,
    pub faults_total: u64,
    pub faults: BTreeMap<FaultKind, u64>,
    pub unavailability: BTreeMap<FaultKind, Unavailability>,
    pub liveness_ms: Option<f64>,
    pub violations_total: u64,
    pub violations: BTreeMap<String, u64>,
    pub violation_examples: Vec<String>,
    /// Set in a negative-control run: whether the checker caught the loss it must catch.
    pub negative_control_caught: Option<bool>,
}

fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// Unavailability after each fault, by kind (`None`: never recovered).
pub fn unavailability(history: &History) -> BTreeMap<FaultKind, Unavailability> {
    let mut acks: Vec<(f64, f64)> = history
        .ops
        .iter()
        .filter(|op| matches!(op.outcome, Outcome::Ok { .. }))
        .map(|op| (op.invoke_ms, op.complete_ms))
        .collect();
    acks.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut by_kind: BTreeMap<FaultKind, (Vec<f64>, u64)> = BTreeMap::new();
    for fault in &history.faults {
        let start = acks.partition_point(|(invoke, _)| *invoke < fault.inject_ms);
        let first = acks[start..]
            .iter()
            .map(|(_, complete)| *complete)
            .min_by(f64::total_cmp);
        let entry = by_kind.entry(fault.kind).or_default();
        match first {
            Some(complete) => entry.0.push(complete - fault.inject_ms),
            None => entry.1 += 1,
        }
    }
    by_kind
        .into_iter()
        .map(|(kind, (mut gaps, never))| {
            let max = gaps.iter().copied().max_by(f64::total_cmp);
            let summary = Unavailability {
                faults: gaps.len() as u64 + never,
                never_recovered: never,
                median_ms: median(&mut gaps),
                max_ms: max,
            };
            (kind, summary)
        })
        .collect()
}

/// Inputs of the summary besides the history.
#[derive(Debug, Clone, Copy)]
pub struct RunFacts<'a> {
    pub nemesis: &'a [FaultKind],
    pub clients: u32,
    pub duration_s: f64,
    pub negative_control: bool,
}

/// The figures and the verdict. A normal run passes when the checker found nothing; a
/// negative-control run passes when the checker found lost acknowledged transfers.
pub fn summarize(
    history: &History,
    findings: &Findings,
    observed: &Observations,
    facts: RunFacts<'_>,
) -> Summary {
    let count = |predicate: &dyn Fn(&Op) -> bool| {
        history.ops.iter().filter(|op| predicate(op)).count() as u64
    };
    let is_transfer = |op: &Op| matches!(op.request, OpRequest::Transfer { .. });
    let transfers_acked = count(&|op| matches!(op.outcome, Outcome::Ok { .. }));
    let mut faults = BTreeMap::new();
    for fault in &history.faults {
        *faults.entry(fault.kind).or_insert(0u64) += 1;
    }
    let caught = facts
        .negative_control
        .then(|| findings.count(super::checker::ViolationKind::LostAck) > 0);
    let pass = caught.unwrap_or_else(|| findings.is_clean());
    Summary {
        verdict: if pass { "PASS" } else { "FAIL" }.to_owned(),
        seed: history.seed,
        nemesis: facts.nemesis.to_vec(),
        clients: facts.clients,
        duration_s: facts.duration_s,
        transfers_acked,
        transfers_rejected: count(&|op| {
            is_transfer(op) && matches!(op.outcome, Outcome::Rejected { .. })
        }),
        transfers_unknown: count(&|op| is_transfer(op) && matches!(op.outcome, Outcome::Unknown)),
        reads_ok: count(&|op| matches!(op.outcome, Outcome::Value { .. })),
        reads_unknown: count(&|op| !is_transfer(op) && matches!(op.outcome, Outcome::Unknown)),
        acked_per_s_mean: if facts.duration_s > 0.0 {
            transfers_acked as f64 / facts.duration_s
        } else {
            0.0
        },
        faults_total: history.faults.len() as u64,
        faults,
        unavailability: unavailability(history),
        liveness_ms: observed.liveness_ms,
        violations_total: findings.total(),
        violations: findings
            .counts
            .iter()
            .map(|(kind, n)| (kind.name().to_owned(), *n))
            .collect(),
        violation_examples: findings
            .examples
            .iter()
            .map(|(kind, message)| format!("{}: {message}", kind.name()))
            .collect(),
        negative_control_caught: caught,
    }
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"))
}

/// The one-line verdict.
pub fn verdict_line(summary: &Summary) -> String {
    let faults: Vec<String> = summary
        .faults
        .iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    let violations: Vec<String> = summary
        .violations
        .iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    let control = match summary.negative_control_caught {
        Some(true) => " (negative control: the checker caught the lost acknowledged transfers)",
        Some(false) => " (negative control: NO lost acknowledged transfer was caught)",
        None => "",
    };
    format!(
        "chaos {}{control}: seed {} | {:.0} s | {} transfers acknowledged, {} rejected, {} unknown, {} reads | faults {} [{}] | violations {}{}{} | liveness {} ms",
        summary.verdict,
        summary.seed,
        summary.duration_s,
        summary.transfers_acked,
        summary.transfers_rejected,
        summary.transfers_unknown,
        summary.reads_ok,
        summary.faults_total,
        faults.join(", "),
        summary.violations_total,
        if violations.is_empty() { "" } else { " " },
        if violations.is_empty() { String::new() } else { format!("[{}]", violations.join(", ")) },
        ms(summary.liveness_ms),
    )
}

/// One line per fault kind: count, median and max unavailability.
pub fn unavailability_lines(summary: &Summary) -> Vec<String> {
    summary
        .unavailability
        .iter()
        .map(|(kind, u)| {
            format!(
                "  {kind:<15} {:>4} faults   unavailability median {:>6} ms   max {:>6} ms{}",
                u.faults,
                ms(u.median_ms),
                ms(u.max_ms),
                if u.never_recovered > 0 {
                    format!("   ({} never recovered)", u.never_recovered)
                } else {
                    String::new()
                }
            )
        })
        .collect()
}

fn marker_color(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::KillLeader => "#d62728",
        FaultKind::KillRandom => "#ff7f0e",
        FaultKind::PauseLeader => "#9467bd",
        FaultKind::IsolateLeader => "#2ca02c",
        FaultKind::KillAll => "#000000",
    }
}

/// Acknowledged transfers per second (by completion time) with every fault marked.
pub fn throughput_chart(history: &History, title: &str) -> Chart {
    let mut per_second: BTreeMap<u64, u64> = BTreeMap::new();
    let mut last_second = 0u64;
    for op in &history.ops {
        let second = (op.complete_ms / 1000.0).floor().max(0.0) as u64;
        last_second = last_second.max(second);
        if matches!(op.outcome, Outcome::Ok { .. }) {
            *per_second.entry(second).or_insert(0) += 1;
        }
    }
    let points = (0..=last_second)
        .map(|second| {
            let n = per_second.get(&second).copied().unwrap_or(0);
            (second as f64 + 0.5, n as f64)
        })
        .collect();
    let markers = history
        .faults
        .iter()
        .map(|fault| {
            let nodes: Vec<String> = fault.nodes.iter().map(|n| format!("n{n}")).collect();
            Marker {
                x: fault.inject_ms / 1000.0,
                label: format!("{} {}", fault.kind, nodes.join(",")),
                color: marker_color(fault.kind).to_owned(),
            }
        })
        .collect();
    Chart {
        title: title.to_owned(),
        x_label: "seconds since start (dashed lines: faults)".to_owned(),
        left: Series {
            name: "acknowledged transfers/s".to_owned(),
            color: "#1f77b4".to_owned(),
            points,
        },
        right: None,
        markers,
    }
}

/// Where the report files went.
#[derive(Debug, Clone)]
pub struct ReportFiles {
    pub history: PathBuf,
    pub summary: PathBuf,
    pub plot: PathBuf,
}

/// Writes `history.json`, `summary.json` and `throughput.svg` into `out`.
///
/// # Errors
/// When a file cannot be written.
pub fn write_files(
    out: &Path,
    history: &History,
    summary: &Summary,
) -> anyhow::Result<ReportFiles> {
    let files = ReportFiles {
        history: out.join("history.json"),
        summary: out.join("summary.json"),
        plot: out.join("throughput.svg"),
    };
    let write = |path: &Path, text: String| {
        std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
    };
    write(&files.history, serde_json::to_string(history)?)?;
    write(&files.summary, serde_json::to_string_pretty(summary)?)?;
    let title = format!(
        "raftpay chaos, seed {}: {} — {} acknowledged transfers, {} faults, {} violations",
        summary.seed,
        summary.verdict,
        summary.transfers_acked,
        summary.faults_total,
        summary.violations_total
    );
    write(&files.plot, plot::svg(&throughput_chart(history, &title)))?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::history::FaultEvent;

    fn ack(invoke_ms: f64, complete_ms: f64) -> Op {
        Op {
            client: 0,
            invoke_ms,
            complete_ms,
            node: 1,
            attempts: 1,
            request: OpRequest::Transfer {
                id: format!("t{invoke_ms}"),
                from: "a".into(),
                to: "b".into(),
                amount: 1,
            },
            outcome: Outcome::Ok { seq: 1 },
        }
    }

    fn fault(kind: FaultKind, inject_ms: f64) -> FaultEvent {
        FaultEvent {
            index: 1,
            kind,
            nodes: vec![1],
            inject_ms,
            heal_ms: inject_ms + 500.0,
        }
    }

    #[test]
    fn unavailability_counts_only_transfers_invoked_after_the_fault() {
        let history = History {
            ops: vec![ack(0.0, 1100.0), ack(1200.0, 1500.0), ack(2000.0, 2100.0)],
            faults: vec![
                fault(FaultKind::KillLeader, 1000.0),
                fault(FaultKind::KillLeader, 1900.0),
                fault(FaultKind::KillAll, 5000.0),
            ],
            ..History::default()
        };
        let by_kind = unavailability(&history);
        let leader = &by_kind[&FaultKind::KillLeader];
        assert_eq!(leader.faults, 2);
        assert_eq!(leader.median_ms, Some(350.0));
        assert_eq!(leader.max_ms, Some(500.0));
        let all = &by_kind[&FaultKind::KillAll];
        assert_eq!((all.faults, all.never_recovered, all.max_ms), (1, 1, None));
    }

    #[test]
    fn the_chart_marks_every_fault() {
        let history = History {
            ops: vec![ack(0.0, 100.0), ack(1200.0, 2500.0)],
            faults: vec![fault(FaultKind::PauseLeader, 1000.0)],
            ..History::default()
        };
        let chart = throughput_chart(&history, "t");
        assert_eq!(chart.markers.len(), 1);
        assert_eq!(chart.left.points, vec![(0.5, 1.0), (1.5, 0.0), (2.5, 1.0)]);
        assert!(plot::svg(&chart).contains("pause-leader n1"));
    }
}
