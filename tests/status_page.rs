//! The status page in a real headless browser (Debian's chromium), under a running transfer
//! load: it shows the three nodes, the leader and a non-zero throughput; after the leader is
//! SIGKILLed under load it shows the new leader, the dead node as down, and the leader change;
//! and no acknowledged transfer is lost. `.ci/run` installs chromium; without it this test fails.

mod common;

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use axum::response::IntoResponse;
use common::{Load, LoadOutcome, LoadReport, TestCluster};
use futures::FutureExt as _;

/// The page's DOM after its scripts ran (`--virtual-time-budget` lets the fetch and timers run).
/// Async, so the load's writers keep the runtime's threads while chromium runs.
async fn rendered_dom(url: &str) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let output = tokio::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=3000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .output()
        .await
        .expect("chromium must be installed (apt-get install chromium; .ci/run does it)");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn text_of(dom: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\">");
    dom.split(&marker)
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .unwrap_or_default()
        .to_string()
}

/// Real time each `/status` answer is held by [`paced_proxy`].
const STATUS_DELAY: Duration = Duration::from_millis(500);

/// A reverse proxy to one node (GET only, what the page uses) that holds each `/status`
/// answer for [`STATUS_DELAY`] of real time; returns the proxy's base URL. Why: under
/// `--virtual-time-budget` chromium runs the page's one-second refresh timer without waiting
/// (virtual time only stops while a fetch is pending), so two refreshes may be a millisecond
/// apart in real time and the throughput the page computes between them is 0 by chance. Held
/// this long, refreshes are at least `STATUS_DELAY` apart in real time, as for a person who
/// watches the page; the page itself and the node's answers are unchanged.
async fn paced_proxy(node_addr: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the proxy");
    let proxy_addr = listener.local_addr().expect("proxy addr");
    let target = format!("http://{node_addr}");
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");
    let forward = move |uri: axum::http::Uri| {
        let url = format!("{target}{uri}");
        let http = http.clone();
        async move {
            if uri.path() == "/status" {
                tokio::time::sleep(STATUS_DELAY).await;
            }
            let Ok(answer) = http.get(&url).send().await else {
                return (axum::http::StatusCode::BAD_GATEWAY, String::new()).into_response();
            };
            let status = axum::http::StatusCode::from_u16(answer.status().as_u16())
                .expect("a status reqwest accepted");
            let content_type = answer
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("text/plain")
                .to_string();
            let body = answer.text().await.unwrap_or_default();
            (
                status,
                [(axum::http::header::CONTENT_TYPE, content_type)],
                body,
            )
                .into_response()
        }
    };
    let app = axum::Router::new().fallback(forward);
    // The proxy serves until the test's runtime shuts down.
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{proxy_addr}/")
}

