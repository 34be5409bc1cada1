//! Prometheus metrics, every family in one registry whose const label `node_id` goes on every
//! sample: request counts and latency by route and status, kept as they happen; and the node's
//! families (Raft and ledger gauges, storage, the node's own counters and the proposal-size
//! histogram), read from the node at each scrape by [`NodeCollector`]. Names follow Prometheus
//! conventions: `raftpay_` prefix, units in the name, `_total` for counters.
//!
//! It must never keep a second copy of a count the node already keeps (the ledger crate's
//! `Stats` atomics, the leader watcher): a copy could drift; the collector reads the originals.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};
use raftpay_raft::node::{Node, Role};
use raftpay_raft::stats::{Stats, PROPOSAL_SIZE_BUCKETS, REJECTION_CODES};

use crate::observe::LeaderWatch;

/// The buckets of `raftpay_http_request_duration_seconds`, in seconds.
const REQUEST_SECONDS_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
}

impl Metrics {
    /// The registry with the request families; the node's families follow with
    /// [`Metrics::node_register`] once the node runs.
    ///
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
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "raftpay_http_request_duration_seconds",
                "HTTP request latency",
            )
            .buckets(REQUEST_SECONDS_BUCKETS.to_vec()),
            &["route", "method"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(requests.clone()))
            .expect("registered once");
        registry
            .register(Box::new(request_seconds.clone()))
            .expect("registered once");
        Metrics {
            registry,
            requests,
            request_seconds,
        }
    }

    /// Registers the node's families, read from `node` and `leaders` at each scrape; `started`
    /// is when the process started (for the uptime).
    ///
    /// # Panics
    /// When called twice on one `Metrics` (the families would be registered twice).
    pub fn node_register(&self, node: Node, leaders: LeaderWatch, started: Instant) {
        // The last ledger summary read: shown again when a read fails, so that the series does
        // not vanish or drop to 0 for one scrape.
        let seq_last_known = AtomicU64::new(0);
        self.collector_register(Box::new(move || {
            Reading::of(&node, &leaders, started.elapsed(), &seq_last_known)
        }));
    }

    /// Registers the node's families, each scrape reading them with `read`.
    fn collector_register(&self, read: Box<dyn Fn() -> Reading + Send + Sync>) {
        self.registry
            .register(Box::new(NodeCollector::new(read)))
            .expect("the node's families are registered once, with constant names");
    }

    pub fn request_observe(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.requests
            .with_label_values(&[route, method, &status.to_string()])
            .inc();
        self.request_seconds
            .with_label_values(&[route, method])
            .observe(elapsed.as_secs_f64());
    }

    /// The text exposition of every family, the node's read now.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%error, "metrics encoding failed");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// One reading of everything the node's families show, taken at a scrape.
#[derive(Debug, Clone, Default, PartialEq)]
struct Reading {
    term: u64,
    /// 0 while no leader is known.
    leader_id: u64,
    is_leader: bool,
    last_log_index: u64,
    applied_index: u64,
    committed_index: u64,
    snapshot_index: u64,
    purged_index: u64,
    seq_last: u64,
    disk_bytes: u64,
    log_disk_bytes: u64,
    /// `None` while the file system's free space cannot be read (the sample is left out, so
    /// that no alert mistakes "unknown" for a number).
    disk_free_bytes: Option<u64>,
    disk_reserve_bytes: u64,
    uptime: Duration,
    leader_changes: u64,
    leaderless: Duration,
    proposals: u64,
    proposal_commands: u64,
    /// Per bucket of [`PROPOSAL_SIZE_BUCKETS`], not cumulative; the last slot counts larger
    /// proposals.
    proposal_size_buckets: [u64; PROPOSAL_SIZE_BUCKETS.len() + 1],
    transfers_posted: u64,
    /// By [`REJECTION_CODES`].
    transfers_rejected: [u64; REJECTION_CODES.len()],
    id_conflicts: u64,
    accounts_created: u64,
}

