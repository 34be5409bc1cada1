//! The status page in a real headless browser (Debian's chromium), under a running transfer
//! load: it shows the three nodes, the leader and a non-zero throughput, the last minutes'
//! throughput and p99 latency (agreeing with the node's `/metrics`) with their charts, and each
//! member's replication lag and disk use; after the leader is SIGKILLed under load it shows the
//! new leader, the dead node as down and lagging, and the leader change; once quiet, every live
//! member lags 0 and its disk figures are its own files; and no acknowledged transfer is lost.
//! `.ci/run` installs chromium; without it this test fails.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use axum::response::IntoResponse;
use common::{eventually, Load, LoadOutcome, LoadReport, TestCluster};
use futures::FutureExt as _;
use serde_json::Value;

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

/// A decimal number the page shows in the element `id`.
fn float_of(dom: &str, id: &str) -> f64 {
    let text = text_of(dom, id);
    text.parse()
        .unwrap_or_else(|_| panic!("#{id} shows {text:?}, not a number:\n{dom}"))
}

/// The value of the attribute `name` in `html` (the first one), as a number.
fn attribute_number(html: &str, name: &str) -> Option<u64> {
    html.split(&format!("{name}=\""))
        .nth(1)?
        .split('"')
        .next()?
        .parse()
        .ok()
}

/// The text of the `<td class="{class}">` in a row.
fn cell_text(row: &str, class: &str) -> String {
    row.split(&format!("class=\"{class}\""))
        .nth(1)
        .and_then(|rest| rest.split_once('>'))
        .and_then(|(_, rest)| rest.split('<').next())
        .unwrap_or_default()
        .to_string()
}

/// The points of the line chart in the SVG `id`.
fn chart_points(dom: &str, id: &str) -> usize {
    let svg = dom
        .split(&format!("id=\"{id}\""))
        .nth(1)
        .and_then(|rest| rest.split("</svg>").next())
        .unwrap_or_default();
    svg.split("points=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map_or(0, |points| points.split_whitespace().count())
}

/// The sum of the samples of `name` in a `/metrics` text whose labels include every one of
/// `labels` (each `key="value"`). The values here hold no spaces, so the value is the last word.
fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .map(|line| {
            let value = line.rsplit(' ').next().unwrap_or_default();
            value
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("bad sample: {line}"))
        })
        .sum()
}

