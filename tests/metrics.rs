//! `/metrics` under a transfer load: the numbers every node exposes agree with what the load
//! was told (transfers posted and rejected, requests each node answered), with each other
//! (one leader, one leader id, one applied index) and with themselves (histogram counts, label
//! sets, counters that only rise), and they follow a leader SIGKILL (term and leader changes).
//!
//! Over 800 lines: one scenario per metric family, sharing the scrape and parse helpers at the top.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use common::{eventually, LoadReport, LoadSpec, TestCluster};
use serde_json::Value;

/// The transfer route's label in the request metrics.
const TRANSFER_ROUTE: &str = "/v1/transfers";
/// Statuses a load transfer can get as its definite answer.
const DEFINITE_STATUSES: [u16; 4] = [200, 201, 409, 422];

/// Families every node must expose (the names `tests/api.rs` used to check, and the rest).
const FAMILIES: [&str; 24] = [
    "raftpay_raft_term",
    "raftpay_raft_leader_id",
    "raftpay_raft_is_leader",
    "raftpay_raft_last_log_index",
    "raftpay_raft_applied_index",
    "raftpay_raft_committed_index",
    "raftpay_raft_snapshot_index",
    "raftpay_raft_purged_index",
    "raftpay_ledger_seq_last",
    "raftpay_storage_disk_bytes",
    "raftpay_storage_log_disk_bytes",
    "raftpay_storage_disk_free_bytes",
    "raftpay_storage_disk_reserve_bytes",
    "raftpay_uptime_seconds",
    "raftpay_http_requests_total",
    "raftpay_http_request_duration_seconds",
    "raftpay_raft_leader_changes_total",
    "raftpay_raft_leaderless_seconds_total",
    "raftpay_proposals_total",
    "raftpay_proposal_commands",
    "raftpay_transfers_posted_total",
    "raftpay_transfers_rejected_total",
    "raftpay_id_conflicts_total",
    "raftpay_accounts_created_total",
];

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// One node's `/metrics`, parsed.
#[derive(Debug, Clone)]
struct Scrape {
    node: u64,
    text: String,
    /// Family name → type, from the `# TYPE` lines.
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

/// Parses `{key="value",...}` (values may hold `{`, `}` and escaped quotes); returns the
/// labels and the rest of the line.
fn labels_parse(text: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    let mut rest = text.strip_prefix('{')?;
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after_key) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after_key.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (at, '"') => break at,
                (_, other) => value.push(other),
            }
        };
        labels.insert(key.to_string(), value);
        rest = &after_key[end + 1..];
    }
}

/// Parses the Prometheus text format; panics on a line it cannot read.
fn scrape_parse(node: u64, text: String) -> Scrape {
    let mut types = BTreeMap::new();
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(declaration) = line.strip_prefix("# TYPE ") {
            let (name, kind) = declaration.split_once(' ').expect("# TYPE name kind");
            let earlier = types.insert(name.to_string(), kind.to_string());
            assert!(
                earlier.is_none(),
                "node {node}: family {name} declared twice"
            );
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).expect("a sample has a value");
        let name = &line[..name_end];
        let (labels, rest) = if line[name_end..].starts_with('{') {
            labels_parse(&line[name_end..])
                .unwrap_or_else(|| panic!("node {node}: bad labels in {line}"))
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let value = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("node {node}: bad value in {line}"));
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Scrape {
        node,
        text,
        types,
        samples,
    }
}

impl Scrape {
    fn matching<'a>(
        &'a self,
        name: &'a str,
        filter: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && filter
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The sum of the samples of `name` whose labels include `filter` (0 when there are none).
    fn sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        // A fold from +0.0: `Sum` for floats starts at -0.0.
        self.matching(name, filter)
            .fold(0.0, |sum, s| sum + s.value)
    }

    /// The one sample of `name` that matches `filter`.
    fn one(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = self.matching(name, filter).collect();
        assert_eq!(
            found.len(),
            1,
            "node {}: {name} {filter:?} should be one sample: {found:?}\n{}",
            self.node,
            self.text
        );
        found[0].value
    }

    /// `one`, for a value that must be a whole number.
    fn count(&self, name: &str, filter: &[(&str, &str)]) -> u64 {
        whole(self.one(name, filter))
    }

    /// Requests to the transfer route answered with `status`.
    fn transfer_requests(&self, status: u16) -> u64 {
        let status = status.to_string();
        whole(self.sum(
            "raftpay_http_requests_total",
            &[("route", TRANSFER_ROUTE), ("status", &status)],
        ))
    }

    /// Requests to the transfer route, every status.
    fn transfer_requests_all(&self) -> u64 {
        whole(self.sum("raftpay_http_requests_total", &[("route", TRANSFER_ROUTE)]))
    }
}

