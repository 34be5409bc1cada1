//! Crash tests with real processes: SIGKILL of the leader during a stream of transfers, and
//! SIGKILL of every node at once. After each, every acknowledged transfer must be present exactly
//! once, with the seq its client saw, on every node, and money must be conserved.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{account_body, TestCluster};
use raftpay_client::{ClientError, Consistency, NewTransfer};
use serde_json::json;
use tokio::sync::watch;

const ACCOUNTS: usize = 8;

/// What the writers saw: acknowledged transfers (id → seq, amount) with their completion times,
/// and ids whose outcome stayed unknown.
#[derive(Default)]
struct History {
    acked: BTreeMap<String, (u64, u64)>,
    ack_times: Vec<Instant>,
    unknown: Vec<String>,
}

async fn accounts_create(cluster: &TestCluster) {
    let (status, body) = cluster
        .post(1, "/v1/accounts", account_body("bank", "CNY", true))
        .await;
    assert_eq!(status, 201, "{body}");
    for i in 0..ACCOUNTS {
        let (status, body) = cluster
            .post(
                1 + (i as u64 % 3),
                "/v1/accounts",
                account_body(&format!("acct-{i}"), "CNY", false),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
}

/// Starts `n_writers` tasks that send bank → account transfers with fresh ids until `stop`
/// turns true; each retries (through the client) until it has a definite answer.
fn writers_start(
    cluster: &TestCluster,
    n_writers: usize,
    history: &Arc<Mutex<History>>,
    stop: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n_writers)
        .map(|writer| {
            let client = cluster
                .client()
                .with_retry_deadline(Duration::from_secs(20));
            let history = Arc::clone(history);
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while !*stop.borrow() {
                    n += 1;
                    let id = format!("w{writer}-{n}");
                    let amount = 1 + (n % 7);
                    let transfer = NewTransfer {
                        id: id.clone(),
                        from: "bank".into(),
                        to: format!("acct-{}", n as usize % ACCOUNTS),
                        amount,
                        memo: None,
                    };
                    match client.transfer(&transfer).await {
                        Ok((posted, _created)) => {
                            let mut history = history.lock().unwrap();
                            history.acked.insert(id, (posted.seq, amount));
                            history.ack_times.push(Instant::now());
                        }
                        Err(ClientError::Unavailable { .. }) => {
                            history.lock().unwrap().unknown.push(id)
                        }
                        Err(other) => panic!("transfer {id}: unexpected {other:?}"),
                    }
                }
            })
        })
        .collect()
}

/// Every acknowledged transfer is on every running node with the seq its client saw; the bank's
/// debits equal the sum of what was posted (nothing doubled); balances sum to zero.
async fn verify(cluster: &TestCluster, history: &History) {
    let state = cluster.converged_wait(Duration::from_secs(30)).await;
    let seq_last = state["seq_last"].as_u64().unwrap();
    let acked = history.acked.len() as u64;
    assert!(
        seq_last >= acked,
        "{seq_last} posted < {acked} acknowledged"
    );
    assert!(
        seq_last <= acked + history.unknown.len() as u64,
        "more posted ({seq_last}) than sent"
    );
    let client = cluster.client();
    for node in cluster.running() {
        let node_client = raftpay_client::Client::new(&[cluster.addr(node)], None).unwrap();
        for (id, (seq, amount)) in &history.acked {
            let transfer = node_client
                .get_transfer(id, Consistency::Local)
                .await
                .unwrap_or_else(|e| panic!("node {node} lost {id}: {e:?}"));
            assert_eq!(
                (transfer.seq, transfer.amount),
                (*seq, *amount),
                "node {node}, {id}"
            );
        }
        let mut sum: i128 = 0;
        let bank = node_client
            .get_account("bank", Consistency::Local)
            .await
            .unwrap();
        sum += i128::from(bank.balance);
        let mut credits = 0u64;
        for i in 0..ACCOUNTS {
            let account = node_client
                .get_account(&format!("acct-{i}"), Consistency::Local)
                .await
                .unwrap();
            assert!(account.balance >= 0);
            sum += i128::from(account.balance);
            credits += account.credits;
        }
        assert_eq!(sum, 0, "node {node}: money created or destroyed");
        assert_eq!(bank.debits, credits);
        // Unknown outcomes are either posted once or not at all.
        let mut posted_amount: u64 = history.acked.values().map(|(_, amount)| amount).sum();
        for id in &history.unknown {
            if let Ok(transfer) = client.get_transfer(id, Consistency::Linearizable).await {
                posted_amount += transfer.amount;
            }
        }
        assert_eq!(
            bank.debits, posted_amount,
            "node {node}: posted money differs from what clients sent"
        );
    }
}

