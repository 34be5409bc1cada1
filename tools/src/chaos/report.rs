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
        FaultKind::PowerCutAll => "#8c564b",
        FaultKind::PowerCutLeader => "#e377c2",
        FaultKind::PowerCutFollower => "#7f7f7f",
    }
}

/// Faults are labelled (kind and nodes) up to this many per chart; beyond, colours only.
const MARKER_LABELS_MAX: usize = 40;
/// Most points on a chart: longer runs are averaged over wider buckets.
const CHART_POINTS_MAX: f64 = 300.0;
/// Runs longer than this also get a chart of their first `ZOOM_SECONDS`.
const ZOOM_AFTER_SECONDS: f64 = 180.0;
const ZOOM_SECONDS: f64 = 100.0;

/// Acknowledged transfers per second (by completion time, averaged over buckets of whole
/// seconds so that a chart has at most `CHART_POINTS_MAX` points) with every fault marked by a
/// dashed line in its kind's colour; `until_s` cuts the chart at that second.
pub fn throughput_chart(history: &History, title: &str, until_s: Option<f64>) -> Chart {
    let end_s = history
        .ops
        .iter()
        .map(|op| op.complete_ms / 1000.0)
        .fold(0.0, f64::max);
    let until_s = until_s.map_or(end_s, |until| until.min(end_s));
    let bucket_s = (until_s / CHART_POINTS_MAX).ceil().max(1.0);
    let n_buckets = (until_s / bucket_s).floor() as usize + 1;
    let mut counts = vec![0u64; n_buckets];
    for op in &history.ops {
        let second = op.complete_ms / 1000.0;
        if matches!(op.outcome, Outcome::Ok { .. }) && (0.0..=until_s).contains(&second) {
            let bucket = ((second / bucket_s).floor() as usize).min(n_buckets - 1);
            counts[bucket] += 1;
        }
    }
    let points = counts
        .iter()
        .enumerate()
        .map(|(i, n)| ((i as f64 + 0.5) * bucket_s, *n as f64 / bucket_s))
        .collect();
    let shown: Vec<_> = history
        .faults
        .iter()
        .filter(|fault| fault.inject_ms / 1000.0 <= until_s)
        .collect();
    let labelled = shown.len() <= MARKER_LABELS_MAX;
    let markers = shown
        .iter()
        .map(|fault| {
            let nodes: Vec<String> = fault.nodes.iter().map(|n| format!("n{n}")).collect();
            Marker {
                x: fault.inject_ms / 1000.0,
                label: if labelled {
                    format!("{} {}", fault.kind, nodes.join(","))
                } else {
                    String::new()
                },
                color: marker_color(fault.kind).to_owned(),
            }
        })
        .collect();
    let colours: Vec<String> = FaultKind::ALL
        .iter()
        .chain(FaultKind::POWER.iter())
        .map(|kind| format!("{} {kind}", colour_name(*kind)))
        .collect();
    let name = if bucket_s > 1.0 {
        format!("acknowledged transfers/s (mean over {bucket_s:.0} s)")
    } else {
        "acknowledged transfers/s".to_owned()
    };
    Chart {
        title: title.to_owned(),
        x_label: format!(
            "seconds since start; dashed lines are faults: {}",
            colours.join(", ")
        ),
        left: Series {
            name,
            color: "#1f77b4".to_owned(),
            points,
        },
        right: None,
        markers,
    }
}

fn colour_name(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::KillLeader => "red",
        FaultKind::KillRandom => "orange",
        FaultKind::PauseLeader => "purple",
        FaultKind::IsolateLeader => "green",
        FaultKind::KillAll => "black",
        FaultKind::PowerCutAll => "brown",
        FaultKind::PowerCutLeader => "pink",
        FaultKind::PowerCutFollower => "grey",
    }
}

