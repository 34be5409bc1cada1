//! [`Node`]: the one handle the service holds. It starts openraft over the sled stores and the
//! HTTP network, bootstraps the cluster once, proposes writes through the group-commit proposer,
//! serves read barriers and membership changes, and reports metrics.
//!
//! It never answers a write before the entry is committed and applied, and it never claims a
//! failed write did not happen: every failure of an in-flight write is "outcome unknown".
//!
//! Membership changes answer once the change is committed; a learner's catch-up is reported in
//! the replication metrics, never waited for (a follower forwarding the request would give up
//! first). A leader that a committed change left without a vote steps down: openraft 0.9 lets
//! it go on leading as a learner, so the handoff watcher stops its heartbeats and its writes
//! until a remaining voter is elected (see `handoff_run`).
//!
//! Fatal means stopped: a fault watcher follows openraft's `running_state`; once the Raft core
//! ends on its own (a storage error in the log or the state machine, a panic), the node records
//! a [`Fault`], refuses every further write and read barrier, and the service exits
//! ([`Node::fault_wait`]). Recovery is a restart and replay, never carrying on.
//!
//! The tasks beside openraft (state checkpoint, handoff watcher, fault watcher) are in
//! `background.rs`.
//!
//! Over 800 lines on purpose: the `Node` handle, its proposer and its membership changes share
//! private state that splitting further would have to expose.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    ChangeMembershipError, ClientWriteError, Fatal, ForwardToLeader, InitializeError, RaftError,
};
use openraft::raft::ClientWriteResponse;
use openraft::{BasicNode, ChangeMembers, RaftMetrics, ServerState, SnapshotPolicy};
use tokio::sync::{mpsc, oneshot, watch};

use crate::detector::{self, Heard, WatchOptions};
use crate::ledger::{validate_command, Command, CommandResult, InvalidRequest};
use crate::network::{Network, RpcServer};
use crate::stats::Stats;
use crate::store::{
    Backup, DiskReserve, LedgerReader, LogStore, ReserveLow, StateMachine, Storage,
};
use crate::typ::{NodeId, Proposal, Raft, TypeConfig};

mod background;
mod view;
use background::{checkpoint_run, fault_watch_run, handoff_run};
pub use view::{MemberView, RaftView, RaftWatch, Role};

/// Most commands (transfers count one each) coalesced into one log entry.
pub const PROPOSAL_COMMANDS_MAX: usize = 8192;
/// Most log entries proposed and not yet applied; see `proposer_run`.
pub const PROPOSALS_IN_FLIGHT_MAX: usize = 2;
/// Most writes waiting for the proposer; past it, writes are refused at once (`Overloaded`).
pub const WRITE_QUEUE_MAX: usize = 16_384;

/// How a node is set up; built from the config file by the service.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub node_id: NodeId,
    pub http_addr: String,
    pub data_dir: PathBuf,
    /// The voters the cluster is born with; used once, on a pristine data dir.
    pub initial_voters: BTreeMap<NodeId, String>,
    pub secret: Option<String>,
    /// Local IP that outgoing node-to-node connections bind to (`None`: the OS chooses).
    pub outgoing_ip: Option<std::net::IpAddr>,
    pub heartbeat_interval: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// Build a snapshot (and purge the log behind it) after this many applied entries.
    pub snapshot_logs_since_last: u64,
    /// Entries kept in the log behind a snapshot, so a briefly lagging follower needs none.
    pub logs_kept_behind_snapshot: u64,
    /// How long a write may wait for commit and apply before it is "outcome unknown".
    pub write_timeout: Duration,
    /// A leader refuses writes while its data dir's file system has less free space than this
    /// (0: no check); see `store::DiskReserve`.
    pub disk_reserve_bytes: u64,
}

/// Why a write has no answer from this node.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("invalid request: {0}")]
    Invalid(#[from] InvalidRequest),
    /// This node does not lead; the leader, when known, is given (id and HTTP address).
    #[error("not the leader")]
    NotLeader { leader: Option<(NodeId, String)> },
    /// No answer in time, leadership lost, or the node stopping: the write may or may not be
    /// committed. Retrying with the same id is safe.
    #[error("outcome unknown: {0}")]
    Unavailable(String),
    /// Too many writes queued; nothing was proposed.
    #[error("overloaded")]
    Overloaded,
    /// This node stopped on a fault; nothing was proposed. Another node can take the write.
    #[error("node stopped: {0}")]
    Fault(Fault),
    /// This leader's data dir is under its free-space reserve; nothing was proposed.
    #[error("insufficient storage: {0}")]
    InsufficientStorage(ReserveLow),
}

