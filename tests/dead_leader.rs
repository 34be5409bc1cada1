//! The dead-leader watch (`raftpay_raft::detector`): a voter that has not heard from its leader
//! for the whole lease probes the leader's port, and campaigns at once only when the connection
//! is refused. These tests stretch the timeouts (lease 4 s, election timeout 3–4 s) so that
//! openraft's own timers cannot replace a leader in under 6.9 s after it went silent, and the
//! difference is plain even on a loaded machine.

mod common;

use std::time::{Duration, Instant};

use common::{account_body, TestCluster, Timing};

const LEASE: Duration = Duration::from_millis(4000);

fn slow_timing() -> Timing {
    Timing {
        heartbeat_ms: 100,
        election_min_ms: 3000,
        election_max_ms: LEASE.as_millis() as u64,
        ..Timing::default()
    }
}

/// Term and leader reported by node `id`, if it answers.
async fn term_leader(cluster: &TestCluster, id: u64) -> Option<(u64, Option<u64>)> {
    let status = cluster.status(id).await?;
    Some((status["term"].as_u64()?, status["leader_id"].as_u64()))
}

/// Polls the `survivors` until they agree on a leader other than `old`; returns it.
async fn new_leader_wait(
    cluster: &TestCluster,
    survivors: &[u64],
    old: u64,
    deadline: Duration,
) -> u64 {
    let until = Instant::now() + deadline;
    loop {
        let mut seen = Vec::new();
        for &id in survivors {
            seen.push(
                term_leader(cluster, id)
                    .await
                    .and_then(|(_, leader)| leader),
            );
        }
        if let Some(Some(leader)) = seen.first() {
            if *leader != old && seen.iter().all(|l| *l == Some(*leader)) {
                return *leader;
            }
        }
        assert!(
            Instant::now() < until,
            "no new leader within {deadline:?}: {seen:?}\n{}",
            cluster.logs_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_once_its_lease_runs_out() {
    // Goal: after a crash the survivors elect a new leader right after the lease, without also
    // waiting out an election timeout. Method: SIGKILL the leader; time until both survivors
    // name a new leader. openraft alone needs lease + election timeout >= 6.9 s here.
    let mut cluster = TestCluster::start_with(3, slow_timing()).await;
    let old = cluster.leader_wait(Duration::from_secs(30)).await;
    let (status, body) = cluster
        .post(old, "/v1/accounts", account_body("bank", "CNY", true))
        .await;
    assert_eq!(status, 201, "{body}");
    let survivors: Vec<u64> = (1..=3).filter(|&id| id != old).collect();

    let killed_at = Instant::now();
    cluster.kill(old);
    let new = new_leader_wait(&cluster, &survivors, old, Duration::from_secs(15)).await;
    let took = killed_at.elapsed();
    assert!(
        took < LEASE + Duration::from_secs(2),
        "new leader {new} after {took:?}: the dead-leader watch did not cut the election timeout\n{}",
        cluster.logs_tail()
    );
    // The new leader takes writes, through either survivor.
    for id in &survivors {
        let (status, body) = cluster
            .post(
                *id,
                "/v1/accounts",
                account_body(&format!("after-{id}"), "CNY", false),
            )
            .await;
        assert_eq!(status, 201, "write through node {id}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_not_deposed_early() {
    // Goal: a leader that is alive but silent (SIGSTOP: its port still accepts connections) is
    // left to openraft's timers, so a slow leader never causes an early election. Method: pause
    // the leader; well past its lease, the survivors must still be in the old term; later the
    // normal timers elect a new leader, and the old one, resumed, follows it.
    let cluster = TestCluster::start_with(3, slow_timing()).await;
    let old = cluster.leader_wait(Duration::from_secs(30)).await;
    let survivors: Vec<u64> = (1..=3).filter(|&id| id != old).collect();
    let (term_before, _) = term_leader(&cluster, survivors[0])
        .await
        .expect("survivor answers");

    let paused_at = Instant::now();
    cluster.pause(old);
    // Past the lease plus the watch's jitter and a probe, but before lease + the shortest
    // election timeout (6.9 s).
    let quiet_until = paused_at + LEASE + Duration::from_millis(1500);
    while Instant::now() < quiet_until {
        for &id in &survivors {
            let (term, _) = term_leader(&cluster, id).await.expect("survivor answers");
            assert_eq!(
                term,
                term_before,
                "node {id} started an election {:?} after the leader was paused",
                paused_at.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new = new_leader_wait(&cluster, &survivors, old, Duration::from_secs(20)).await;
    let took = paused_at.elapsed();
    cluster.resume(old);
    assert!(
        took >= LEASE + Duration::from_millis(2900),
        "new leader {new} after only {took:?}"
    );
    let agreed = cluster.leader_wait(Duration::from_secs(20)).await;
    assert_ne!(agreed, old, "the resumed old leader must follow");
}
