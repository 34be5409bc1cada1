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
//!
//! About 800 lines: the transport, the retry loop and the typed calls belong together (the tests are in `tests.rs`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use raftpay_api::*;
use rand::Rng;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use serde::de::DeserializeOwned;
use tokio::time::Instant;

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
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reply {
    pub status: u16,
    /// The body as text (empty for the 2xx answer of a [`Client::download`]).
    pub body: String,
    /// The raw body of a [`Client::download`]'s 2xx answer; empty otherwise.
    pub bytes: Vec<u8>,
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
    /// No definite answer; try the next node. `reply` when the node answered with a status
    /// that decides nothing (a 503, a 5xx).
    Failed {
        reason: String,
        retry_after: Option<Duration>,
        reply: Option<Reply>,
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
    /// Told of every attempt (see [`Client::with_observer`]).
    observer: Option<Observer>,
}

/// A callback told of every attempt a client makes.
#[derive(Clone)]
pub struct Observer(Arc<dyn Fn(&Attempted<'_>) + Send + Sync>);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

/// One attempt against one node, as an observer sees it.
#[derive(Debug, Clone)]
pub struct Attempted<'a> {
    pub request: &'a ApiRequest,
    /// Index into [`Client::nodes`].
    pub node_index: usize,
    /// 0 for the first attempt of a call.
    pub attempt: u32,
    /// The HTTP status, when the node answered at all.
    pub status: Option<u16>,
    /// A 2xx or 4xx: the call ends with it.
    pub definite: bool,
    /// Why the attempt decided nothing (a transport error, a timeout, a 5xx).
    pub reason: Option<&'a str>,
}

/// How the client's connections are made; the defaults suit every caller but the chaos suite.
#[derive(Debug, Clone, Default)]
pub struct Transport {
    /// Source address of every connection (the chaos suite sends from an address of its own
    /// so that its packet filter, which cuts nodes apart, never cuts the clients off).
    pub local_address: Option<std::net::IpAddr>,
    /// Connect timeout; 1 s when not given.
    pub connect_timeout: Option<Duration>,
}

/// Where and how one call is sent (see [`Client::deliver`]).
#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    /// Index of the node tried first (modulo the number of nodes).
    pub node_first: usize,
    /// Timeout of each attempt.
    pub attempt_timeout: Duration,
    /// No attempt starts after it.
    pub deadline: Instant,
}

/// A definite answer, from which node, after how many attempts.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub reply: Reply,
    pub node_index: usize,
    pub attempts: u32,
}

/// No definite answer before the deadline (or a configuration error): the last node tried, the
/// number of attempts, and why.
#[derive(Debug, Clone)]
pub struct Undelivered {
    pub node_index: usize,
    pub attempts: u32,
    pub error: ClientError,
}

impl Client {
    /// A client for the given nodes, with the default timeout and retry deadline.
    ///
    /// # Errors
    /// `ClientError::Config` if the list is empty, an address is not `host:port` or
    /// `http://host:port`, the token is not a valid header value, or the HTTP stack fails to
    /// initialise.
    pub fn new<S: AsRef<str>>(nodes: &[S], token: Option<&str>) -> Result<Self, ClientError> {
        Self::with_transport(nodes, token, &Transport::default())
    }