/// Why a node stopped serving for good (until restarted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {reason}")]
pub struct Fault {
    pub kind: FaultKind,
    /// openraft's error, as it reported it.
    pub reason: String,
}

/// What kind of fault stopped a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// A log, vote, state machine or snapshot read or write failed.
    Storage,
    /// The Raft core panicked.
    Panicked,
    /// The Raft core ended although nobody asked it to stop.
    Stopped,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Storage => "storage",
            FaultKind::Panicked => "panicked",
            FaultKind::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Fault {
    fn of_fatal(fatal: &Fatal<NodeId>) -> Fault {
        let kind = match fatal {
            Fatal::StorageError(_) => FaultKind::Storage,
            Fatal::Panicked => FaultKind::Panicked,
            Fatal::Stopped => FaultKind::Stopped,
        };
        Fault {
            kind,
            reason: fatal.to_string(),
        }
    }
}

/// Why a membership change failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MembershipError {
    #[error("not the leader")]
    NotLeader { leader: Option<(NodeId, String)> },
    #[error("{0}")]
    Invalid(String),
    #[error("node {0} is not a member")]
    NotFound(NodeId),
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request contradicts the membership (an id already a member at another address, an
    /// address another member uses); nothing was changed.
    #[error("{0}")]
    Conflict(String),
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("storage: {0}")]
    Storage(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("{0}")]
    FaultSpec(#[from] crate::fault::FaultSpecError),
}

struct PendingWrite {
    command: Command,
    reply: oneshot::Sender<Result<CommandResult, WriteError>>,
}

/// A running Raft node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

struct NodeInner {
    id: NodeId,
    raft: Raft,
    reader: LedgerReader,
    storage: Arc<Storage>,
    log_store: LogStore,
    stats: Arc<Stats>,
    rpc: RpcServer,
    write_tx: mpsc::Sender<PendingWrite>,
    write_timeout: Duration,
    /// Set once by the fault watcher; `None` while the node is sound.
    fault_rx: watch::Receiver<Option<Fault>>,
    /// Set by [`Node::shutdown`]: the Raft core ending is then no fault.
    stopping: Arc<AtomicBool>,
    reserve: DiskReserve,
    /// Shared with the handoff watcher and the proposer; see [`Handoff`].
    handoff: Arc<Handoff>,
}

/// A leader's step-down after a committed change took its vote away (see `handoff_run`).
#[derive(Debug, Default)]
struct Handoff {
    /// Membership changes under way on this node; the watcher leaves a leader alone while one
    /// runs (removing a voting leader demotes it first, then removes it: one operation).
    changes_running: AtomicUsize,
    /// Set while this node leads without a vote and waits for a voter to take over: it sends no
    /// heartbeats and takes no writes, reads or membership changes.
    stepping_down: AtomicBool,
}

/// Counts one membership change as running for as long as it lives.
struct ChangeRunning<'a>(&'a Handoff);

impl<'a> ChangeRunning<'a> {
    fn begin(handoff: &'a Handoff) -> ChangeRunning<'a> {
        handoff.changes_running.fetch_add(1, Ordering::SeqCst);
        ChangeRunning(handoff)
    }
}

impl Drop for ChangeRunning<'_> {
    fn drop(&mut self) {
        self.0.changes_running.fetch_sub(1, Ordering::SeqCst);
    }
}

fn raft_config(options: &NodeOptions) -> Result<openraft::Config, StartError> {
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let config = openraft::Config {
        cluster_name: "raftpay".into(),
        heartbeat_interval: millis(options.heartbeat_interval),
        election_timeout_min: millis(options.election_timeout_min),
        election_timeout_max: millis(options.election_timeout_max),
        snapshot_policy: SnapshotPolicy::LogsSinceLast(options.snapshot_logs_since_last),
        max_in_snapshot_log_to_keep: options.logs_kept_behind_snapshot,
        max_payload_entries: 16,
        ..Default::default()
    };
    config
        .validate()
        .map_err(|e| StartError::Raft(e.to_string()))
}

