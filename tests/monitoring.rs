//! The monitoring files in `docs/` against a real node: every metric name the Grafana
//! dashboard (`docs/grafana/raftpay.json`) and the Prometheus alert rules
//! (`docs/prometheus/alerts.yml`) use is one a running node exposes on `/metrics`, so a renamed
//! or removed metric fails here instead of leaving a blank panel or an alert that never fires.
//! `scripts/check-monitoring.sh` runs this with `promtool` checks of the same files.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{account_body, transfer_body, TestCluster};

const DASHBOARD: &str = "docs/grafana/raftpay.json";
const ALERTS: &str = "docs/prometheus/alerts.yml";

/// The metric names a `/metrics` text exposes: each family of a `# TYPE` line, and for a
/// histogram its `_bucket`, `_sum` and `_count` series.
fn exposed_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for declaration in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let Some((name, kind)) = declaration.split_once(' ') else {
            continue;
        };
        names.insert(name.to_string());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    names
}

/// Every `raftpay_...` word in `text` (a metric name wherever it appears: expressions,
/// legends, descriptions).
fn names_used(text: &str) -> BTreeSet<String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("raftpay_") {
        let starts_a_word = !rest[..at].chars().next_back().is_some_and(word);
        let tail = &rest[at..];
        let end = tail.find(|c: char| !word(c)).unwrap_or(tail.len());
        if starts_a_word {
            names.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

/// The names of `used` that `exposed` lacks.
fn missing(used: &BTreeSet<String>, exposed: &BTreeSet<String>) -> Vec<String> {
    used.difference(exposed).cloned().collect()
}

fn read(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_the_alerts_use_only_metrics_a_node_exposes() {
    // Goal: the shipped dashboard and alert rules watch metrics that exist. Method: start one
    // node, serve a write, a read and an error (so the request families have series), scrape
    // /metrics, and look up every raftpay_ name of both files among the families it declares.
    let cluster = TestCluster::start(1).await;
    assert_eq!(
        cluster
            .post(1, "/v1/accounts", account_body("bank", "CNY", true))
            .await
            .0,
        201
    );
    assert_eq!(
        cluster
            .post(1, "/v1/accounts", account_body("dora", "CNY", false))
            .await
            .0,
        201
    );
    let posted = cluster
        .post(1, "/v1/transfers", transfer_body("m-1", "bank", "dora", 5))
        .await;
    assert_eq!(posted.0, 201, "{posted:?}");
    assert_eq!(cluster.get(1, "/v1/accounts/nobody").await.0, 404);
    let url = format!("http://{}/metrics", cluster.addr(1));
    let text = cluster
        .http
        .get(&url)
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    let exposed = exposed_names(&text);

    let dashboard = read(DASHBOARD);
    let parsed: serde_json::Value =
        serde_json::from_str(&dashboard).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"));
    assert!(
        parsed["panels"].as_array().is_some_and(|p| p.len() >= 10),
        "{DASHBOARD} has too few panels"
    );
    let alerts = read(ALERTS);
    for (file, used, at_least) in [
        (DASHBOARD, names_used(&dashboard), 20),
        (ALERTS, names_used(&alerts), 8),
    ] {
        // Not vacuous: the files do use the metrics.
        assert!(
            used.len() >= at_least,
            "{file} uses only {} metric names: {used:?}",
            used.len()
        );
        assert_eq!(
            missing(&used, &exposed),
            Vec::<String>::new(),
            "{file} uses metrics that /metrics does not expose:\n{text}"
        );
    }
}

#[test]
fn a_renamed_metric_is_reported() {
    let exposed = exposed_names(
        "# HELP raftpay_raft_term Current term\n# TYPE raftpay_raft_term gauge\n\
         raftpay_raft_term{node_id=\"1\"} 2\n\
         # TYPE raftpay_http_request_duration_seconds histogram\n",
    );
    let used = names_used(
        r#"{"expr": "raftpay_raft_term{job=\"$job\"} + rate(raftpay_http_request_duration_seconds_bucket[5m])", "legend": "xraftpay_not_a_name"}"#,
    );
    assert_eq!(
        used,
        BTreeSet::from([
            "raftpay_raft_term".to_string(),
            "raftpay_http_request_duration_seconds_bucket".to_string()
        ])
    );
    assert!(missing(&used, &exposed).is_empty());
    let renamed = names_used("increase(raftpay_raft_terms[5m]) and raftpay_raft_term");
    assert_eq!(missing(&renamed, &exposed), ["raftpay_raft_terms"]);
}
