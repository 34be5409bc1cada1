//! The status page: `GET /` serves one self-contained HTML page (no external assets) that polls
//! `GET /status`, this node's view of every member (asked in parallel, each with a short
//! deadline: state, replication lag as the leader reports it, disk use), the current leader,
//! throughput and transfer latency over the last minutes, and recent leader changes.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::cluster::{cluster_status, cluster_status_json};
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

/// A byte count a member reported, `None` when it did not (or said `u64::MAX`: unknown).
fn bytes_of(status: &Value, field: &str) -> Option<u64> {
    status[field].as_u64().filter(|bytes| *bytes != u64::MAX)
}

/// Replication progress by member id, as the leader reports it in its `/v1/cluster`: the
/// answer among `statuses` of the member that says it leads (`leader_id`, the leader this node
/// knows). Only the leader knows how far each member is; other nodes say `null`.
fn replication_by_leader<'a>(
    leader_id: Option<u64>,
    statuses: impl Iterator<Item = (&'a u64, &'a Value)>,
) -> BTreeMap<u64, (Value, Value)> {
    let Some(leader_id) = leader_id else {
        return BTreeMap::new();
    };
    let Some((_, leader)) = statuses
        .into_iter()
        .find(|(id, status)| **id == leader_id && status["state"] == "leader")
    else {
        return BTreeMap::new();
    };
    leader["members"]
        .as_array()
        .map(|members| {
            members
                .iter()
                .filter_map(|m| {
                    Some((
                        m["id"].as_u64()?,
                        (m["matched_index"].clone(), m["lag_entries"].clone()),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `GET /status`: every member as this node sees it, asked now, with the leader's view of
/// each one's replication, each one's disk use, and this node's recent load.
pub async fn overview(State(app): State<App>) -> Result<Response, ApiError> {
    let own = cluster_status(&app)?;
    let members: Vec<(u64, String, String)> = own
        .members
        .iter()
        .map(|m| (m.id, m.http_addr.clone(), m.role.clone()))
        .collect();
    let statuses = futures::future::join_all(
        members
            .iter()
            .map(|(id, addr, _)| member_status(&app, *id, addr)),
    )
    .await;
    let replication = replication_by_leader(
        own.leader_id,
        members.iter().map(|(id, _, _)| id).zip(statuses.iter()),
    );
    let nodes: Vec<Value> = members
        .iter()
        .zip(statuses)
        .map(|((id, addr, role), status)| {
            let reachable = status.get("error").is_none();
            let (matched_index, lag_entries) =
                replication.get(id).cloned().unwrap_or((Value::Null, Value::Null));
            let disk_bytes = bytes_of(&status, "disk_bytes");
            let log_disk_bytes = bytes_of(&status, "log_disk_bytes");
            // The databases are the log and the state: what is not log is state.
            let state_disk_bytes = disk_bytes
                .zip(log_disk_bytes)
                .map(|(all, log)| all.saturating_sub(log));
            json!({
                "id": id, "http_addr": addr, "role": role, "reachable": reachable,
                "state": status["state"], "term": status["term"], "last_applied": status["last_applied"],
                "leader_id": status["leader_id"], "error": status.get("error"),
                "matched_index": matched_index, "lag_entries": lag_entries,
                "disk_bytes": disk_bytes, "log_disk_bytes": log_disk_bytes,
                "state_disk_bytes": state_disk_bytes,
                "disk_free_bytes": bytes_of(&status, "disk_free_bytes"),
            })
        })
        .collect();
    Ok(Json(json!({
        "node_id": app.node.id(),
        "leader_id": own.leader_id,
        "term": own.term,
        "seq_last": own.seq_last,
        "nodes": nodes,
        "leader_changes": app.leaders.recent(),
        "load": app.load.summary(&app.node),
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
  h2 { font-size: .8rem; color: #777; text-transform: uppercase; font-weight: normal; margin: 0 0 .3rem; }
  .summary { display: flex; gap: 2.5rem; margin: 1rem 0 1.5rem; flex-wrap: wrap; }
  .summary div span { display: block; font-size: .75rem; color: #777; text-transform: uppercase; }
  .summary div b { font-size: 1.6rem; }
  .charts { display: flex; gap: 2rem; margin: 0 0 1.5rem; flex-wrap: wrap; }
  .charts svg { background: white; border: 1px solid #e5e5e5; }
  .charts polyline { fill: none; stroke-width: 1.5; }
  #tps-chart polyline { stroke: #1565c0; } #p99-chart polyline { stroke: #c62828; }
  .charts text { font-size: 10px; fill: #777; }
  table { border-collapse: collapse; background: white; min-width: 44rem; }
  th, td { text-align: left; padding: .45rem .9rem; border-bottom: 1px solid #e5e5e5; white-space: nowrap; }
  th { font-size: .75rem; color: #777; text-transform: uppercase; }
  td.lag, td.free { text-align: right; }
  tr.leader td { background: #eef7ee; font-weight: 600; }
  .ok { color: #1a7f37; } .down { color: #c62828; }
  #changes { margin-top: 1.5rem; font-size: .9rem; }
  #updated, .note { color: #999; font-size: .8rem; }
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
  <div><span>transfers / s, <i class="window">last minutes</i></span><b id="tps-window">–</b></div>
  <div><span>p99 latency, ms, <i class="window">last minutes</i></span><b id="p99">–</b></div>
</div>
<div class="charts">
  <div><h2>transfers / s per <i class="slot">slot</i></h2><svg id="tps-chart" width="360" height="90"></svg></div>
  <div><h2>p99 latency, ms, per <i class="slot">slot</i></h2><svg id="p99-chart" width="360" height="90"></svg></div>
</div>
<div class="note" id="load-note"></div>
<table>
  <thead><tr><th>node</th><th>address</th><th>role</th><th>state</th><th>term</th><th>applied index</th><th>lag, entries</th><th>disk: log / state</th><th>disk free</th><th>health</th></tr></thead>
  <tbody id="nodes"></tbody>
</table>
<div id="changes"><b>Recent leader changes</b><ul id="change-list"></ul></div>
<script>
let previous = null;
function cell(row, text, cls) { const td = document.createElement('td'); td.textContent = text; if (cls) td.className = cls; row.appendChild(td); return td; }
function known(value) { return value !== null && value !== undefined; }
function bytes(n) {
  if (!known(n)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0; let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? v : v.toFixed(1)) + ' ' + units[i];
}
// A line chart of `values` (null: no point) in the SVG `id`, scaled to its largest value.
function chart(id, values, digits) {
  const svg = document.getElementById(id);
  const width = svg.width.baseVal.value, height = svg.height.baseVal.value, top = 14;
  const max = Math.max(0, ...values.filter(known));
  const points = [];
  values.forEach((v, i) => {
    if (!known(v)) return;
    const x = values.length < 2 ? width / 2 : i * (width - 4) / (values.length - 1) + 2;
    const y = height - 2 - (max > 0 ? v / max : 0) * (height - top - 4);
    points.push(x.toFixed(1) + ',' + y.toFixed(1));
  });
  const ns = 'http://www.w3.org/2000/svg';
  const line = document.createElementNS(ns, 'polyline');
  line.setAttribute('points', points.join(' '));
  const label = document.createElementNS(ns, 'text');
  label.setAttribute('x', 4); label.setAttribute('y', 11);
  label.textContent = points.length ? 'max ' + max.toFixed(digits) : 'no data yet';
  svg.replaceChildren(line, label);
}
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
    const load = status.load;
    const minutes = Math.round(load.window_seconds / 60) + ' min';
    for (const el of document.querySelectorAll('.window')) el.textContent = 'last ' + minutes;
    for (const el of document.querySelectorAll('.slot')) el.textContent = load.slot_seconds + ' s';
    document.getElementById('tps-window').textContent = load.window.transfers_per_second.toFixed(1);
    document.getElementById('p99').textContent = known(load.window.p99_ms) ? load.window.p99_ms.toFixed(1) : '–';
    chart('tps-chart', load.slots.map(s => s.transfers_per_second), 0);
    chart('p99-chart', load.slots.map(s => s.p99_ms), 1);
    document.getElementById('load-note').textContent = 'throughput: transfers posted by node ' + status.node_id +
      '\'s state machine over ' + Math.round(load.window.seconds) + ' s; latency: the ' + load.window.requests +
      ' POST /v1/transfers it answered';
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
      cell(row, known(node.lag_entries) ? node.lag_entries : '–', 'lag');
      const disk = cell(row, known(node.disk_bytes) ? bytes(node.log_disk_bytes) + ' / ' + bytes(node.state_disk_bytes) : '–', 'disk');
      if (known(node.disk_bytes)) { disk.dataset.logBytes = node.log_disk_bytes; disk.dataset.stateBytes = node.state_disk_bytes; }
      const free = cell(row, bytes(node.disk_free_bytes), 'free');
      if (known(node.disk_free_bytes)) free.dataset.freeBytes = node.disk_free_bytes;
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
