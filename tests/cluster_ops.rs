//! Snapshots, membership and node-to-node security with real processes: a node that was down past
//! a log purge catches up by snapshot; a new node joins as learner, is promoted and removed; the
//! cluster secret guards `/raft/`; SIGTERM stops a node cleanly.

mod common;

use std::time::Duration;

use common::{account_body, transfer_body, TestCluster, Timing};
use raftpay_client::NewTransfer;
use reqwest::Method;
use serde_json::json;

/// Snapshots every 50 entries, keeping 10 behind: a short outage already needs a snapshot.
fn snapshot_often() -> Timing {
    Timing {
        snapshot_logs_since_last: 50,
        logs_kept_behind_snapshot: 10,
        ..Timing::default()
    }
}

async fn transfers_send(cluster: &TestCluster, prefix: &str, n: usize) {
    let client = cluster.client();
    for i in 0..n {
        let transfer = NewTransfer {
            id: format!("{prefix}-{i}"),
            from: "bank".into(),
            to: "alice".into(),
            amount: 1,
            memo: None,
        };
        client
            .transfer(&transfer)
            .await
            .unwrap_or_else(|e| panic!("transfer {prefix}-{i}: {e:?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_past_a_purge_catches_up_by_snapshot() {
    // Goal: a follower that missed purged log entries is brought back by a snapshot install,
    // and survives a restart afterwards. Method: stop node 3, write 300 transfers with a low
    // snapshot threshold, check the leader purged past node 3's log, restart node 3, converge.
    let mut cluster = TestCluster::start_with(3, snapshot_often(), "").await;
    let leader = cluster.leader_wait(Duration::from_secs(10)).await;
    let lagging = (1..=3).find(|id| *id != leader).expect("a follower");
    for (id, overdraft) in [("bank", true), ("alice", false)] {
        assert_eq!(
            cluster
                .post(leader, "/v1/accounts", account_body(id, "CNY", overdraft))
                .await
                .0,
            201
        );
    }
    let lagging_index = cluster.status(lagging).await.expect("status")["last_log_index"]
        .as_u64()
        .unwrap();
    cluster.kill(lagging);
    transfers_send(&cluster, "gap", 300).await;
    let purged = common::eventually(
        Duration::from_secs(20),
        "a purge past the stopped node's log",
        || async {
            let status = cluster.status(leader).await?;
            let purged = status["purged_index"].as_u64()?;
            (purged > lagging_index).then_some(purged)
        },
    )
    .await;
    tracing::info!(purged, lagging_index, "leader purged past the stopped node");

    cluster.spawn(lagging);
    let state = cluster.converged_wait(Duration::from_secs(30)).await;
    assert_eq!(state["seq_last"], json!(300));
    let (status, alice) = cluster
        .get(lagging, "/v1/accounts/alice?consistency=local")
        .await;
    assert_eq!((status, alice["balance"].clone()), (200, json!(300)));
    let (status, _) = cluster
        .get(lagging, "/v1/transfers/gap-0?consistency=local")
        .await;
    assert_eq!(status, 200, "history from before the snapshot is there");

    // The installed snapshot survives a crash of the node that received it.
    cluster.kill(lagging);
    cluster.spawn(lagging);
    transfers_send(&cluster, "after", 20).await;
    let state = cluster.converged_wait(Duration::from_secs(30)).await;
    assert_eq!(state["seq_last"], json!(320));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_joins_as_learner_is_promoted_and_removed() {
    // Goal: the membership endpoints work from any node while the cluster serves. Method: add
    // node 4 as learner (it catches up by snapshot), promote it, check it votes, remove it.
    let mut cluster = TestCluster::start_with(3, snapshot_often(), "").await;
    for (id, overdraft) in [("bank", true), ("alice", false)] {
        assert_eq!(
            cluster
                .post(1, "/v1/accounts", account_body(id, "CNY", overdraft))
                .await
                .0,
            201
        );
    }
    transfers_send(&cluster, "before", 120).await;
    let addr = cluster.node_prepare(4, &snapshot_often());
    cluster.spawn(4);
    let (status, body) = cluster
        .post(
            2,
            "/v1/cluster/learners",
            json!({"id": 4, "http_addr": addr}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let roles: Vec<_> = body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_u64().unwrap(),
                m["role"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(roles.contains(&(4, "learner".to_string())), "{roles:?}");
    let state = cluster.converged_wait(Duration::from_secs(30)).await;
    assert_eq!(state["seq_last"], json!(120));

    // Promote: every id must be a member.
    let (status, body) = cluster
        .post(3, "/v1/cluster/voters", json!({"ids": [1, 2, 3, 4, 9]}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    let (status, body) = cluster
        .post(3, "/v1/cluster/voters", json!({"ids": [1, 2, 3, 4]}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["role"] == json!("voter")),
        "{body}"
    );
    transfers_send(&cluster, "four", 10).await;

    // Remove node 4 (a voter: demoted, then removed); unknown ids are 404.
    let (status, body) = cluster
        .call(1, Method::DELETE, "/v1/cluster/nodes/4", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["members"].as_array().unwrap().len(), 3, "{body}");
    let (status, body) = cluster
        .call(1, Method::DELETE, "/v1/cluster/nodes/4", None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, _) = cluster
        .call(1, Method::DELETE, "/v1/cluster/nodes/x", None)
        .await;
    assert_eq!(status, 400);
    cluster.kill(4);
    // Three voters again: losing one more still leaves a quorum.
    let leader = cluster.leader_wait(Duration::from_secs(10)).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    cluster.kill(follower);
    let (status, body) = cluster
        .post(
            leader,
            "/v1/transfers",
            transfer_body("quorum", "bank", "alice", 1),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_routes_need_the_secret_and_sigterm_stops_cleanly() {
    // Goal: with a cluster secret, `/raft/` refuses callers without it (and requests meant for
    // another node); a SIGTERM ends the process with success. Method: call the routes by hand.
    let timing = Timing {
        secret: Some("cluster-s3cret".into()),
        ..Timing::default()
    };
    let mut cluster = TestCluster::start_with(3, timing, "").await;
    assert_eq!(
        cluster
            .post(1, "/v1/accounts", account_body("bank", "CNY", true))
            .await
            .0,
        201,
        "the cluster works with its secret"
    );
    let url = format!("http://{}/raft/vote", cluster.addr(1));
    let no_secret = cluster
        .http
        .post(&url)
        .header("x-raftpay-target", "1")
        .body(vec![1u8, 0])
        .send()
        .await
        .unwrap();
    assert_eq!(no_secret.status(), 401);
    let wrong_target = cluster
        .http
        .post(&url)
        .header("x-raftpay-target", "2")
        .header("x-raftpay-secret", "cluster-s3cret")
        .body(vec![1u8, 0])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_target.status(), 409);
    let garbage = cluster
        .http
        .post(&url)
        .header("x-raftpay-target", "1")
        .header("x-raftpay-secret", "cluster-s3cret")
        .body(vec![9u8, 9, 9])
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);

    let pid = cluster.nodes[&2].pid().unwrap();
    cluster.stop(2);
    tracing::info!(pid, "node 2 stopped by SIGTERM");
    let log = std::fs::read_to_string(&cluster.nodes[&2].log).unwrap();
    assert!(
        log.contains("node stopped"),
        "no clean shutdown in the log:\n{log}"
    );
    cluster.spawn(2);
    cluster.converged_wait(Duration::from_secs(20)).await;
}

/// Writers that stream bank → alice transfers with fresh ids until stopped; returns the
/// acknowledged ids and amounts.
fn stream_start(
    cluster: &TestCluster,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<(String, u64)>>> {
    (0..3)
        .map(|writer| {
            let client = cluster
                .client()
                .with_retry_deadline(Duration::from_secs(30));
            let stop = std::sync::Arc::clone(stop);
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let transfer = NewTransfer {
                        id: format!("load-{writer}-{n}"),
                        from: "bank".into(),
                        to: "alice".into(),
                        amount: 1 + n % 3,
                        memo: None,
                    };
                    let (posted, _) = client
                        .transfer(&transfer)
                        .await
                        .unwrap_or_else(|e| panic!("{}: {e:?}", transfer.id));
                    acked.push((posted.id, posted.amount));
                }
                acked
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_is_replaced_while_payments_flow() {
    // Goal: an operator replaces a dead voter under load and loses nothing. Method: stream
    // transfers; SIGKILL node 3; add node 4 as learner, make {1,2,4} the voters, remove node 3;
    // then check every acknowledged transfer on the new node, its state hash, and that node 3
    // no longer counts (killing one more of {1,2,4} still leaves a quorum of two).
    let mut cluster = TestCluster::start_with(3, snapshot_often(), "").await;
    for (id, overdraft) in [("bank", true), ("alice", false)] {
        assert_eq!(
            cluster
                .post(1, "/v1/accounts", account_body(id, "CNY", overdraft))
                .await
                .0,
            201
        );
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers = stream_start(&cluster, &stop);
    common::eventually(Duration::from_secs(30), "load", || async {
        (cluster.status(1).await?["seq_last"].as_u64()? > 100).then_some(())
    })
    .await;

    cluster.kill(3);
    let addr = cluster.node_prepare(4, &snapshot_often());
    cluster.spawn(4);
    // As an operator would: through the retrying client (node 3 may have been the leader, so
    // the first attempts can meet an election).
    let operator = cluster
        .client()
        .with_retry_deadline(Duration::from_secs(30));
    operator.add_learner(4, &addr).await.expect("add learner 4");
    operator
        .set_voters(&[1, 2, 4])
        .await
        .expect("voters 1, 2, 4");
    let body = operator.remove_node(3).await.expect("remove node 3");
    let members: Vec<u64> = body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(members, [1, 2, 4]);
    let after = cluster.status(1).await.unwrap()["seq_last"]
        .as_u64()
        .unwrap();
    common::eventually(Duration::from_secs(30), "load after the change", || async {
        (cluster.status(1).await?["seq_last"].as_u64()? > after + 100).then_some(())
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for writer in writers {
        acked.extend(writer.await.unwrap());
    }
    let state = cluster.converged_wait(Duration::from_secs(30)).await;
    assert_eq!(
        state["seq_last"].as_u64().unwrap(),
        acked.len() as u64,
        "every posted transfer was acknowledged once"
    );
    let node4 = raftpay_client::Client::new(&[cluster.addr(4)], None).unwrap();
    let mut total = 0;
    for (id, amount) in &acked {
        let transfer = node4
            .get_transfer(id, raftpay_client::Consistency::Local)
            .await
            .unwrap_or_else(|e| panic!("node 4 lacks {id}: {e:?}"));
        assert_eq!(transfer.amount, *amount);
        total += amount;
    }
    let alice = node4
        .get_account("alice", raftpay_client::Consistency::Local)
        .await
        .unwrap();
    assert_eq!(alice.balance, i64::try_from(total).unwrap());

    // Node 3 is out of the quorum: with 1, 2, 4 voting, losing one of them still commits.
    let leader = cluster.leader_wait(Duration::from_secs(10)).await;
    let other = [1, 2, 4].into_iter().find(|id| *id != leader).unwrap();
    cluster.kill(other);
    let (status, body) = cluster
        .post(
            leader,
            "/v1/transfers",
            transfer_body("after-replace", "bank", "alice", 1),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_built_and_installed_while_payments_flow() {
    // Goal: under a steady transfer load, nodes keep building snapshots (the copy runs beside
    // the applies) and a follower that was down past a purge catches up by installing one,
    // while the load goes on; nothing acknowledged is lost and every replica ends identical.
    // Method: snapshot every 50 entries; 4 writers throughout; kill a follower, wait for the
    // leader to purge past it and to build more snapshots, restart it, wait until it installed
    // a snapshot and applies live entries; stop the load, converge, read every transfer back.
    let mut cluster = TestCluster::start_with(3, snapshot_often(), "").await;
    let leader = cluster.leader_wait(Duration::from_secs(10)).await;
    let lagging = (1..=3).find(|id| *id != leader).expect("a follower");
    let load = common::Load::start(&cluster, 4).await;
    load.answered_wait(100, Duration::from_secs(30)).await;

    let lagging_index = cluster.status(lagging).await.expect("status")["last_log_index"]
        .as_u64()
        .expect("last_log_index");
    cluster.kill(lagging);
    let first_snapshot = common::eventually(
        Duration::from_secs(60),
        "the leader purging past the stopped node under load",
        || async {
            let status = cluster.status(leader).await?;
            let purged = status["purged_index"].as_u64()?;
            (purged > lagging_index)
                .then(|| status["snapshot_index"].as_u64())
                .flatten()
        },
    )
    .await;
    // More snapshots while the load runs.
    common::eventually(
        Duration::from_secs(60),
        "a later snapshot under load",
        || async {
            let snapshot = cluster.status(leader).await?["snapshot_index"].as_u64()?;
            (snapshot >= first_snapshot + 100).then_some(())
        },
    )
    .await;

    cluster.spawn(lagging);
    let installed = common::eventually(
        Duration::from_secs(60),
        "the restarted node installing a snapshot and applying past it",
        || async {
            let status = cluster.status(lagging).await?;
            let snapshot = status["snapshot_index"].as_u64()?;
            let applied = status["last_applied"].as_u64()?;
            (snapshot > lagging_index && applied > snapshot).then_some(snapshot)
        },
    )
    .await;
    tracing::info!(
        installed,
        lagging_index,
        "lagging node caught up by snapshot"
    );
    let answered = load.answered();
    load.answered_wait(answered + 50, Duration::from_secs(30))
        .await;

    let report = load.stop().await;
    let state = cluster.converged_wait(Duration::from_secs(60)).await;
    let posted = report.posted().len() as u64;
    assert!(posted > 150, "only {posted} transfers posted");
    assert_eq!(state["seq_last"], json!(posted));
    report.verify_present(&cluster).await;
    // The caught-up node serves the whole history locally, from before its snapshot too.
    for outcome in report.posted().iter().take(20) {
        let (status, body) = cluster
            .get(
                lagging,
                &format!("/v1/transfers/{}?consistency=local", outcome.id),
            )
            .await;
        assert_eq!((status, &body), (200, &outcome.answer), "on node {lagging}");
    }
}
