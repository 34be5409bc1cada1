//! The status page in a real headless browser (Debian's chromium): it loads, shows the three
//! nodes and the leader, and after the leader is killed shows the new leader, the dead node as
//! down, and the leader change. `.ci/run` installs chromium; without it this test fails.

mod common;

use std::process::Command;
use std::time::Duration;

use common::TestCluster;

/// The page's DOM after its scripts ran (`--virtual-time-budget` lets the fetch and timers run).
fn rendered_dom(url: &str) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let output = Command::new("chromium")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_cluster_and_follows_a_leader_kill() {
    // Goal: the page a person opens shows the cluster as it is. Method: render it in headless
    // chromium before and after SIGKILL of the leader and read the resulting DOM.
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.leader_wait(Duration::from_secs(10)).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let dom = rendered_dom(&format!("http://{}/", cluster.addr(follower)));
    for id in 1..=3 {
        assert!(
            dom.contains(&format!("data-node-id=\"{id}\"")),
            "node {id} missing:\n{dom}"
        );
    }
    assert_eq!(text_of(&dom, "leader"), format!("node {leader}"), "{dom}");
    assert!(
        dom.contains(&format!("<tr data-node-id=\"{leader}\" class=\"leader\">")),
        "leader row not marked:\n{dom}"
    );

    cluster.kill(leader);
    let new_leader = cluster.leader_wait(Duration::from_secs(10)).await;
    let watcher = (1..=3).find(|id| *id != leader).unwrap();
    let dom = rendered_dom(&format!("http://{}/", cluster.addr(watcher)));
    assert_eq!(
        text_of(&dom, "leader"),
        format!("node {new_leader}"),
        "{dom}"
    );
    let dead_row = dom
        .split(&format!("data-node-id=\"{leader}\""))
        .nth(1)
        .unwrap_or_default();
    let dead_row = dead_row.split("</tr>").next().unwrap_or_default();
    assert!(
        dead_row.contains("down"),
        "the killed node is not shown down: {dead_row}"
    );
    let items = dom
        .split("id=\"change-list\">")
        .nth(1)
        .unwrap_or_default()
        .split("</ul>")
        .next()
        .unwrap_or_default();
    assert!(
        items.contains(&format!("node {new_leader}")),
        "leader change not listed: {items}"
    );
}
