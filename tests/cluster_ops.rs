//! Snapshots, membership and node-to-node security with real processes: a node that was down past
//! a log purge catches up by snapshot; a new node joins as learner, is promoted and removed (also
//! under load, through followers and through `scripts/cluster.sh`); a leader that loses its vote
//! hands leadership over; the cluster secret guards `/raft/`; SIGTERM stops a node cleanly.
//!
//! Over 800 lines: one scenario per test, sharing the membership and load helpers at the top.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{account_body, transfer_body, LoadSpec, TestCluster, Timing};
use raftpay_client::NewTransfer;
use reqwest::Method;
use serde_json::{json, Value};

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
    let mut cluster = TestCluster::start_with(3, snapshot_often()).await;
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
    let mut cluster = TestCluster::start_with(3, snapshot_often()).await;
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
    let mut cluster = TestCluster::start_with(3, timing).await;
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
    let mut cluster = TestCluster::start_with(3, snapshot_often()).await;
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
    let mut cluster = TestCluster::start_with(3, snapshot_often()).await;
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

/// openraft 0.9's default `replication_lag_threshold`: a blocking `add_learner` returns at
/// once while the learner is at most this many entries behind.
const OPENRAFT_REPLICATION_LAG_THRESHOLD: u64 = 5000;

/// How soon a voter must lead after the leader lost its vote (the followers' lease, 400 ms in
/// the test timing, plus an election timeout, plus room for a loaded 2-core machine).
const HANDOFF_DEADLINE: Duration = Duration::from_secs(5);