/// The text of the `<li>` items of the leader-change list.
fn change_items(dom: &str) -> String {
    dom.split("id=\"change-list\">")
        .nth(1)
        .unwrap_or_default()
        .split("</ul>")
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The `<tr>` of node `id`.
fn node_row(dom: &str, id: u64) -> String {
    dom.split(&format!("data-node-id=\"{id}\""))
        .nth(1)
        .unwrap_or_default()
        .split("</tr>")
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A number the page shows in the element `id`.
fn number_of(dom: &str, id: &str) -> u64 {
    let text = text_of(dom, id);
    text.parse()
        .unwrap_or_else(|_| panic!("#{id} shows {text:?}, not a number:\n{dom}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_follows_a_leader_kill_under_load_and_no_acknowledged_transfer_is_lost() {
    // Goal: the page a person opens shows the cluster as it is while it serves payments.
    // Method: four writers post transfers without pause; render the page in headless chromium
    // on a follower, SIGKILL the leader, render it on the new leader once the load runs again;
    // then stop the load and read every acknowledged transfer back.
    let mut cluster = TestCluster::start(3).await;
    let load = Load::start(&cluster, 4).await;
    load.answered_wait(50, Duration::from_secs(20)).await;

    tracing::info!("phase 1: the page under load");
    // The page must show the leader of the moment it rendered: a leader change during the
    // render (an election on two loaded cores) renders again, within a deadline.
    let render_until = std::time::Instant::now() + Duration::from_secs(60);
    let (leader, dom) = loop {
        let leader = cluster.leader_wait(Duration::from_secs(10)).await;
        let follower = (1..=3).find(|id| *id != leader).unwrap();
        let dom = rendered_dom(&paced_proxy(cluster.addr(follower)).await).await;
        if cluster.leader_wait(Duration::from_secs(10)).await == leader {
            break (leader, dom);
        }
        assert!(
            std::time::Instant::now() < render_until,
            "the leader kept changing while the page rendered"
        );
        tracing::info!("leader changed during the render; rendering again");
    };
    for id in 1..=3 {
        let row = node_row(&dom, id);
        assert!(row.contains(">up<"), "node {id} not shown up:\n{dom}");
    }
    assert_eq!(text_of(&dom, "leader"), format!("node {leader}"), "{dom}");
    assert!(
        dom.contains(&format!("<tr data-node-id=\"{leader}\" class=\"leader\">")),
        "leader row not marked:\n{dom}"
    );
    let posted_before = number_of(&dom, "posted");
    assert!(posted_before > 0, "no transfer shown posted:\n{dom}");
    assert!(
        number_of(&dom, "tps") > 0,
        "no throughput shown under load:\n{dom}"
    );
    let term_before = number_of(&dom, "term");

    tracing::info!(leader, "phase 2: SIGKILL the leader under load");
    let answered_at_kill = load.answered();
    cluster.kill(leader);
    let new_leader = cluster.leader_wait(Duration::from_secs(10)).await;
    assert_ne!(new_leader, leader);
    // The load goes on under the new leader before the page is looked at.
    load.answered_wait(answered_at_kill + 50, Duration::from_secs(30))
        .await;
    let seq_acknowledged = load.seq_max();
    let dom = rendered_dom(&paced_proxy(cluster.addr(new_leader)).await).await;
    assert_eq!(
        text_of(&dom, "leader"),
        format!("node {new_leader}"),
        "{dom}"
    );
    let term = number_of(&dom, "term");
    assert!(
        term > term_before,
        "term {term} after the kill, {term_before} before"
    );
    let dead_row = node_row(&dom, leader);
    assert!(
        dead_row.contains("down"),
        "the killed node is not shown down: {dead_row}"
    );
    for id in (1..=3).filter(|id| *id != leader) {
        assert!(
            node_row(&dom, id).contains(">up<"),
            "node {id} not shown up:\n{dom}"
        );
    }
    let items = change_items(&dom);
    assert!(
        items.contains(&format!("term {term}: node {new_leader}")),
        "leader change to node {new_leader} in term {term} not listed: {items}"
    );
    // The leader has applied every transfer it acknowledged before the page was asked.
    let posted = number_of(&dom, "posted");
    assert!(
        posted >= seq_acknowledged && posted > posted_before,
        "page shows {posted} posted; seq {seq_acknowledged} acknowledged, {posted_before} before"
    );
    assert!(
        number_of(&dom, "tps") > 0,
        "no throughput shown under the new leader:\n{dom}"
    );

    tracing::info!("phase 3: stop the load, every acknowledged transfer is there");
    let report = load.stop().await;
    let unexpected: Vec<_> = report.outcomes.iter().filter(|o| !o.is_posted()).collect();
    assert!(
        unexpected.is_empty(),
        "transfers not posted: {unexpected:?}"
    );
    report.verify_present(&cluster).await;
    // The read-back is not vacuous: an acknowledgement of a transfer never sent is caught.
    let phantom = LoadReport {
        outcomes: vec![LoadOutcome {
            id: "never-sent".into(),
            ..report.outcomes[0].clone()
        }],
        ..LoadReport::default()
    };
    let caught = AssertUnwindSafe(phantom.verify_present(&cluster))
        .catch_unwind()
        .await;
    assert!(caught.is_err(), "a lost transfer was not noticed");
    let converged = cluster.converged_wait(Duration::from_secs(20)).await;
    // Nothing lost and nothing extra: the seqs handed out are exactly 1..=n, n acknowledged.
    let mut seqs: Vec<u64> = report.posted().iter().filter_map(|o| o.seq()).collect();
    seqs.sort_unstable();
    let n = u64::try_from(seqs.len()).unwrap();
    assert!(
        seqs.iter().copied().eq(1..=n),
        "acknowledged seqs have gaps"
    );
    assert_eq!(converged["seq_last"].as_u64(), Some(n), "{converged}");
    tracing::info!(transfers = n, "status page under load checked");
}