fn whole(value: f64) -> u64 {
    assert!(
        value >= 0.0 && value.fract() == 0.0 && value < 9.0e15,
        "{value} is not a count"
    );
    format!("{value:.0}").parse().expect("a whole number")
}

async fn scrape(cluster: &TestCluster, node: u64) -> Scrape {
    let url = format!("http://{}/metrics", cluster.addr(node));
    let response = cluster
        .http
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    assert_eq!(response.status(), 200, "{url}");
    scrape_parse(node, response.text().await.expect("metrics text"))
}

/// Scrapes every running node (concurrently, so the views are close in time).
async fn scrape_all(cluster: &TestCluster) -> BTreeMap<u64, Scrape> {
    let nodes = cluster.running();
    let scrapes = futures::future::join_all(nodes.iter().map(|id| scrape(cluster, *id))).await;
    nodes.into_iter().zip(scrapes).collect()
}

/// Checks that hold in any single scrape, under load or not: every family is there with its
/// type, every sample belongs to a declared family and carries this node's id as `node_id`
/// (so that series from several nodes never mix in Prometheus), histograms are cumulative with `+Inf` equal to `_count`, and the gauges are in order
/// (applied ≤ committed, applied ≤ last log index; `is_leader` is 0 or 1). Committed is read
/// after the others, so under load it may pass the last log index read before it.
fn scrape_check(scrape: &Scrape) {
    let node = scrape.node;
    for family in FAMILIES {
        assert!(
            scrape.types.contains_key(family),
            "node {node}: {family} missing\n{}",
            scrape.text
        );
    }
    for sample in &scrape.samples {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| sample.name.strip_suffix(suffix))
            .find(|base| scrape.types.get(*base).map(String::as_str) == Some("histogram"))
            .unwrap_or(&sample.name);
        assert!(
            scrape.types.contains_key(family),
            "node {node}: sample of an undeclared family: {sample:?}"
        );
        assert_eq!(
            sample.labels.get("node_id"),
            Some(&node.to_string()),
            "node {node}: a sample without this node's id: {sample:?}"
        );
    }
    for (family, kind) in &scrape.types {
        if kind == "histogram" {
            histogram_check(scrape, family);
        }
    }
    for histogram in [
        "raftpay_http_request_duration_seconds_bucket",
        "raftpay_proposal_commands_bucket",
    ] {
        assert!(
            scrape.matching(histogram, &[]).count() > 0,
            "node {node}: no {histogram}\n{}",
            scrape.text
        );
    }
    assert!(
        scrape
            .matching(
                "raftpay_transfers_rejected_total",
                &[("code", "insufficient_funds")]
            )
            .count()
            == 1,
        "node {node}: no insufficient_funds rejection counter"
    );
    let is_leader = scrape.count("raftpay_raft_is_leader", &[]);
    assert!(is_leader <= 1, "node {node}: is_leader {is_leader}");
    let applied = scrape.count("raftpay_raft_applied_index", &[]);
    let committed = scrape.count("raftpay_raft_committed_index", &[]);
    let last_log = scrape.count("raftpay_raft_last_log_index", &[]);
    assert!(
        applied <= committed,
        "node {node}: applied {applied}, committed {committed}"
    );
    assert!(
        applied <= last_log,
        "node {node}: applied {applied}, last log {last_log}"
    );
}

