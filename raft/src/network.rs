//! Node-to-node Raft RPC over HTTP with bincode bodies.
//!
//! Client side: [`Network`] (openraft's connection factory) and [`Connection`], sharing one
//! pooled HTTP client; every request carries openraft's timeout, the target's node id and the
//! cluster secret when one is configured. A refused connection is `Unreachable`, so openraft
//! backs off instead of spinning. Server side: [`RpcServer`] decodes a request (size-limited),
//! checks it is addressed to this node and hands it to openraft. The HTTP routes live in the
//! service; this module knows no status codes beyond what it returns for its own rejections.
//!
//! Snapshots are verified on both sides ([`crate::store::snapshot_verify`]: checksum, decode,
//! ledger invariants with checked arithmetic). The receiver verifies before openraft sees the
//! snapshot and refuses a bad one with [`RpcRefused::BadSnapshot`]: a non-fatal answer (the
//! sender counts it as unreachable and retries later), where a refusal from the state machine
//! would be a storage error, fatal for the receiving node. The sender verifies its own snapshot
//! before sending; a bad one is its own storage fault.

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
use crate::store::snapshot_verify;
use crate::typ::{NodeId, Raft, Snapshot, SnapshotMeta, StorageError, TypeConfig, Vote};

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

/// The body of a `/raft/snapshot` request: for tests and tools that send a crafted snapshot.
///
/// # Errors
/// When it does not encode.
pub fn snapshot_request_encode(
    vote: Vote,
    meta: SnapshotMeta,
    data: Vec<u8>,
) -> Result<Vec<u8>, codec::CodecError> {
    codec::encode(&SnapshotRequest { vote, meta, data })
}