/// Each member's role in a `/v1/cluster` body.
fn roles(body: &Value) -> BTreeMap<u64, String> {
    body["members"]
        .as_array()
        .map(|members| {
            members
                .iter()
                .filter_map(|m| Some((m["id"].as_u64()?, m["role"].as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Member `id` of a `/v1/cluster` body.
fn member(body: &Value, id: u64) -> Option<&Value> {
    body["members"]
        .as_array()?
        .iter()
        .find(|m| m["id"] == json!(id))
}

/// The status of a node among `ids` that says it leads and is not stepping down.
async fn leader_status(cluster: &TestCluster, ids: &[u64]) -> Option<(u64, Value)> {
    for id in ids {
        if let Some(status) = cluster.status(*id).await {
            let leads = status["leader_id"] == status["node_id"];
            if leads && status["stepping_down"] != json!(true) {
                return Some((*id, status));
            }
        }
    }
    None
}

/// A node of `ids` other than the agreed leader.
async fn follower_of(cluster: &TestCluster, ids: &[u64]) -> (u64, u64) {
    let leader = cluster.leader_wait(Duration::from_secs(10)).await;
    let follower = ids
        .iter()
        .copied()
        .find(|id| *id != leader)
        .expect("a follower");
    (leader, follower)
}

/// Waits until the leader reports that node `id` holds the log up to `index`; returns its
/// `/v1/cluster` member entry then.
async fn caught_up_wait(cluster: &TestCluster, ids: &[u64], id: u64, index: u64) -> Value {
    let reported = std::cell::Cell::new(Instant::now());
    common::eventually(Duration::from_secs(60), "the learner catching up", || async {
        let (_, status) = leader_status(cluster, ids).await?;
        let entry = member(&status, id)?.clone();
        let matched = entry["matched_index"].as_u64()?;
        if reported.get().elapsed() >= Duration::from_secs(1) {
            tracing::info!(node = id, matched, index, lag = %entry["lag_entries"], "catching up");
            reported.set(Instant::now());
        }
        (matched >= index).then_some(entry)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_through_a_follower_succeed_under_load() {
    // Goal: under a transfer load, adding a node through a follower (the forwarding path) is
    // answered once the change is committed, never after a catch-up that can outlast the
    // follower's forward timeout; promoting and removing it succeed too; re-sending the add
    // changes nothing and another address for the id is refused; the load loses nothing.
    // Method: 3 voters, 6 writers until the leader's log is longer than openraft's
    // `replication_lag_threshold` (5000 entries: a blocking add waits only for a learner further
    // behind than that, as in a long-lived cluster). Through a follower: add node 4 before its
    // process even runs (the old blocking add waits for a catch-up that cannot happen, and the
    // follower answers 503 after its forward timeout), again (200,
    // same membership entry), with another address (409, membership unchanged); start node 4
    // and follow its progress in the leader's /v1/cluster; promote it, remove it, each through a
    // follower. Then every acknowledged transfer is read back and the balances add up.
    let mut cluster = TestCluster::start_with(3, snapshot_often()).await;
    let spec = LoadSpec::new("load", 6);
    spec.accounts_create(&cluster).await;
    let load = spec.start(&cluster);
    let voters = [1, 2, 3];
    let log_long = OPENRAFT_REPLICATION_LAG_THRESHOLD + 200;
    let reported = std::cell::Cell::new(Instant::now());
    common::eventually(
        Duration::from_secs(180),
        "a log longer than the lag threshold",
        || async {
            let (_, status) = leader_status(&cluster, &voters).await?;
            let last = status["last_log_index"].as_u64()?;
            if reported.get().elapsed() >= Duration::from_secs(5) {
                tracing::info!(last_log_index = last, log_long, "growing the log");
                reported.set(Instant::now());
            }
            (last > log_long).then_some(())
        },
    )
    .await;

    let addr = cluster.node_prepare(4, &snapshot_often());
    let (leader, follower) = follower_of(&cluster, &voters).await;
    tracing::info!(
        leader,
        follower,
        "adding node 4 (not started yet) through a follower"
    );
    let add = json!({"id": 4, "http_addr": addr});
    let started = Instant::now();
    let (status, added) = cluster
        .post(follower, "/v1/cluster/learners", add.clone())
        .await;
    assert_eq!(status, 200, "add through follower {follower}: {added}");
    tracing::info!(took_ms = started.elapsed().as_millis(), "node 4 added");
    assert_eq!(roles(&added).get(&4).map(String::as_str), Some("learner"));
    let added_at = added["last_log_index"]
        .as_u64()
        .expect("the leader's last_log_index");
    let membership_index = added["membership_index"]
        .as_u64()
        .expect("membership_index");
    assert_eq!(
        member(&added, 4).expect("node 4")["http_addr"],
        json!(addr),
        "{added}"
    );

    // Re-sent: harmless, no new membership entry.
    let (_, follower) = follower_of(&cluster, &voters).await;
    let (status, again) = cluster
        .post(follower, "/v1/cluster/learners", add.clone())
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(roles(&again), roles(&added));
    assert_eq!(
        again["membership_index"],
        json!(membership_index),
        "{again}"
    );
    // The same id at another address, or another id at a member's address: refused, unchanged.
    for (body, what) in [
        (
            json!({"id": 4, "http_addr": "127.0.0.1:1"}),
            "node 4 elsewhere",
        ),
        (
            json!({"id": 5, "http_addr": addr}),
            "node 5 at node 4's address",
        ),
    ] {
        let (status, refused) = cluster.post(follower, "/v1/cluster/learners", body).await;
        assert_eq!(
            (status, refused["error"]["code"].as_str()),
            (409, Some("id_conflict")),
            "{what}: {refused}"
        );
    }
    let (_, now) = leader_status(&cluster, &voters).await.expect("a leader");
    assert_eq!(now["membership_index"], json!(membership_index), "{now}");
    assert_eq!(member(&now, 4).expect("node 4")["http_addr"], json!(addr));
    assert!(member(&now, 5).is_none(), "{now}");

    cluster.spawn(4);
    let progress = caught_up_wait(&cluster, &voters, 4, added_at).await;
    tracing::info!(%progress, "node 4 caught up");

    let (_, follower) = follower_of(&cluster, &voters).await;
    let (status, promoted) = cluster
        .post(follower, "/v1/cluster/voters", json!({"ids": [1, 2, 3, 4]}))
        .await;
    assert_eq!(
        status, 200,
        "promote through follower {follower}: {promoted}"
    );
    assert!(
        roles(&promoted).values().all(|role| role == "voter"),
        "{promoted}"
    );
    let answered = load.answered();
    load.answered_wait(answered + 50, Duration::from_secs(30))
        .await;

    let (_, follower) = follower_of(&cluster, &voters).await;
    let (status, removed) = cluster
        .call(follower, Method::DELETE, "/v1/cluster/nodes/4", None)
        .await;
    assert_eq!(status, 200, "remove through follower {follower}: {removed}");
    assert_eq!(roles(&removed).keys().copied().collect::<Vec<_>>(), voters);
    cluster.kill(4);
    let answered = load.answered();
    load.answered_wait(answered + 50, Duration::from_secs(30))
        .await;

    let report = load.stop().await;
    let state = cluster.converged_wait(Duration::from_secs(60)).await;
    let posted = report.posted().len() as u64;
    assert!(posted > 200, "only {posted} transfers posted");
    assert_eq!(
        state["seq_last"],
        json!(posted),
        "each acknowledged transfer once"
    );
    report.verify_present(&cluster).await;
    report
        .balances_check_through(&spec, &cluster.client())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_its_vote_hands_over_leadership_promptly() {
    // Goal: a leader that is demoted to learner, or removed, while it leads gives way to a
    // remaining voter within seconds (openraft 0.9 would let a demoted leader lead on as a
    // learner indefinitely), and the load loses nothing across both handovers.
    // Method: 4 voters (node 4 added and promoted), 3 writers. Demote the leader through a
    // follower; poll until another voter leads and the old leader follows it as a learner.
    // Then remove the new leader through a follower; poll until a remaining voter leads. Stop
    // the load, converge, read every acknowledged transfer back and check the balances.
    let mut cluster = TestCluster::start_with(3, snapshot_often()).await;
    let addr = cluster.node_prepare(4, &snapshot_often());
    cluster.spawn(4);
    let (status, body) = cluster
        .post(
            1,
            "/v1/cluster/learners",
            json!({"id": 4, "http_addr": addr}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = cluster
        .post(1, "/v1/cluster/voters", json!({"ids": [1, 2, 3, 4]}))
        .await;
    assert_eq!(status, 200, "{body}");
    let spec = LoadSpec::new("load", 3);
    spec.accounts_create(&cluster).await;
    let load = spec.start(&cluster);
    load.answered_wait(100, Duration::from_secs(30)).await;
    let all = [1, 2, 3, 4];

    // Demote the leader.
    let (demoted, follower) = follower_of(&cluster, &all).await;
    let voters: Vec<u64> = all.iter().copied().filter(|id| *id != demoted).collect();
    tracing::info!(demoted, follower, ?voters, "demoting the leader");
    let (status, body) = cluster
        .post(follower, "/v1/cluster/voters", json!({"ids": voters}))
        .await;
    assert_eq!(status, 200, "{body}");
    let started = Instant::now();
    let successor = common::eventually(
        HANDOFF_DEADLINE,
        "a voter leading after the demotion",
        || async {
            let (leader, _) = leader_status(&cluster, &voters).await?;
            let old = cluster.status(demoted).await?;
            (old["leader_id"] == json!(leader) && old["state"] == json!("learner"))
                .then_some(leader)
        },
    )
    .await;
    tracing::info!(
        demoted,
        successor,
        took_ms = started.elapsed().as_millis(),
        "leadership handed over after the demotion"
    );
    let answered = load.answered();
    load.answered_wait(answered + 50, Duration::from_secs(30))
        .await;

    // Remove the leader.
    let remaining: Vec<u64> = voters
        .iter()
        .copied()
        .filter(|id| *id != successor)
        .collect();
    let follower = remaining[0];
    tracing::info!(removed = successor, follower, "removing the leader");
    let (status, body) = cluster
        .call(
            follower,
            Method::DELETE,
            &format!("/v1/cluster/nodes/{successor}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let started = Instant::now();
    let next = common::eventually(
        HANDOFF_DEADLINE,
        "a voter leading after the removal",
        || async {
            let (leader, _) = leader_status(&cluster, &remaining).await?;
            // The learner that was demoted follows it too.
            let old = cluster.status(demoted).await?;
            (old["leader_id"] == json!(leader)).then_some(leader)
        },
    )
    .await;
    tracing::info!(
        removed = successor,
        next,
        took_ms = started.elapsed().as_millis(),
        "leadership handed over after the removal"
    );
    cluster.kill(successor);
    let answered = load.answered();
    load.answered_wait(answered + 50, Duration::from_secs(30))
        .await;

    let report = load.stop().await;
    let state = cluster.converged_wait(Duration::from_secs(60)).await;
    let posted = report.posted().len() as u64;
    assert_eq!(
        state["seq_last"],
        json!(posted),
        "each acknowledged transfer once"
    );
    report.verify_present(&cluster).await;
    report
        .balances_check_through(&spec, &cluster.client())
        .await;
}

/// A cluster run by `scripts/cluster.sh` (this build's binary, a temporary data directory, a
/// free port range); stopped with `cluster.sh stop` when dropped.
struct ScriptCluster {
    dir: tempfile::TempDir,
    port_base: u16,
}

impl ScriptCluster {
    fn new() -> ScriptCluster {
        common::tracing_init();
        let dir = tempfile::tempdir().expect("temp dir");
        // Node N serves on port_base + N: find four free ports in a row.
        let port_base = loop {
            let first = common::free_port();
            let Some(base) = first
                .checked_sub(1)
                .filter(|base| (1000..=65000).contains(base))
            else {
                continue;
            };
            let free =
                (2..=4).all(|n| std::net::TcpListener::bind(("127.0.0.1", base + n)).is_ok());
            if free {
                break base;
            }
        };
        ScriptCluster { dir, port_base }
    }

    fn addr(&self, n: u16) -> String {
        format!("127.0.0.1:{}", self.port_base + n)
    }

    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut command =
            std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/cluster.sh"));
        command
            .args(args)
            .env("RAFTPAY_BIN", env!("CARGO_BIN_EXE_raftpay"))
            .env("RAFTPAY_DATA", self.dir.path())
            .env("RAFTPAY_PORT_BASE", self.port_base.to_string())
            .env_remove("RAFTPAY_API_TOKEN");
        command
    }

    /// Runs `cluster.sh args` (without blocking the runtime) and returns its stdout.
    ///
    /// # Panics
    /// When it exits with anything but success.
    async fn run(&self, args: &[&str]) -> String {
        let started = Instant::now();
        let output = tokio::process::Command::from(self.command(args))
            .output()
            .await
            .expect("run scripts/cluster.sh");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        tracing::info!(?args, took_ms = started.elapsed().as_millis(), status = ?output.status, "cluster.sh\n{stdout}{stderr}");
        assert!(
            output.status.success(),
            "cluster.sh {args:?} failed ({}):\n{stdout}\n{stderr}",
            output.status
        );
        stdout
    }
}

impl Drop for ScriptCluster {
    fn drop(&mut self) {
        // Kills by pid file; the nodes are detached from the test process.
        let _ = self.command(&["stop"]).output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_script_adds_promotes_and_removes_under_load() {
    // Goal: the operator's script succeeds under a transfer load: `add 4` answers and waits for
    // the catch-up with progress lines, running it again is harmless, `promote 4` and
    // `remove 4` succeed, and `raftpay cluster status` (asked of nodes 1-3 only) shows node 4 as
    // a learner with its progress. Method: `cluster.sh start` with this build's binary in a
    // temporary directory and port range, 3 writers through nodes 1-3, the four commands, then
    // every acknowledged transfer read back and the balances checked.
    let script = ScriptCluster::new();
    script.run(&["start"]).await;
    let nodes: Vec<(u64, String)> = (1..=3).map(|n| (u64::from(n), script.addr(n))).collect();
    let addrs: Vec<String> = nodes.iter().map(|(_, addr)| addr.clone()).collect();
    let client = raftpay_client::Client::new(&addrs, None).expect("client");
    let spec = LoadSpec::new("sh", 3);
    spec.accounts_create_through(&client).await;
    let load = spec.start_on(nodes, None);
    load.answered_wait(100, Duration::from_secs(30)).await;

    let added = script.run(&["add", "4"]).await;
    assert!(added.contains("node 4 caught up"), "{added}");
    let again = script.run(&["add", "4"]).await;
    assert!(again.contains("node 4 caught up"), "{again}");

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_raftpay"))
        .args(["--node", &addrs.join(","), "cluster", "status"])
        .output()
        .await
        .expect("run raftpay cluster status");
    let table = String::from_utf8_lossy(&output.stdout).into_owned();
    tracing::info!("raftpay cluster status\n{table}");
    assert!(output.status.success(), "{table}");
    let row = table
        .lines()
        .find(|line| line.starts_with(&script.addr(4)))
        .unwrap_or_else(|| panic!("node 4 missing from the status table:\n{table}"));
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(columns.get(1..3), Some(&["4", "learner"][..]), "{row}");
    assert!(
        columns
            .get(7)
            .is_some_and(|matched| matched.parse::<u64>().is_ok()),
        "no progress for node 4: {row}"
    );

    let promoted = script.run(&["promote", "4"]).await;
    assert!(promoted.contains("node 4 is a voter"), "{promoted}");
    let answered = load.answered();
    load.answered_wait(answered + 50, Duration::from_secs(30))
        .await;
    script.run(&["remove", "4"]).await;
    let answered = load.answered();
    load.answered_wait(answered + 50, Duration::from_secs(30))
        .await;

    let report = load.stop().await;
    let state = common::eventually(Duration::from_secs(60), "nodes 1-3 converged", || async {
        let mut states = Vec::new();
        for addr in &addrs {
            states.push(client.cluster_status(Some(addr)).await.ok()?);
        }
        let first = states[0].clone();
        states
            .iter()
            .all(|s| {
                (s.last_applied, s.last_log_index) == (first.last_applied, first.last_log_index)
            })
            .then_some(first)
    })
    .await;
    tracing::info!(last_applied = state.last_applied, "converged");
    let posted = report.posted().len() as u64;
    assert!(posted > 150, "only {posted} transfers posted");
    report.verify_present_through(&client).await;
    report.balances_check_through(&spec, &client).await;
}