/// The longest time without an acknowledged transfer after `from`.
fn longest_gap_after(history: &History, from: Instant) -> Duration {
    let mut times: Vec<Instant> = history
        .ack_times
        .iter()
        .copied()
        .filter(|t| *t >= from)
        .collect();
    times.sort();
    let mut previous = from;
    let mut longest = Duration::ZERO;
    for time in times {
        longest = longest.max(time - previous);
        previous = time;
    }
    longest
}

async fn acks_wait(history: &Arc<Mutex<History>>, at_least: usize, deadline: Duration) {
    common::eventually(deadline, "acknowledged transfers", || async {
        (history.lock().unwrap().acked.len() >= at_least).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_during_a_stream_loses_nothing() {
    // Goal: SIGKILL of the leader under load loses and doubles nothing, writes resume within
    // 2 s, and the restarted node catches up. Method: 4 writers stream transfers through the
    // retrying client; kill the leader twice; restart it; compare every acknowledged id.
    let mut cluster = TestCluster::start(3).await;
    accounts_create(&cluster).await;
    let history = Arc::new(Mutex::new(History::default()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let writers = writers_start(&cluster, 4, &history, &stop_rx);

    for round in 0..2 {
        let before = history.lock().unwrap().acked.len();
        acks_wait(&history, before + 200, Duration::from_secs(30)).await;
        let leader = cluster.leader_wait(Duration::from_secs(10)).await;
        let killed_at = Instant::now();
        cluster.kill(leader);
        tracing::info!(round, leader, "leader killed");
        let after_kill = history.lock().unwrap().acked.len();
        acks_wait(&history, after_kill + 200, Duration::from_secs(30)).await;
        let gap = longest_gap_after(&history.lock().unwrap(), killed_at);
        tracing::info!(
            round,
            gap_ms = gap.as_millis() as u64,
            "writes resumed after leader kill"
        );
        assert!(
            gap < Duration::from_secs(2),
            "round {round}: no acknowledged write for {gap:?} after the kill"
        );
        cluster.spawn(leader);
    }
    stop_tx.send(true).unwrap();
    for writer in writers {
        writer.await.unwrap();
    }
    let history = std::mem::take(&mut *history.lock().unwrap());
    tracing::info!(
        acked = history.acked.len(),
        unknown = history.unknown.len(),
        "stream finished"
    );
    assert!(
        history.acked.len() >= 800,
        "too little load to prove anything"
    );
    verify(&cluster, &history).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_every_node_at_once_loses_no_acknowledged_transfer() {
    // Goal: an acknowledged transfer survives the crash of every node (durable before acked).
    // Method: stream transfers, SIGKILL all three at the same moment, restart them, and look up
    // every acknowledged id on every node. Also: the leader after the restart leads in a new
    // term (a restarted leader that led on in its old term served stale linearizable reads).
    let mut cluster = TestCluster::start(3).await;
    accounts_create(&cluster).await;
    let history = Arc::new(Mutex::new(History::default()));
    for round in 0..2 {
        let (stop_tx, stop_rx) = watch::channel(false);
        let writers = writers_start(&cluster, 4, &history, &stop_rx);
        let before = history.lock().unwrap().acked.len();
        acks_wait(&history, before + 300, Duration::from_secs(30)).await;
        let leader = cluster.leader_wait(Duration::from_secs(10)).await;
        let term_before = cluster
            .status(leader)
            .await
            .and_then(|status| status["term"].as_u64())
            .expect("the leader's term");
        for id in 1..=3 {
            cluster.kill(id);
        }
        tracing::info!(round, term_before, "every node killed");
        stop_tx.send(true).unwrap();
        for id in 1..=3 {
            cluster.spawn(id);
        }
        for writer in writers {
            writer.await.unwrap();
        }
        let leader = cluster.leader_wait(Duration::from_secs(30)).await;
        // A restarted leader does not lead on in its old term (its read index would be the
        // first entry of that term, and a linearizable read could miss acknowledged writes):
        // someone wins a new election first.
        let term_after = cluster
            .status(leader)
            .await
            .and_then(|status| status["term"].as_u64())
            .expect("the new leader's term");
        assert!(
            term_after > term_before,
            "round {round}: node {leader} leads in term {term_after}, not after {term_before}"
        );
    }
    let history = std::mem::take(&mut *history.lock().unwrap());
    assert!(history.acked.len() >= 600);
    verify(&cluster, &history).await;
    let (status, body) = cluster
        .post(
            2,
            "/v1/transfers",
            json!({"id": "after", "from": "bank", "to": "acct-0", "amount": 1}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}