impl Node {
    /// Opens storage, starts openraft and, on a pristine data dir of an initial voter,
    /// initializes the cluster.
    ///
    /// # Errors
    /// When storage cannot be opened or recovered, or openraft refuses the configuration.
    pub async fn start(options: NodeOptions) -> Result<Node, StartError> {
        if cfg!(feature = "unsafe-ack-before-flush") {
            tracing::error!("NEGATIVE-CONTROL BUILD: log appends are acknowledged before they are durable; never run this in production");
        }
        crate::fault::init()?;
        let config = Arc::new(raft_config(&options)?);
        let storage = Arc::new(
            Storage::open(&options.data_dir).map_err(|e| StartError::Storage(e.to_string()))?,
        );
        let log_store =
            LogStore::open(Arc::clone(&storage)).map_err(|e| StartError::Storage(e.to_string()))?;
        let pristine = log_store
            .is_pristine()
            .map_err(|e| StartError::Storage(e.to_string()))?;
        let state_machine = StateMachine::open(Arc::clone(&storage))
            .map_err(|e| StartError::Storage(e.to_string()))?;
        let reader = state_machine.reader();
        let stats = state_machine.stats();
        let network = Network::new(options.secret.clone(), options.outgoing_ip)
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let log_reader = log_store.clone();
        let raft = Raft::new(options.node_id, config, network, log_store, state_machine)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;

        if pristine && options.initial_voters.contains_key(&options.node_id) {
            initialize(&raft, &options.initial_voters).await?;
        }

        let (write_tx, write_rx) = mpsc::channel(WRITE_QUEUE_MAX);
        let handoff = Arc::new(Handoff::default());
        // The proposer: runs until every sender (every clone of this node) is dropped.
        tokio::spawn(proposer_run(
            raft.clone(),
            write_rx,
            PROPOSALS_IN_FLIGHT_MAX,
            Arc::clone(&stats),
            Arc::clone(&handoff),
        ));
        // The handoff watcher: ends when the Raft core stops.
        tokio::spawn(handoff_run(
            raft.clone(),
            options.node_id,
            Arc::clone(&handoff),
        ));
        let heard = Arc::new(Heard::default());
        let committed_of = log_reader.clone();
        tokio::spawn(detector::run(
            raft.clone(),
            Arc::clone(&heard),
            move || committed_of.committed_index(),
            WatchOptions {
                node_id: options.node_id,
                lease: options.election_timeout_max,
                heartbeat: options.heartbeat_interval,
                local_ip: options.outgoing_ip,
            },
        ));
        let rpc = RpcServer::new(raft.clone(), options.node_id, options.secret.clone(), heard);
        let stopping = Arc::new(AtomicBool::new(false));
        let (fault_tx, fault_rx) = watch::channel(None);
        let fault_tx = Arc::new(fault_tx);
        tokio::spawn(checkpoint_run(
            Arc::clone(&storage),
            Arc::clone(&fault_tx),
            Arc::clone(&stopping),
        ));
        // The fault watcher: ends once the Raft core has ended (reporting a fault unless
        // `shutdown` asked for it).
        tokio::spawn(fault_watch_run(
            raft.metrics(),
            fault_tx,
            Arc::clone(&stopping),
        ));
        Ok(Node {
            inner: Arc::new(NodeInner {
                id: options.node_id,
                raft,
                reader,
                storage,
                log_store: log_reader,
                stats,
                rpc,
                write_tx,
                write_timeout: options.write_timeout,
                fault_rx,
                stopping,
                reserve: DiskReserve::new(&options.data_dir, options.disk_reserve_bytes),
                handoff,
            }),
        })
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    pub fn reader(&self) -> &LedgerReader {
        &self.inner.reader
    }

    pub fn rpc(&self) -> &RpcServer {
        &self.inner.rpc
    }

    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    pub fn metrics(&self) -> watch::Receiver<RaftMetrics<NodeId, BasicNode>> {
        self.inner.raft.metrics()
    }

    /// What this node knows of the group now, in raftpay's terms.
    pub fn view(&self) -> RaftView {
        RaftView::of(&self.inner.raft.metrics().borrow())
    }

    /// A watch that wakes on every change of the group's state.
    pub fn watch(&self) -> RaftWatch {
        RaftWatch(self.inner.raft.metrics())
    }

    /// Proposal and apply counters.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// The highest log index this node knows to be committed.
    pub fn committed_index(&self) -> u64 {
        self.inner.log_store.committed_index()
    }

    /// Bytes the node's databases (log and state) occupy on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.inner.storage.size_on_disk()
    }

