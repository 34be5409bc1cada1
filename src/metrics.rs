//! Prometheus metrics: request counts and latency by route and status, kept as they happen, and
//! the Raft and ledger gauges, read from the node when scraped. Names follow Prometheus
//! conventions: `raftpay_` prefix, units in the name, `_total` for counters.

use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::ServerState;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};
use raftpay_raft::node::Node;
use raftpay_raft::stats::{Stats, PROPOSAL_SIZE_BUCKETS, REJECTION_CODES};

use crate::observe::LeaderWatch;

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    gauges: Gauges,
}

struct Gauges {
    term: IntGauge,
    leader_id: IntGauge,
    is_leader: IntGauge,
    last_log_index: IntGauge,
    applied_index: IntGauge,
    committed_index: IntGauge,
    snapshot_index: IntGauge,
    purged_index: IntGauge,
    transfers_posted: IntGauge,
    disk_bytes: IntGauge,
    log_disk_bytes: IntGauge,
    uptime_seconds: IntGauge,
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let gauge = IntGauge::new(name, help).expect("metric names are valid literals");
    registry
        .register(Box::new(gauge.clone()))
        .expect("each metric is registered once");
    gauge
}

/// Appends one metric family in the text format; each sample is (suffix and labels, value).
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, String)]) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// The node's own counters (kept as atomics in the ledger crate and by the leader watcher).
fn counters_render(out: &mut String, stats: &Stats, leaders: &LeaderWatch) {
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    let one = |value: String| vec![(String::new(), value)];
    family(
        out,
        "raftpay_raft_leader_changes_total",
        "counter",
        "Times this node learned of a new leader, the first since start included",
        &one(leaders.changes_total().to_string()),
    );
    family(
        out,
        "raftpay_raft_leaderless_seconds_total",
        "counter",
        "Time this node knew no leader",
        &one(format!("{:.3}", leaders.leaderless().as_secs_f64())),
    );
    family(
        out,
        "raftpay_proposals_total",
        "counter",
        "Log entries proposed by this node as leader",
        &one(load(&stats.proposals).to_string()),
    );
    let mut cumulative = 0u64;
    let mut buckets = Vec::new();
    for (bound, counter) in PROPOSAL_SIZE_BUCKETS
        .iter()
        .zip(&stats.proposal_size_buckets)
    {
        cumulative = cumulative.saturating_add(load(counter));
        buckets.push((format!("_bucket{{le=\"{bound}\"}}"), cumulative.to_string()));
    }
    cumulative = cumulative.saturating_add(load(
        &stats.proposal_size_buckets[PROPOSAL_SIZE_BUCKETS.len()],
    ));
    buckets.push(("_bucket{le=\"+Inf\"}".to_string(), cumulative.to_string()));
    buckets.push((
        "_sum".to_string(),
        load(&stats.proposal_commands).to_string(),
    ));
    buckets.push(("_count".to_string(), cumulative.to_string()));
    family(
        out,
        "raftpay_proposal_commands",
        "histogram",
        "Commands (transfers) per proposed log entry: group commit at work",
        &buckets,
    );
    family(
        out,
        "raftpay_transfers_posted_total",
        "counter",
        "Transfers posted by this node's state machine",
        &one(load(&stats.transfers_posted).to_string()),
    );
    let rejected: Vec<(String, String)> = REJECTION_CODES
        .iter()
        .zip(&stats.transfers_rejected)
        .map(|(code, counter)| {
            (
                format!("{{code=\"{}\"}}", code.as_str()),
                load(counter).to_string(),
            )
        })
        .collect();
    family(
        out,
        "raftpay_transfers_rejected_total",
        "counter",
        "Transfer rejections answered by this node's state machine, by code",
        &rejected,
    );
    family(
        out,
        "raftpay_id_conflicts_total",
        "counter",
        "Writes refused because their id was used with other content",
        &one(load(&stats.id_conflicts).to_string()),
    );
    family(
        out,
        "raftpay_accounts_created_total",
        "counter",
        "Accounts created",
        &one(load(&stats.accounts_created).to_string()),
    );
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Metrics {
    /// # Panics
    /// Never in practice: the metric definitions are constants (checked by a test).
    pub fn new(node_id: u64) -> Metrics {
        let registry = Registry::new_custom(
            None,
            Some([("node_id".to_string(), node_id.to_string())].into()),
        )
        .expect("constant label is valid");
        let requests = IntCounterVec::new(
            Opts::new(
                "raftpay_http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let buckets = vec![
            0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
        ];
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "raftpay_http_request_duration_seconds",
                "HTTP request latency",
            )
            .buckets(buckets),
            &["route", "method"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(requests.clone()))
            .expect("registered once");
        registry
            .register(Box::new(request_seconds.clone()))
            .expect("registered once");
        let gauges = Gauges {
            term: gauge(&registry, "raftpay_raft_term", "Current Raft term"),
            leader_id: gauge(
                &registry,
                "raftpay_raft_leader_id",
                "Current leader's node id (0: none known)",
            ),
            is_leader: gauge(
                &registry,
                "raftpay_raft_is_leader",
                "1 while this node leads",
            ),
            last_log_index: gauge(
                &registry,
                "raftpay_raft_last_log_index",
                "Index of the last log entry",
            ),
            applied_index: gauge(
                &registry,
                "raftpay_raft_applied_index",
                "Index of the last applied entry",
            ),
            committed_index: gauge(
                &registry,
                "raftpay_raft_committed_index",
                "Highest index known committed",
            ),
            snapshot_index: gauge(
                &registry,
                "raftpay_raft_snapshot_index",
                "Last index in the current snapshot",
            ),
            purged_index: gauge(
                &registry,
                "raftpay_raft_purged_index",
                "Last purged log index",
            ),
            transfers_posted: gauge(
                &registry,
                "raftpay_ledger_seq_last",
                "The ledger's last seq (transfers posted cluster-wide)",
            ),
            disk_bytes: gauge(
                &registry,
                "raftpay_storage_disk_bytes",
                "Bytes of the node's databases (log and state) on disk",
            ),
            log_disk_bytes: gauge(
                &registry,
                "raftpay_storage_log_disk_bytes",
                "Bytes of the node's Raft log database on disk (bounded by compaction)",
            ),
            uptime_seconds: gauge(
                &registry,
                "raftpay_uptime_seconds",
                "Seconds since the process started",
            ),
        };
        Metrics {
            registry,
            requests,
            request_seconds,
            gauges,
        }
    }

    pub fn request_observe(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.requests
            .with_label_values(&[route, method, &status.to_string()])
            .inc();
        self.request_seconds
            .with_label_values(&[route, method])
            .observe(elapsed.as_secs_f64());
    }

    /// The text exposition, with the gauges read from `node` now.
    pub fn render(&self, node: &Node, uptime: Duration, leaders: &LeaderWatch) -> String {
        let metrics = node.metrics().borrow().clone();
        let g = &self.gauges;
        g.term.set(to_i64(metrics.current_term));
        g.leader_id.set(to_i64(metrics.current_leader.unwrap_or(0)));
        g.is_leader
            .set(i64::from(metrics.state == ServerState::Leader));
        g.last_log_index
            .set(to_i64(metrics.last_log_index.unwrap_or(0)));
        g.applied_index
            .set(to_i64(metrics.last_applied.map_or(0, |id| id.index)));
        g.committed_index.set(to_i64(node.committed_index()));
        g.snapshot_index
            .set(to_i64(metrics.snapshot.map_or(0, |id| id.index)));
        g.purged_index
            .set(to_i64(metrics.purged.map_or(0, |id| id.index)));
        if let Ok(summary) = node.reader().summary() {
            g.transfers_posted.set(to_i64(summary.seq_last));
        }
        g.disk_bytes.set(to_i64(node.disk_bytes()));
        g.log_disk_bytes.set(to_i64(node.log_disk_bytes()));
        g.uptime_seconds.set(to_i64(uptime.as_secs()));
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%error, "metrics encoding failed");
        }
        let mut text = String::from_utf8(buffer).unwrap_or_default();
        counters_render(&mut text, node.stats(), leaders);
        text
    }
}
