//! Async HTTP client for the raftpay API (`docs/api.md`): typed requests and answers, and the
//! failover/retry loop that every caller (CLI, bench, tests) shares.
//!
//! Owns: node address normalisation, URL building, the bearer token, timeouts, and the decision
//! of which answers are definite. A definite answer is any 2xx or 4xx; it is returned as is and
//! never retried. Everything else (connection errors, timeouts, 503 and any other status the
//! contract does not define) says nothing about the outcome, so the *same* request is re-sent to
//! the next node until the retry deadline. That is safe because every write carries a client id
//! and the server decides each id once.
//!
//! Must never: re-send a request with different content under the same id, report a
//! non-definite failure as a definite one (a caller could then believe a payment failed when it
//! was created), or print anything (logging is `tracing::debug!` only).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use tokio::time::Instant;

use crate::http::HEADER_LEADER;

/// Timeout of one HTTP attempt against one node, from connect to the end of the body.
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
/// Total time a call may spend trying nodes before it reports `Unavailable`.
pub const RETRY_DEADLINE_DEFAULT: Duration = Duration::from_secs(10);
/// Connect timeout: an unreachable host is skipped quickly in favour of the next node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after a full round of failed nodes; doubles each round up to `BACKOFF_MAX`.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_millis(200);
/// A server's `Retry-After` is honoured up to this long (and never past the deadline).
const RETRY_AFTER_MAX: Duration = Duration::from_secs(5);
/// Largest response body read into memory (a full batch answer is a few MiB).
const RESPONSE_BODY_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Longest server text quoted in an error message.
const ERROR_TEXT_CHARS_MAX: usize = 200;

/// Errors of a client call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// A definite answer from the server: a 4xx (or a 2xx used wrongly). For a write it means
    /// the request was decided and this is its recorded outcome.
    #[error("{code}: {message} (HTTP {status})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// No node gave a definite answer before the retry deadline. For a write the outcome is
    /// unknown: re-send the same request (same id) to learn it.
    #[error("no node gave a definite answer before the retry deadline (last: {last})")]
    Unavailable { last: String },
    /// A 2xx answer whose body is not what the contract promises, or a body over the size cap.
    #[error("cannot decode the server's answer: {0}")]
    Decode(String),
    /// A bad node address or token given to the client; nothing was sent.
    #[error("invalid client configuration: {0}")]
    Config(String),
}

/// Read consistency, sent as `?consistency=`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Consistency {
    /// Reflects every write acknowledged before the read started.
    #[default]
    Linearizable,
    /// Served from the contacted node's state machine; may be stale.
    Local,
}

impl Consistency {
    /// The query-string value.
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Local => "local",
        }
    }
}

/// An account as the server returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub currency: String,
    #[serde(default)]
    pub allow_overdraft: bool,
    pub debits: u64,
    pub credits: u64,
    pub balance: i64,
}

/// A committed transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub id: String,
    pub from: String,
    pub to: String,
    pub amount: u64,
    pub currency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memo: Option<String>,
    pub seq: u64,
}

/// One page of an account's transfers; `next` is the `after` of the following page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferPage {
    pub transfers: Vec<Transfer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<u64>,
}

/// The standard error body's inner object: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    pub code: String,
    #[serde(default)]
    pub message: String,
}

#[derive(Debug, Deserialize)]
struct ErrorEnvelope {
    error: ApiErrorBody,
}

/// The answer to a batch: one item per request item, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResult {
    pub results: Vec<BatchItem>,
}

/// One batch item's outcome: `status` 201/200 with `transfer`, or an error status with `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchItem {
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<Transfer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiErrorBody>,
}

/// A node's view of the cluster (`GET /v1/cluster`). Extra fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub node_id: u64,
    #[serde(default)]
    pub leader_id: Option<u64>,
    pub term: u64,
    /// 0 when the log is empty (the server may send `null`).
    #[serde(default, deserialize_with = "null_as_zero")]
    pub last_log_index: u64,
    /// 0 when nothing is applied yet (the server may send `null`).
    #[serde(default, deserialize_with = "null_as_zero")]
    pub last_applied: u64,
    #[serde(default)]
    pub members: Vec<Member>,
}

/// A cluster member; `role` is `voter` or `learner`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    pub http_addr: String,
    pub role: String,
}

/// Body of `POST /v1/accounts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAccount {
    pub id: String,
    pub currency: String,
    pub allow_overdraft: bool,
}

/// Body of `POST /v1/transfers` (and one item of a batch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTransfer {
    pub id: String,
    pub from: String,
    pub to: String,
    pub amount: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memo: Option<String>,
}

#[derive(Serialize)]
struct BatchRequest<'a> {
    transfers: &'a [NewTransfer],
    atomic: bool,
}

#[derive(Serialize)]
struct LearnerRequest<'a> {
    id: u64,
    http_addr: &'a str,
}

#[derive(Serialize)]
struct VotersRequest<'a> {
    ids: &'a [u64],
}

fn null_as_zero<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    Ok(Option::<u64>::deserialize(deserializer)?.unwrap_or(0))
}

