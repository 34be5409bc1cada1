//! Forwarding a request from a follower to the leader: the same method, path, body and token,
//! one more hop, a deadline. The leader's answer is returned as it is. A forward that gets no
//! answer is `503 unavailable`: for a write the outcome is unknown and the client re-sends the
//! same id.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::{ApiError, App, RawRequest};

/// Header counting how often a request was forwarded.
pub const HEADER_HOPS: &str = "x-raftpay-hops";
/// A request is forwarded at most this often (a leader change in flight can cost one extra hop).
pub const HOPS_MAX: u32 = 2;

/// Sends `request` to `leader` and returns its answer.
///
/// # Errors
/// `unavailable` when no leader is known, the hop limit is reached, or the leader does not
/// answer in time.
pub async fn to_leader(
    app: &App,
    request: &RawRequest,
    leader: Option<(u64, String)>,
) -> Result<Response, ApiError> {
    let Some((leader_id, leader_addr)) = leader else {
        return Err(ApiError::Unavailable(
            "no leader right now; retry shortly".into(),
        ));
    };
    if leader_id == app.node.id() {
        return Err(ApiError::Unavailable(
            "leadership is changing; retry shortly".into(),
        ));
    }
    let hops: u32 = request
        .headers
        .get(HEADER_HOPS)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    if hops >= HOPS_MAX {
        return Err(ApiError::Unavailable(format!(
            "forwarded {hops} times without reaching the leader; retry shortly"
        )));
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
        ApiError::Unavailable(format!(
            "leader {leader_id} did not answer ({error}); the outcome is unknown: retry with the same id"
        ))
    })?;
    let status = answer.status();
    let retry_after = answer.headers().get(header::RETRY_AFTER).cloned();
    let retry_after_ms = answer.headers().get("retry-after-ms").cloned();
    let body = answer.bytes().await.map_err(|error| {
        ApiError::Unavailable(format!(
            "leader {leader_id} answer cut off ({error}); the outcome is unknown: retry with the same id"
        ))
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
        headers.insert("retry-after-ms", value);
    }
    Ok(response)
}
