//! Snapshots from peers are checked before they can hurt: a follower sent a snapshot with a
//! flipped byte, or one whose account totals overflow (crafted through the codec, with a right
//! checksum), answers `422` on `/raft/snapshot` and keeps running and serving; a sound snapshot
//! from the real leader still installs afterwards. The crafted requests carry a vote of a much
//! later term and a last index far ahead, so without the check openraft would install them (and
//! stop the node on the state machine's refusal).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{Load, TestCluster, Timing};
use openraft::{BasicNode, CommittedLeaderId, LogId, Membership, StoredMembership, Vote};
use raftpay_raft::ledger::{Account, AccountSpec, Command, CurrencyTotals, MemLedger};
use raftpay_raft::network::{snapshot_request_encode, HEADER_TARGET, ROUTE_SNAPSHOT};
use raftpay_raft::store::snapshot_data_of;
use raftpay_raft::typ::SnapshotMeta;

fn ledger_sound() -> MemLedger {
    let mut ledger = MemLedger::default();
    ledger.apply(&[Command::CreateAccount(AccountSpec {
        id: "crafted".into(),
        currency: "CNY".into(),
        allow_overdraft: false,
    })]);
    ledger
}

/// Two accounts at u64::MAX: balances that do not fit an i64, with matching currency totals.
fn ledger_overflowing() -> MemLedger {
    let mut ledger = MemLedger::default();
    for (id, debits, credits) in [("rich", 0, u64::MAX), ("poor", u64::MAX, 0)] {
        ledger.accounts.insert(
            id.into(),
            Account {
                id: id.into(),
                currency: "CNY".into(),
                allow_overdraft: id == "poor",
                debits,
                credits,
            },
        );
    }
    ledger.totals.insert(
        "CNY".into(),
        CurrencyTotals {
            debits: u128::from(u64::MAX),
            credits: u128::from(u64::MAX),
        },
    );
    ledger
}

/// A snapshot request from "leader" `leader` of term `term`, for an index far ahead, with the
/// cluster's real membership.
fn crafted_request(cluster: &TestCluster, leader: u64, term: u64, data: Vec<u8>) -> Vec<u8> {
    let log_id = LogId::new(CommittedLeaderId::new(term, leader), 1_000_000_000);
    let nodes: BTreeMap<u64, BasicNode> = cluster
        .nodes
        .iter()
        .map(|(id, node)| (*id, BasicNode::new(node.addr.clone())))
        .collect();
    let voters: BTreeSet<u64> = nodes.keys().copied().collect();
    let meta = SnapshotMeta {
        last_log_id: Some(log_id),
        last_membership: StoredMembership::new(Some(log_id), Membership::new(vec![voters], nodes)),
        snapshot_id: format!("crafted-{term}"),
    };
    snapshot_request_encode(Vote::new_committed(term, leader), meta, data).expect("encode")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_refuses_bad_snapshots_keeps_serving_and_still_installs_a_sound_one() {
    let timing = Timing {
        snapshot_logs_since_last: 100,
        logs_kept_behind_snapshot: 10,
        ..Timing::default()
    };
    let mut cluster = TestCluster::start_with(3, timing).await;
    let leader = cluster.leader_wait(Duration::from_secs(30)).await;
    let follower = cluster
        .running()
        .into_iter()
        .find(|id| *id != leader)
        .expect("follower");
    let load = Load::start(&cluster, 2).await;
    load.answered_wait(50, Duration::from_secs(30)).await;

    tracing::info!(follower, "phase 1: bad snapshots to the follower");
    let term = cluster.status(leader).await.expect("status")["term"]
        .as_u64()
        .expect("term");
    let mut flipped = snapshot_data_of(&ledger_sound()).expect("encode");
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    let overflowing = snapshot_data_of(&ledger_overflowing()).expect("encode");
    for (what, data) in [
        ("flipped byte", flipped),
        ("overflowing totals", overflowing),
    ] {
        let body = crafted_request(&cluster, leader, term + 1000, data);
        let response = cluster
            .http
            .post(format!("http://{}{ROUTE_SNAPSHOT}", cluster.addr(follower)))
            .header(HEADER_TARGET, follower.to_string())
            .body(body)
            .send()
            .await
            .expect("send the snapshot");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        assert_eq!(status, 422, "{what}: {text}\n{}", cluster.logs_tail());
        assert!(text.contains("snapshot refused"), "{what}: {text}");
        assert!(
            cluster.exited(follower).is_none(),
            "{what}: the follower stopped"
        );
        let (health, body) = cluster.get(follower, "/health").await;
        assert_eq!(
            (health, &body["status"]),
            (200, &serde_json::json!("ok")),
            "{what}"
        );
    }
    // Still serving: it takes writes (forwarded) and keeps up with the others.
    let before = load.answered();
    load.answered_wait(before + 100, Duration::from_secs(30))
        .await;
    let (status, body) = cluster
        .post(
            follower,
            "/v1/accounts",
            common::account_body("via-follower", "CNY", false),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    cluster.converged_wait(Duration::from_secs(30)).await;
    let term_after = cluster.status(follower).await.expect("status")["term"].as_u64();
    assert!(
        term_after < Some(term + 1000),
        "the crafted vote reached openraft"
    );

    tracing::info!(
        follower,
        "phase 2: a sound snapshot from the leader still installs"
    );
    let follower_last = cluster.status(follower).await.expect("status")["last_log_index"]
        .as_u64()
        .expect("last_log_index");
    cluster.stop(follower);
    common::eventually(
        Duration::from_secs(60),
        "the leader purges past the follower",
        || async {
            let leader = cluster.leader_wait(Duration::from_secs(30)).await;
            let status = cluster.status(leader).await?;
            (status["purged_index"].as_u64()? > follower_last).then_some(())
        },
    )
    .await;
    cluster.spawn(follower);
    let report = load.stop().await;
    cluster.converged_wait(Duration::from_secs(60)).await;
    let installed = cluster.log_lines(follower, "snapshot installed");
    assert!(
        !installed.is_empty(),
        "the follower caught up without a snapshot"
    );
    report.verify_present(&cluster).await;
}
