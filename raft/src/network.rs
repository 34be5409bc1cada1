//! Node-to-node Raft RPC over HTTP with bincode bodies.
//!
//! Client side: [`Network`] (openraft's connection factory) and [`Connection`], sharing one
//! pooled HTTP client; every request carries openraft's timeout, the target's node id and the
//! cluster secret when one is configured. A refused connection is `Unreachable`, so openraft
//! backs off instead of spinning. Server side: [`RpcServer`] decodes a request (size-limited),
//! checks it is addressed to this node and hands it to openraft. The HTTP routes live in the
//! service; this module knows no status codes beyond what it returns for its own rejections.

use std::future::Future;
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed,
    StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::codec;
use crate::detector::Heard;
use crate::typ::{NodeId, Raft, Snapshot, SnapshotMeta, TypeConfig, Vote};

/// Header naming the node a Raft RPC is meant for.
pub const HEADER_TARGET: &str = "x-raftpay-target";
/// Header carrying the cluster secret.
pub const HEADER_SECRET: &str = "x-raftpay-secret";
/// How long sending a whole snapshot may take.
pub const SNAPSHOT_SEND_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a node stops campaigning early after a candidate with a longer log asked for its
/// vote (see `detector`).
const STAND_ASIDE: Duration = Duration::from_secs(2);
/// Connecting to a peer gives up after this long (a dead host, not a slow one).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// The routes under `/raft/`.
pub const ROUTE_APPEND: &str = "/raft/append";
pub const ROUTE_VOTE: &str = "/raft/vote";
pub const ROUTE_SNAPSHOT: &str = "/raft/snapshot";

/// A whole snapshot in one request (openraft's chunked default does not fit our limits).
#[derive(Serialize, Deserialize)]
struct SnapshotRequest {
    vote: Vote,
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// Builds connections to peers. Cheap to clone: the HTTP client is shared.
#[derive(Clone)]
pub struct Network {
    client: reqwest::Client,
    secret: Option<String>,
}

impl Network {
    /// # Errors
    /// When the HTTP client cannot be built (TLS or resolver setup).
    pub fn new(
        secret: Option<String>,
        local_ip: Option<std::net::IpAddr>,
    ) -> Result<Network, reqwest::Error> {
        let client = reqwest::Client::builder()
            .local_address(local_ip)
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .pool_max_idle_per_host(16)
            .build()?;
        Ok(Network { client, secret })
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        Connection {
            target,
            base_url: format!("http://{}", node.addr),
            client: self.client.clone(),
            secret: self.secret.clone(),
        }
    }
}

/// One peer.
pub struct Connection {
    target: NodeId,
    base_url: String,
    client: reqwest::Client,
    secret: Option<String>,
}

/// A failed RPC, before it is shaped into the error type of the calling method.
enum CallError<E> {
    Unreachable(Unreachable),
    Network(NetworkError),
    Remote(E),
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Message(String);

impl Connection {
    async fn call<Req, Resp, E>(
        &self,
        route: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: DeserializeOwned,
    {
        let body = codec::encode(request).map_err(|e| CallError::Network(NetworkError::new(&e)))?;
        let mut builder = self
            .client
            .post(format!("{}{route}", self.base_url))
            .timeout(timeout)
            .header(HEADER_TARGET, self.target.to_string())
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body);
        if let Some(secret) = &self.secret {
            builder = builder.header(HEADER_SECRET, secret);
        }
        let response = builder.send().await.map_err(|e| {
            if e.is_connect() {
                CallError::Unreachable(Unreachable::new(&e))
            } else {
                CallError::Network(NetworkError::new(&e))
            }
        })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| CallError::Network(NetworkError::new(&e)))?;
        if !status.is_success() {
            // The peer refused the call itself (wrong target, secret, body): not a Raft answer.
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let error = Message(format!(
                "{route} to node {}: HTTP {status}: {text}",
                self.target
            ));
            return Err(CallError::Unreachable(Unreachable::new(&error)));
        }
        let result: Result<Resp, E> =
            codec::decode(&bytes).map_err(|e| CallError::Network(NetworkError::new(&e)))?;
        result.map_err(CallError::Remote)
    }