/// Every series of histogram `family`: buckets rise with `le`, the `+Inf` bucket is `_count`.
fn histogram_check(scrape: &Scrape, family: &str) {
    let bucket_name = format!("{family}_bucket");
    let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
    for sample in scrape.samples.iter().filter(|s| s.name == bucket_name) {
        let mut labels = sample.labels.clone();
        let le = labels.remove("le").expect("a bucket has le");
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().expect("numeric le")
        };
        series
            .entry(labels)
            .or_default()
            .push((bound, sample.value));
    }
    for (labels, mut buckets) in series {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "node {}: {family} {labels:?} buckets not cumulative: {buckets:?}",
            scrape.node
        );
        let (bound, infinite) = *buckets.last().expect("at least one bucket");
        assert!(
            bound.is_infinite(),
            "node {}: {family} {labels:?} has no +Inf",
            scrape.node
        );
        let filter: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let count = scrape.one(&format!("{family}_count"), &filter);
        assert_eq!(
            infinite, count,
            "node {}: {family} {labels:?}: +Inf vs _count",
            scrape.node
        );
    }
}

/// Who claimed leadership in which term, over every scrape of the test: Raft allows one
/// leader per term, whatever the timing of the scrapes.
#[derive(Default)]
struct LeaderClaims(Mutex<BTreeMap<u64, BTreeSet<u64>>>);

impl LeaderClaims {
    fn record(&self, scrapes: &BTreeMap<u64, Scrape>) {
        let mut claims = self.0.lock().expect("claims lock");
        for (node, scrape) in scrapes {
            scrape_check(scrape);
            if scrape.count("raftpay_raft_is_leader", &[]) == 1 {
                let term = scrape.count("raftpay_raft_term", &[]);
                assert_eq!(
                    scrape.count("raftpay_raft_leader_id", &[]),
                    *node,
                    "node {node} leads but names another leader"
                );
                let leaders = claims.entry(term).or_default();
                leaders.insert(*node);
                assert!(
                    leaders.len() == 1,
                    "two leaders in term {term}: {leaders:?}"
                );
            }
        }
    }
}

/// The leader, when exactly one scraped node says it leads and every node names it.
fn leader_agreed(scrapes: &BTreeMap<u64, Scrape>) -> Option<u64> {
    let leaders: Vec<u64> = scrapes
        .iter()
        .filter(|(_, s)| s.count("raftpay_raft_is_leader", &[]) == 1)
        .map(|(node, _)| *node)
        .collect();
    let [leader] = leaders[..] else {
        return None;
    };
    scrapes
        .values()
        .all(|s| s.count("raftpay_raft_leader_id", &[]) == leader)
        .then_some(leader)
}

/// Scrapes until one leader is agreed on (each scrape also goes through `claims`).
async fn leader_agreed_wait(cluster: &TestCluster, claims: &LeaderClaims) -> u64 {
    eventually(
        Duration::from_secs(10),
        "one leader that every node names in /metrics",
        || async {
            let scrapes = scrape_all(cluster).await;
            claims.record(&scrapes);
            leader_agreed(&scrapes)
        },
    )
    .await
}

/// Transfers a load posted, and the rejected ones with their attempts.
fn posted_and_rejected(reports: &[&LoadReport]) -> (u64, u64, u64) {
    let mut posted = 0;
    let mut rejected = 0;
    let mut rejected_attempts = 0;
    for outcome in reports.iter().flat_map(|r| &r.outcomes) {
        if outcome.is_posted() {
            posted += 1;
        } else {
            assert_eq!(outcome.status, 422, "unexpected answer: {outcome:?}");
            assert_eq!(
                outcome.answer["error"]["code"], "insufficient_funds",
                "{outcome:?}"
            );
            rejected += 1;
            rejected_attempts += u64::from(outcome.attempts);
        }
    }
    (posted, rejected, rejected_attempts)
}

/// Waits until the nodes agree on their state (`converged_wait`: one state hash at one index),
/// then scrapes until every node's metrics show its whole log committed and applied, all at one
/// index; returns those scrapes and that index. Why poll again: `converged_wait` reads the
/// state machine's applied index, `/metrics` reads openraft's, which openraft publishes a
/// moment after the apply (seen: a follower's metrics one entry behind its state machine).
async fn quiet_scrapes(
    cluster: &TestCluster,
    claims: &LeaderClaims,
) -> (BTreeMap<u64, Scrape>, u64) {
    cluster.converged_wait(Duration::from_secs(20)).await;
    eventually(
        Duration::from_secs(20),
        "every node's whole log applied, at one index",
        || async {
            let scrapes = scrape_all(cluster).await;
            claims.record(&scrapes);
            let indexes: BTreeSet<[u64; 3]> = scrapes
                .values()
                .map(|s| {
                    [
                        "raftpay_raft_applied_index",
                        "raftpay_raft_committed_index",
                        "raftpay_raft_last_log_index",
                    ]
                    .map(|name| s.count(name, &[]))
                })
                .collect();
            let [index] = indexes.into_iter().collect::<Vec<_>>()[..] else {
                return None;
            };
            (index[0] == index[1] && index[1] == index[2]).then_some((scrapes, index[0]))
        },
    )
    .await
}

