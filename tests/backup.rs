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
use raftpay::client::{Consistency, NewTransfer};
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
        raftpay::client::Client::new(&[cluster.addr(node)], cluster.api_token.as_deref()).unwrap();
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

    // Restore into a new cluster's empty data directories, then start it.
    let mut restored = TestCluster::prepare(3, Timing::default(), "");
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
    let mut early = TestCluster::prepare(1, Timing::default(), "");
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
    let fresh = TestCluster::prepare(1, Timing::default(), "");
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
