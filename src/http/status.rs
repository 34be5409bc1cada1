//! The status page: `GET /` serves one self-contained HTML page (no external assets) that polls
//! `GET /status`, this node's view of every member (asked in parallel, each with a short
//! deadline), the current leader, throughput and recent leader changes.

use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::cluster::cluster_status_json;
use super::{ApiError, App};

/// A member that does not answer its status within this is shown unreachable.
const MEMBER_STATUS_TIMEOUT: Duration = Duration::from_millis(700);

/// One member's `/v1/cluster` (local view), or why it has none.
async fn member_status(app: &App, id: u64, addr: &str) -> Value {
    if id == app.node.id() {
        return cluster_status_json(app).unwrap_or_else(|e| json!({"error": e.to_string()}));
    }
    let mut request = app
        .forwarder
        .get(format!("http://{addr}/v1/cluster?consistency=local"))
        .timeout(MEMBER_STATUS_TIMEOUT);
    if let Some(token) = &app.settings.api_token {
        request = request.bearer_auth(token);
    }
    match request.send().await {
        Ok(response) => response
            .json::<Value>()
            .await
            .unwrap_or_else(|e| json!({"error": e.to_string()})),
        Err(error) => {
            json!({"error": if error.is_timeout() { "no answer".to_string() } else { error.to_string() }})
        }
    }
}

/// `GET /status`: every member as this node sees it, asked now.
pub async fn overview(State(app): State<App>) -> Result<Response, ApiError> {
    let own = cluster_status_json(&app)?;
    let members: Vec<(u64, String, String)> = own["members"]
        .as_array()
        .map(|members| {
            members
                .iter()
                .filter_map(|m| {
                    Some((
                        m["id"].as_u64()?,
                        m["http_addr"].as_str()?.to_string(),
                        m["role"].as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let statuses = futures::future::join_all(
        members
            .iter()
            .map(|(id, addr, _)| member_status(&app, *id, addr)),
    )
    .await;
    let nodes: Vec<Value> = members
        .iter()
        .zip(statuses)
        .map(|((id, addr, role), status)| {
            let reachable = status.get("error").is_none();
            json!({
                "id": id, "http_addr": addr, "role": role, "reachable": reachable,
                "state": status["state"], "term": status["term"], "last_applied": status["last_applied"],
                "leader_id": status["leader_id"], "error": status.get("error"),
            })
        })
        .collect();
    Ok(Json(json!({
        "node_id": app.node.id(),
        "leader_id": own["leader_id"],
        "term": own["term"],
        "seq_last": own["seq_last"],
        "nodes": nodes,
        "leader_changes": app.leaders.recent(),
    }))
    .into_response())
}

/// `GET /`: the page itself.
pub async fn page() -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Html(PAGE)).into_response()
}

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>raftpay status</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; background: #fafafa; }
  h1 { font-size: 1.4rem; margin: 0 0 .3rem; }
  .summary { display: flex; gap: 2.5rem; margin: 1rem 0 1.5rem; }
  .summary div span { display: block; font-size: .75rem; color: #777; text-transform: uppercase; }
  .summary div b { font-size: 1.6rem; }
  table { border-collapse: collapse; background: white; min-width: 44rem; }
  th, td { text-align: left; padding: .45rem .9rem; border-bottom: 1px solid #e5e5e5; }
  th { font-size: .75rem; color: #777; text-transform: uppercase; }
  tr.leader td { background: #eef7ee; font-weight: 600; }
  .ok { color: #1a7f37; } .down { color: #c62828; }
  #changes { margin-top: 1.5rem; font-size: .9rem; }
  #updated { color: #999; font-size: .8rem; }
</style>
</head>
<body>
<h1>raftpay cluster</h1>
<div id="updated">loading…</div>
<div class="summary">
  <div><span>leader</span><b id="leader">–</b></div>
  <div><span>term</span><b id="term">–</b></div>
  <div><span>transfers posted</span><b id="posted">–</b></div>
  <div><span>transfers / s</span><b id="tps">–</b></div>
</div>
<table>
  <thead><tr><th>node</th><th>address</th><th>role</th><th>state</th><th>term</th><th>applied index</th><th>health</th></tr></thead>
  <tbody id="nodes"></tbody>
</table>
<div id="changes"><b>Recent leader changes</b><ul id="change-list"></ul></div>
<script>
let previous = null;
function cell(row, text, cls) { const td = document.createElement('td'); td.textContent = text; if (cls) td.className = cls; row.appendChild(td); }
async function refresh() {
  try {
    const response = await fetch('/status', { cache: 'no-store' });
    const status = await response.json();
    const now = Date.now();
    document.getElementById('leader').textContent = status.leader_id === null ? 'none' : 'node ' + status.leader_id;
    document.getElementById('term').textContent = status.term;
    document.getElementById('posted').textContent = status.seq_last;
    if (previous && now > previous.at) {
      const rate = (status.seq_last - previous.seq) * 1000 / (now - previous.at);
      document.getElementById('tps').textContent = Math.max(0, Math.round(rate));
    }
    previous = { at: now, seq: status.seq_last };
    const body = document.getElementById('nodes');
    body.replaceChildren();
    for (const node of status.nodes) {
      const row = document.createElement('tr');
      row.dataset.nodeId = node.id;
      if (node.id === status.leader_id) row.className = 'leader';
      cell(row, 'node ' + node.id + (node.id === status.node_id ? ' (this)' : ''));
      cell(row, node.http_addr);
      cell(row, node.role);
      cell(row, node.reachable ? node.state : '–');
      cell(row, node.reachable ? node.term : '–');
      cell(row, node.reachable ? node.last_applied : '–');
      cell(row, node.reachable ? 'up' : 'down: ' + node.error, node.reachable ? 'ok' : 'down');
      body.appendChild(row);
    }
    const list = document.getElementById('change-list');
    list.replaceChildren();
    for (const change of status.leader_changes) {
      const item = document.createElement('li');
      item.textContent = new Date(change.at_unix_ms).toLocaleTimeString() + ' — term ' + change.term + ': ' +
        (change.leader_id === null ? 'no leader' : 'node ' + change.leader_id);
      list.appendChild(item);
    }
    document.getElementById('updated').textContent = 'as seen by node ' + status.node_id + ', updated ' + new Date(now).toLocaleTimeString();
  } catch (error) {
    document.getElementById('updated').textContent = 'this node does not answer: ' + error;
  }
}
refresh();
setInterval(refresh, 1000);
</script>
</body>
</html>
"#;
