//! Forwarding a request from a follower to the leader: the same method, path, body and token,
//! one more hop, a deadline. The leader's answer is returned as it is.
//!
//! During a failover the follower holds the request instead of failing it: when no leader is
//! known, or the leader's port refuses the connection (so the request was never delivered), it
//! waits for the next leader, up to `Settings::leader_wait`, and the caller tries again, here
//! if this node became the leader. A forward that was sent but got no answer is `503
//! unavailable`: for a write the outcome is unknown and the client re-sends the same id.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::{ApiError, App, RawRequest};

/// Header counting how often a request was forwarded.
pub use raftpay_api::headers::HOPS as HEADER_HOPS;
/// A request is forwarded at most this often (a leader change in flight can cost one extra hop).
pub const HOPS_MAX: u32 = 2;

/// How a forward ended, when it did not fail.
pub enum Forward {
    /// The leader's answer; it is final.
    Answered(Response),
    /// A new leader is known (maybe this node) and the request was not delivered anywhere:
    /// handle it again from the start.
    Retry,
}

/// How one send to the leader failed.
enum SendError {
    /// Nothing reached the leader (no connection): safe to send elsewhere.
    NotDelivered(String),
    /// The request may have reached the leader.
    Api(ApiError),
}

/// Sends `request` to `leader` and returns its answer. Until `deadline`, waits for a new leader
/// when none is known or the known one refuses connections, and then answers `Retry`.
///
/// # Errors
/// `unavailable` when no leader answers before `deadline`, the hop limit is reached, or the
/// leader does not answer in time (outcome unknown).
pub async fn to_leader(
    app: &App,
    request: &RawRequest,
    leader: Option<(u64, String)>,
    deadline: Instant,
) -> Result<Forward, ApiError> {
    let failed_leader = match leader {
        Some((leader_id, leader_addr)) if leader_id != app.node.id() => {
            match send(app, request, leader_id, &leader_addr).await {
                Ok(response) => return Ok(Forward::Answered(response)),
                Err(SendError::Api(error)) => return Err(error),
                Err(SendError::NotDelivered(reason)) => {
                    if Instant::now() >= deadline {
                        return Err(ApiError::Unavailable(format!(
                            "leader {leader_id} cannot be reached ({reason}); retry shortly"
                        )));
                    }
                    Some(leader_id)
                }
            }
        }
        // This node was the leader a moment ago: wait for the next one.
        Some((leader_id, _)) => Some(leader_id),
        None => None,
    };
    if Instant::now() >= deadline {
        return Err(ApiError::Unavailable(
            "no leader right now; retry shortly".into(),
        ));
    }
    match app.node.leader_wait(failed_leader, deadline).await {
        Some((leader_id, _)) => {
            tracing::debug!(
                leader_id,
                "a new leader is known; handling the request again"
            );
            Ok(Forward::Retry)
        }
        None => Err(ApiError::Unavailable(
            "no leader was elected in time; retry shortly".into(),
        )),
    }
}

async fn send(
    app: &App,
    request: &RawRequest,
    leader_id: u64,
    leader_addr: &str,
) -> Result<Response, SendError> {
    let hops: u32 = request
        .headers
        .get(HEADER_HOPS)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    if hops >= HOPS_MAX {
        return Err(SendError::Api(ApiError::Unavailable(format!(
            "forwarded {hops} times without reaching the leader; retry shortly"
        ))));
    }
    let path = request.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut builder = app
        .forwarder
        .request(
            request.method.clone(),
            format!("http://{leader_addr}{path}"),
        )
        .timeout(app.settings.forward_timeout)
        .header(HEADER_HOPS, hops + 1)
        .body(request.body.clone());
    for name in [header::CONTENT_TYPE, header::AUTHORIZATION] {
        if let Some(value) = request.headers.get(&name) {
            builder = builder.header(name, value);
        }
    }
    tracing::debug!(leader_id, %path, hops, "forward to leader");
    let answer = builder.send().await.map_err(|error| {
        if error.is_connect() {
            SendError::NotDelivered(error.to_string())
        } else {
            SendError::Api(ApiError::Unavailable(format!(
                "leader {leader_id} did not answer ({error}); the outcome is unknown: retry with the same id"
            )))
        }
    })?;
    let status = answer.status();
    let retry_after = answer.headers().get(header::RETRY_AFTER).cloned();
    let retry_after_ms = answer
        .headers()
        .get(raftpay_api::headers::RETRY_AFTER_MS)
        .cloned();
    let body = answer.bytes().await.map_err(|error| {
        SendError::Api(ApiError::Unavailable(format!(
            "leader {leader_id} answer cut off ({error}); the outcome is unknown: retry with the same id"
        )))
    })?;
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(value) = retry_after {
        headers.insert(header::RETRY_AFTER, value);
    }
    if let Some(value) = retry_after_ms {
        headers.insert(raftpay_api::headers::RETRY_AFTER_MS, value);
    }
    Ok(response)
}