    /// A client whose connections are made as `transport` says.
    ///
    /// # Errors
    /// As [`Client::new`].
    pub fn with_transport<S: AsRef<str>>(
        nodes: &[S],
        token: Option<&str>,
        transport: &Transport,
    ) -> Result<Self, ClientError> {
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
            .connect_timeout(transport.connect_timeout.unwrap_or(CONNECT_TIMEOUT))
            .local_address(transport.local_address)
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
            observer: None,
        })
    }

    /// Calls `observer` after every attempt of every call (the chaos runner and the tests count
    /// attempts and answers per node this way).
    pub fn with_observer(
        mut self,
        observer: impl Fn(&Attempted<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.observer = Some(Observer(Arc::new(observer)));
        self
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
        match self
            .attempt(&base, request, self.request_timeout, BodyKind::Text)
            .await?
        {
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
        let delivery = Delivery {
            node_first: self.node_preferred.load(Ordering::Relaxed),
            attempt_timeout: self.request_timeout,
            deadline: Instant::now() + self.retry_deadline,
        };
        match self.deliver(request, delivery).await {
            Ok(delivered) => Ok(delivered.reply),
            Err(undelivered) => Err(undelivered.error),
        }
    }

    /// The retry loop itself, with the start node, attempt timeout and deadline given by the
    /// caller, reporting which node answered after how many attempts. Every caller that needs
    /// a definite answer (the CLI, the bench, the chaos workload, backup, the tests) goes
    /// through here.
    ///
    /// # Errors
    /// `Undelivered` with `Unavailable` when the deadline passes first, or `Config`/`Decode`
    /// as in `send_to`.
    pub async fn deliver(
        &self,
        request: &ApiRequest,
        delivery: Delivery,
    ) -> Result<Delivered, Undelivered> {
        self.deliver_as(request, delivery, BodyKind::Text).await
    }

    /// [`Client::deliver`] for a binary answer of up to `bytes_max` bytes (a backup): the 2xx
    /// body comes back as [`Reply::bytes`], error answers as text.
    ///
    /// # Errors
    /// As [`Client::deliver`]; `Decode` when the body exceeds `bytes_max`.
    pub async fn download(
        &self,
        request: &ApiRequest,
        delivery: Delivery,
        bytes_max: usize,
    ) -> Result<Delivered, Undelivered> {
        self.deliver_as(request, delivery, BodyKind::Binary { bytes_max })
            .await
    }

    async fn deliver_as(
        &self,
        request: &ApiRequest,
        delivery: Delivery,
        kind: BodyKind,
    ) -> Result<Delivered, Undelivered> {
        let n_nodes = self.nodes.len();
        let node_first = delivery.node_first % n_nodes;
        let mut backoff = BACKOFF_MIN;
        let mut retry_after_max: Option<Duration> = None;
        let mut last = "no attempt fit in the retry deadline".to_owned();
        let mut node_index = node_first;
        let mut attempts = 0_u32;
        for attempt in 0_usize.. {
            let remaining = delivery.deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            node_index = (node_first + attempt) % n_nodes;
            let base = &self.nodes[node_index];
            let timeout = delivery.attempt_timeout.min(remaining);
            attempts = attempts.saturating_add(1);
            let outcome = match self.attempt(base, request, timeout, kind).await {
                Ok(outcome) => outcome,
                Err(error) => {
                    return Err(Undelivered {
                        node_index,
                        attempts,
                        error,
                    })
                }
            };
            match outcome {
                Attempt::Answered(reply, leader) => {
                    self.observe(request, node_index, attempts, Some(reply.status), None);
                    let next = match leader {
                        Some(leader) if self.follow_leader => leader,
                        _ => node_index,
                    };
                    self.node_preferred.store(next, Ordering::Relaxed);
                    return Ok(Delivered {
                        reply,
                        node_index,
                        attempts,
                    });
                }
                Attempt::Failed {
                    reason,
                    retry_after,
                    reply,
                } => {
                    let status = reply.map(|reply| reply.status);
                    self.observe(request, node_index, attempts, status, Some(&reason));
                    tracing::debug!(node = %base, attempt, %reason, path = %request.path, "no definite answer, trying the next node");
                    last = format!("{base}: {reason}");
                    retry_after_max = retry_after_max.max(retry_after);
                }
            }
            if (attempt + 1) % n_nodes == 0 {
                let pause = round_pause(backoff, retry_after_max.take());
                tokio::time::sleep_until(delivery.deadline.min(Instant::now() + pause)).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
        Err(Undelivered {
            node_index,
            attempts,
            error: ClientError::Unavailable { last },
        })
    }

    fn observe(
        &self,
        request: &ApiRequest,
        node_index: usize,
        attempts: u32,
        status: Option<u16>,
        reason: Option<&str>,
    ) {
        if let Some(Observer(observer)) = &self.observer {
            observer(&Attempted {
                request,
                node_index,
                attempt: attempts.saturating_sub(1),
                status,
                definite: reason.is_none(),
                reason,
            });
        }
    }

    /// One attempt against node `node_index` (of [`Client::nodes`]) with its own timeout: the
    /// answer whatever its status (a 503 too), or why there was none.
    ///
    /// # Errors
    /// `Unavailable` with the transport error; `Config`/`Decode` as in `send_to`.
    pub async fn send_once(
        &self,
        node_index: usize,
        request: &ApiRequest,
        timeout: Duration,
    ) -> Result<Reply, ClientError> {
        let base = &self.nodes[node_index % self.nodes.len()];
        match self.attempt(base, request, timeout, BodyKind::Text).await? {
            Attempt::Answered(reply, _)
            | Attempt::Failed {
                reply: Some(reply), ..
            } => Ok(reply),
            Attempt::Failed { reason, .. } => Err(ClientError::Unavailable {
                last: format!("{base}: {reason}"),
            }),
        }
    }

    /// Which of our nodes the answer's `x-raftpay-leader` header names, if any.
    fn leader_index(&self, headers: &HeaderMap) -> Option<usize> {
        let named = headers.get(headers::LEADER)?.to_str().ok()?;
        let base = node_base_url(named).ok()?;
        self.nodes.iter().position(|node| *node == base)
    }

    /// One attempt against one node.
    async fn attempt(
        &self,
        base: &str,
        request: &ApiRequest,
        timeout: Duration,
        kind: BodyKind,
    ) -> Result<Attempt, ClientError> {
        let url = format!("{base}{}", request.path);
        let mut builder = self
            .http
            .request(http_method(request.method), &url)
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
        let bytes_max = match kind {
            BodyKind::Binary { bytes_max } if (200..300).contains(&status) => bytes_max,
            _ => RESPONSE_BODY_BYTES_MAX,
        };
        let bytes = match body_read_capped(response, bytes_max).await {
            Ok(bytes) => bytes,
            Err(BodyError::TooLarge) => {
                return Err(ClientError::Decode(format!(
                    "HTTP {status} body from {base} exceeds {bytes_max} bytes"
                )));
            }
            Err(BodyError::Transport(error)) => return Ok(failed(transport_reason(&error), None)),
        };
        let reply = match kind {
            BodyKind::Binary { .. } if (200..300).contains(&status) => Reply {
                status,
                body: String::new(),
                bytes,
            },
            _ => Reply {
                status,
                body: String::from_utf8_lossy(&bytes).into_owned(),
                bytes: Vec::new(),
            },
        };
        if is_definite(status) {
            return Ok(Attempt::Answered(reply, leader));
        }
        let reason = match reply.api_error() {
            ClientError::Api { code, message, .. } => format!("HTTP {status} {code}: {message}"),
            other => format!("HTTP {status}: {other}"),
        };
        Ok(Attempt::Failed {
            reason,
            retry_after,
            reply: Some(reply),
        })
    }
}

fn failed(reason: String, retry_after: Option<Duration>) -> Attempt {
    Attempt::Failed {
        reason,
        retry_after,
        reply: None,
    }
}

fn http_method(method: Method) -> reqwest::Method {
    match method {
        Method::Get => reqwest::Method::GET,
        Method::Post => reqwest::Method::POST,
        Method::Delete => reqwest::Method::DELETE,
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
        .get(headers::RETRY_AFTER_MS)
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

/// How an attempt reads the answer's body.
#[derive(Debug, Clone, Copy)]
enum BodyKind {
    /// Text (JSON), up to `RESPONSE_BODY_BYTES_MAX`.
    Text,
    /// A 2xx body kept as bytes, up to `bytes_max`; error answers as text.
    Binary { bytes_max: usize },
}

enum BodyError {
    TooLarge,
    Transport(reqwest::Error),
}

async fn body_read_capped(
    mut response: reqwest::Response,
    bytes_max: usize,
) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > bytes_max {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests;