/// The transfer route's latency histogram in a `/metrics` text: (bucket bound in seconds,
/// requests at or under it), ascending, `+Inf` last.
fn transfer_latency_buckets(text: &str) -> Vec<(f64, f64)> {
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|line| line.starts_with("raftpay_http_request_duration_seconds_bucket{"))
        .filter(|line| line.contains(TRANSFER_ROUTE) && line.contains("method=\"POST\""))
        .map(|line| {
            let bound = line
                .split("le=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .expect("a bucket has le");
            let bound = if bound == "+Inf" {
                f64::INFINITY
            } else {
                bound.parse().expect("numeric le")
            };
            (
                bound,
                metric_sum(line, "raftpay_http_request_duration_seconds_bucket", &[]),
            )
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

const TRANSFER_ROUTE: &str = "route=\"/v1/transfers\"";

async fn metrics_text(cluster: &TestCluster, node: u64) -> String {
    let url = format!("http://{}/metrics", cluster.addr(node));
    let response = cluster.http.get(&url).send().await.expect("GET /metrics");
    response.text().await.expect("metrics text")
}

/// The load figures of `node`'s `/status` agree with its `/metrics`, read just before and just
/// after (the window covers the node's whole life while it is under five minutes old): the
/// requests and transfers counted, the time covered, the rate, and the p99 against the request
/// latency histogram. Returns the `/status` answer.
async fn load_figures_check(cluster: &TestCluster, node: u64) -> Value {
    let before = metrics_text(cluster, node).await;
    let (code, status) = cluster.get(node, "/status").await;
    assert_eq!(code, 200, "{status}");
    let after = metrics_text(cluster, node).await;
    load_figures_agree(&before, &status, &after);
    status
}

/// See [`load_figures_check`]; apart, so that its own test can feed it wrong figures.
fn load_figures_agree(before: &str, status: &Value, after: &str) {
    let window = &status["load"]["window"];
    let number = |field: &str| {
        window[field]
            .as_f64()
            .unwrap_or_else(|| panic!("load.window.{field} missing: {status}"))
    };
    let uptime = |text: &str| metric_sum(text, "raftpay_uptime_seconds", &[]);
    assert!(
        uptime(after) < 280.0,
        "the node is too old for its window to cover its whole life"
    );
    let requests = |text: &str| {
        metric_sum(
            text,
            "raftpay_http_request_duration_seconds_count",
            &[TRANSFER_ROUTE, "method=\"POST\""],
        )
    };
    let (n_before, n_after) = (requests(before), requests(after));
    assert!(
        (n_before..=n_after).contains(&number("requests")),
        "window requests {} outside {n_before}..={n_after}",
        number("requests")
    );
    let posted = |text: &str| metric_sum(text, "raftpay_transfers_posted_total", &[]);
    assert!(
        (posted(before)..=posted(after)).contains(&number("transfers")),
        "window transfers {} outside {}..={}",
        number("transfers"),
        posted(before),
        posted(after)
    );
    // The window starts once the node has opened its storage, after the process started.
    let seconds = number("seconds");
    assert!(
        (uptime(before) - 5.0..=uptime(after) + 1.0).contains(&seconds),
        "window of {seconds} s; uptime {} to {} s",
        uptime(before),
        uptime(after)
    );
    let rate = number("transfers_per_second");
    assert!(
        (rate - number("transfers") / seconds).abs() <= 0.1,
        "{rate} transfers/s for {} transfers in {seconds} s",
        number("transfers")
    );
    // The p99 (hdrhistogram: within 1% above the true one) against the histogram's buckets:
    // at least 99% of the requests took at most the bucket bound at or above it, and fewer
    // than 99% (plus one) took at most a bound clearly below it. Requests between the scrapes
    // may fall either way.
    let p99 = number("p99_ms") / 1000.0;
    let buckets_before = transfer_latency_buckets(before);
    let buckets_after = transfer_latency_buckets(after);
    let above = buckets_after
        .iter()
        .find(|(bound, _)| *bound >= p99)
        .expect("+Inf is above everything");
    assert!(
        above.1 >= 0.99 * n_before,
        "p99 {p99} s, but only {} of {n_after} requests took at most {} s",
        above.1,
        above.0
    );
    if let Some(below) = buckets_before
        .iter()
        .rev()
        .find(|(bound, _)| *bound <= p99 / 1.02)
    {
        assert!(
            below.1 <= 0.99 * n_after + 1.0,
            "p99 {p99} s, but {} of {n_after} requests took at most {} s",
            below.1,
            below.0
        );
    }
}

/// Bytes of the log segments under `data_dir`.
fn segment_bytes(data_dir: &std::path::Path) -> u64 {
    std::fs::read_dir(data_dir.join("wal"))
        .expect("the wal directory")
        .filter_map(Result::ok)
        .filter(|entry| entry.path().extension().is_some_and(|e| e == "seg"))
        .map(|entry| entry.metadata().expect("segment metadata").len())
        .sum()
}

/// Free bytes on the file system of `dir`, as `df` reads them.
fn df_available(dir: &std::path::Path) -> u64 {
    let output = std::process::Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(dir)
        .output()
        .expect("df");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .nth(1)
        .and_then(|line| line.trim().parse().ok())
        .unwrap_or_else(|| panic!("df output: {output:?}"))
}

/// Bytes of every live node's log segments.
fn segments_of(cluster: &TestCluster) -> BTreeMap<u64, u64> {
    cluster
        .running()
        .into_iter()
        .map(|id| (id, segment_bytes(&cluster.data_dir(id))))
        .collect()
}

/// On a quiet cluster, in a `/status` read between two measures of the segment files: each
/// live member's lag is 0, at one matched index; its log bytes are its segment files (plus the
/// 64 the log counts for its metadata; an election in between may add an entry, hence the two
/// measures); its state is not empty; and its free space is what `df` says (other processes
/// write to the same disk meanwhile: within 2% or 256 MiB). The dead node lags and has no disk
/// figures.
fn quiet_members_check(
    cluster: &TestCluster,
    status: &Value,
    dead: u64,
    segments: [&BTreeMap<u64, u64>; 2],
) {
    let mut matched = BTreeSet::new();
    for node in status["nodes"].as_array().expect("nodes") {
        let id = node["id"].as_u64().expect("id");
        if id == dead {
            assert_eq!(node["disk_bytes"], Value::Null, "{node}");
            assert!(node["lag_entries"].as_u64() > Some(0), "{node}");
            continue;
        }
        assert_eq!(node["lag_entries"].as_u64(), Some(0), "{node}");
        matched.insert(node["matched_index"].as_u64());
        let log = node["log_disk_bytes"].as_u64().expect("log_disk_bytes");
        let [before, after] = segments.map(|segments| segments[&id] + 64);
        assert!(
            (before..=after).contains(&log),
            "node {id}: log of {log} bytes, segment files {before} then {after}: {node}"
        );
        assert!(node["state_disk_bytes"].as_u64() > Some(0), "{node}");
        assert_eq!(
            node["disk_bytes"].as_u64(),
            Some(log + node["state_disk_bytes"].as_u64().unwrap_or(0)),
            "{node}"
        );
        let free = node["disk_free_bytes"].as_u64().expect("disk_free_bytes");
        let df = df_available(&cluster.data_dir(id));
        assert!(
            free.abs_diff(df) <= (df / 50).max(256 << 20),
            "node {id}: {free} bytes free, df says {df}"
        );
    }
    assert_eq!(
        matched.len(),
        1,
        "live members at different indexes: {status}"
    );
    assert!(matched.iter().all(|m| m.is_some_and(|m| m > 0)), "{status}");
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
    // Two closed slots of the load window on every node, so the charts have a line to show.
    eventually(
        Duration::from_secs(30),
        "two closed load slots on every node",
        || async {
            for id in 1..=3 {
                let (_, status) = cluster.get(id, "/status").await;
                if status["load"]["slots"].as_array().map_or(0, Vec::len) < 2 {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;

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
    // The last minutes under load: throughput and p99 latency, as figures and as charts.
    // Checked first, as they cover the whole window: a stall of the cluster during the render
    // (seen on a machine busy with other tests) fails the instant checks below, not these.
    let tps_window = float_of(&dom, "tps-window");
    assert!(tps_window > 0.0, "no throughput over the window:\n{dom}");
    let p99 = float_of(&dom, "p99");
    assert!(
        p99 > 0.0 && p99 < 15_000.0,
        "p99 of {p99} ms under load:\n{dom}"
    );
    for chart in ["tps-chart", "p99-chart"] {
        assert!(
            chart_points(&dom, chart) >= 2,
            "#{chart} has fewer than two points:\n{dom}"
        );
    }
    // The same figures, checked against the node's /metrics.
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    load_figures_check(&cluster, follower).await;
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
    // Every member: its lag as the leader reports it, and its disk use.
    for id in 1..=3 {
        let row = node_row(&dom, id);
        let lag = cell_text(&row, "lag");
        assert!(
            lag.parse::<u64>().is_ok(),
            "node {id}: lag {lag:?} is not a number: {row}"
        );
        for attribute in ["data-log-bytes", "data-state-bytes", "data-free-bytes"] {
            assert!(
                attribute_number(&row, attribute).is_some_and(|bytes| bytes > 0),
                "node {id}: no {attribute} in {row}"
            );
        }
    }

    tracing::info!(leader, "phase 2: SIGKILL the leader under load");
    let answered_at_kill = load.answered();
    cluster.kill(leader);
    assert_ne!(cluster.leader_wait(Duration::from_secs(10)).await, leader);
    // The load goes on under the new leader before the page is looked at.
    load.answered_wait(answered_at_kill + 50, Duration::from_secs(30))
        .await;
    // As in phase 1: a second election under load during the render (seen: node 2 elected
    // after the kill, then node 1 a term later while chromium ran) renders again.
    let render_until = std::time::Instant::now() + Duration::from_secs(60);
    let (new_leader, seq_acknowledged, dom) = loop {
        let new_leader = cluster.leader_wait(Duration::from_secs(10)).await;
        assert_ne!(new_leader, leader);
        let seq_acknowledged = load.seq_max();
        let dom = rendered_dom(&paced_proxy(cluster.addr(new_leader)).await).await;
        if cluster.leader_wait(Duration::from_secs(10)).await == new_leader {
            break (new_leader, seq_acknowledged, dom);
        }
        assert!(
            std::time::Instant::now() < render_until,
            "the leader kept changing while the page rendered"
        );
        tracing::info!("leader changed during the render; rendering again");
    };
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
    // The new leader never heard from the dead node: it lags by the entries it missed, and
    // nobody knows its disk.
    let dead_lag = cell_text(&dead_row, "lag");
    assert!(
        dead_lag.parse::<u64>().is_ok_and(|lag| lag > 0),
        "the killed node's lag is {dead_lag:?}: {dead_row}"
    );
    assert_eq!(cell_text(&dead_row, "disk"), "–", "{dead_row}");
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
    // Quiet and converged: every live member caught up in the leader's eyes, and the disk
    // figures are the node's own files.
    // (The leader hears of the last acknowledgements a moment after the followers applied.)
    let segments_before = segments_of(&cluster);
    let status = eventually(
        Duration::from_secs(10),
        "every live member caught up in the leader's eyes",
        || async {
            let (_, status) = cluster.get(new_leader, "/status").await;
            let caught_up = status["nodes"].as_array()?.iter().all(|node| {
                node["id"].as_u64() == Some(leader) || node["lag_entries"].as_u64() == Some(0)
            });
            caught_up.then_some(status)
        },
    )
    .await;
    let segments_after = segments_of(&cluster);
    quiet_members_check(
        &cluster,
        &status,
        leader,
        [&segments_before, &segments_after],
    );
    load_figures_check(&cluster, new_leader).await;
    tracing::info!(transfers = n, "status page under load checked");
}

/// The load figure check on made-up figures: it passes consistent ones and catches a p99 in the
/// wrong unit or of the wrong quantile, requests or transfers not counted, a wrong rate.
#[test]
fn wrong_load_figures_are_caught() {
    // 1000 transfer requests: 500 within 2 ms, 980 within 5 ms, 990 within 10 ms, all within
    // 20 ms; the 990th (the p99) took between 5 and 10 ms.
    let labels = "method=\"POST\",route=\"/v1/transfers\",node_id=\"2\"";
    let mut metrics = String::new();
    for (le, count) in [
        ("0.001", 0),
        ("0.002", 500),
        ("0.005", 980),
        ("0.01", 990),
        ("0.02", 1000),
        ("+Inf", 1000),
    ] {
        metrics += &format!(
            "raftpay_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {count}\n"
        );
    }
    metrics += &format!("raftpay_http_request_duration_seconds_count{{{labels}}} 1000\n");
    metrics += "raftpay_transfers_posted_total{node_id=\"2\"} 900\n";
    metrics += "raftpay_uptime_seconds{node_id=\"2\"} 11\n";
    let status = |field: &str, value: f64| {
        let mut window = serde_json::json!({"requests": 1000, "transfers": 900, "seconds": 10.0,
            "transfers_per_second": 90.0, "p99_ms": 8.0});
        window[field] = serde_json::json!(value);
        serde_json::json!({"load": {"window": window}})
    };
    let fails = |status: Value| {
        std::panic::catch_unwind(|| load_figures_agree(&metrics, &status, &metrics)).is_err()
    };
    assert!(!fails(status("p99_ms", 8.0)), "consistent figures refused");
    for (field, value) in [
        ("p99_ms", 8000.0),   // microseconds shown as milliseconds
        ("p99_ms", 2.0),      // the median
        ("requests", 999.0),  // a request not recorded
        ("transfers", 901.0), // a transfer counted twice
        ("transfers_per_second", 9.0),
        ("seconds", 30.0), // longer than the node has lived
    ] {
        assert!(fails(status(field, value)), "{field} = {value} not caught");
    }
}