impl Reading {
    fn of(
        node: &Node,
        leaders: &LeaderWatch,
        uptime: Duration,
        seq_last_known: &AtomicU64,
    ) -> Reading {
        let view = node.view();
        let seq_last = match node.reader().summary() {
            Ok(summary) => {
                seq_last_known.store(summary.seq_last, Ordering::Relaxed);
                summary.seq_last
            }
            Err(error) => {
                tracing::warn!(%error, "metrics: cannot read the ledger summary; raftpay_ledger_seq_last shows the last value read");
                seq_last_known.load(Ordering::Relaxed)
            }
        };
        let free = node.disk_free_bytes();
        let mut reading = Reading {
            term: view.term,
            leader_id: view.leader_id.unwrap_or(0),
            is_leader: view.role == Role::Leader,
            last_log_index: view.last_log_index.unwrap_or(0),
            applied_index: view.last_applied.unwrap_or(0),
            committed_index: node.committed_index(),
            snapshot_index: view.snapshot_index.unwrap_or(0),
            purged_index: view.purged_index.unwrap_or(0),
            seq_last,
            disk_bytes: node.disk_bytes(),
            log_disk_bytes: node.log_disk_bytes(),
            // u64::MAX is the reserve's word for "could not be read".
            disk_free_bytes: (free != u64::MAX).then_some(free),
            disk_reserve_bytes: node.disk_reserve_bytes(),
            uptime,
            leader_changes: leaders.changes_total(),
            leaderless: leaders.leaderless(),
            ..Reading::default()
        };
        reading.stats_read(node.stats());
        reading
    }

    fn stats_read(&mut self, stats: &Stats) {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        self.proposals = load(&stats.proposals);
        self.proposal_commands = load(&stats.proposal_commands);
        for (slot, counter) in self
            .proposal_size_buckets
            .iter_mut()
            .zip(&stats.proposal_size_buckets)
        {
            *slot = load(counter);
        }
        self.transfers_posted = load(&stats.transfers_posted);
        for (slot, counter) in self
            .transfers_rejected
            .iter_mut()
            .zip(&stats.transfers_rejected)
        {
            *slot = load(counter);
        }
        self.id_conflicts = load(&stats.id_conflicts);
        self.accounts_created = load(&stats.accounts_created);
    }
}

/// A count as a sample value. Exact below 2^53, which no count here reaches in practice.
#[allow(clippy::cast_precision_loss)]
fn value_of(count: u64) -> f64 {
    count as f64
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut pair = LabelPair::default();
    pair.set_name(name.to_string());
    pair.set_value(value.to_string());
    pair
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_string());
    family.set_help(help.to_string());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

fn gauge_metric(value: f64) -> Metric {
    let mut gauge = Gauge::default();
    gauge.set_value(value);
    let mut metric = Metric::default();
    metric.set_gauge(gauge);
    metric
}

fn counter_metric(value: f64, labels: Vec<LabelPair>) -> Metric {
    let mut counter = Counter::default();
    counter.set_value(value);
    let mut metric = Metric::default();
    metric.set_counter(counter);
    metric.set_label(labels);
    metric
}

fn gauge(name: &str, help: &str, value: u64) -> MetricFamily {
    family(
        name,
        help,
        MetricType::GAUGE,
        vec![gauge_metric(value_of(value))],
    )
}

fn counter(name: &str, help: &str, value: f64) -> MetricFamily {
    family(
        name,
        help,
        MetricType::COUNTER,
        vec![counter_metric(value, Vec::new())],
    )
}