    fn rpc_error<E: std::error::Error>(
        &self,
        error: CallError<E>,
    ) -> RPCError<NodeId, BasicNode, E> {
        match error {
            CallError::Unreachable(e) => RPCError::Unreachable(e),
            CallError::Network(e) => RPCError::Network(e),
            CallError::Remote(e) => RPCError::RemoteError(RemoteError::new(self.target, e)),
        }
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(ROUTE_APPEND, &rpc, option.hard_ttl())
            .await
            .map_err(|e| self.rpc_error(e))
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        // Never called: `full_snapshot` below sends snapshots whole.
        let error = Message("chunked snapshots are not used; see full_snapshot".into());
        Err(RPCError::Network(NetworkError::new(&error)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(ROUTE_VOTE, &rpc, option.hard_ttl())
            .await
            .map_err(|e| self.rpc_error(e))
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let request = SnapshotRequest {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot.into_inner(),
        };
        tracing::info!(
            target_node = self.target,
            bytes = request.data.len(),
            "sending snapshot"
        );
        let send = self.call::<_, SnapshotResponse<NodeId>, Fatal<NodeId>>(
            ROUTE_SNAPSHOT,
            &request,
            SNAPSHOT_SEND_TIMEOUT,
        );
        tokio::select! {
            // The replication stream was closed (leadership lost, target removed): stop sending.
            closed = cancel => Err(StreamingError::Closed(closed)),
            result = send => result.map_err(|error| match error {
                CallError::Unreachable(e) => StreamingError::Unreachable(e),
                CallError::Network(e) => StreamingError::Network(e),
                CallError::Remote(e) => StreamingError::RemoteError(RemoteError::new(self.target, e)),
            }),
        }
    }

    fn backoff(&self) -> openraft::network::Backoff {
        // Retry an unreachable peer soon (a restarted node should rejoin fast), then back off to
        // openraft's default 500 ms so a long-dead peer costs little.
        let steps = [50, 100, 200, 400]
            .into_iter()
            .chain(std::iter::repeat(500));
        openraft::network::Backoff::new(steps.map(Duration::from_millis))
    }
}

/// Why an incoming Raft RPC was refused before it reached openraft.
#[derive(Debug, thiserror::Error)]
pub enum RpcRefused {
    #[error("request is for node {requested}, this is node {own}")]
    WrongTarget { requested: String, own: NodeId },
    #[error("wrong or missing cluster secret")]
    Secret,
    #[error("malformed request: {0}")]
    Malformed(#[from] codec::CodecError),
    #[error("unknown route")]
    UnknownRoute,
}

/// The receiving side of Raft RPC.
#[derive(Clone)]
pub struct RpcServer {
    raft: Raft,
    node_id: NodeId,
    secret: Option<String>,
    heard: Arc<Heard>,
}

fn reply<T: Serialize, E: Serialize>(result: &Result<T, E>) -> Vec<u8> {
    codec::encode(result).expect("openraft's RPC types always encode")
}

impl RpcServer {
    /// `heard` is told of every append (entries or heartbeat) this node receives.
    pub fn new(
        raft: Raft,
        node_id: NodeId,
        secret: Option<String>,
        heard: Arc<Heard>,
    ) -> RpcServer {
        RpcServer {
            raft,
            node_id,
            secret,
            heard,
        }
    }

    /// Handles one RPC on `route` and returns the encoded answer.
    ///
    /// # Errors
    /// When the request is not for this node, lacks the secret, or does not decode.
    pub async fn handle(
        &self,
        route: &str,
        target: Option<&str>,
        secret: Option<&str>,
        body: &[u8],
    ) -> Result<Vec<u8>, RpcRefused> {
        if let Some(expected) = &self.secret {
            if secret.map(str::as_bytes) != Some(expected.as_bytes()) {
                return Err(RpcRefused::Secret);
            }
        }
        if target != Some(self.node_id.to_string().as_str()) {
            return Err(RpcRefused::WrongTarget {
                requested: target.unwrap_or("none").to_string(),
                own: self.node_id,
            });
        }
        match route {
            ROUTE_APPEND => {
                let request: AppendEntriesRequest<TypeConfig> = codec::decode(body)?;
                self.heard.touch();
                Ok(reply(&self.raft.append_entries(request).await))
            }
            ROUTE_VOTE => {
                let request: VoteRequest<NodeId> = codec::decode(body)?;
                let own_last = self.raft.metrics().borrow().last_log_index;
                if request.last_log_id.map(|id| id.index) > own_last {
                    // Let the better candidate win: see `detector`.
                    self.heard.stand_aside(STAND_ASIDE);
                }
                Ok(reply(&self.raft.vote(request).await))
            }
            ROUTE_SNAPSHOT => {
                let request: SnapshotRequest = codec::decode(body)?;
                let snapshot = Snapshot {
                    meta: request.meta,
                    snapshot: Box::new(Cursor::new(request.data)),
                };
                Ok(reply(
                    &self
                        .raft
                        .install_full_snapshot(request.vote, snapshot)
                        .await,
                ))
            }
            _ => Err(RpcRefused::UnknownRoute),
        }
    }
}
