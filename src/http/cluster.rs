//! Handlers for the cluster: status, membership changes (forwarded to the leader like writes),
//! health, readiness, Prometheus metrics, and the node-to-node `/raft/` routes.

use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use raftpay_raft::network::{RpcRefused, HEADER_SECRET, HEADER_TARGET};
use raftpay_raft::node::{Fault, MembershipError};
use serde_json::json;
use tokio::time::Instant;

use super::forward::{self, Forward};
use super::ledger::ReadQuery;
use super::{ApiError, App, RawRequest};

use raftpay_api::{ClusterStatus, Member, NewLearner as LearnerAdd, Voters as VotersSet};

/// This node's view of the cluster (the contract's fields, then our additions).
pub fn cluster_status(app: &App) -> Result<ClusterStatus, ApiError> {
    let view = app.node.view();
    let summary = app.node.reader().summary()?;
    let last_log_index = view.last_log_index.unwrap_or(0);
    // Replication progress, known on the leader only (`null` elsewhere): the highest log index
    // the member holds and how many entries it is behind the leader's log.
    let matched = view.replication.clone().unwrap_or_default();
    let members = view
        .members
        .iter()
        .map(|member| {
            let matched_index = matched.get(&member.id).map(|m| m.unwrap_or(0));
            Member {
                id: member.id,
                http_addr: member.http_addr.clone(),
                role: if member.voter { "voter" } else { "learner" }.to_owned(),
                matched_index,
                lag_entries: matched_index.map(|m| last_log_index.saturating_sub(m)),
            }
        })
        .collect();
    Ok(ClusterStatus {
        node_id: app.node.id(),
        leader_id: view.leader_id,
        term: view.term,
        last_log_index,
        last_applied: view.last_applied.unwrap_or(0),
        members,
        state: view.role.as_str().to_owned(),
        state_hash: summary.state_hash,
        state_hash_index: summary.applied.map_or(0, |id| id.index),
        seq_last: summary.seq_last,
        snapshot_index: view.snapshot_index,
        purged_index: view.purged_index,
        replication_matched: view.replication,
        disk_bytes: app.node.disk_bytes(),
        log_disk_bytes: app.node.log_disk_bytes(),
        disk_free_bytes: app.node.disk_free_bytes(),
        membership_index: view.membership_index,
        stepping_down: app.node.stepping_down(),
    })
}

/// [`cluster_status`] as JSON, for the status page.
pub fn cluster_status_json(app: &App) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(cluster_status(app)?)
        .map_err(|error| ApiError::Internal(format!("cluster status: {error}")))
}

pub async fn cluster_get(
    State(app): State<App>,
    params: Result<Query<ReadQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    params.map_err(|rejection| {
        ApiError::InvalidRequest(format!("query: {}", rejection.body_text()))
    })?;
    Ok(Json(cluster_status(&app)?).into_response())
}

/// Maps a membership outcome to the answer: the cluster status, the leader's answer, or an error.
async fn membership_answer(
    app: &App,
    request: &RawRequest,
    result: Result<(), MembershipError>,
) -> Result<Response, ApiError> {
    match result {
        Ok(()) => Ok(Json(cluster_status(app)?).into_response()),
        // A membership change is forwarded once, without waiting out an election: the
        // operator sees the 503 and decides.
        Err(MembershipError::NotLeader { leader }) => {
            match forward::to_leader(app, request, leader, Instant::now()).await? {
                Forward::Answered(response) => Ok(response),
                Forward::Retry => Err(ApiError::Unavailable(
                    "leadership is changing; retry shortly".into(),
                )),
            }
        }
        Err(MembershipError::Invalid(message)) => Err(ApiError::InvalidRequest(message)),
        Err(MembershipError::NotFound(id)) => Err(ApiError::NodeNotFound(id)),
        Err(MembershipError::Unavailable(message)) => Err(ApiError::Unavailable(message)),
        Err(MembershipError::Conflict(message)) => Err(ApiError::IdConflict(message)),
    }
}

#[tracing::instrument(level = "info", skip_all)]
pub async fn learner_add(
    State(app): State<App>,
    request: RawRequest,
) -> Result<Response, ApiError> {
    let body: LearnerAdd = request.json()?;
    if body.id == 0 || body.http_addr.is_empty() {
        return Err(ApiError::InvalidRequest(
            "id must be at least 1 and http_addr non-empty".into(),
        ));
    }
    tracing::info!(learner_id = body.id, http_addr = %body.http_addr, "add learner");
    let result = app.node.add_learner(body.id, body.http_addr).await;
    membership_answer(&app, &request, result).await
}