    /// Free bytes on the data dir's file system (a reading at most `store::reserve`'s interval
    /// old; `u64::MAX` when it cannot be read).
    pub fn disk_free_bytes(&self) -> u64 {
        self.inner.reserve.free_bytes()
    }

    /// The free space under which this node, as leader, refuses writes (`[storage]
    /// disk_reserve_bytes`; 0: no reserve).
    pub fn disk_reserve_bytes(&self) -> u64 {
        self.inner.reserve.reserve_bytes()
    }

    /// Bytes the log's database occupies on disk (bounded by compaction).
    pub fn log_disk_bytes(&self) -> u64 {
        self.inner.storage.log_size_on_disk()
    }

    /// The current leader with its HTTP address, as this node knows it.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        let addr = metrics
            .membership_config
            .membership()
            .get_node(&leader)?
            .addr
            .clone();
        Some((leader, addr))
    }

    /// Waits until this node knows a leader other than `not`, or `deadline` passes.
    pub async fn leader_wait(
        &self,
        not: Option<NodeId>,
        deadline: tokio::time::Instant,
    ) -> Option<(NodeId, String)> {
        let mut metrics = self.inner.raft.metrics();
        loop {
            if let Some(leader) = self.leader() {
                if Some(leader.0) != not {
                    return Some(leader);
                }
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return None,
            }
        }
    }

    /// The fault this node stopped on, if it did.
    pub fn fault(&self) -> Option<Fault> {
        self.inner.fault_rx.borrow().clone()
    }

    /// Waits until this node stops on a fault and returns it. Pending forever on a sound node
    /// (and after [`Node::shutdown`]).
    pub async fn fault_wait(&self) -> Fault {
        let mut fault_rx = self.inner.fault_rx.clone();
        loop {
            if let Some(fault) = fault_rx.borrow_and_update().clone() {
                return fault;
            }
            if fault_rx.changed().await.is_err() {
                // The watcher ended without a fault: a shutdown. Nothing more will come.
                std::future::pending::<()>().await;
            }
        }
    }

    fn fault_refuse(&self) -> Result<(), WriteError> {
        match self.fault() {
            Some(fault) => Err(WriteError::Fault(fault)),
            None => Ok(()),
        }
    }

    /// Whether this node leads right now and takes requests: not while it steps down after
    /// losing its vote (then it still leads in openraft's eyes; see [`Node::stepping_down`]).
    pub fn is_leader(&self) -> bool {
        self.inner.raft.metrics().borrow().state == ServerState::Leader && !self.stepping_down()
    }

    /// Whether this node leads without a vote and waits for a remaining voter to take over.
    pub fn stepping_down(&self) -> bool {
        self.inner.handoff.stepping_down.load(Ordering::SeqCst)
    }

    /// Proposes `command` and waits until it is committed and applied.
    ///
    /// # Errors
    /// `Invalid` (nothing proposed), `NotLeader` (nothing proposed here; forward it),
    /// `Overloaded` (nothing proposed), `Unavailable` (outcome unknown; retry with the same id).
    pub async fn write(&self, command: Command) -> Result<CommandResult, WriteError> {
        validate_command(&command)?;
        self.fault_refuse()?;
        if !self.is_leader() {
            return Err(WriteError::NotLeader {
                leader: self.leader(),
            });
        }
        // Before anything is proposed: an entry that cannot be appended here would stop the
        // node (a storage fault); a refusal leaves it serving reads and the cluster its lead.
        self.inner
            .reserve
            .check()
            .map_err(WriteError::InsufficientStorage)?;
        let (reply, reply_rx) = oneshot::channel();
        self.inner
            .write_tx
            .try_send(PendingWrite { command, reply })
            .map_err(|_| WriteError::Overloaded)?;
        match tokio::time::timeout(self.inner.write_timeout, reply_rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(WriteError::Unavailable("the node is stopping".into())),
            Err(_) => Err(WriteError::Unavailable(format!(
                "no commit within {:?}",
                self.inner.write_timeout
            ))),
        }
    }

    /// Waits until this node's state reflects every write acknowledged before the call
    /// (openraft's read index: leadership confirmed by a quorum, then applied up to it).
    ///
    /// # Errors
    /// `NotLeader` when this node does not lead (forward the read), `Unavailable` when no quorum
    /// confirmed the leadership in time.
    pub async fn linearizable_barrier(&self) -> Result<(), WriteError> {
        self.fault_refuse()?;
        if !self.is_leader() {
            return Err(WriteError::NotLeader {
                leader: self.leader(),
            });
        }
        match tokio::time::timeout(
            self.inner.write_timeout,
            self.inner.raft.ensure_linearizable(),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(
                forward,
            )))) => Err(WriteError::NotLeader {
                leader: leader_of(&forward),
            }),
            Ok(Err(error)) => Err(WriteError::Unavailable(error.to_string())),
            Err(_) => Err(WriteError::Unavailable(
                "leadership not confirmed in time".into(),
            )),
        }
    }

    /// Adds `id` at `http_addr` as a learner. Answers once the membership entry is committed,
    /// not when the learner has caught up: its progress is in the replication metrics
    /// ([`Node::replication_matched`]). Adding a member again at its own address changes
    /// nothing (or commits an identical membership while an earlier change is not yet applied).
    ///
    /// # Errors
    /// See [`MembershipError`]; `Conflict` when `id` is a member at another address or another
    /// member has `http_addr` (nothing is changed).
    pub async fn add_learner(&self, id: NodeId, http_addr: String) -> Result<(), MembershipError> {
        let _running = ChangeRunning::begin(&self.inner.handoff);
        self.membership_leader()?;
        self.learner_add_check(id, &http_addr)?;
        if self.member_addr(id).is_some() && self.membership_applied() {
            tracing::info!(learner_id = id, %http_addr, "already a member at this address");
            return Ok(());
        }
        let result = self
            .inner
            .raft
            .add_learner(id, BasicNode::new(http_addr.clone()), false)
            .await;
        self.membership_result(result.map(|_| ()))?;
        // openraft never overwrites a member's address: a concurrent add of the same id with
        // another address may have won.
        self.learner_add_check(id, &http_addr)?;
        tracing::info!(learner_id = id, %http_addr, "learner added");
        Ok(())
    }

    /// `Conflict` when `id` is a member at an address other than `http_addr`, or another member
    /// has `http_addr`.
    fn learner_add_check(&self, id: NodeId, http_addr: &str) -> Result<(), MembershipError> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        for (member, node) in metrics.membership_config.membership().nodes() {
            if *member == id && node.addr != http_addr {
                return Err(MembershipError::Conflict(format!(
                    "node {id} is already a member at {}; remove it first to change its address",
                    node.addr
                )));
            }
            if *member != id && node.addr == http_addr {
                return Err(MembershipError::Conflict(format!(
                    "{http_addr} is the address of node {member}"
                )));
            }
        }
        Ok(())
    }

    /// The HTTP address of member `id`, as this node's membership has it.
    pub fn member_addr(&self, id: NodeId) -> Option<String> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        membership.get_node(&id).map(|node| node.addr.clone())
    }

    /// Whether this node has applied its latest membership entry (so it is committed).
    fn membership_applied(&self) -> bool {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        let membership_index = metrics.membership_config.log_id().map(|id| id.index);
        metrics.last_applied.map(|id| id.index) >= membership_index
    }

    /// On the leader: the highest log index each member (the leader too) is known to hold,
    /// `None` for a member not heard from yet. Empty on other nodes.
    pub fn replication_matched(&self) -> BTreeMap<NodeId, Option<u64>> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        metrics
            .replication
            .as_ref()
            .map(|replication| {
                replication
                    .iter()
                    .map(|(id, matched)| (*id, matched.map(|m| m.index)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Makes `voters` the voter set; members left out stay as learners.
    ///
    /// # Errors
    /// See [`MembershipError`]; `Invalid` when an id is not a member or the set is empty.
    pub async fn set_voters(&self, voters: BTreeSet<NodeId>) -> Result<(), MembershipError> {
        let _running = ChangeRunning::begin(&self.inner.handoff);
        self.membership_leader()?;
        if voters.is_empty() {
            return Err(MembershipError::Invalid(
                "the voter set cannot be empty".into(),
            ));
        }
        let members = self.members();
        if let Some(unknown) = voters.iter().find(|id| !members.contains_key(id)) {
            return Err(MembershipError::Invalid(format!(
                "node {unknown} is not a member; add it as a learner first"
            )));
        }
        let result = self
            .inner
            .raft
            .change_membership(ChangeMembers::ReplaceAllVoters(voters), true)
            .await;
        self.membership_result(result.map(|_| ()))
    }

    /// Removes `id` from the membership: demoted to learner first if it votes, then removed.
    ///
    /// # Errors
    /// See [`MembershipError`]; `NotFound` when `id` is not a member.
    pub async fn remove_node(&self, id: NodeId) -> Result<(), MembershipError> {
        // One operation for the handoff watcher: a leader removing itself is demoted first and
        // must stay to propose its removal (openraft then steps it down).
        let _running = ChangeRunning::begin(&self.inner.handoff);
        self.membership_leader()?;
        let Some(voter) = self.members().get(&id).copied() else {
            return Err(MembershipError::NotFound(id));
        };
        let ids = BTreeSet::from([id]);
        if voter {
            let result = self
                .inner
                .raft
                .change_membership(ChangeMembers::RemoveVoters(ids.clone()), true)
                .await;
            self.membership_result(result.map(|_| ()))?;
        }
        let result = self
            .inner
            .raft
            .change_membership(ChangeMembers::RemoveNodes(ids), false)
            .await;
        self.membership_result(result.map(|_| ()))
    }

    /// Every member, `true` for voters.
    pub fn members(&self) -> BTreeMap<NodeId, bool> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, _)| (*id, voters.contains(id)))
            .collect()
    }

    fn membership_leader(&self) -> Result<(), MembershipError> {
        if self.is_leader() {
            Ok(())
        } else {
            Err(MembershipError::NotLeader {
                leader: self.leader(),
            })
        }
    }

    fn membership_result(
        &self,
        result: Result<(), RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>>,
    ) -> Result<(), MembershipError> {
        match result {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(MembershipError::NotLeader {
                    leader: leader_of(&forward),
                })
            }
            // An earlier change is not committed yet: nothing was proposed; retrying is safe.
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                ChangeMembershipError::InProgress(in_progress),
            ))) => Err(MembershipError::Unavailable(format!(
                "another membership change is under way ({in_progress}); retry shortly"
            ))),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(error))) => {
                Err(MembershipError::Invalid(error.to_string()))
            }
            Err(RaftError::Fatal(error)) => Err(MembershipError::Unavailable(error.to_string())),
        }
    }

    /// A consistent copy of this node's ledger at a known applied index: builds a snapshot
    /// covering everything applied when called, then wraps it as a [`Backup`].
    ///
    /// # Errors
    /// When the snapshot cannot be built in `deadline` or does not verify.
    pub async fn backup(&self, deadline: Duration) -> Result<Backup, String> {
        let raft = &self.inner.raft;
        let applied = raft.metrics().borrow().last_applied;
        raft.trigger().snapshot().await.map_err(|e| e.to_string())?;
        raft.wait(Some(deadline))
            .metrics(
                |m| m.snapshot >= applied,
                "backup: snapshot covers the applied index",
            )
            .await
            .map_err(|e| e.to_string())?;
        let snapshot = raft
            .get_snapshot()
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no snapshot after building one")?;
        let backup = Backup::from_snapshot(snapshot).map_err(|e| e.to_string())?;
        tracing::info!(applied = ?backup.applied, seq_last = backup.seq_last, "backup taken");
        Ok(backup)
    }

    /// Stops openraft (and with it storage I/O).
    pub async fn shutdown(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        if let Err(error) = self.inner.raft.shutdown().await {
            tracing::warn!(%error, "raft shutdown");
        }
        if let Err(error) = self.inner.storage.sync() {
            tracing::error!(%error, "final storage sync failed");
        }
    }
}