/// One API request, independent of the node it is sent to. Build it with the constructors so the
/// path and body match the contract; re-sending the same value is what makes retries safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    pub method: Method,
    /// Path and query, starting with `/`.
    pub path: String,
    /// JSON body, already encoded, so every retry sends identical bytes.
    pub body: Option<String>,
}

impl ApiRequest {
    /// `POST /v1/accounts`.
    pub fn create_account(account: &NewAccount) -> Self {
        Self::post("/v1/accounts".to_owned(), account)
    }

    /// `GET /v1/accounts/{id}`.
    pub fn get_account(id: &str, consistency: Consistency) -> Self {
        let path = format!(
            "/v1/accounts/{}?consistency={}",
            path_segment(id),
            consistency.as_str()
        );
        Self::get(path)
    }

    /// `POST /v1/transfers`.
    pub fn transfer(transfer: &NewTransfer) -> Self {
        Self::post("/v1/transfers".to_owned(), transfer)
    }

    /// `GET /v1/transfers/{id}`.
    pub fn get_transfer(id: &str, consistency: Consistency) -> Self {
        let path = format!(
            "/v1/transfers/{}?consistency={}",
            path_segment(id),
            consistency.as_str()
        );
        Self::get(path)
    }

    /// `GET /v1/accounts/{account}/transfers`.
    pub fn history(
        account: &str,
        limit: Option<u32>,
        after: Option<u64>,
        consistency: Consistency,
    ) -> Self {
        let mut path = format!(
            "/v1/accounts/{}/transfers?consistency={}",
            path_segment(account),
            consistency.as_str()
        );
        if let Some(limit) = limit {
            path.push_str(&format!("&limit={limit}"));
        }
        if let Some(after) = after {
            path.push_str(&format!("&after={after}"));
        }
        Self::get(path)
    }

    /// `POST /v1/transfers/batch`.
    pub fn batch(transfers: &[NewTransfer], atomic: bool) -> Self {
        let body = BatchRequest { transfers, atomic };
        Self::post("/v1/transfers/batch".to_owned(), &body)
    }

    /// `GET /v1/cluster`.
    pub fn cluster_status() -> Self {
        Self::get("/v1/cluster".to_owned())
    }

    /// `POST /v1/cluster/learners`.
    pub fn add_learner(id: u64, http_addr: &str) -> Self {
        let body = LearnerRequest { id, http_addr };
        Self::post("/v1/cluster/learners".to_owned(), &body)
    }

    /// `POST /v1/cluster/voters`.
    pub fn set_voters(ids: &[u64]) -> Self {
        Self::post("/v1/cluster/voters".to_owned(), &VotersRequest { ids })
    }

    /// `DELETE /v1/cluster/nodes/{id}`.
    pub fn remove_node(id: u64) -> Self {
        let path = format!("/v1/cluster/nodes/{id}");
        Self {
            method: Method::DELETE,
            path,
            body: None,
        }
    }

    fn get(path: String) -> Self {
        Self {
            method: Method::GET,
            path,
            body: None,
        }
    }

    fn post<T: Serialize>(path: String, body: &T) -> Self {
        Self {
            method: Method::POST,
            path,
            body: Some(json_encode(body)),
        }
    }
}

/// Encodes a request body. Cannot fail: serde_json only errors on maps with non-string keys or
/// on a `Serialize` impl that returns an error, and the request types here are plain derived
/// structs of strings, integers, booleans and `serde_json::Value`s.
fn json_encode<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("request bodies are plain derived structs")
}

/// Percent-encodes a path segment so that an odd id cannot reach a different route. The id
/// alphabet of the contract (`[A-Za-z0-9._:-]`) passes through unchanged.
fn path_segment(segment: &str) -> String {
    let mut encoded = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b':' | b'-' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// Turns `127.0.0.1:7001`, `http://127.0.0.1:7001` or `http://host:7001/` into the base URL
/// `http://host:port` (no trailing slash).
///
/// # Errors
/// `ClientError::Config` for an empty address, a scheme other than `http`, or one with a path,
/// query or credentials (this client speaks plain HTTP to the API root only).
pub fn node_base_url(address: &str) -> Result<String, ClientError> {
    let address = address.trim();
    if address.is_empty() {
        return Err(ClientError::Config("empty node address".to_owned()));
    }
    let with_scheme = if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    };
    let url = reqwest::Url::parse(&with_scheme)
        .map_err(|error| ClientError::Config(format!("node address {address:?}: {error}")))?;
    let plain_root = url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    if url.scheme() != "http" || url.host_str().is_none() || !plain_root {
        return Err(ClientError::Config(format!(
            "node address {address:?}: expected host:port or http://host:port"
        )));
    }
    Ok(with_scheme.trim_end_matches('/').to_owned())
}