/// Checks on quiet, converged nodes against everything the loads were told: one applied
/// index; every replica counted each posted transfer once (the counter is kept on apply, by
/// every replica) and each rejected id at least once and at most once per attempt (a re-sent
/// rejection is answered again from the log); the request histogram counts every request.
fn quiet_check(
    scrapes: &BTreeMap<u64, Scrape>,
    applied: u64,
    reports: &[&LoadReport],
    accounts: u64,
) {
    let (posted, rejected, rejected_attempts) = posted_and_rejected(reports);
    assert!(rejected > 0, "the load was meant to have rejections");
    for (node, scrape) in scrapes {
        let node = *node;
        assert_eq!(
            scrape.count("raftpay_raft_applied_index", &[]),
            applied,
            "node {node}"
        );
        assert_eq!(
            scrape.count("raftpay_raft_committed_index", &[]),
            applied,
            "node {node}"
        );
        assert_eq!(
            scrape.count("raftpay_raft_last_log_index", &[]),
            applied,
            "node {node}"
        );
        assert_eq!(
            scrape.count("raftpay_transfers_posted_total", &[]),
            posted,
            "node {node}: posted transfers counted"
        );
        assert_eq!(
            scrape.count("raftpay_ledger_seq_last", &[]),
            posted,
            "node {node}: the ledger's last seq"
        );
        assert_eq!(
            scrape.count("raftpay_accounts_created_total", &[]),
            accounts,
            "node {node}"
        );
        let rejections = scrape.count(
            "raftpay_transfers_rejected_total",
            &[("code", "insufficient_funds")],
        );
        assert!(
            (rejected..=rejected_attempts).contains(&rejections),
            "node {node}: {rejections} rejections counted; {rejected} ids, {rejected_attempts} attempts"
        );
        assert_eq!(
            scrape.count("raftpay_id_conflicts_total", &[]),
            0,
            "node {node}"
        );
        // No request in flight: the latency histogram saw exactly the requests counted.
        assert_eq!(
            scrape.count(
                "raftpay_http_request_duration_seconds_count",
                &[("route", TRANSFER_ROUTE), ("method", "POST")]
            ),
            scrape.transfer_requests_all(),
            "node {node}: transfer requests timed vs counted"
        );
        let proposals = scrape.count("raftpay_proposals_total", &[]);
        assert_eq!(
            scrape.count("raftpay_proposal_commands_count", &[]),
            proposals,
            "node {node}"
        );
        assert!(
            scrape.count("raftpay_proposal_commands_sum", &[]) >= proposals,
            "node {node}: a proposal holds at least one command"
        );
    }
}

/// Each node answered at least the transfer requests the load got from it, status by status
/// (it may have answered more: requests forwarded to it as leader, answers the load timed out).
fn served_check(
    before: &BTreeMap<u64, Scrape>,
    after: &BTreeMap<u64, Scrape>,
    report: &LoadReport,
) {
    for (&(node, status), &answered) in &report.answered {
        let Some(after) = after.get(&node) else {
            continue; // killed since
        };
        let grown = after.transfer_requests(status) - before[&node].transfer_requests(status);
        assert!(
            grown >= answered,
            "node {node}: {grown} requests with status {status} counted, the load got {answered}"
        );
    }
}

/// Counters and histograms never go down on a running process.
fn monotone_check(before: &BTreeMap<u64, Scrape>, after: &BTreeMap<u64, Scrape>) {
    for (node, scrape) in after {
        let Some(earlier) = before.get(node) else {
            continue;
        };
        for (family, kind) in &scrape.types {
            if kind != "counter" && kind != "histogram" {
                continue;
            }
            for sample in earlier
                .samples
                .iter()
                .filter(|s| s.name.starts_with(family.as_str()))
            {
                let filter: Vec<(&str, &str)> = sample
                    .labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let now = scrape.sum(&sample.name, &filter);
                assert!(
                    now >= sample.value,
                    "node {node}: {sample:?} went down to {now}"
                );
            }
        }
    }
}

