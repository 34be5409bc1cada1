//! The HTTP API of `docs/api.md`, served by every node: the router, its limits and
//! middleware (auth, metrics, tracing), the request extractor, and forwarding to the leader.
//! Handlers live in `ledger` (accounts, transfers) and `cluster` (membership, health, metrics).
//! Only this module knows HTTP; it maps errors to the contract in `error` alone.

mod cluster;
mod error;
mod forward;
mod ledger;
mod status;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use raftpay_raft::node::Node;
use serde::de::DeserializeOwned;

pub use error::ApiError;

use crate::load_window::LoadWindow;
use crate::metrics::Metrics;
use crate::observe::LeaderWatch;

/// A snapshot travels in one request; this bounds it.
pub const RAFT_BODY_BYTES_MAX: usize = 1 << 30;

/// What every handler can reach.
#[derive(Clone)]
pub struct App {
    pub node: Node,
    pub leaders: LeaderWatch,
    /// The last minutes of transfers and transfer latency, for the status page.
    pub load: LoadWindow,
    pub metrics: Arc<Metrics>,
    pub settings: Arc<Settings>,
    pub forwarder: reqwest::Client,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub body_bytes_max: usize,
    pub api_token: Option<String>,
    pub forward_timeout: Duration,
    /// How long a follower holds a request while no leader is known or the leader's port
    /// refuses connections (a failover), before answering `503`.
    pub leader_wait: Duration,
    pub started: Instant,
    /// Local IP for forwarded requests (see `cluster.bind_outgoing`).
    pub outgoing_ip: Option<std::net::IpAddr>,
}

impl App {
    /// The app of `node`, with its metrics registry (the node's families read from it at each
    /// scrape) and its leader watcher.
    ///
    /// # Errors
    /// When the HTTP client for forwarding cannot be built.
    pub fn new(node: Node, settings: Settings) -> Result<App, reqwest::Error> {
        let forwarder = reqwest::Client::builder()
            .local_address(settings.outgoing_ip)
            .no_proxy()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_millis(500))
            .pool_max_idle_per_host(64)
            .build()?;
        let leaders = LeaderWatch::start(&node);
        let metrics = Metrics::new(node.id());
        metrics.node_register(node.clone(), leaders.clone(), settings.started);
        Ok(App {
            leaders,
            load: LoadWindow::start(&node),
            node,
            metrics: Arc::new(metrics),
            settings: Arc::new(settings),
            forwarder,
        })
    }
}

/// The whole router: the public API, the ops routes and the node-to-node `/raft/` routes.
pub fn router(app: App) -> Router {
    let api = Router::new()
        .route("/v1/accounts", post(ledger::account_create))
        .route("/v1/accounts/{id}", get(ledger::account_get))
        .route("/v1/accounts/{id}/transfers", get(ledger::account_history))
        .route("/v1/transfers", post(ledger::transfer_create))
        .route("/v1/transfers/batch", post(ledger::batch_create))
        .route("/v1/transfers/{id}", get(ledger::transfer_get))
        .route("/v1/cluster", get(cluster::cluster_get))
        .route("/v1/cluster/learners", post(cluster::learner_add))
        .route("/v1/cluster/voters", post(cluster::voters_set))
        .route("/v1/cluster/nodes/{id}", delete(cluster::node_remove))
        .route("/v1/backup", get(cluster::backup))
        .route_layer(middleware::from_fn_with_state(app.clone(), auth))
        // Our extractor maps the limit to 413 with the contract's body.
        .layer(DefaultBodyLimit::max(app.settings.body_bytes_max));
    let ops = Router::new()
        .route("/health", get(cluster::health))
        .route("/ready", get(cluster::ready))
        .route("/metrics", get(cluster::metrics))
        .route("/", get(status::page))
        .route("/status", get(status::overview));
    let raft = Router::new()
        .route("/raft/{rpc}", post(cluster::raft_rpc))
        .layer(DefaultBodyLimit::max(RAFT_BODY_BYTES_MAX));
    Router::new()
        .merge(api)
        .merge(ops)
        .merge(raft)
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::NotFound })
        .layer(middleware::from_fn_with_state(app.clone(), fault_refuse))
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .with_state(app)
}

/// A node stopped on a fault serves nothing but its health, readiness, metrics and status
/// page: every `/v1/` and `/raft/` request gets `503` (a client goes to another node).
async fn fault_refuse(State(app): State<App>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path.starts_with("/v1/") || path.starts_with("/raft/") {
        if let Some(fault) = app.node.fault() {
            return ApiError::Unavailable(format!(
                "this node stopped on a {} fault; send the request to another node",
                fault.kind
            ))
            .into_response();
        }
    }
    next.run(request).await
}

/// Checks the bearer token on `/v1/` routes when one is configured.
async fn auth(State(app): State<App>, request: Request, next: Next) -> Response {
    if let Some(token) = &app.settings.api_token {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        if presented.map(str::as_bytes) != Some(token.as_bytes()) {
            return ApiError::Unauthorized.into_response();
        }
    }
    next.run(request).await
}

/// Counts every request by route and status and times it (single transfers also for the status
/// page's load window); opens the request's tracing span.
async fn observe(State(app): State<App>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |path| path.as_str().to_string());
    let method = request.method().clone();
    // Info level, so every line logged while serving the request (warnings included) carries
    // the node id and, once the handler records them, the account or transfer ids.
    let span = tracing::info_span!(
        "request",
        node_id = app.node.id(),
        %method,
        route = %route,
        transfer_id = tracing::field::Empty,
        account_id = tracing::field::Empty,
        transfers = tracing::field::Empty,
    );
    let started = Instant::now();
    let response = {
        let _entered = span.enter();
        tracing::trace!("request received");
        drop(_entered);
        tracing::Instrument::instrument(next.run(request), span).await
    };
    let elapsed = started.elapsed();
    app.metrics
        .request_observe(&route, method.as_str(), response.status().as_u16(), elapsed);
    if method == Method::POST && route == "/v1/transfers" {
        // The same measurement as the histogram above, so the status page's p99 and the
        // metrics agree.
        app.load.latency_record(elapsed);
    }
    let mut response = response;
    if route.starts_with("/v1/") {
        // Where the leader is, as this node knows it: a client can send its next request
        // there and spare the forwarding hop.
        if let Some((_, addr)) = app.node.leader() {
            if let Ok(value) = HeaderValue::from_str(&addr) {
                response.headers_mut().insert(HEADER_LEADER, value);
            }
        }
    }
    response
}

/// Response header on `/v1/` answers: the leader's HTTP address (`host:port`) as the answering
/// node knows it; absent while it knows none.
pub use raftpay_api::headers::LEADER as HEADER_LEADER;

/// A request as it arrived: what forwarding needs, and the body to parse.
pub struct RawRequest {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl FromRequest<App> for RawRequest {
    type Rejection = ApiError;

    async fn from_request(request: Request, app: &App) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let request = Request::from_parts(parts.clone(), body);
        let body = Bytes::from_request(request, app)
            .await
            .map_err(|rejection| {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge(app.settings.body_bytes_max)
                } else {
                    ApiError::InvalidRequest(format!("cannot read the body: {rejection}"))
                }
            })?;
        Ok(RawRequest {
            method: parts.method,
            uri: parts.uri,
            headers: parts.headers,
            body,
        })
    }
}

impl RawRequest {
    /// Parses the body as JSON of `T` (unknown fields are refused by `T`).
    ///
    /// # Errors
    /// `invalid_request` with serde's explanation.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        serde_json::from_slice(&self.body)
            .map_err(|error| ApiError::InvalidRequest(format!("body: {error}")))
    }
}