/// `raftpay_proposal_commands`: cumulative buckets over [`PROPOSAL_SIZE_BUCKETS`]; the
/// encoder adds `+Inf` as the count, which includes the proposals above the last bound.
fn proposal_histogram(reading: &Reading) -> Metric {
    let mut cumulative = 0u64;
    let mut buckets = Vec::with_capacity(PROPOSAL_SIZE_BUCKETS.len());
    for (bound, count) in PROPOSAL_SIZE_BUCKETS
        .iter()
        .zip(&reading.proposal_size_buckets)
    {
        cumulative = cumulative.saturating_add(*count);
        let mut bucket = Bucket::default();
        bucket.set_upper_bound(value_of(*bound));
        bucket.set_cumulative_count(cumulative);
        buckets.push(bucket);
    }
    let above = reading.proposal_size_buckets[PROPOSAL_SIZE_BUCKETS.len()];
    let mut histogram = Histogram::default();
    histogram.set_bucket(buckets);
    histogram.set_sample_count(cumulative.saturating_add(above));
    histogram.set_sample_sum(value_of(reading.proposal_commands));
    let mut metric = Metric::default();
    metric.set_histogram(histogram);
    metric
}

/// Every family of the node, from one reading. The registry adds `node_id` to each sample.
fn families(reading: &Reading) -> Vec<MetricFamily> {
    let rejected = REJECTION_CODES
        .iter()
        .zip(&reading.transfers_rejected)
        .map(|(code, count)| counter_metric(value_of(*count), vec![label("code", code.as_str())]))
        .collect();
    let free = reading
        .disk_free_bytes
        .map(|free| gauge_metric(value_of(free)))
        .into_iter()
        .collect();
    vec![
        gauge("raftpay_raft_term", "Current Raft term", reading.term),
        gauge(
            "raftpay_raft_leader_id",
            "Current leader's node id (0: none known)",
            reading.leader_id,
        ),
        gauge(
            "raftpay_raft_is_leader",
            "1 while this node leads",
            u64::from(reading.is_leader),
        ),
        gauge(
            "raftpay_raft_last_log_index",
            "Index of the last log entry",
            reading.last_log_index,
        ),
        gauge(
            "raftpay_raft_applied_index",
            "Index of the last applied entry",
            reading.applied_index,
        ),
        gauge(
            "raftpay_raft_committed_index",
            "Highest index known committed",
            reading.committed_index,
        ),
        gauge(
            "raftpay_raft_snapshot_index",
            "Last index in the current snapshot",
            reading.snapshot_index,
        ),
        gauge(
            "raftpay_raft_purged_index",
            "Last purged log index",
            reading.purged_index,
        ),
        gauge(
            "raftpay_ledger_seq_last",
            "The ledger's last seq (transfers posted cluster-wide)",
            reading.seq_last,
        ),
        gauge(
            "raftpay_storage_disk_bytes",
            "Bytes of the node's databases (log and state) on disk",
            reading.disk_bytes,
        ),
        gauge(
            "raftpay_storage_log_disk_bytes",
            "Bytes of the node's Raft log on disk (bounded by compaction)",
            reading.log_disk_bytes,
        ),
        family(
            "raftpay_storage_disk_free_bytes",
            "Free bytes on the data directory's file system (absent while it cannot be read)",
            MetricType::GAUGE,
            free,
        ),
        gauge(
            "raftpay_storage_disk_reserve_bytes",
            "Free space under which this node refuses writes as leader (507); 0: no reserve",
            reading.disk_reserve_bytes,
        ),
        gauge(
            "raftpay_uptime_seconds",
            "Seconds since the process started",
            reading.uptime.as_secs(),
        ),
        counter(
            "raftpay_raft_leader_changes_total",
            "Times this node learned of a new leader, the first since start included",
            value_of(reading.leader_changes),
        ),
        counter(
            "raftpay_raft_leaderless_seconds_total",
            "Time this node knew no leader",
            reading.leaderless.as_secs_f64(),
        ),
        counter(
            "raftpay_proposals_total",
            "Log entries proposed by this node as leader",
            value_of(reading.proposals),
        ),
        family(
            "raftpay_proposal_commands",
            "Commands (transfers) per proposed log entry: group commit at work",
            MetricType::HISTOGRAM,
            vec![proposal_histogram(reading)],
        ),
        counter(
            "raftpay_transfers_posted_total",
            "Transfers posted by this node's state machine",
            value_of(reading.transfers_posted),
        ),
        family(
            "raftpay_transfers_rejected_total",
            "Transfer rejections answered by this node's state machine, by code",
            MetricType::COUNTER,
            rejected,
        ),
        counter(
            "raftpay_id_conflicts_total",
            "Writes refused because their id was used with other content",
            value_of(reading.id_conflicts),
        ),
        counter(
            "raftpay_accounts_created_total",
            "Accounts created",
            value_of(reading.accounts_created),
        ),
    ]
}

