//! Logs a machine can read: with `[log] format = "json"`, every line a node writes while serving
//! a request is one JSON object carrying the node id, and the transfer id for transfer requests;
//! under concurrent requests at every node, no line carries another request's ids. And a node
//! whose stderr is a file (not a terminal) writes no colour codes into it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{account_body, transfer_body, LoadOutcome, LoadSpec, TestCluster, Timing};
use serde_json::Value;

/// The ids an event mentions: `fields.transfer_id`, and every id-shaped word of its string
/// fields that is one of `known`.
fn ids_mentioned(fields: &Value, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let Some(fields) = fields.as_object() else {
        return ids;
    };
    for value in fields.values().filter_map(Value::as_str) {
        let id_char = |c: char| c.is_ascii_alphanumeric() || "._:-".contains(c);
        for word in value.split(|c: char| !id_char(c)) {
            if known.contains(word) {
                ids.insert(word.to_string());
            }
        }
    }
    ids
}

/// What the lines of one node say about transfer requests.
#[derive(Default)]
struct TransferLines {
    /// (node, transfer id) of every line logged inside a transfer request's span.
    by_node: BTreeSet<(u64, String)>,
    /// "transfer posted" events: transfer id → the seqs logged with it.
    posted_seqs: BTreeMap<String, BTreeSet<u64>>,
    /// Lines that end a request's handling on a node: "transfer posted", "forward to leader",
    /// or a refusal (an error `code`), by (node, transfer id).
    outcome_lines: BTreeMap<(u64, String), usize>,
    request_lines: usize,
}

