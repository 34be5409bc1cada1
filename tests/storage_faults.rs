//! Fatal means stopped: a node whose storage fails (an injected I/O error in the log's fsync or
//! in the state machine's write, or an injected panic in apply) stops taking requests, says so
//! on `/health` and `/ready`, logs one error line and exits with status 3 (SIGABRT for a panic),
//! while the other two nodes carry on taking transfers and lose none that was acknowledged.
//! Faults come from `RAFTPAY_FAULT` (`raftpay_raft::fault`, debug builds only), set on one node.

mod common;

use std::os::unix::process::ExitStatusExt as _;
use std::time::{Duration, Instant};

use common::{Load, LoadReport, TestCluster, Timing};
use serde_json::Value;

/// `raftpay serve`'s exit status after a fault (`raftpay::server::EXIT_FAULT`).
const EXIT_FAULT: i32 = 3;
/// How long the faulty node keeps answering before it exits (`linger-ms`).
const LINGER: Duration = Duration::from_secs(3);
/// The one error line a fault logs.
const FAULT_LINE: &str = "node stopped on a fatal fault";

/// What the faulty node answered while it lingered.
#[derive(Debug, Default)]
struct Lingered {
    health: Option<Value>,
    ready: Option<Value>,
    write_status: Option<u16>,
}

