//! The contract's request bodies and answers, shared by the server (which parses and renders
//! them) and every client (CLI, bench, chaos, tests).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

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

/// Every error answer's body: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ApiErrorBody,
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

/// A node's view of the cluster (`GET /v1/cluster`): the contract's fields, then raftpay's
/// additions (docs/api.md). The server renders its answer from this type; a client ignores
/// fields it does not know, and the additions default when a server does not send them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
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
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown` (raftpay addition).
    #[serde(default)]
    pub state: String,
    /// Hash of the applied state, chained over every applied entry, at `state_hash_index`.
    #[serde(default)]
    pub state_hash: String,
    #[serde(default)]
    pub state_hash_index: u64,
    /// The seq of the last posted transfer.
    #[serde(default)]
    pub seq_last: u64,
    #[serde(default)]
    pub snapshot_index: Option<u64>,
    #[serde(default)]
    pub purged_index: Option<u64>,
    /// On the leader: the highest log index each member (the leader too) holds on disk, by
    /// node id; `null` on other nodes.
    #[serde(default)]
    pub replication_matched: Option<BTreeMap<u64, Option<u64>>>,
    /// Bytes the node's log and state occupy on disk, and the log's share.
    #[serde(default)]
    pub disk_bytes: u64,
    #[serde(default)]
    pub log_disk_bytes: u64,
    /// Free bytes on the data directory's file system.
    #[serde(default)]
    pub disk_free_bytes: u64,
    /// The log index of the membership in `members`.
    #[serde(default)]
    pub membership_index: Option<u64>,
    /// This node leads without a vote and waits for a remaining voter to take over.
    #[serde(default)]
    pub stepping_down: bool,
}

/// A cluster member; `role` is `voter` or `learner`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    pub http_addr: String,
    pub role: String,
    /// Replication progress, as the leader reports it (`null` from other nodes, absent from
    /// servers that predate it): the highest log index this member holds.
    #[serde(default)]
    pub matched_index: Option<u64>,
    /// Entries this member is behind the leader's log (leader only, like `matched_index`).
    #[serde(default)]
    pub lag_entries: Option<u64>,
}

/// Body of `POST /v1/accounts`. Unknown fields are refused (`400 invalid_request`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    pub id: String,
    pub currency: String,
    #[serde(default)]
    pub allow_overdraft: bool,
}

/// Body of `POST /v1/transfers` (and one item of a batch). Unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTransfer {
    pub id: String,
    pub from: String,
    pub to: String,
    pub amount: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memo: Option<String>,
}

/// Body of `POST /v1/transfers/batch`: the server reads the items as JSON values first (so a bad
/// item is refused naming its index), a client writes `NewTransfer`s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBatch<T = NewTransfer> {
    pub transfers: Vec<T>,
    #[serde(default)]
    pub atomic: bool,
}

/// Body of `POST /v1/cluster/learners`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewLearner {
    pub id: u64,
    pub http_addr: String,
}

/// Body of `POST /v1/cluster/voters`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Voters {
    pub ids: Vec<u64>,
}

fn null_as_zero<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    Ok(Option::<u64>::deserialize(deserializer)?.unwrap_or(0))
}