/// With one leader throughout and every attempt answered without a 503, the counts are exact:
/// a follower counted exactly the answers the load got from it; the leader counted every
/// definite answer (a follower's is the leader's, forwarded) and proposed one command for each.
fn stable_check(
    before: &BTreeMap<u64, Scrape>,
    after: &BTreeMap<u64, Scrape>,
    report: &LoadReport,
    leader: u64,
) {
    for (&node, scrape) in after {
        let earlier = &before[&node];
        let proposed = scrape.count("raftpay_proposal_commands_sum", &[])
            - earlier.count("raftpay_proposal_commands_sum", &[]);
        if node == leader {
            let mut definite = 0;
            for status in DEFINITE_STATUSES {
                let everywhere: u64 = after.keys().map(|n| report.answered_by(*n, status)).sum();
                let grown = scrape.transfer_requests(status) - earlier.transfer_requests(status);
                assert_eq!(
                    grown, everywhere,
                    "leader {node}: requests with status {status}"
                );
                definite += everywhere;
            }
            assert_eq!(proposed, definite, "leader {node}: commands proposed");
        } else {
            let grown = scrape.transfer_requests_all() - earlier.transfer_requests_all();
            let answered: u64 = report
                .answered
                .iter()
                .filter(|((n, _), _)| *n == node)
                .map(|(_, count)| count)
                .sum();
            assert_eq!(grown, answered, "follower {node}: transfer requests");
            assert_eq!(proposed, 0, "follower {node} proposed commands");
        }
    }
}