/// The node's families in the registry: each scrape takes one [`Reading`] and builds them.
struct NodeCollector {
    descs: Vec<Desc>,
    read: Box<dyn Fn() -> Reading + Send + Sync>,
}

impl NodeCollector {
    /// The descriptors come from the families themselves (of an empty reading), so the two can
    /// never disagree on a name, a help text or a label.
    fn new(read: Box<dyn Fn() -> Reading + Send + Sync>) -> NodeCollector {
        let descs = families(&Reading::default())
            .iter()
            .map(|family| {
                let labels = family
                    .get_metric()
                    .first()
                    .map(|metric| {
                        metric
                            .get_label()
                            .iter()
                            .map(|pair| pair.get_name().to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                Desc::new(
                    family.get_name().to_string(),
                    family.get_help().to_string(),
                    labels,
                    HashMap::new(),
                )
                .expect("the node's families have constant, valid names and help texts")
            })
            .collect();
        NodeCollector { descs, read }
    }
}

impl Collector for NodeCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        families(&(self.read)())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reading where every value is distinct and non-zero, so a value in the wrong family
    /// shows.
    fn reading() -> Reading {
        let mut proposal_size_buckets = [0; PROPOSAL_SIZE_BUCKETS.len() + 1];
        proposal_size_buckets[0] = 5; // size 1
        proposal_size_buckets[2] = 2; // size 3 or 4
        proposal_size_buckets[PROPOSAL_SIZE_BUCKETS.len()] = 1; // over 8192
        let mut transfers_rejected = [0; REJECTION_CODES.len()];
        transfers_rejected[0] = 7;
        Reading {
            term: 3,
            leader_id: 2,
            is_leader: true,
            last_log_index: 120,
            applied_index: 119,
            committed_index: 118,
            snapshot_index: 100,
            purged_index: 90,
            seq_last: 57,
            disk_bytes: 4096,
            log_disk_bytes: 1024,
            disk_free_bytes: Some(1 << 40),
            disk_reserve_bytes: 64 << 20,
            uptime: Duration::from_millis(12_900),
            leader_changes: 4,
            leaderless: Duration::from_millis(250),
            proposals: 8,
            proposal_commands: 5 + 7 + 9000,
            proposal_size_buckets,
            transfers_posted: 11,
            transfers_rejected,
            id_conflicts: 1,
            accounts_created: 6,
        }
    }

    fn rendered(node_id: u64, reading: Reading) -> String {
        let metrics = Metrics::new(node_id);
        metrics.request_observe("/v1/transfers", "POST", 201, Duration::from_millis(3));
        metrics.collector_register(Box::new(move || reading.clone()));
        metrics.render()
    }

    #[test]
    fn every_sample_carries_the_node_id() {
        let text = rendered(7, reading());
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(samples.len() > 40, "{text}");
        for line in samples {
            assert!(line.contains("node_id=\"7\""), "no node_id: {line}");
        }
    }

    #[test]
    fn the_node_families_keep_their_names_types_and_values() {
        let text = rendered(1, reading());
        for expected in [
            "# TYPE raftpay_raft_term gauge\nraftpay_raft_term{node_id=\"1\"} 3\n",
            "raftpay_raft_leader_id{node_id=\"1\"} 2\n",
            "raftpay_raft_is_leader{node_id=\"1\"} 1\n",
            "raftpay_raft_last_log_index{node_id=\"1\"} 120\n",
            "raftpay_raft_applied_index{node_id=\"1\"} 119\n",
            "raftpay_raft_committed_index{node_id=\"1\"} 118\n",
            "raftpay_raft_snapshot_index{node_id=\"1\"} 100\n",
            "raftpay_raft_purged_index{node_id=\"1\"} 90\n",
            "raftpay_ledger_seq_last{node_id=\"1\"} 57\n",
            "raftpay_storage_disk_bytes{node_id=\"1\"} 4096\n",
            "raftpay_storage_log_disk_bytes{node_id=\"1\"} 1024\n",
            "raftpay_storage_disk_free_bytes{node_id=\"1\"} 1099511627776\n",
            "raftpay_storage_disk_reserve_bytes{node_id=\"1\"} 67108864\n",
            "raftpay_uptime_seconds{node_id=\"1\"} 12\n",
            "# TYPE raftpay_raft_leader_changes_total counter\nraftpay_raft_leader_changes_total{node_id=\"1\"} 4\n",
            "# TYPE raftpay_raft_leaderless_seconds_total counter\nraftpay_raft_leaderless_seconds_total{node_id=\"1\"} 0.25\n",
            "# TYPE raftpay_proposals_total counter\nraftpay_proposals_total{node_id=\"1\"} 8\n",
            "# TYPE raftpay_proposal_commands histogram\n",
            "raftpay_proposal_commands_bucket{node_id=\"1\",le=\"1\"} 5\n",
            "raftpay_proposal_commands_bucket{node_id=\"1\",le=\"2\"} 5\n",
            "raftpay_proposal_commands_bucket{node_id=\"1\",le=\"4\"} 7\n",
            "raftpay_proposal_commands_bucket{node_id=\"1\",le=\"8192\"} 7\n",
            "raftpay_proposal_commands_bucket{node_id=\"1\",le=\"+Inf\"} 8\n",
            "raftpay_proposal_commands_sum{node_id=\"1\"} 9012\n",
            "raftpay_proposal_commands_count{node_id=\"1\"} 8\n",
            "# TYPE raftpay_transfers_posted_total counter\nraftpay_transfers_posted_total{node_id=\"1\"} 11\n",
            "# TYPE raftpay_transfers_rejected_total counter\n",
            "raftpay_transfers_rejected_total{code=\"insufficient_funds\",node_id=\"1\"} 7\n",
            "raftpay_transfers_rejected_total{code=\"invalid_request\",node_id=\"1\"} 0\n",
            "# TYPE raftpay_id_conflicts_total counter\nraftpay_id_conflicts_total{node_id=\"1\"} 1\n",
            "# TYPE raftpay_accounts_created_total counter\nraftpay_accounts_created_total{node_id=\"1\"} 6\n",
            "raftpay_http_requests_total{method=\"POST\",route=\"/v1/transfers\",status=\"201\",node_id=\"1\"} 1\n",
            "raftpay_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/transfers\",node_id=\"1\"} 1\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert_eq!(
            text.matches("raftpay_transfers_rejected_total{").count(),
            REJECTION_CODES.len(),
            "one series per rejection code"
        );
    }

    #[test]
    fn unknown_free_space_leaves_its_sample_out() {
        let text = rendered(
            1,
            Reading {
                disk_free_bytes: None,
                ..reading()
            },
        );
        assert!(!text.contains("raftpay_storage_disk_free_bytes{"), "{text}");
        assert!(
            text.contains("raftpay_storage_disk_reserve_bytes{"),
            "{text}"
        );
    }

    #[test]
    fn the_descriptors_match_the_families() {
        let collector = NodeCollector::new(Box::new(reading));
        let names: Vec<&str> = collector
            .desc()
            .iter()
            .map(|d| d.fq_name.as_str())
            .collect();
        let families = collector.collect();
        let family_names: Vec<&str> = families.iter().map(MetricFamily::get_name).collect();
        assert_eq!(names, family_names);
        let rejected = collector
            .desc()
            .into_iter()
            .find(|d| d.fq_name == "raftpay_transfers_rejected_total")
            .expect("rejections described");
        assert_eq!(rejected.variable_labels, ["code"]);
    }
}
