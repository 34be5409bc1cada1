//! Backup and restore end to end, with the real binary: a backup taken while transfers flow is a
//! consistent prefix of the ledger; a new cluster restored from a backup has the same balances
//! and history; damaged files and non-empty data directories are refused.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{account_body, TestCluster, Timing};
use raftpay_client::{Consistency, NewTransfer};
use serde_json::Value;

const ACCOUNTS: usize = 5;

fn raftpay(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_raftpay"))
        .args(args)
        .output()
        .expect("run raftpay");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

fn backup_to(cluster: &TestCluster, node: u64, out: &Path) -> Value {
    let (ok, text) = raftpay(&[
        "backup",
        "--node",
        cluster.addr(node),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "backup failed: {text}");
    serde_json::from_str(text.lines().next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Every account's (balance, history ids) on `node`, read locally.
async fn ledger_of(cluster: &TestCluster, node: u64) -> Vec<(i64, Vec<(u64, String)>)> {
    let client =
        raftpay_client::Client::new(&[cluster.addr(node)], cluster.api_token.as_deref()).unwrap();
    let mut out = Vec::new();
    for id in std::iter::once("bank".to_string()).chain((0..ACCOUNTS).map(|i| format!("acct-{i}")))
    {
        let account = client.get_account(&id, Consistency::Local).await.unwrap();
        let mut history = Vec::new();
        let mut after = None;
        loop {
            let page = client
                .history(&id, Some(1000), after, Consistency::Local)
                .await
                .unwrap();
            history.extend(page.transfers.iter().map(|t| (t.seq, t.id.clone())));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        out.push((account.balance, history));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_into_a_new_cluster_with_the_same_ledger() {
    // Goal: backups are consistent while the cluster serves and restore exactly. Method: take a
    // backup during a stream of transfers (it must be a gap-free prefix), then one after the
    // stream; restore the second into a new cluster; compare every balance and history.
    let cluster = TestCluster::start(3).await;
    assert_eq!(
        cluster
            .post(1, "/v1/accounts", account_body("bank", "CNY", true))
            .await
            .0,
        201
    );
    for i in 0..ACCOUNTS {
        assert_eq!(
            cluster
                .post(
                    2,
                    "/v1/accounts",
                    account_body(&format!("acct-{i}"), "CNY", false)
                )
                .await
                .0,
            201
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let client = cluster.client();
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) || n < 200 {
                let transfer = NewTransfer {
                    id: format!("b-{n}"),
                    from: "bank".into(),
                    to: format!("acct-{}", n % ACCOUNTS),
                    amount: 1 + n as u64 % 5,
                    memo: None,
                };
                client.transfer(&transfer).await.expect("transfer");
                n += 1;
            }
            n
        })
    };
    let dir = tempfile::tempdir().unwrap();
    common::eventually(Duration::from_secs(30), "some transfers", || async {
        let status = cluster.status(1).await?;
        (status["seq_last"].as_u64()? >= 50).then_some(())
    })
    .await;
    let during = backup_to(&cluster, 3, &dir.path().join("during.bak"));
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();
    let during_seq = during["seq_last"].as_u64().unwrap();
    assert!(during_seq >= 50 && during_seq <= written as u64, "{during}");

    let state = cluster.converged_wait(Duration::from_secs(20)).await;
    let after = backup_to(&cluster, 2, &dir.path().join("after.bak"));
    assert_eq!(
        after["seq_last"], state["seq_last"],
        "the backup covers everything applied"
    );
    let source = ledger_of(&cluster, 1).await;

    // Through the client's retry loop: a first --node that refuses connections is skipped, and
    // the bytes written are the same backup.
    let dead = format!("127.0.0.1:{}", common::free_port());
    let out = dir.path().join("failover.bak");
    let (ok, text) = raftpay(&[
        "backup",
        "--node",
        &format!("{dead},{}", cluster.addr(1)),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "backup past a dead node failed: {text}");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(dir.path().join("after.bak")).unwrap(),
        "the same ledger gives the same backup file"
    );
    // No node that answers: the command gives up at its --timeout with the reason, and writes
    // nothing.
    let nothing = dir.path().join("nothing.bak");
    let (ok, text) = raftpay(&[
        "backup",
        "--node",
        &dead,
        "--out",
        nothing.to_str().unwrap(),
        "--timeout",
        "2",
    ]);
    assert!(!ok && text.contains("no node gave a backup"), "{text}");
    assert!(!nothing.exists());

    // Restore into a new cluster's empty data directories, then start it.
    let mut restored = TestCluster::prepare(3, Timing::default());
    let configs: Vec<String> = restored
        .nodes
        .values()
        .map(|n| n.config.display().to_string())
        .collect();
    let mut args = vec!["restore", "--from"];
    let after_path = dir.path().join("after.bak");
    args.push(after_path.to_str().unwrap());
    for config in &configs {
        args.extend(["--config", config]);
    }
    let (ok, text) = raftpay(&args);
    assert!(ok, "restore failed: {text}");
    restored.start_prepared().await;
    let state = restored.converged_wait(Duration::from_secs(20)).await;
    assert_eq!(state["seq_last"], after["seq_last"]);
    for node in 1..=3 {
        assert_eq!(
            ledger_of(&restored, node).await,
            source,
            "node {node} of the restored cluster"
        );
    }
    // The restored cluster takes new transfers on top, with the next seq.
    let (status, body) = restored
        .post(
            2,
            "/v1/transfers",
            serde_json::json!({"id": "new", "from": "bank", "to": "acct-0", "amount": 1}),
        )
        .await;
    assert_eq!(
        (status, body["seq"].as_u64()),
        (201, after["seq_last"].as_u64().map(|s| s + 1)),
        "{body}"
    );
    // Re-sending an id decided before the backup is still an idempotent replay.
    let (status, _) = restored
        .post(
            1,
            "/v1/transfers",
            serde_json::json!({"id": "b-0", "from": "bank", "to": "acct-0", "amount": 1}),
        )
        .await;
    assert_eq!(status, 200);

    // The backup taken during the stream is a gap-free prefix: restore it too and check seqs.
    let mut early = TestCluster::prepare(1, Timing::default());
    let config = early.nodes[&1].config.display().to_string();
    let during_path = dir.path().join("during.bak");
    let (ok, text) = raftpay(&[
        "restore",
        "--from",
        during_path.to_str().unwrap(),
        "--config",
        &config,
    ]);
    assert!(ok, "{text}");
    early.start_prepared().await;
    let ledger = ledger_of(&early, 1).await;
    let mut seqs: Vec<u64> = ledger[0].1.iter().map(|(seq, _)| *seq).collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=during_seq).collect::<Vec<_>>(),
        "every transfer up to the backup's seq, none after"
    );
    let sum: i64 = ledger.iter().map(|(balance, _)| balance).sum();
    assert_eq!(sum, 0, "conserved");

    // Refusals: a damaged file, and a data directory that already holds data.
    let mut bytes = std::fs::read(&after_path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    let damaged = dir.path().join("damaged.bak");
    std::fs::write(&damaged, bytes).unwrap();
    let fresh = TestCluster::prepare(1, Timing::default());
    let fresh_config = fresh.nodes[&1].config.display().to_string();
    let (ok, text) = raftpay(&[
        "restore",
        "--from",
        damaged.to_str().unwrap(),
        "--config",
        &fresh_config,
    ]);
    assert!(!ok && text.contains("checksum"), "{text}");
    assert!(
        !fresh.dir.path().join("node1").exists(),
        "a refused restore writes nothing"
    );
    let (ok, text) = raftpay(&[
        "restore",
        "--from",
        after_path.to_str().unwrap(),
        "--config",
        &configs[0],
    ]);
    assert!(!ok && text.contains("already holds data"), "{text}");
}

/// Restores `backup` into the data dirs of a new `n`-voter cluster (not started).
fn restore_new_cluster(backup: &Path, n: u64, timing: Timing) -> TestCluster {
    let cluster = TestCluster::prepare(n, timing);
    let mut args = vec![
        "restore".to_string(),
        "--from".to_string(),
        backup.display().to_string(),
    ];
    for node in cluster.nodes.values() {
        args.extend(["--config".to_string(), node.config.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, text) = raftpay(&args);
    assert!(ok, "restore failed: {text}");
    cluster
}

/// Starts node `id` empty, adds it as a learner through node 1's membership API, and waits
/// until every node (it included) is at the same index with the same state hash.
async fn learner_join(cluster: &mut TestCluster, id: u64, timing: &Timing) -> Value {
    let addr = cluster.node_prepare(id, timing);
    cluster.spawn(id);
    let (status, body) = cluster
        .post(
            1,
            "/v1/cluster/learners",
            serde_json::json!({"id": id, "http_addr": addr}),
        )
        .await;
    assert_eq!(status, 200, "add learner {id}: {body}");
    cluster.converged_wait(Duration::from_secs(60)).await
}

/// What a node answers for every source account and for one transfer decided before the backup,
/// read from its own state.
async fn local_reads(cluster: &TestCluster, node: u64) -> Vec<(u16, Value)> {
    let mut reads = Vec::new();
    for id in std::iter::once("bank".to_string()).chain((0..ACCOUNTS).map(|i| format!("acct-{i}")))
    {
        let (status, body) = cluster
            .get(node, &format!("/v1/accounts/{id}?consistency=local"))
            .await;
        reads.push((status, body["balance"].clone()));
    }
    let (status, body) = cluster
        .get(node, "/v1/transfers/g-0?consistency=local")
        .await;
    reads.push((status, body["seq"].clone()));
    reads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_to_a_restored_cluster_receives_the_restored_ledger() {
    // Goal: a node that joins a restored cluster gets the restored ledger, not an empty log's.
    // Method: back up a ledger, restore it into a new 3-node cluster, add node 4 as a learner
    // before the new cluster takes any snapshot of its own (it must be sent the restored one),
    // then write past a snapshot and purge and add node 5 (sent the new snapshot); both must
    // reach node 1's applied index and state hash and answer every account.
    let cluster = TestCluster::start(3).await;
    assert_eq!(
        cluster
            .post(1, "/v1/accounts", account_body("bank", "CNY", true))
            .await
            .0,
        201
    );
    for i in 0..ACCOUNTS {
        let body = account_body(&format!("acct-{i}"), "CNY", false);
        assert_eq!(cluster.post(2, "/v1/accounts", body).await.0, 201);
    }
    let client = cluster.client();
    for n in 0..40u64 {
        let transfer = NewTransfer {
            id: format!("g-{n}"),
            from: "bank".into(),
            to: format!("acct-{}", n % ACCOUNTS as u64),
            amount: 1 + n % 5,
            memo: None,
        };
        client.transfer(&transfer).await.expect("transfer");
    }
    cluster.converged_wait(Duration::from_secs(20)).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.bak");
    let backup = backup_to(&cluster, 1, &path);
    let restored_index = backup["applied_index"].as_u64().unwrap();
    let source_reads = local_reads(&cluster, 1).await;
    assert!(source_reads.iter().all(|(status, _)| *status == 200));
    drop(cluster);

    let timing = Timing {
        snapshot_logs_since_last: 30,
        logs_kept_behind_snapshot: 5,
        ..Timing::default()
    };
    let mut restored = restore_new_cluster(&path, 3, timing.clone());
    restored.start_prepared().await;
    let status = restored.status(1).await.expect("status of node 1");
    assert_eq!(
        (
            status["snapshot_index"].as_u64(),
            status["purged_index"].as_u64()
        ),
        (Some(restored_index), Some(restored_index)),
        "the restored node holds a snapshot at R and its log starts after R: {status}"
    );
    tracing::info!(restored_index, "restored cluster up; adding node 4");

    // Node 4 joins before the new cluster has snapshotted anything of its own.
    let state = learner_join(&mut restored, 4, &timing).await;
    let leader = restored.leader_wait(Duration::from_secs(10)).await;
    let snapshot_index =
        restored.status(leader).await.expect("leader status")["snapshot_index"].as_u64();
    assert_eq!(snapshot_index, Some(restored_index), "no new snapshot yet");
    assert_eq!(state["seq_last"], backup["seq_last"], "{state}");
    assert_eq!(local_reads(&restored, 4).await, source_reads, "node 4");

    // Past a snapshot and a purge of the new cluster's own, node 5 joins.
    let client = restored.client();
    for n in 0..40u64 {
        let transfer = NewTransfer {
            id: format!("r-{n}"),
            from: "bank".into(),
            to: "acct-0".into(),
            amount: 1,
            memo: None,
        };
        client.transfer(&transfer).await.expect("transfer");
    }
    common::eventually(
        Duration::from_secs(30),
        "a snapshot and purge past R",
        || async {
            let status = restored.status(leader).await?;
            (status["snapshot_index"].as_u64()? > restored_index
                && status["purged_index"].as_u64()? > restored_index)
                .then_some(())
        },
    )
    .await;
    tracing::info!("restored cluster purged past R; adding node 5");
    let state = learner_join(&mut restored, 5, &timing).await;
    let seq_expected = backup["seq_last"].as_u64().unwrap() + 40;
    assert_eq!(state["seq_last"].as_u64(), Some(seq_expected), "{state}");
    let node1 = local_reads(&restored, 1).await;
    assert_eq!(local_reads(&restored, 5).await, node1, "node 5");
    assert_eq!(local_reads(&restored, 4).await, node1, "node 4");
}