fn term_and_changes(scrape: &Scrape) -> (u64, u64) {
    (
        scrape.count("raftpay_raft_term", &[]),
        scrape.count("raftpay_raft_leader_changes_total", &[]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_agree_with_an_acknowledged_load_and_follow_a_leader_kill() {
    // Goal: an operator can trust /metrics while the cluster serves payments. Method: scrape
    // every node idle, under a load of four writers (one transfer in ten rejected), after it,
    // and around a leader SIGKILL under load, and compare with what the writers were answered.
    let mut cluster = TestCluster::start(3).await;
    let claims = LeaderClaims::default();
    tracing::info!("phase 0: idle");
    let idle = scrape_all(&cluster).await;
    claims.record(&idle);

    tracing::info!("phase 1: a load under one leader");
    let spec = LoadSpec::new("m1", 4).rejecting_every(10);
    let accounts_one = spec.accounts_create(&cluster).await;
    assert_eq!(accounts_one, 6);
    let before = scrape_all(&cluster).await;
    claims.record(&before);
    let load = spec.start(&cluster);
    // Scrape all nodes over and over while the load runs: each scrape is checked on its own
    // and for leader claims.
    let agreed = Mutex::new(Vec::new());
    eventually(
        Duration::from_secs(30),
        "1000 answered load transfers",
        || async {
            let scrapes = scrape_all(&cluster).await;
            claims.record(&scrapes);
            agreed.lock().expect("lock").push(leader_agreed(&scrapes));
            (load.answered() >= 1000).then_some(())
        },
    )
    .await;
    let agreed = agreed.into_inner().expect("lock");
    let leader = agreed
        .iter()
        .flatten()
        .copied()
        .last()
        .unwrap_or_else(|| panic!("no scrape under load agreed on one leader: {agreed:?}"));
    tracing::info!(
        rounds = agreed.len(),
        agreed = agreed.iter().filter(|l| l.is_some()).count(),
        "scrapes under load"
    );
    let report_one = load.stop().await;
    let (after, applied) = quiet_scrapes(&cluster, &claims).await;
    assert!(
        leader_agreed(&after).is_some(),
        "no agreed leader once quiet"
    );
    quiet_check(&after, applied, &[&report_one], accounts_one);
    served_check(&before, &after, &report_one);
    monotone_check(&before, &after);
    let stable = after.iter().all(|(node, s)| {
        term_and_changes(s) == term_and_changes(&before[node])
            && s.count("raftpay_raft_leader_id", &[]) == leader
            && before[node].count("raftpay_raft_leader_id", &[]) == leader
    }) && agreed.iter().all(|l| *l == Some(leader))
        && report_one.unanswered.is_empty()
        && report_one.answered.keys().all(|(_, status)| *status != 503);
    tracing::info!(leader, stable, "phase 1 checked");
    if stable {
        stable_check(&before, &after, &report_one, leader);
    }

    tracing::info!("phase 2: SIGKILL the leader under load");
    let spec = LoadSpec::new("m2", 4).rejecting_every(10);
    let accounts_two = spec.accounts_create(&cluster).await;
    let at_start = scrape_all(&cluster).await;
    claims.record(&at_start);
    let load = spec.start(&cluster);
    load.answered_wait(100, Duration::from_secs(30)).await;
    let leader = leader_agreed_wait(&cluster, &claims).await;
    let before = scrape_all(&cluster).await;
    claims.record(&before);
    let answered_at_kill = load.answered();
    cluster.kill(leader);
    let new_leader = cluster.leader_wait(Duration::from_secs(10)).await;
    load.answered_wait(answered_at_kill + 200, Duration::from_secs(30))
        .await;
    let report_two = load.stop().await;
    let (after, applied) = quiet_scrapes(&cluster, &claims).await;
    assert_eq!(leader_agreed(&after), Some(new_leader));
    quiet_check(
        &after,
        applied,
        &[&report_one, &report_two],
        accounts_one + accounts_two,
    );
    served_check(&at_start, &after, &report_two);
    monotone_check(&at_start, &before);
    monotone_check(&before, &after);
    let terms: BTreeSet<u64> = after.values().map(|s| term_and_changes(s).0).collect();
    assert_eq!(terms.len(), 1, "survivors disagree on the term: {terms:?}");
    for (node, scrape) in &after {
        let (term, changes) = term_and_changes(scrape);
        let (term_before, changes_before) = term_and_changes(&before[node]);
        assert!(
            term > term_before,
            "node {node}: term {term_before} → {term}"
        );
        assert!(
            changes > changes_before,
            "node {node}: leader changes {changes_before} → {changes}"
        );
    }

    tracing::info!("phase 3: every acknowledged transfer is there");
    report_one.verify_present(&cluster).await;
    report_two.verify_present(&cluster).await;
    let mut seqs: Vec<u64> = report_one
        .posted()
        .into_iter()
        .chain(report_two.posted())
        .filter_map(|o| o.seq())
        .collect();
    seqs.sort_unstable();
    let n = u64::try_from(seqs.len()).unwrap();
    assert!(
        seqs.iter().copied().eq(1..=n),
        "acknowledged seqs have gaps"
    );
}

/// The checks themselves, on made-up expositions: they pass a consistent one and catch each
/// kind of broken one (so the test above can fail).
mod checks {
    use super::*;
    use common::LoadOutcome;
    use serde_json::json;

    /// A consistent exposition of node `node` in a cluster led by node 1 in term 2, after 2
    /// transfers posted and 1 rejected, with 3 transfer requests answered.
    fn exposition(node: u64) -> String {
        let is_leader = u64::from(node == 1);
        let labels = format!("node_id=\"{node}\"");
        let route = "route=\"/v1/transfers\"";
        format!(
            "# TYPE raftpay_http_requests_total counter\n\
             raftpay_http_requests_total{{method=\"POST\",{labels},{route},status=\"201\"}} 2\n\
             raftpay_http_requests_total{{method=\"POST\",{labels},{route},status=\"422\"}} 1\n\
             raftpay_http_requests_total{{method=\"GET\",{labels},route=\"/v1/accounts/{{id}}\",status=\"200\"}} 4\n\
             # TYPE raftpay_http_request_duration_seconds histogram\n\
             raftpay_http_request_duration_seconds_bucket{{method=\"POST\",{labels},{route},le=\"0.01\"}} 2\n\
             raftpay_http_request_duration_seconds_bucket{{method=\"POST\",{labels},{route},le=\"+Inf\"}} 3\n\
             raftpay_http_request_duration_seconds_sum{{method=\"POST\",{labels},{route}}} 0.05\n\
             raftpay_http_request_duration_seconds_count{{method=\"POST\",{labels},{route}}} 3\n\
             # TYPE raftpay_raft_term gauge\nraftpay_raft_term{{{labels}}} 2\n\
             # TYPE raftpay_raft_leader_id gauge\nraftpay_raft_leader_id{{{labels}}} 1\n\
             # TYPE raftpay_raft_is_leader gauge\nraftpay_raft_is_leader{{{labels}}} {is_leader}\n\
             # TYPE raftpay_raft_last_log_index gauge\nraftpay_raft_last_log_index{{{labels}}} 10\n\
             # TYPE raftpay_raft_applied_index gauge\nraftpay_raft_applied_index{{{labels}}} 10\n\
             # TYPE raftpay_raft_committed_index gauge\nraftpay_raft_committed_index{{{labels}}} 10\n\
             # TYPE raftpay_raft_snapshot_index gauge\nraftpay_raft_snapshot_index{{{labels}}} 0\n\
             # TYPE raftpay_raft_purged_index gauge\nraftpay_raft_purged_index{{{labels}}} 0\n\
             # TYPE raftpay_ledger_seq_last gauge\nraftpay_ledger_seq_last{{{labels}}} 2\n\
             # TYPE raftpay_storage_disk_bytes gauge\nraftpay_storage_disk_bytes{{{labels}}} 4096\n\
             # TYPE raftpay_storage_log_disk_bytes gauge\nraftpay_storage_log_disk_bytes{{{labels}}} 1024\n\
             # TYPE raftpay_storage_disk_free_bytes gauge\nraftpay_storage_disk_free_bytes{{{labels}}} 1073741824\n\
             # TYPE raftpay_storage_disk_reserve_bytes gauge\nraftpay_storage_disk_reserve_bytes{{{labels}}} 67108864\n\
             # TYPE raftpay_uptime_seconds gauge\nraftpay_uptime_seconds{{{labels}}} 3\n\
             # HELP raftpay_raft_leader_changes_total Leader changes this node saw\n\
             # TYPE raftpay_raft_leader_changes_total counter\nraftpay_raft_leader_changes_total{{{labels}}} 1\n\
             # TYPE raftpay_raft_leaderless_seconds_total counter\nraftpay_raft_leaderless_seconds_total{{{labels}}} 0.25\n\
             # TYPE raftpay_proposals_total counter\nraftpay_proposals_total{{{labels}}} {p}\n\
             # TYPE raftpay_proposal_commands histogram\n\
             raftpay_proposal_commands_bucket{{{labels},le=\"1\"}} {p}\n\
             raftpay_proposal_commands_bucket{{{labels},le=\"+Inf\"}} {p}\n\
             raftpay_proposal_commands_sum{{{labels}}} {p}\nraftpay_proposal_commands_count{{{labels}}} {p}\n\
             # TYPE raftpay_transfers_posted_total counter\nraftpay_transfers_posted_total{{{labels}}} 2\n\
             # TYPE raftpay_transfers_rejected_total counter\n\
             raftpay_transfers_rejected_total{{code=\"insufficient_funds\",{labels}}} 1\n\
             raftpay_transfers_rejected_total{{code=\"overflow\",{labels}}} 0\n\
             # TYPE raftpay_id_conflicts_total counter\nraftpay_id_conflicts_total{{{labels}}} 0\n\
             # TYPE raftpay_accounts_created_total counter\nraftpay_accounts_created_total{{{labels}}} 6\n",
            p = 3 * is_leader,
        )
    }

    fn scrapes(texts: [String; 3]) -> BTreeMap<u64, Scrape> {
        (1..=3)
            .zip(texts)
            .map(|(node, text)| (node, scrape_parse(node, text)))
            .collect()
    }

    fn fails(check: impl FnOnce()) -> bool {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)).is_err()
    }

    fn report() -> LoadReport {
        let outcome = |id: &str, status: u16, answer| LoadOutcome {
            id: id.into(),
            request: Value::Null,
            status,
            answer,
            node: 1,
            attempts: 1,
        };
        LoadReport {
            outcomes: vec![
                outcome("a", 201, json!({"seq": 1})),
                outcome("b", 201, json!({"seq": 2})),
                outcome("c", 422, json!({"error": {"code": "insufficient_funds"}})),
            ],
            answered: BTreeMap::from([((1, 201), 2), ((1, 422), 1)]),
            unanswered: BTreeMap::new(),
        }
    }

    #[test]
    fn labels_with_braces_and_escapes_parse() {
        let scrape = scrape_parse(
            7,
            "# TYPE x counter\nx{route=\"/v1/accounts/{id}\",memo=\"a \\\"b\\\" c\"} 5\n".into(),
        );
        assert_eq!(scrape.one("x", &[("route", "/v1/accounts/{id}")]), 5.0);
        assert_eq!(scrape.samples[0].labels["memo"], "a \"b\" c");
    }

    #[test]
    fn consistent_metrics_pass() {
        let all = scrapes([exposition(1), exposition(2), exposition(3)]);
        LeaderClaims::default().record(&all);
        assert_eq!(leader_agreed(&all), Some(1));
        quiet_check(&all, 10, &[&report()], 6);
    }

    #[test]
    fn broken_metrics_are_caught() {
        let broken = |node: u64, from: &str, to: &str| {
            let text = exposition(node);
            assert!(text.contains(from), "{from} not in the exposition");
            text.replace(from, to)
        };
        let one = |text: String| scrape_parse(2, text);
        // In one scrape: a bucket above the next, +Inf not the count, another node's id, a
        // sample without a node id (a counter, a histogram's sum, one series of a labelled
        // family), an undeclared family, applied past committed.
        for (from, to) in [
            ("le=\"0.01\"} 2", "le=\"0.01\"} 4"),
            ("+Inf\"} 3", "+Inf\"} 2"),
            ("node_id=\"2\"", "node_id=\"1\""),
            (
                "accounts_created_total{node_id=\"2\"} 6",
                "accounts_created_total 6",
            ),
            (
                "proposal_commands_sum{node_id=\"2\"}",
                "proposal_commands_sum",
            ),
            ("{code=\"overflow\",node_id=\"2\"}", "{code=\"overflow\"}"),
            ("# TYPE raftpay_raft_term gauge\n", ""),
            (
                "applied_index{node_id=\"2\"} 10",
                "applied_index{node_id=\"2\"} 11",
            ),
        ] {
            let scrape = one(broken(2, from, to));
            assert!(fails(|| scrape_check(&scrape)), "{from} -> {to} not caught");
        }
        // Across nodes: a second leader in term 2; no agreed leader.
        let two_leaders = scrapes([
            exposition(1),
            broken(
                2,
                "is_leader{node_id=\"2\"} 0",
                "is_leader{node_id=\"2\"} 1",
            ),
            exposition(3),
        ]);
        assert!(fails(|| LeaderClaims::default().record(&two_leaders)));
        assert_eq!(leader_agreed(&two_leaders), None);
        let elsewhere = scrapes([
            exposition(1),
            exposition(2),
            broken(
                3,
                "leader_id{node_id=\"3\"} 1",
                "leader_id{node_id=\"3\"} 2",
            ),
        ]);
        assert_eq!(leader_agreed(&elsewhere), None);
        // Against the load: one replica short of a posted transfer, a rejection not counted,
        // an applied index behind, requests timed but not counted.
        for (node, from, to) in [
            (
                3,
                "posted_total{node_id=\"3\"} 2",
                "posted_total{node_id=\"3\"} 1",
            ),
            (
                2,
                "insufficient_funds\",node_id=\"2\"} 1",
                "insufficient_funds\",node_id=\"2\"} 0",
            ),
            (2, "seq_last{node_id=\"2\"} 2", "seq_last{node_id=\"2\"} 3"),
            (3, "status=\"422\"} 1", "status=\"422\"} 0"),
        ] {
            let mut texts = [exposition(1), exposition(2), exposition(3)];
            texts[usize::try_from(node - 1).unwrap()] = broken(node, from, to);
            let all = scrapes(texts);
            assert!(
                fails(|| quiet_check(&all, 10, &[&report()], 6)),
                "{from} -> {to} on node {node} not caught"
            );
        }
        let quiet = scrapes([exposition(1), exposition(2), exposition(3)]);
        assert!(fails(|| quiet_check(&quiet, 11, &[&report()], 6)));
        // Served: node 1 answered two 201s; a node that counted fewer is caught.
        let mut before = quiet.clone();
        before.insert(1, one(broken(1, "status=\"201\"} 2", "status=\"201\"} 1")));
        assert!(fails(|| served_check(&before, &quiet, &report())));
        // Counters never go down.
        assert!(fails(|| monotone_check(&quiet, &before)));
    }
}