fn leader_of(forward: &ForwardToLeader<NodeId, BasicNode>) -> Option<(NodeId, String)> {
    Some((
        forward.leader_id?,
        forward.leader_node.as_ref()?.addr.clone(),
    ))
}

async fn initialize(raft: &Raft, voters: &BTreeMap<NodeId, String>) -> Result<(), StartError> {
    let members: BTreeMap<NodeId, BasicNode> = voters
        .iter()
        .map(|(id, addr)| (*id, BasicNode::new(addr.clone())))
        .collect();
    match raft.initialize(members).await {
        Ok(()) => {
            tracing::info!(voters = ?voters.keys().collect::<Vec<_>>(), "cluster initialized");
            Ok(())
        }
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
        Err(error) => Err(StartError::Raft(error.to_string())),
    }
}

fn command_weight(command: &Command) -> usize {
    match command {
        Command::Batch { transfers, .. } => transfers.len(),
        Command::CreateAccount(_) | Command::Transfer(_) => 1,
    }
}

/// Group commit: takes every write queued behind the first (up to [`PROPOSAL_COMMANDS_MAX`]
/// commands) and proposes them as one log entry. At most `in_flight_max` entries are in flight
/// (proposed, not yet applied); while they are, writes queue up and form the next, larger entry.
/// Under light load an entry leaves at once; under heavy load entries grow, and every log append,
/// replication round and fsync carries many transfers. A spawned task hands out the results.
async fn proposer_run(
    raft: Raft,
    mut write_rx: mpsc::Receiver<PendingWrite>,
    in_flight_max: usize,
    stats: Arc<Stats>,
    handoff: Arc<Handoff>,
) {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(in_flight_max));
    // A write that did not fit the previous entry opens the next one.
    let mut carried: Option<PendingWrite> = None;
    loop {
        let first = match carried.take() {
            Some(write) => write,
            None => match write_rx.recv().await {
                Some(write) => write,
                None => break,
            },
        };
        // Wait for room in the pipeline; writes arriving meanwhile join this entry.
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            break; // The semaphore is never closed; kept total for clarity.
        };
        let mut weight = command_weight(&first.command);
        let mut writes = vec![first];
        while let Ok(next) = write_rx.try_recv() {
            let next_weight = command_weight(&next.command);
            if weight + next_weight > PROPOSAL_COMMANDS_MAX {
                carried = Some(next);
                break;
            }
            weight += next_weight;
            writes.push(next);
        }
        let (commands, replies): (Vec<_>, Vec<_>) =
            writes.into_iter().map(|w| (w.command, w.reply)).unzip();
        if handoff.stepping_down.load(Ordering::SeqCst) {
            // Queued before this leader lost its vote: not proposed, so the writes can go to
            // the next leader (an append here would also renew the followers' leases).
            replies_fail(replies, &WriteError::NotLeader { leader: None });
            continue;
        }
        tracing::trace!(commands = commands.len(), weight, "propose");
        stats.proposal_observe(u64::try_from(weight).unwrap_or(u64::MAX));
        match raft.client_write_ff(Proposal { commands }).await {
            // Waits for the entry's commit and apply; ends when openraft answers or drops it.
            Ok(responder) => {
                tokio::spawn(async move {
                    replies_send(replies, responder.await);
                    drop(permit);
                });
            }
            Err(fatal) => replies_fail(replies, &WriteError::Unavailable(fatal.to_string())),
        }
    }
}

