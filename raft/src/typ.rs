//! The openraft type configuration and the payload of a log entry.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::ledger::{Command, CommandResult};

/// What one `Normal` log entry carries: the commands of one or more client requests, coalesced
/// by the leader's proposer (group commit). Applied in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub commands: Vec<Command>,
}

/// One result per command of the entry's proposal; empty for blank and membership entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalResults {
    pub results: Vec<CommandResult>,
}

openraft::declare_raft_types!(
    /// raftpay's Raft types: node ids are `u64`, a node's address is its HTTP address.
    pub TypeConfig:
        D = Proposal,
        R = ProposalResults,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