/// Verifies snapshot data off the async workers (a snapshot may be hundreds of MB).
async fn snapshot_verify_blocking(data: Vec<u8>) -> (Vec<u8>, Result<(), String>) {
    match tokio::task::spawn_blocking(move || {
        let verdict = snapshot_verify(&data);
        (data, verdict)
    })
    .await
    {
        Ok(checked) => checked,
        Err(error) => (
            Vec::new(),
            Err(format!("snapshot check did not finish: {error}")),
        ),
    }
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
        // Never send what the receiver would refuse: a bad snapshot here is this node's own
        // storage fault (fatal for it), not the peer's.
        let (data, verdict) = snapshot_verify_blocking(snapshot.snapshot.into_inner()).await;
        if let Err(reason) = verdict {
            tracing::error!(target_node = self.target, %reason, "own snapshot fails its check; not sent");
            return Err(StreamingError::StorageError(StorageError::from_io_error(
                openraft::ErrorSubject::Snapshot(Some(snapshot.meta.signature())),
                openraft::ErrorVerb::Read,
                std::io::Error::other(reason),
            )));
        }
        let request = SnapshotRequest {
            vote,
            meta: snapshot.meta,
            data,
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
    /// A snapshot that fails its check (checksum, decoding, ledger invariants); nothing of it
    /// reached openraft or storage.
    #[error("snapshot refused: {0}")]
    BadSnapshot(String),
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
                let result = self.raft.vote(request).await;
                if matches!(&result, Ok(response) if response.vote_granted) {
                    // This node just voted for another candidate: campaigning against it now
                    // would only cost both of them the election (see `detector`).
                    self.heard.stand_aside(STAND_ASIDE);
                }
                Ok(reply(&result))
            }
            ROUTE_SNAPSHOT => {
                let request: SnapshotRequest = codec::decode(body)?;
                // Before openraft: its install would turn a refusal into a fatal storage error.
                let (data, verdict) = snapshot_verify_blocking(request.data).await;
                verdict.map_err(RpcRefused::BadSnapshot)?;
                let request = SnapshotRequest { data, ..request };
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

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Duration;

    use openraft::{CommittedLeaderId, LogId, Membership, StoredMembership};

    use super::*;
    use crate::ledger::{Account, AccountSpec, Command, CurrencyTotals, MemLedger, TransferSpec};
    use crate::node::{Node, NodeOptions};
    use crate::store::snapshot_data_of;

    fn ledger_sound() -> MemLedger {
        let account = |id: &str, allow_overdraft| {
            Command::CreateAccount(AccountSpec {
                id: id.into(),
                currency: "CNY".into(),
                allow_overdraft,
            })
        };
        let mut ledger = MemLedger::default();
        ledger.apply(&[
            account("bank", true),
            account("alice", false),
            Command::Transfer(TransferSpec {
                id: "t1".into(),
                from: "bank".into(),
                to: "alice".into(),
                amount: 250,
                memo: None,
            }),
        ]);
        ledger
    }

    /// Accounts whose totals no ledger could reach (credits of u64::MAX): their balances do not
    /// fit an i64. The currency totals match them, and the checksum is right.
    fn ledger_overflowing() -> MemLedger {
        let mut ledger = MemLedger::default();
        for (id, debits, credits) in [("rich", 0, u64::MAX), ("poor", u64::MAX, 0)] {
            ledger.accounts.insert(
                id.into(),
                Account {
                    id: id.into(),
                    currency: "CNY".into(),
                    allow_overdraft: id == "poor",
                    debits,
                    credits,
                },
            );
        }
        ledger.totals.insert(
            "CNY".into(),
            CurrencyTotals {
                debits: u128::from(u64::MAX),
                credits: u128::from(u64::MAX),
            },
        );
        ledger
    }

    fn flipped(mut data: Vec<u8>) -> Vec<u8> {
        let middle = data.len() / 2;
        data[middle] ^= 0x01;
        data
    }

    /// The bad snapshots a receiver must refuse: a flipped byte, and totals that overflow.
    fn bad_snapshots() -> Vec<(&'static str, Vec<u8>)> {
        let sound = snapshot_data_of(&ledger_sound()).expect("encode");
        vec![
            ("flipped byte", flipped(sound)),
            (
                "overflowing totals",
                snapshot_data_of(&ledger_overflowing()).expect("encode"),
            ),
        ]
    }

    fn meta_at(index: u64) -> SnapshotMeta {
        let log_id = LogId::new(CommittedLeaderId::new(9, 2), index);
        let nodes = BTreeMap::from([
            (1, BasicNode::new("127.0.0.1:1")),
            (2, BasicNode::new("127.0.0.1:2")),
        ]);
        SnapshotMeta {
            last_log_id: Some(log_id),
            last_membership: StoredMembership::new(
                Some(log_id),
                Membership::new(vec![BTreeSet::from([1, 2])], nodes),
            ),
            snapshot_id: format!("crafted-{index}"),
        }
    }

    async fn node_single(dir: &std::path::Path) -> Node {
        let options = NodeOptions {
            node_id: 1,
            http_addr: "127.0.0.1:1".into(),
            data_dir: dir.to_path_buf(),
            initial_voters: BTreeMap::from([(1, "127.0.0.1:1".to_string())]),
            secret: None,
            outgoing_ip: None,
            heartbeat_interval: Duration::from_millis(50),
            election_timeout_min: Duration::from_millis(150),
            election_timeout_max: Duration::from_millis(300),
            snapshot_logs_since_last: 10_000,
            logs_kept_behind_snapshot: 100,
            write_timeout: Duration::from_secs(30),
            disk_reserve_bytes: 0,
        };
        Node::start(options).await.expect("start node")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bad_snapshot_is_refused_before_openraft_and_a_good_one_installs() {
        // Goal: a snapshot that fails its check never reaches openraft (whose install would stop
        // the node on a storage error); a sound one still installs. Method: a single-node
        // cluster receives, through `RpcServer::handle`, a snapshot with a flipped byte and one
        // with overflowing totals (refused, node sound and still leading), then a sound one
        // from a leader of a later term (installed: applied index and accounts from it).
        let dir = tempfile::tempdir().expect("temp dir");
        let node = node_single(dir.path()).await;
        node.raft()
            .wait(Some(Duration::from_secs(10)))
            .state(openraft::ServerState::Leader, "single node leads")
            .await
            .expect("leader");
        let vote = Vote::new_committed(9, 2);
        for (what, data) in bad_snapshots() {
            let body = snapshot_request_encode(vote, meta_at(1000), data).expect("encode");
            let answer = node
                .rpc()
                .handle(ROUTE_SNAPSHOT, Some("1"), None, &body)
                .await;
            assert!(
                matches!(answer, Err(RpcRefused::BadSnapshot(_))),
                "{what}: {answer:?}"
            );
            assert_eq!(node.fault(), None, "{what}");
            assert!(
                node.is_leader(),
                "{what}: the refusal left the node as it was"
            );
        }
        let created = node
            .write(Command::CreateAccount(AccountSpec {
                id: "still-serving".into(),
                currency: "CNY".into(),
                allow_overdraft: false,
            }))
            .await;
        assert!(created.is_ok(), "{created:?}");

        let sound = snapshot_data_of(&ledger_sound()).expect("encode");
        let body = snapshot_request_encode(vote, meta_at(1000), sound).expect("encode");
        let answer = node
            .rpc()
            .handle(ROUTE_SNAPSHOT, Some("1"), None, &body)
            .await
            .expect("a sound snapshot is handed to openraft");
        let answer: Result<SnapshotResponse<NodeId>, Fatal<NodeId>> =
            codec::decode(&answer).expect("decode answer");
        assert!(answer.is_ok(), "{answer:?}");
        node.raft()
            .wait(Some(Duration::from_secs(10)))
            .applied_index(Some(1000), "snapshot installed")
            .await
            .expect("applied up to the snapshot");
        let alice = node.reader().account("alice").expect("read");
        assert_eq!(alice.map(|a| a.credits), Some(250));
        assert_eq!(node.fault(), None);
        node.shutdown().await;
    }

    #[tokio::test]
    async fn a_sender_never_sends_a_snapshot_that_fails_its_check() {
        // Goal: a node whose own snapshot is bad reports its storage fault instead of sending
        // it. Method: `full_snapshot` to a closed port: a bad snapshot is a StorageError (no
        // connection tried), a sound one gets as far as the network (Unreachable).
        let mut network = Network::new(None, None).expect("network");
        let mut connection = network.new_client(2, &BasicNode::new("127.0.0.1:1")).await;
        let send = |data: Vec<u8>| Snapshot {
            meta: meta_at(1000),
            snapshot: Box::new(Cursor::new(data)),
        };
        let option = RPCOption::new(Duration::from_secs(1));
        let vote = Vote::new_committed(9, 1);
        for (what, data) in bad_snapshots() {
            let sent = connection
                .full_snapshot(vote, send(data), std::future::pending(), option.clone())
                .await;
            assert!(
                matches!(sent, Err(StreamingError::StorageError(_))),
                "{what}: {sent:?}"
            );
        }
        let sound = snapshot_data_of(&ledger_sound()).expect("encode");
        let sent = connection
            .full_snapshot(vote, send(sound), std::future::pending(), option)
            .await;
        assert!(
            matches!(sent, Err(StreamingError::Unreachable(_))),
            "{sent:?}"
        );
    }
}