/// Where the report files went.
#[derive(Debug, Clone)]
pub struct ReportFiles {
    pub history: PathBuf,
    pub summary: PathBuf,
    pub plot: PathBuf,
    /// The first `ZOOM_SECONDS`, for runs longer than `ZOOM_AFTER_SECONDS`.
    pub plot_zoom: Option<PathBuf>,
}

/// Writes `throughput.svg` (and, for a long run, `throughput-first-120s.svg`) into `out`.
///
/// # Errors
/// When a file cannot be written.
pub fn plots_write(
    out: &Path,
    history: &History,
    summary: &Summary,
) -> anyhow::Result<(PathBuf, Option<PathBuf>)> {
    let title = format!(
        "raftpay chaos, seed {}: {} — {} acknowledged transfers, {} faults, {} violations",
        summary.seed,
        summary.verdict,
        summary.transfers_acked,
        summary.faults_total,
        summary.violations_total
    );
    let plot = out.join("throughput.svg");
    std::fs::write(&plot, plot::svg(&throughput_chart(history, &title, None)))
        .with_context(|| format!("write {}", plot.display()))?;
    if summary.duration_s <= ZOOM_AFTER_SECONDS {
        return Ok((plot, None));
    }
    let zoom = out.join(format!("throughput-first-{ZOOM_SECONDS:.0}s.svg"));
    let title = format!("{title} (first {ZOOM_SECONDS:.0} s)");
    let chart = throughput_chart(history, &title, Some(ZOOM_SECONDS));
    std::fs::write(&zoom, plot::svg(&chart))
        .with_context(|| format!("write {}", zoom.display()))?;
    Ok((plot, Some(zoom)))
}

/// Writes `history.json`, `summary.json` and the plots into `out`.
///
/// # Errors
/// When a file cannot be written.
pub fn write_files(
    out: &Path,
    history: &History,
    summary: &Summary,
) -> anyhow::Result<ReportFiles> {
    let history_path = out.join("history.json");
    let summary_path = out.join("summary.json");
    let write = |path: &Path, text: String| {
        std::fs::write(path, text).with_context(|| format!("write {}", path.display()))
    };
    write(&history_path, serde_json::to_string(history)?)?;
    write(&summary_path, serde_json::to_string_pretty(summary)?)?;
    let (plot, plot_zoom) = plots_write(out, history, summary)?;
    Ok(ReportFiles {
        history: history_path,
        summary: summary_path,
        plot,
        plot_zoom,
    })
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
            problems: Vec::new(),
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
        let chart = throughput_chart(&history, "t", None);
        assert_eq!(chart.markers.len(), 1);
        assert_eq!(chart.left.points, vec![(0.5, 1.0), (1.5, 0.0), (2.5, 1.0)]);
        assert!(plot::svg(&chart).contains("pause-leader n1"));
        let zoom = throughput_chart(&history, "t", Some(1.0));
        assert_eq!(zoom.left.points, vec![(0.5, 1.0), (1.5, 0.0)]);
        assert_eq!(zoom.markers.len(), 1);
    }

    #[test]
    fn a_long_run_is_averaged_and_its_many_faults_unlabelled() {
        let history = History {
            ops: (0..1200)
                .map(|s| ack(f64::from(s) * 1000.0, f64::from(s) * 1000.0 + 10.0))
                .collect(),
            faults: (0..100)
                .map(|i| fault(FaultKind::KillAll, f64::from(i) * 10_000.0))
                .collect(),
            ..History::default()
        };
        let chart = throughput_chart(&history, "t", None);
        assert!(
            chart.left.points.len() <= 301,
            "{}",
            chart.left.points.len()
        );
        assert!(chart
            .left
            .points
            .iter()
            .take(10)
            .all(|(_, y)| (*y - 1.0).abs() < 1e-9));
        assert!(chart.markers.iter().all(|m| m.label.is_empty()));
        assert!(
            chart.left.name.contains("mean over 4 s"),
            "{}",
            chart.left.name
        );
    }
}
