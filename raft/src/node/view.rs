//! raftpay's own view of the Raft group, taken from openraft's metrics in one place, so that
//! the service (HTTP, metrics, status page) never reads openraft types: an openraft upgrade
//! changes this file, not the service.

use std::collections::BTreeMap;

use openraft::{BasicNode, RaftMetrics, ServerState};
use tokio::sync::watch;

use crate::typ::NodeId;

/// This node's role in the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    Learner,
    /// The Raft core has stopped (shutdown or a fatal error).
    Shutdown,
}

impl Role {
    /// The word `/v1/cluster` shows in `state`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Shutdown => "shutdown",
        }
    }
}

/// A member of the current membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub id: NodeId,
    pub http_addr: String,
    pub voter: bool,
}

/// What this node knows of the group at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftView {
    pub role: Role,
    /// The Raft core runs: openraft keeps `leader_id` as it was when its core ended, so a
    /// stopped node must not be taken to know a leader.
    pub running: bool,
    pub term: u64,
    pub leader_id: Option<NodeId>,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    /// The members, in id order.
    pub members: Vec<MemberView>,
    /// The log index of the membership in `members`.
    pub membership_index: Option<u64>,
    /// On the leader: the highest log index each member (the leader too) holds on disk.
    pub replication: Option<BTreeMap<NodeId, Option<u64>>>,
}

impl RaftView {
    pub(crate) fn of(metrics: &RaftMetrics<NodeId, BasicNode>) -> RaftView {
        let membership = metrics.membership_config.membership();
        let members = membership
            .nodes()
            .map(|(id, node)| MemberView {
                id: *id,
                http_addr: node.addr.clone(),
                voter: membership.voter_ids().any(|voter| voter == *id),
            })
            .collect();
        RaftView {
            role: match metrics.state {
                ServerState::Leader => Role::Leader,
                ServerState::Follower => Role::Follower,
                ServerState::Candidate => Role::Candidate,
                ServerState::Learner => Role::Learner,
                ServerState::Shutdown => Role::Shutdown,
            },
            running: metrics.running_state.is_ok() && metrics.state != ServerState::Shutdown,
            term: metrics.current_term,
            leader_id: metrics.current_leader,
            last_log_index: metrics.last_log_index,
            last_applied: metrics.last_applied.map(|id| id.index),
            snapshot_index: metrics.snapshot.map(|id| id.index),
            purged_index: metrics.purged.map(|id| id.index),
            members,
            membership_index: metrics.membership_config.log_id().map(|id| id.index),
            replication: metrics.replication.as_ref().map(|replication| {
                replication
                    .iter()
                    .map(|(id, matched)| (*id, matched.map(|m| m.index)))
                    .collect()
            }),
        }
    }
}

/// Wakes on every change of the group's state; see [`crate::node::Node::watch`].
#[derive(Debug, Clone)]
pub struct RaftWatch(pub(crate) watch::Receiver<RaftMetrics<NodeId, BasicNode>>);

impl RaftWatch {
    /// The view now, marking it seen.
    pub fn view(&mut self) -> RaftView {
        RaftView::of(&self.0.borrow_and_update())
    }

    /// Whether the Raft core is gone for good (no change will ever come).
    pub fn is_closed(&self) -> bool {
        self.0.has_changed().is_err()
    }

    /// Waits for the next change; `false` once the Raft core is gone for good.
    pub async fn changed(&mut self) -> bool {
        self.0.changed().await.is_ok()
    }
}