/// Polls node `id` until its process ends, recording its fault answers on the way.
async fn fault_observe(
    cluster: &mut TestCluster,
    id: u64,
    deadline: Duration,
) -> (std::process::ExitStatus, Lingered) {
    let until = Instant::now() + deadline;
    let mut seen = Lingered::default();
    loop {
        if let Some(status) = cluster.exited(id) {
            return (status, seen);
        }
        assert!(
            Instant::now() < until,
            "node {id} did not stop within {deadline:?}\n{}",
            cluster.logs_tail()
        );
        let base = format!("http://{}", cluster.addr(id));
        let short = Duration::from_millis(500);
        if let Ok(response) = cluster
            .http
            .get(format!("{base}/health"))
            .timeout(short)
            .send()
            .await
        {
            if response.status().as_u16() == 503 {
                seen.health = response.json().await.ok();
                let ready = cluster.http.get(format!("{base}/ready")).timeout(short);
                if let Ok(ready) = ready.send().await {
                    assert_eq!(ready.status().as_u16(), 503, "/ready of a faulty node");
                    seen.ready = ready.json().await.ok();
                }
                let body = common::transfer_body("after-fault", "x", "y", 1);
                let post = cluster
                    .http
                    .post(format!("{base}/v1/transfers"))
                    .json(&body);
                if let Ok(answer) = post.timeout(short).send().await {
                    seen.write_status = Some(answer.status().as_u16());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts a cluster whose node `faulty` runs with `RAFTPAY_FAULT=fault`; with `lead`, makes it
/// the leader first.
async fn cluster_with_fault(faulty: u64, fault: &str, lead: bool) -> TestCluster {
    let mut cluster = TestCluster::prepare(3, Timing::default());
    cluster.node_env(faulty, "RAFTPAY_FAULT", Some(fault));
    cluster.start_prepared().await;
    if lead {
        cluster.leader_make(faulty, Duration::from_secs(60)).await;
    }
    cluster
}

/// Runs a load until node `faulty` stops, then on the survivors until they acknowledged
/// `after_fault` more transfers; returns the load's report and what the node lingered with.
async fn load_through_fault(
    cluster: &mut TestCluster,
    faulty: u64,
    after_fault: u64,
) -> (std::process::ExitStatus, Lingered, LoadReport) {
    let load = Load::start(cluster, 4).await;
    tracing::info!(faulty, "load running; waiting for the fault");
    let (status, lingered) = fault_observe(cluster, faulty, Duration::from_secs(90)).await;
    tracing::info!(?status, ?lingered, "faulty node stopped");
    let answered = load.answered();
    load.answered_wait(answered + after_fault, Duration::from_secs(60))
        .await;
    let report = load.stop().await;
    (status, lingered, report)
}

/// The checks every storage fault must pass.
async fn assert_stopped_cleanly(
    cluster: &mut TestCluster,
    faulty: u64,
    status: std::process::ExitStatus,
    lingered: &Lingered,
    report: &LoadReport,
    kind: &str,
) {
    assert_eq!(
        status.code(),
        Some(EXIT_FAULT),
        "exit status {status:?}\n{}",
        cluster.logs_tail()
    );
    let health = lingered
        .health
        .as_ref()
        .expect("/health said fault before the exit");
    assert_eq!(health["status"], "fault", "{health}");
    assert_eq!(health["kind"], kind, "{health}");
    assert!(
        health["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{health}"
    );
    let ready = lingered
        .ready
        .as_ref()
        .expect("/ready answered during the linger");
    assert_eq!(ready["status"], "fault", "{ready}");
    assert_eq!(
        lingered.write_status,
        Some(503),
        "a write to the faulty node"
    );
    let lines = cluster.log_lines(faulty, FAULT_LINE);
    assert_eq!(lines.len(), 1, "one fault line in the log: {lines:#?}");
    assert!(lines[0].contains("ERROR"), "{}", lines[0]);
    assert!(lines[0].contains("exit_status=3"), "{}", lines[0]);

    // The survivors took transfers after the fault, and lost none that was acknowledged.
    let survivors: Vec<u64> = cluster.running();
    assert_eq!(survivors.len(), 2, "{survivors:?}");
    for id in &survivors {
        assert!(
            report.answered_by(*id, 201) + report.answered_by(*id, 200) > 0,
            "node {id} took no transfer: {:?}",
            report.answered
        );
    }
    assert!(
        report.posted().len() > 100,
        "{} posted",
        report.posted().len()
    );
    report.verify_present(cluster).await;
    cluster.converged_wait(Duration::from_secs(30)).await;
}

/// Restarts the faulty node without the fault and waits until it agrees with the others.
async fn restart_and_converge(cluster: &mut TestCluster, faulty: u64) {
    cluster.node_env(faulty, "RAFTPAY_FAULT", None);
    cluster.spawn(faulty);
    let state = cluster.converged_wait(Duration::from_secs(60)).await;
    tracing::info!(%state, "the restarted node caught up");
    assert_eq!(cluster.running().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_log_fsync_on_a_follower_stops_it_and_the_others_carry_on() {
    // Goal: an I/O error from the log's group fsync is fatal for the node, and only for it.
    // Method: node 3 fails its fsyncs after 150 good ones (and lingers 3 s); a 4-writer load
    // runs until it exits and then on the two others; check the exit, the fault answers, the
    // one log line, every acknowledged transfer on the survivors, and a clean restart.
    let fault = format!("log-sync:after=150,linger-ms={}", LINGER.as_millis());
    let mut cluster = cluster_with_fault(3, &fault, false).await;
    if cluster.leader_wait(Duration::from_secs(10)).await == 3 {
        // A follower is wanted here: move the lead away.
        let other = 1;
        cluster.leader_make(other, Duration::from_secs(60)).await;
    }
    let (status, lingered, report) = load_through_fault(&mut cluster, 3, 300).await;
    assert_stopped_cleanly(&mut cluster, 3, status, &lingered, &report, "storage").await;
    restart_and_converge(&mut cluster, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_state_write_on_the_leader_stops_it_and_the_others_carry_on() {
    // Goal: an I/O error while the state machine writes an apply's batch is fatal for the node;
    // on the leader, the other two elect a new one and go on. Method: node 1 is made leader and
    // fails its state writes after 120 good ones; same checks as above.
    let fault = format!("state-apply:after=120,linger-ms={}", LINGER.as_millis());
    let mut cluster = cluster_with_fault(1, &fault, true).await;
    let (status, lingered, report) = load_through_fault(&mut cluster, 1, 300).await;
    assert_stopped_cleanly(&mut cluster, 1, status, &lingered, &report, "storage").await;
    restart_and_converge(&mut cluster, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panic_in_apply_aborts_the_node_after_one_error_line() {
    // Goal: a panic in the state machine (what an invariant assertion does) takes the whole
    // process down at once, after one error line, and the others carry on. Method: node 2
    // panics in its 80th apply; a load runs through it; check SIGABRT, the panic line, the
    // acknowledged transfers on the survivors.
    let mut cluster = cluster_with_fault(2, "state-apply:panic-after=80", false).await;
    let load = Load::start(&cluster, 4).await;
    let status = cluster.exit_wait(2, Duration::from_secs(90)).await;
    let answered = load.answered();
    load.answered_wait(answered + 200, Duration::from_secs(60))
        .await;
    let report = load.stop().await;
    assert_eq!(status.signal(), Some(6), "SIGABRT expected, got {status:?}");
    let lines = cluster.log_lines(2, "panic: the node aborts");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("injected panic at state-apply"),
        "{}",
        lines[0]
    );
    report.verify_present(&cluster).await;
    restart_and_converge(&mut cluster, 2).await;
}