/// A definite answer from one node: a 2xx or 4xx status and the body as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    /// True for 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Decodes a 2xx body as `T`, or turns an error answer into `ClientError::Api`.
    ///
    /// # Errors
    /// `ClientError::Api` for a non-2xx status; `ClientError::Decode` for a 2xx body that is not
    /// a `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        if !self.is_success() {
            return Err(self.api_error());
        }
        serde_json::from_str(&self.body)
            .map_err(|error| ClientError::Decode(format!("HTTP {} body: {error}", self.status)))
    }

    /// The body as JSON: `Null` when empty, a JSON string when the body is not JSON (e.g.
    /// `/metrics`).
    pub fn json(&self) -> serde_json::Value {
        if self.body.trim().is_empty() {
            return serde_json::Value::Null;
        }
        serde_json::from_str(&self.body)
            .unwrap_or_else(|_| serde_json::Value::String(self.body.clone()))
    }

    /// The error this answer stands for: the standard body's code and message, or
    /// `http_<status>` and the body text when the body is not the standard one.
    pub fn api_error(&self) -> ClientError {
        let (code, message) = match serde_json::from_str::<ErrorEnvelope>(&self.body) {
            Ok(envelope) => (envelope.error.code, envelope.error.message),
            Err(_) => (format!("http_{}", self.status), self.body_summary()),
        };
        ClientError::Api {
            status: self.status,
            code,
            message,
        }
    }

    fn body_summary(&self) -> String {
        let text = self.body.trim();
        if text.is_empty() {
            return reqwest::StatusCode::from_u16(self.status)
                .ok()
                .and_then(|status| status.canonical_reason())
                .unwrap_or("no body")
                .to_owned();
        }
        text.chars().take(ERROR_TEXT_CHARS_MAX).collect()
    }
}

/// The outcome of one attempt against one node.
enum Attempt {
    /// A 2xx or 4xx: decided, return it; with the index of the leader when the answer named one
    /// of our nodes.
    Answered(Reply, Option<usize>),
    /// No definite answer; try the next node.
    Failed {
        reason: String,
        retry_after: Option<Duration>,
    },
}

/// The raftpay API client. Cheap to clone (the connection pool and node list are shared).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Base URLs, `http://host:port`, in the order given.
    nodes: Arc<[String]>,
    /// `Bearer <token>`, marked sensitive so it never shows in `Debug`.
    authorization: Option<HeaderValue>,
    request_timeout: Duration,
    retry_deadline: Duration,
    /// Index of the node the next call starts at: the one that last gave a definite answer,
    /// or the leader it named (see `follow_leader`).
    node_preferred: Arc<AtomicUsize>,
    /// Move to the leader a node names in its answer (`x-raftpay-leader`), sparing later calls
    /// the forwarding hop. On by default.
    follow_leader: bool,
}