type WriteOutcome = Result<
    Result<ClientWriteResponse<TypeConfig>, ClientWriteError<NodeId, BasicNode>>,
    oneshot::error::RecvError,
>;

fn replies_send(
    replies: Vec<oneshot::Sender<Result<CommandResult, WriteError>>>,
    outcome: WriteOutcome,
) {
    match outcome {
        Ok(Ok(response)) => {
            let results = response.data.results;
            assert_eq!(
                results.len(),
                replies.len(),
                "one result per proposed command"
            );
            for (reply, result) in replies.into_iter().zip(results) {
                // The client may have given up waiting; its result is recorded all the same.
                drop(reply.send(Ok(result)));
            }
        }
        Ok(Err(ClientWriteError::ForwardToLeader(forward))) => {
            // Leadership moved while the entry was in flight: it may still commit.
            let detail = format!(
                "leadership moved to {:?} while the write was in flight",
                forward.leader_id
            );
            replies_fail(replies, &WriteError::Unavailable(detail));
        }
        Ok(Err(error)) => replies_fail(replies, &WriteError::Unavailable(error.to_string())),
        Err(_) => replies_fail(
            replies,
            &WriteError::Unavailable("the write was dropped by raft".into()),
        ),
    }
}

fn replies_fail(
    replies: Vec<oneshot::Sender<Result<CommandResult, WriteError>>>,
    error: &WriteError,
) {
    for reply in replies {
        drop(reply.send(Err(error.clone())));
    }
}