/// Reads every line of `node`'s log and checks it (see the test's goal).
fn node_lines_check(node: u64, text: &str, known: &BTreeSet<String>, lines: &mut TransferLines) {
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let value: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("node {node}: not JSON ({e}): {line}"));
        let Some(span) = value.get("span").filter(|s| s["name"] == "request") else {
            continue;
        };
        lines.request_lines += 1;
        assert_eq!(span["node_id"].as_u64(), Some(node), "{line}");
        // A request span is never nested in another request's span.
        let requests = value["spans"].as_array().map_or(0, |spans| {
            spans.iter().filter(|s| s["name"] == "request").count()
        });
        assert_eq!(requests, 1, "{line}");
        if span["route"] != "/v1/transfers" {
            continue;
        }
        let id = span["transfer_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no transfer id: {line}"));
        // Whatever id the event itself names is the request's own.
        let mentioned = ids_mentioned(&value["fields"], known);
        assert!(
            mentioned.iter().all(|m| m == id),
            "node {node}: a line of request {id} mentions {mentioned:?}: {line}"
        );
        lines.by_node.insert((node, id.to_string()));
        let message = &value["fields"]["message"];
        if message == "transfer posted"
            || message == "forward to leader"
            || value["fields"].get("code").is_some()
        {
            *lines
                .outcome_lines
                .entry((node, id.to_string()))
                .or_default() += 1;
        }
        if value["fields"]["message"] == "transfer posted" {
            assert_eq!(value["fields"]["transfer_id"], id, "{line}");
            let seq = value["fields"]["seq"]
                .as_u64()
                .unwrap_or_else(|| panic!("no seq: {line}"));
            lines
                .posted_seqs
                .entry(id.to_string())
                .or_default()
                .insert(seq);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_log_lines_are_json_with_node_and_transfer_ids_under_concurrent_load() {
    // Goal: an operator can follow one payment through the logs of every node, even while
    // many are served at once. Method: a cluster logging JSON at debug for raftpay; six writers
    // (two per node) post transfers while the three nodes also get a create and a conflicting
    // re-send each, all at once; then every line of every node is parsed and checked: it is
    // JSON, a request's lines carry its node id and transfer id and name no other transfer,
    // and each transfer is logged where it was sent, posted with the seq its client was told.
    let timing = Timing {
        log_filter: "info,raftpay=debug,openraft=warn".into(),
        configure: |config| config.log.format = raftpay::config::LogFormatConfig::Json,
        ..Timing::default()
    };
    let cluster = TestCluster::start_with(3, timing).await;
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
    let spec = LoadSpec::new("logged-load", 6).rejecting_every(10);
    spec.accounts_create(&cluster).await;
    let load = spec.start(&cluster);
    load.answered_wait(30, Duration::from_secs(20)).await;

    tracing::info!("the three nodes get their own transfers while the load runs");
    let singles = (1..=3).map(|node| {
        let cluster = &cluster;
        async move {
            let id = format!("logged-{node}");
            let created = cluster
                .post(
                    node,
                    "/v1/transfers",
                    transfer_body(&id, "bank", "alice", 1),
                )
                .await;
            assert_eq!(created.0, 201, "{created:?}");
            let conflict = cluster
                .post(
                    node,
                    "/v1/transfers",
                    transfer_body(&id, "alice", "bank", 1),
                )
                .await;
            assert_eq!(conflict.0, 409, "{conflict:?}");
            (id, created.1["seq"].as_u64().expect("seq"))
        }
    });
    let singles: BTreeMap<String, u64> = futures::future::join_all(singles)
        .await
        .into_iter()
        .collect();
    let answered = load.answered();
    load.answered_wait(answered + 600, Duration::from_secs(30))
        .await;
    let report = load.stop().await;

    let mut known: BTreeSet<String> = singles.keys().cloned().collect();
    known.extend(report.outcomes.iter().map(|o| o.id.clone()));
    let mut lines = TransferLines::default();
    for node in cluster.nodes.values() {
        let text = std::fs::read_to_string(&node.log).unwrap();
        node_lines_check(node.id, &text, &known, &mut lines);
    }
    assert!(
        lines.request_lines >= 6,
        "only {} request lines",
        lines.request_lines
    );
    let transfer_ids_seen: BTreeSet<String> =
        lines.by_node.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(
        transfer_ids_seen, known,
        "every transfer's lines carry its id"
    );
    // Each load transfer was logged by the node that answered it, and a posted one was logged
    // as posted with the seq its writer got.
    let seq_logged = |id: &str, seq: u64| {
        lines
            .posted_seqs
            .get(id)
            .is_some_and(|seqs| seqs == &BTreeSet::from([seq]))
    };
    for outcome in &report.outcomes {
        let LoadOutcome { id, node, .. } = outcome;
        assert!(
            lines.by_node.contains(&(*node, id.clone())),
            "node {node} answered {id} but logged no line of it"
        );
        // Sent once, handled once: one line says how (a line of another request that carried
        // this id would make two here and none there).
        if outcome.attempts == 1 {
            let handled = lines.outcome_lines.get(&(*node, id.clone()));
            assert_eq!(
                handled,
                Some(&1),
                "node {node}: lines that handled {id} (sent once)"
            );
        }
        match outcome.seq() {
            Some(seq) => assert!(
                seq_logged(id, seq),
                "{id} acknowledged with seq {seq}, logged posted with {:?}",
                lines.posted_seqs.get(id)
            ),
            None => assert!(
                !lines.posted_seqs.contains_key(id),
                "{id} was rejected but logged posted: {outcome:?}"
            ),
        }
    }
    for (id, seq) in &singles {
        assert!(
            seq_logged(id, *seq),
            "{id} not logged posted with seq {seq}"
        );
    }
    tracing::info!(
        transfers = known.len(),
        request_lines = lines.request_lines,
        "every line checked"
    );
}

/// The first line of `text` that holds a terminal escape sequence (`ESC [`, how colours and
/// dimmed text start), if any.
fn escape_line(text: &str) -> Option<&str> {
    text.lines().find(|line| line.contains("\x1b["))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_logging_to_a_file_writes_no_colour_codes() {
    // Goal: a node's log file reads cleanly in grep and less. Method: one node in the default
    // (pretty) format, at debug for raftpay so that request lines with fields are logged, its
    // stderr a file as the harness makes it (not a terminal), with `NO_COLOR` empty (the same
    // as unset, so the test does not pass merely because the caller's environment asks for no
    // colour); serve a few requests, then look for escape codes in the whole file.
    let timing = Timing {
        log_filter: "info,raftpay=debug,openraft=warn".into(),
        ..Timing::default()
    };
    let mut cluster = TestCluster::prepare(1, timing);
    cluster.node_env(1, "NO_COLOR", Some(""));
    cluster.start_prepared().await;
    assert_eq!(
        cluster
            .post(1, "/v1/accounts", account_body("bank", "CNY", true))
            .await
            .0,
        201
    );
    assert_eq!(
        cluster
            .post(1, "/v1/accounts", account_body("carol", "CNY", false))
            .await
            .0,
        201
    );
    let posted = cluster
        .post(
            1,
            "/v1/transfers",
            transfer_body("plain-1", "bank", "carol", 5),
        )
        .await;
    assert_eq!(posted.0, 201, "{posted:?}");
    let refused = cluster
        .post(
            1,
            "/v1/transfers",
            transfer_body("plain-1", "carol", "bank", 5),
        )
        .await;
    assert_eq!(refused.0, 409, "{refused:?}");
    let log = &cluster.nodes[&1].log;
    let text = std::fs::read_to_string(log).expect("the node's log");
    // Not vacuous: the lines that would be coloured on a terminal (levels, span fields) are
    // there.
    for needle in [
        "INFO",
        "node serving",
        "DEBUG",
        "transfer posted",
        "plain-1",
    ] {
        assert!(
            text.contains(needle),
            "{needle:?} not in {}:\n{text}",
            log.display()
        );
    }
    assert_eq!(
        escape_line(&text),
        None,
        "{} holds terminal escape codes",
        log.display()
    );
}

#[test]
fn escape_codes_are_found() {
    assert_eq!(escape_line("INFO plain\nDEBUG plain"), None);
    assert_eq!(
        escape_line("plain\n\x1b[32m INFO\x1b[0m coloured\n"),
        Some("\x1b[32m INFO\x1b[0m coloured")
    );
}

/// The line checks on made-up lines: they pass a request's own ids and catch another's.
mod checks {
    use super::*;

    fn line(node: u64, span_id: &str, fields: &str) -> String {
        let span = format!(
            r#"{{"method":"POST","node_id":{node},"route":"/v1/transfers","transfer_id":"{span_id}","name":"request"}}"#
        );
        format!(r#"{{"level":"DEBUG","fields":{fields},"span":{span},"spans":[{span}]}}"#)
    }

    fn fails(node: u64, text: &str) -> bool {
        let known = BTreeSet::from(["t-1".to_string(), "t-2".to_string()]);
        std::panic::catch_unwind(|| {
            node_lines_check(node, text, &known, &mut TransferLines::default());
        })
        .is_err()
    }

    #[test]
    fn a_request_line_naming_another_request_is_caught() {
        let posted = r#"{"message":"transfer posted","transfer_id":"t-1","seq":3,"created":true}"#;
        let refused = r#"{"message":"transfer id t-1 was already used with different content","code":"id_conflict"}"#;
        assert!(!fails(1, &line(1, "t-1", posted)));
        assert!(!fails(1, &line(1, "t-1", refused)));
        assert!(
            fails(1, &line(1, "t-2", posted)),
            "posted under another span"
        );
        assert!(
            fails(1, &line(1, "t-2", refused)),
            "message names another id"
        );
        assert!(fails(2, &line(1, "t-1", posted)), "another node's id");
        assert!(fails(1, "not json"));
        let nested = line(1, "t-1", posted).replace(
            r#""spans":["#,
            r#""spans":[{"name":"request","node_id":1},"#,
        );
        assert!(fails(1, &nested), "a request span inside another");
    }
}