impl Client {
    /// A client for the given nodes, with the default timeout and retry deadline.
    ///
    /// # Errors
    /// `ClientError::Config` if the list is empty, an address is not `host:port` or
    /// `http://host:port`, the token is not a valid header value, or the HTTP stack fails to
    /// initialise.
    pub fn new<S: AsRef<str>>(nodes: &[S], token: Option<&str>) -> Result<Self, ClientError> {
        if nodes.is_empty() {
            return Err(ClientError::Config("no node address given".to_owned()));
        }
        let nodes = nodes
            .iter()
            .map(|node| node_base_url(node.as_ref()))
            .collect::<Result<Arc<[String]>, _>>()?;
        let authorization = token.map(bearer_header).transpose()?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| ClientError::Config(format!("HTTP client: {error}")))?;
        Ok(Self {
            http,
            nodes,
            authorization,
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
            retry_deadline: RETRY_DEADLINE_DEFAULT,
            node_preferred: Arc::new(AtomicUsize::new(0)),
            follow_leader: true,
        })
    }

    /// Whether calls move to the leader an answer names (default) or stay on the node that
    /// answered, letting it forward writes to the leader.
    pub fn with_follow_leader(mut self, follow_leader: bool) -> Self {
        self.follow_leader = follow_leader;
        self
    }

    /// The base URL the next call starts at.
    pub fn node_preferred(&self) -> &str {
        &self.nodes[self.node_preferred.load(Ordering::Relaxed) % self.nodes.len()]
    }

    /// Sets the timeout of one attempt against one node.
    pub fn with_request_timeout(mut self, request_timeout: Duration) -> Self {
        self.request_timeout = request_timeout;
        self
    }

    /// Sets the total time a call may spend retrying before it reports `Unavailable`.
    pub fn with_retry_deadline(mut self, retry_deadline: Duration) -> Self {
        self.retry_deadline = retry_deadline;
        self
    }

    /// The same client — nodes, token, timeouts and the one keep-alive connection pool — with a
    /// preferred node of its own, starting at node `index` (modulo the number of nodes). Many
    /// concurrent callers (the bench's client tasks) spread over the nodes this way, and each
    /// fails over on its own, while all of them share connections.
    pub fn with_node_first(&self, index: usize) -> Self {
        let mut client = self.clone();
        // `new` refuses an empty node list, so the modulo is never by zero.
        client.node_preferred = Arc::new(AtomicUsize::new(index % self.nodes.len()));
        client
    }

    /// The normalised base URLs, in the order given.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// Creates an account; `true` when this call created it (201), `false` when it already
    /// existed with the same fields (200), possibly from an earlier attempt of this very call.
    ///
    /// # Errors
    /// `Api` (e.g. `409 id_conflict`, `400 invalid_request`), `Unavailable`, `Decode`.
    pub async fn create_account(
        &self,
        account: &NewAccount,
    ) -> Result<(Account, bool), ClientError> {
        let reply = self.send(&ApiRequest::create_account(account)).await?;
        Ok((reply.decode()?, reply.status == 201))
    }

    /// Reads an account.
    ///
    /// # Errors
    /// `Api` (`404 account_not_found`), `Unavailable`, `Decode`.
    pub async fn get_account(
        &self,
        id: &str,
        consistency: Consistency,
    ) -> Result<Account, ClientError> {
        self.send(&ApiRequest::get_account(id, consistency))
            .await?
            .decode()
    }

    /// Creates a transfer; `true` on 201, `false` on 200 (the id was already decided with the
    /// same content — possibly by an earlier attempt of this very call).
    ///
    /// # Errors
    /// `Api` with the recorded rejection (`422 insufficient_funds`, `404 account_not_found`,
    /// `409 id_conflict`, ...); `Unavailable` means the outcome is unknown: re-send the same
    /// transfer. `Decode` on a malformed 2xx body.
    pub async fn transfer(&self, transfer: &NewTransfer) -> Result<(Transfer, bool), ClientError> {
        let reply = self.send(&ApiRequest::transfer(transfer)).await?;
        Ok((reply.decode()?, reply.status == 201))
    }

    /// Reads a transfer; a rejected id returns its recorded error as `Api`.
    ///
    /// # Errors
    /// `Api` (`404 transfer_not_found` or the recorded rejection), `Unavailable`, `Decode`.
    pub async fn get_transfer(
        &self,
        id: &str,
        consistency: Consistency,
    ) -> Result<Transfer, ClientError> {
        self.send(&ApiRequest::get_transfer(id, consistency))
            .await?
            .decode()
    }

    /// One page of an account's transfers in commit order, after `after` (exclusive).
    ///
    /// # Errors
    /// `Api` (`404 account_not_found`, `400 invalid_request`), `Unavailable`, `Decode`.
    pub async fn history(
        &self,
        account: &str,
        limit: Option<u32>,
        after: Option<u64>,
        consistency: Consistency,
    ) -> Result<TransferPage, ClientError> {
        let request = ApiRequest::history(account, limit, after, consistency);
        self.send(&request).await?.decode()
    }

    /// Creates up to 8190 transfers in one request; per-item outcomes in request order.
    ///
    /// # Errors
    /// `Api` when the batch is refused whole (`400 invalid_request`, `413`), `Unavailable`
    /// (outcomes unknown: re-send the same batch), `Decode`.
    pub async fn batch(
        &self,
        transfers: &[NewTransfer],
        atomic: bool,
    ) -> Result<Vec<BatchItem>, ClientError> {
        let reply = self.send(&ApiRequest::batch(transfers, atomic)).await?;
        Ok(reply.decode::<BatchResult>()?.results)
    }

    /// The cluster as seen by any node (`None`, with failover) or by one given node (`Some`:
    /// a single attempt, no failover, no retry — the point is to see that node).
    ///
    /// # Errors
    /// `Config` for a bad address, `Unavailable` if the node does not answer definitely, `Api`,
    /// `Decode`.
    pub async fn cluster_status(&self, node: Option<&str>) -> Result<ClusterStatus, ClientError> {
        let request = ApiRequest::cluster_status();
        let reply = match node {
            Some(node) => self.send_to(node, &request).await?,
            None => self.send(&request).await?,
        };
        reply.decode()
    }

    /// Adds a node as a learner; returns the server's JSON answer (`Null` if empty).
    ///
    /// # Errors
    /// `Api`, `Unavailable`.
    pub async fn add_learner(
        &self,
        id: u64,
        http_addr: &str,
    ) -> Result<serde_json::Value, ClientError> {
        self.send_json(&ApiRequest::add_learner(id, http_addr))
            .await
    }

    /// Sets the voter set (answers once the new configuration is committed).
    ///
    /// # Errors
    /// `Api` (e.g. an id that is not a member), `Unavailable`.
    pub async fn set_voters(&self, ids: &[u64]) -> Result<serde_json::Value, ClientError> {
        self.send_json(&ApiRequest::set_voters(ids)).await
    }

    /// Removes a node from the membership.
    ///
    /// # Errors
    /// `Api`, `Unavailable`.
    pub async fn remove_node(&self, id: u64) -> Result<serde_json::Value, ClientError> {
        self.send_json(&ApiRequest::remove_node(id)).await
    }

    /// Any request, with failover: the definite status and body as JSON (a JSON string when
    /// the body is not JSON, `Null` when empty). 4xx answers are returned, not turned into
    /// errors.
    ///
    /// # Errors
    /// `Unavailable`, `Config`, `Decode` (body over the size cap).
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, serde_json::Value), ClientError> {
        let request = ApiRequest {
            method,
            path: path.to_owned(),
            body: body.map(json_encode),
        };
        let reply = self.send(&request).await?;
        Ok((reply.status, reply.json()))
    }

    async fn send_json(&self, request: &ApiRequest) -> Result<serde_json::Value, ClientError> {
        let reply = self.send(request).await?;
        if !reply.is_success() {
            return Err(reply.api_error());
        }
        Ok(reply.json())
    }

    /// Sends `request` to one given node, once.
    ///
    /// # Errors
    /// `Config` for a bad address; `Unavailable` when that node gives no definite answer;
    /// `Decode` for a body over the size cap.
    pub async fn send_to(&self, node: &str, request: &ApiRequest) -> Result<Reply, ClientError> {
        let base = node_base_url(node)?;
        match self.attempt(&base, request, self.request_timeout).await? {
            Attempt::Answered(reply, _) => Ok(reply),
            Attempt::Failed { reason, .. } => Err(ClientError::Unavailable {
                last: format!("{base}: {reason}"),
            }),
        }
    }

    /// Sends `request` until some node gives a definite answer (2xx or 4xx), trying the nodes
    /// round-robin, at once after a failure, and pausing (backoff, or the server's
    /// `Retry-After`) only after a whole round failed.
    ///
    /// # Errors
    /// `Unavailable` when the retry deadline passes; `Config`/`Decode` as in `send_to`.
    pub async fn send(&self, request: &ApiRequest) -> Result<Reply, ClientError> {
        let deadline = Instant::now() + self.retry_deadline;
        let n_nodes = self.nodes.len();
        let node_first = self.node_preferred.load(Ordering::Relaxed) % n_nodes;
        let mut backoff = BACKOFF_MIN;
        let mut retry_after_max: Option<Duration> = None;
        let mut last = "no attempt fit in the retry deadline".to_owned();
        for attempt in 0_usize.. {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            let node_index = (node_first + attempt) % n_nodes;
            let base = &self.nodes[node_index];
            let timeout = self.request_timeout.min(remaining);
            match self.attempt(base, request, timeout).await? {
                Attempt::Answered(reply, leader) => {
                    let next = match leader {
                        Some(leader) if self.follow_leader => leader,
                        _ => node_index,
                    };
                    self.node_preferred.store(next, Ordering::Relaxed);
                    return Ok(reply);
                }
                Attempt::Failed {
                    reason,
                    retry_after,
                } => {
                    tracing::debug!(node = %base, attempt, %reason, path = %request.path, "no definite answer, trying the next node");
                    last = format!("{base}: {reason}");
                    retry_after_max = retry_after_max.max(retry_after);
                }
            }
            if (attempt + 1) % n_nodes == 0 {
                let pause = round_pause(backoff, retry_after_max.take());
                tokio::time::sleep_until(deadline.min(Instant::now() + pause)).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
        Err(ClientError::Unavailable { last })
    }

    /// Which of our nodes the answer's `x-raftpay-leader` header names, if any.
    fn leader_index(&self, headers: &HeaderMap) -> Option<usize> {
        let named = headers.get(HEADER_LEADER)?.to_str().ok()?;
        let base = node_base_url(named).ok()?;
        self.nodes.iter().position(|node| *node == base)
    }

    /// One attempt against one node.
    async fn attempt(
        &self,
        base: &str,
        request: &ApiRequest,
        timeout: Duration,
    ) -> Result<Attempt, ClientError> {
        let url = format!("{base}{}", request.path);
        let mut builder = self
            .http
            .request(request.method.clone(), &url)
            .timeout(timeout);
        if let Some(authorization) = &self.authorization {
            builder = builder.header(AUTHORIZATION, authorization.clone());
        }
        if let Some(body) = &request.body {
            builder = builder
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let response = match builder.send().await {
            Ok(response) => response,
            Err(error) if error.is_builder() => {
                return Err(ClientError::Config(format!("request {url}: {error}")));
            }
            Err(error) => return Ok(failed(transport_reason(&error), None)),
        };
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        let leader = self.leader_index(response.headers());
        let body = match body_read_capped(response).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => {
                return Err(ClientError::Decode(format!(
                    "HTTP {status} body from {base} exceeds {RESPONSE_BODY_BYTES_MAX} bytes"
                )));
            }
            Err(BodyError::Transport(error)) => return Ok(failed(transport_reason(&error), None)),
        };
        let reply = Reply { status, body };
        if is_definite(status) {
            return Ok(Attempt::Answered(reply, leader));
        }
        let reason = match reply.api_error() {
            ClientError::Api { code, message, .. } => format!("HTTP {status} {code}: {message}"),
            other => format!("HTTP {status}: {other}"),
        };
        Ok(failed(reason, retry_after))
    }
}

fn failed(reason: String, retry_after: Option<Duration>) -> Attempt {
    Attempt::Failed {
        reason,
        retry_after,
    }
}

/// 2xx and 4xx are decided answers. 503 means "not now, safe to retry"; any other status (5xx,
/// 3xx, 1xx) is outside the contract and tells nothing about the outcome, so it is retried too
/// rather than reported as if the request had been decided.
fn is_definite(status: u16) -> bool {
    (200..300).contains(&status) || (400..500).contains(&status)
}

/// The pause after a failed round: the backoff with up to 25% jitter, or the server's
/// `Retry-After` when that is longer.
fn round_pause(backoff: Duration, retry_after: Option<Duration>) -> Duration {
    let jitter_ms_max = u64::try_from(backoff.as_millis() / 4).unwrap_or(0);
    let jitter = Duration::from_millis(rand::thread_rng().gen_range(0..=jitter_ms_max));
    // The server's hint, when given, says when a retry can succeed (raftpay sends 100 ms while
    // it has no leader); without one, our own backoff.
    retry_after.unwrap_or(backoff + jitter)
}

/// The server's retry hint: `retry-after-ms` when present (raftpay sends it, since `Retry-After`
/// cannot say less than a second), else `Retry-After` in whole seconds (the HTTP-date form is
/// ignored); capped.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let millis = headers
        .get("retry-after-ms")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if let Some(millis) = millis {
        return Some(Duration::from_millis(millis).min(RETRY_AFTER_MAX));
    }
    let seconds: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(RETRY_AFTER_MAX))
}