#[tracing::instrument(level = "info", skip_all)]
pub async fn voters_set(State(app): State<App>, request: RawRequest) -> Result<Response, ApiError> {
    let body: VotersSet = request.json()?;
    let voters: BTreeSet<u64> = body.ids.into_iter().collect();
    tracing::info!(?voters, "set voters");
    let result = app.node.set_voters(voters).await;
    membership_answer(&app, &request, result).await
}

#[tracing::instrument(level = "info", skip_all, fields(removed_id))]
pub async fn node_remove(
    State(app): State<App>,
    Path(id): Path<String>,
    request: RawRequest,
) -> Result<Response, ApiError> {
    let id: u64 = id.parse().map_err(|_| {
        ApiError::InvalidRequest(format!("node id must be a positive integer, not {id}"))
    })?;
    tracing::Span::current().record("removed_id", id);
    let result = app.node.remove_node(id).await;
    membership_answer(&app, &request, result).await
}

/// How long a backup may wait for its snapshot.
const BACKUP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// `GET /v1/backup`: this node's ledger at a known applied index, as a self-checking file.
#[tracing::instrument(level = "info", skip_all)]
pub async fn backup(State(app): State<App>) -> Result<Response, ApiError> {
    let backup = app
        .node
        .backup(BACKUP_DEADLINE)
        .await
        .map_err(ApiError::Unavailable)?;
    let bytes = backup
        .to_bytes()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let applied = backup.applied.map_or(0, |id| id.index);
    let headers = [
        (header::CONTENT_TYPE, "application/octet-stream".to_string()),
        (
            header::HeaderName::from_static(raftpay_api::headers::BACKUP_INDEX),
            applied.to_string(),
        ),
        (
            header::HeaderName::from_static(raftpay_api::headers::BACKUP_SEQ),
            backup.seq_last.to_string(),
        ),
        (
            header::HeaderName::from_static(raftpay_api::headers::BACKUP_STATE_HASH),
            backup.state_hash.clone(),
        ),
    ];
    Ok((headers, bytes).into_response())
}

/// `200 {"status":"ok"}` while the node serves; `503 {"status":"fault","kind":..,"reason":..}`
/// once it stopped on a fault (it exits soon after).
pub async fn health(State(app): State<App>) -> Response {
    match app.node.fault() {
        None => (StatusCode::OK, Json(json!({"status": "ok"}))).into_response(),
        Some(fault) => fault_response(&fault),
    }
}

fn fault_response(fault: &Fault) -> Response {
    let body = json!({"status": "fault", "kind": fault.kind.as_str(), "reason": fault.reason});
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

/// Ready while the node is sound, its Raft core runs, a leader is known and everything known
/// to be committed is applied. A fault answers like `/health`.
pub async fn ready(State(app): State<App>) -> Response {
    if let Some(fault) = app.node.fault() {
        return fault_response(&fault);
    }
    let view = app.node.view();
    let applied = view.last_applied.unwrap_or(0);
    let committed = app.node.committed_index();
    // openraft leaves the leader as it was when its core ends: look at the core first.
    let running = view.running;
    let ready = running && view.leader_id.is_some() && applied >= committed;
    let (status, word) = match (running, ready) {
        (_, true) => (StatusCode::OK, "ready"),
        (true, false) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "stopped"),
    };
    let body = json!({"status": word, "ready": ready, "leader_id": view.leader_id,
        "last_applied": applied, "committed": committed});
    (status, Json(body)).into_response()
}

pub async fn metrics(State(app): State<App>) -> Response {
    let text = app.metrics.render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// `/raft/{rpc}`: node-to-node Raft RPC (bincode in, bincode out).
pub async fn raft_rpc(
    State(app): State<App>,
    Path(rpc): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let route = format!("/raft/{rpc}");
    match app
        .node
        .rpc()
        .handle(&route, header(HEADER_TARGET), header(HEADER_SECRET), &body)
        .await
    {
        Ok(answer) => {
            ([(header::CONTENT_TYPE, "application/octet-stream")], answer).into_response()
        }
        Err(refused) => {
            let status = match refused {
                RpcRefused::Secret => StatusCode::UNAUTHORIZED,
                RpcRefused::WrongTarget { .. } => StatusCode::CONFLICT,
                RpcRefused::Malformed(_) => StatusCode::BAD_REQUEST,
                RpcRefused::UnknownRoute => StatusCode::NOT_FOUND,
                RpcRefused::BadSnapshot(_) => StatusCode::UNPROCESSABLE_ENTITY,
            };
            tracing::warn!(%route, error = %refused, "raft rpc refused");
            (status, refused.to_string()).into_response()
        }
    }
}
