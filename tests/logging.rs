//! Logs a machine can read: with `[log] format = "json"`, every line a node writes while serving
//! a request is one JSON object carrying the node id, and the transfer id for transfer requests.

mod common;

use common::{account_body, transfer_body, TestCluster, Timing};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_log_lines_are_json_with_node_and_transfer_ids() {
    // Goal: an operator can follow one payment through the logs of every node. Method: run a
    // cluster logging JSON at debug for raftpay, send transfers to every node, parse every line.
    let timing = Timing {
        log_filter: "info,raftpay=debug,openraft=warn".into(),
        ..Timing::default()
    };
    let cluster = TestCluster::start_with(3, timing, "\n[log]\nformat = \"json\"\n").await;
    assert_eq!(
        cluster
            .post(1, "/v1/accounts", account_body("bank", "CNY", true))
            .await
            .0,
        201
    );
    assert_eq!(
        cluster
            .post(2, "/v1/accounts", account_body("alice", "CNY", false))
            .await
            .0,
        201
    );
    for node in 1..=3 {
        let id = format!("logged-{node}");
        assert_eq!(
            cluster
                .post(
                    node,
                    "/v1/transfers",
                    transfer_body(&id, "bank", "alice", 1)
                )
                .await
                .0,
            201
        );
        assert_eq!(
            cluster
                .post(
                    node,
                    "/v1/transfers",
                    transfer_body(&id, "alice", "bank", 1)
                )
                .await
                .0,
            409
        );
    }

    let mut request_lines = 0;
    let mut transfer_ids_seen = std::collections::BTreeSet::new();
    for node in cluster.nodes.values() {
        let text = std::fs::read_to_string(&node.log).unwrap();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("node {}: not JSON ({e}): {line}", node.id));
            let Some(span) = value.get("span").filter(|s| s["name"] == "request") else {
                continue;
            };
            request_lines += 1;
            assert_eq!(span["node_id"].as_u64(), Some(node.id), "{line}");
            if span["route"] == "/v1/transfers" {
                let id = span["transfer_id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no transfer id: {line}"));
                transfer_ids_seen.insert(id.to_string());
            }
        }
    }
    assert!(request_lines >= 6, "only {request_lines} request lines");
    let expected: std::collections::BTreeSet<String> =
        (1..=3).map(|n| format!("logged-{n}")).collect();
    assert_eq!(
        transfer_ids_seen, expected,
        "every transfer's lines carry its id"
    );
}