fn bearer_header(token: &str) -> Result<HeaderValue, ClientError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
        ClientError::Config("token contains characters not allowed in a header".to_owned())
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// A transport error as its kind and innermost cause ("connect failed: Connection refused").
fn transport_reason(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connect failed"
    } else {
        "transport error"
    };
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    format!("{kind}: {cause}")
}

enum BodyError {
    TooLarge,
    Transport(reqwest::Error),
}

async fn body_read_capped(mut response: reqwest::Response) -> Result<String, BodyError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > RESPONSE_BODY_BYTES_MAX {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    #[test]
    fn node_addresses_are_normalised() {
        assert_eq!(
            node_base_url("127.0.0.1:7001").unwrap(),
            "http://127.0.0.1:7001"
        );
        assert_eq!(
            node_base_url(" http://localhost:7002/ ").unwrap(),
            "http://localhost:7002"
        );
        for bad in [
            "",
            "https://127.0.0.1:7001",
            "http://h:1/prefix",
            "http://h:1/?x=1",
            "http://u:p@h:1",
            "a b:1",
        ] {
            assert!(
                matches!(node_base_url(bad), Err(ClientError::Config(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn paths_follow_the_contract() {
        let request = ApiRequest::get_account("alice", Consistency::Linearizable);
        assert_eq!(request.method, Method::GET);
        assert_eq!(request.path, "/v1/accounts/alice?consistency=linearizable");
        assert_eq!(
            ApiRequest::get_transfer("t-1.a:b_c", Consistency::Local).path,
            "/v1/transfers/t-1.a:b_c?consistency=local"
        );
        assert_eq!(
            ApiRequest::history("bob", Some(10), Some(17), Consistency::Local).path,
            "/v1/accounts/bob/transfers?consistency=local&limit=10&after=17"
        );
        assert_eq!(
            ApiRequest::history("bob", None, None, Consistency::Linearizable).path,
            "/v1/accounts/bob/transfers?consistency=linearizable"
        );
        assert_eq!(ApiRequest::remove_node(4).method, Method::DELETE);
        assert_eq!(ApiRequest::remove_node(4).path, "/v1/cluster/nodes/4");
    }

    #[test]
    fn odd_ids_cannot_escape_their_path_segment() {
        assert_eq!(
            ApiRequest::get_account("a/b?c d", Consistency::Local).path,
            "/v1/accounts/a%2Fb%3Fc%20d?consistency=local"
        );
    }

    #[test]
    fn request_bodies_match_the_contract() {
        let transfer = NewTransfer {
            id: "t-1".into(),
            from: "bank".into(),
            to: "alice".into(),
            amount: 250,
            memo: None,
        };
        let request = ApiRequest::transfer(&transfer);
        assert_eq!(
            request.body.as_deref(),
            Some(r#"{"id":"t-1","from":"bank","to":"alice","amount":250}"#)
        );
        let batch = ApiRequest::batch(std::slice::from_ref(&transfer), true);
        assert_eq!(batch.path, "/v1/transfers/batch");
        let body: serde_json::Value = serde_json::from_str(batch.body.as_deref().unwrap()).unwrap();
        assert_eq!(body["atomic"], true);
        assert_eq!(body["transfers"][0]["amount"], 250);
        assert_eq!(
            ApiRequest::set_voters(&[1, 2]).body.as_deref(),
            Some(r#"{"ids":[1,2]}"#)
        );
        assert_eq!(
            ApiRequest::add_learner(4, "127.0.0.1:7004").body.as_deref(),
            Some(r#"{"id":4,"http_addr":"127.0.0.1:7004"}"#)
        );
    }

    #[test]
    fn standard_error_bodies_decode_to_api_errors() {
        let reply = Reply {
            status: 422,
            body: r#"{"error":{"code":"insufficient_funds","message":"alice has 0"}}"#.into(),
        };
        assert_eq!(
            reply.decode::<Transfer>(),
            Err(ClientError::Api {
                status: 422,
                code: "insufficient_funds".into(),
                message: "alice has 0".into(),
            })
        );
    }

    #[test]
    fn non_standard_error_bodies_keep_status_and_text() {
        let reply = Reply {
            status: 405,
            body: String::new(),
        };
        assert_eq!(
            reply.api_error(),
            ClientError::Api {
                status: 405,
                code: "http_405".into(),
                message: "Method Not Allowed".into(),
            }
        );
        let reply = Reply {
            status: 415,
            body: "Expected JSON".into(),
        };
        assert!(
            matches!(reply.api_error(), ClientError::Api { message, .. } if message == "Expected JSON")
        );
    }

    #[test]
    fn malformed_success_bodies_are_decode_errors() {
        let reply = Reply {
            status: 200,
            body: r#"{"id":"a"}"#.into(),
        };
        assert!(matches!(
            reply.decode::<Account>(),
            Err(ClientError::Decode(_))
        ));
    }

    #[test]
    fn cluster_status_tolerates_extra_fields_and_null_indexes() {
        let body = r#"{"node_id":1,"leader_id":null,"term":5,"last_log_index":null,
            "last_applied":3,"state_hash":"abc","members":[
            {"id":1,"http_addr":"127.0.0.1:7001","role":"voter","lag":0}]}"#;
        let reply = Reply {
            status: 200,
            body: body.into(),
        };
        let status: ClusterStatus = reply.decode().unwrap();
        assert_eq!(status.leader_id, None);
        assert_eq!(status.last_log_index, 0);
        assert_eq!(status.last_applied, 3);
        assert_eq!(status.members[0].role, "voter");
    }

    #[test]
    fn retry_after_is_whole_seconds_and_capped() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(1)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("3600"));
        assert_eq!(retry_after(&headers), Some(RETRY_AFTER_MAX));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), None);
    }

    // ---- retry loop against canned HTTP servers ----

    /// What a canned server saw: request line, headers (lower-cased), body.
    #[derive(Debug, Clone)]
    struct Seen {
        request_line: String,
        headers: String,
        body: String,
    }

    /// A canned response; `None` means accept the connection and never answer.
    type Canned = Option<String>;

    fn canned(status: u16, extra_headers: &str, body: &str) -> Canned {
        Some(format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{extra_headers}\r\n{body}",
            body.len()
        ))
    }

    /// Serves `responses` in order, one per connection, and records each request.
    async fn canned_server(responses: Vec<Canned>) -> (String, Arc<Mutex<Vec<Seen>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen_server = Arc::clone(&seen);
        // Runs until the test's runtime shuts down; each connection is handled inline.
        tokio::spawn(async move {
            for response in responses {
                let (mut stream, _) = listener.accept().await.unwrap();
                let request = read_request(&mut stream).await;
                seen_server.lock().unwrap().push(request);
                match response {
                    Some(text) => stream.write_all(text.as_bytes()).await.unwrap(),
                    // Hold the connection open, silent, until the client gives up.
                    None => tokio::time::sleep(Duration::from_secs(30)).await,
                }
            }
        });
        (address, seen)
    }

    async fn read_request(stream: &mut TcpStream) -> Seen {
        let mut buffer = Vec::new();
        let mut chunk = [0_u8; 4096];
        let header_end = loop {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "client closed before the request ended");
            buffer.extend_from_slice(&chunk[..n]);
            if let Some(at) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
                break at + 4;
            }
        };
        let head = String::from_utf8_lossy(&buffer[..header_end]).to_lowercase();
        let content_length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .map_or(0, |value| value.trim().parse().unwrap());
        while buffer.len() < header_end + content_length {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "client closed before the body ended");
            buffer.extend_from_slice(&chunk[..n]);
        }
        let original_head = String::from_utf8_lossy(&buffer[..header_end]).into_owned();
        Seen {
            request_line: original_head.lines().next().unwrap_or_default().to_owned(),
            headers: head,
            body: String::from_utf8_lossy(&buffer[header_end..]).into_owned(),
        }
    }

    /// An address that refuses connections: bound, then closed.
    async fn refusing_address() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().to_string()
    }

    fn new_transfer() -> NewTransfer {
        NewTransfer {
            id: "t-1".into(),
            from: "bank".into(),
            to: "alice".into(),
            amount: 250,
            memo: Some("top-up".into()),
        }
    }

    const TRANSFER_BODY: &str = r#"{"id":"t-1","from":"bank","to":"alice","amount":250,"currency":"CNY","memo":"top-up","seq":1}"#;
    const UNAVAILABLE_BODY: &str = r#"{"error":{"code":"unavailable","message":"no leader"}}"#;

    /// Goal: a write survives a dead node and a 503 by re-sending the identical request to the
    /// next node. Method: node A refuses connections; node B answers 503, then 201.
    #[tokio::test]
    async fn fails_over_past_refused_and_503_to_the_definite_answer() {
        let refused = refusing_address().await;
        let (server, seen) = canned_server(vec![
            canned(503, "retry-after: 0\r\n", UNAVAILABLE_BODY),
            canned(201, "", TRANSFER_BODY),
        ])
        .await;
        let client = Client::new(&[refused, server], Some("s3cret"))
            .unwrap()
            .with_request_timeout(Duration::from_secs(2))
            .with_retry_deadline(Duration::from_secs(5));

        let (transfer, created) = client.transfer(&new_transfer()).await.unwrap();

        assert!(created);
        assert_eq!(transfer.seq, 1);
        assert_eq!(transfer.memo.as_deref(), Some("top-up"));
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].request_line, "POST /v1/transfers HTTP/1.1");
        assert_eq!(
            seen[0].body, seen[1].body,
            "a retry must re-send the same bytes"
        );
        assert!(seen[0].headers.contains("authorization: bearer s3cret"));
        assert!(seen[0].headers.contains("content-type: application/json"));
    }

    /// Goal: a definite 4xx is returned at once. Method: node A answers 422; node B, which
    /// would accept, must never be asked.
    #[tokio::test]
    async fn a_422_is_returned_at_once_without_retry() {
        let rejection = r#"{"error":{"code":"insufficient_funds","message":"bank is short"}}"#;
        let (first, seen_first) = canned_server(vec![canned(422, "", rejection)]).await;
        let (second, seen_second) = canned_server(vec![canned(201, "", TRANSFER_BODY)]).await;
        let client = Client::new(&[first, second], None).unwrap();

        let error = client.transfer(&new_transfer()).await.unwrap_err();

        assert_eq!(
            error,
            ClientError::Api {
                status: 422,
                code: "insufficient_funds".into(),
                message: "bank is short".into(),
            }
        );
        assert_eq!(seen_first.lock().unwrap().len(), 1);
        assert_eq!(seen_second.lock().unwrap().len(), 0);
    }

    /// Goal: a node that accepts but never answers costs one request timeout, then the next
    /// node is tried; the node that answered is preferred for the next call.
    #[tokio::test]
    async fn a_silent_node_times_out_and_the_next_one_answers() {
        let account = r#"{"id":"alice","currency":"CNY","allow_overdraft":false,"debits":0,"credits":250,"balance":250}"#;
        let (silent, _) = canned_server(vec![None]).await;
        let (server, seen) =
            canned_server(vec![canned(200, "", account), canned(200, "", account)]).await;
        let client = Client::new(&[silent, server], None)
            .unwrap()
            .with_request_timeout(Duration::from_millis(200))
            .with_retry_deadline(Duration::from_secs(5));

        let first = client
            .get_account("alice", Consistency::Local)
            .await
            .unwrap();
        let started = Instant::now();
        let second = client
            .get_account("alice", Consistency::Local)
            .await
            .unwrap();

        assert_eq!(first, second);
        assert_eq!(first.balance, 250);
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "went back to the silent node"
        );
        assert_eq!(
            seen.lock().unwrap()[0].request_line,
            "GET /v1/accounts/alice?consistency=local HTTP/1.1"
        );
    }

    /// Goal: when no node answers, the call ends near its deadline with `Unavailable`.
    #[tokio::test]
    async fn the_retry_deadline_bounds_a_dead_cluster() {
        let client = Client::new(&[refusing_address().await, refusing_address().await], None)
            .unwrap()
            .with_retry_deadline(Duration::from_millis(300));
        let started = Instant::now();

        let error = client.cluster_status(None).await.unwrap_err();

        assert!(
            matches!(error, ClientError::Unavailable { .. }),
            "{error:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    /// Goal: asking one named node makes one attempt, with no failover and no retry.
    #[tokio::test]
    async fn a_named_node_gets_exactly_one_attempt() {
        let (server, seen) = canned_server(vec![
            canned(503, "", UNAVAILABLE_BODY),
            canned(503, "", UNAVAILABLE_BODY),
        ])
        .await;
        let client = Client::new(&[refusing_address().await], None).unwrap();

        let error = client.cluster_status(Some(&server)).await.unwrap_err();

        assert!(
            matches!(&error, ClientError::Unavailable { last } if last.contains("unavailable")),
            "{error:?}"
        );
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    /// Goal: `raw` returns 4xx answers as data, and non-JSON bodies as a JSON string.
    #[tokio::test]
    async fn raw_returns_status_and_json() {
        let (server, _) = canned_server(vec![
            canned(
                404,
                "",
                r#"{"error":{"code":"not_found","message":"no route"}}"#,
            ),
            canned(200, "", "raft_term 5\n"),
        ])
        .await;
        let client = Client::new(&[server], None).unwrap();

        let (status, body) = client.raw(Method::GET, "/nope", None).await.unwrap();
        assert_eq!(status, 404);
        assert_eq!(body["error"]["code"], "not_found");
        let (status, body) = client.raw(Method::GET, "/metrics", None).await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, serde_json::Value::String("raft_term 5\n".into()));
    }
}
