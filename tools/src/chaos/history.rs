//! The recorded history of a chaos run: every operation a workload client performed (invoke and
//! complete instants, the node that answered, what was asked and what came back) and every fault
//! the nemesis injected. It is plain data, serialized to JSON for the report and read by the
//! checker; it never performs I/O itself.
//!
//! Instants are milliseconds since the run started (`f64`, microsecond resolution), all taken
//! from one monotonic clock in one process, so they can be compared across clients.

use serde::{Deserialize, Serialize};

/// The kinds of fault the nemesis can inject (`--nemesis` names them in kebab case).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL the leader, restart it after a short down time.
    KillLeader,
    /// SIGKILL a node chosen by the seeded schedule (it may be the leader), restart it.
    KillRandom,
    /// SIGSTOP the leader for longer than the election timeout, then SIGCONT.
    PauseLeader,
    /// Drop every packet between the leader and the other two nodes, then heal.
    IsolateLeader,
    /// SIGKILL all three nodes and restart them: at once, or (half the time) the followers
    /// first and the leader 50 ms later, restarted last.
    KillAll,
    /// Power cut of all three nodes: SIGKILL, then every write not yet fsynced is dropped from
    /// each node's data directory (a `lossyfs` mount), then restart.
    PowerCutAll,
    /// Power cut of the leader alone.
    PowerCutLeader,
    /// Power cut of one follower.
    PowerCutFollower,
}

impl FaultKind {
    pub const ALL: [FaultKind; 5] = [
        FaultKind::KillLeader,
        FaultKind::KillRandom,
        FaultKind::PauseLeader,
        FaultKind::IsolateLeader,
        FaultKind::KillAll,
    ];

    /// The power cuts (they need every node's data directory on a `lossyfs` mount).
    pub const POWER: [FaultKind; 3] = [
        FaultKind::PowerCutAll,
        FaultKind::PowerCutLeader,
        FaultKind::PowerCutFollower,
    ];

    pub fn is_power_cut(self) -> bool {
        FaultKind::POWER.contains(&self)
    }

    /// The kebab-case name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillRandom => "kill-random",
            FaultKind::PauseLeader => "pause-leader",
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::KillAll => "kill-all",
            FaultKind::PowerCutAll => "power-cut-all",
            FaultKind::PowerCutLeader => "power-cut-leader",
            FaultKind::PowerCutFollower => "power-cut-follower",
        }
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One injected fault: which nodes it hit, when it started and when it was healed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultEvent {
    /// 1-based position in the schedule.
    pub index: u64,
    pub kind: FaultKind,
    /// The nodes the fault hit (the leader, the random node, or all three).
    pub nodes: Vec<u64>,
    pub inject_ms: f64,
    pub heal_ms: f64,
    /// What the fault found wrong on the way (a power cut: a node that forgot its vote or
    /// acknowledged entries); each is a run problem for the checker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// What an operation asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OpRequest {
    /// `POST /v1/transfers` with a client-chosen unique id.
    Transfer {
        id: String,
        from: String,
        to: String,
        amount: u64,
    },
    /// `GET /v1/accounts/{account}?consistency=linearizable`: its balance.
    Read { account: String },
}

/// What an operation got back, once it had a definite answer or gave up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// A transfer was created (201, or 200 for an id already decided) with this seq.
    Ok { seq: u64 },
    /// A read answered with this balance.
    Value { balance: i64 },
    /// A definite 4xx answer with this error code.
    Rejected { code: String },
    /// No definite answer before the deadline: a transfer may or may not have been created.
    Unknown,
}

/// One operation of one client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// The client that performed it (`PROBE_CLIENT` for the liveness probe after healing).
    pub client: u32,
    /// Before the first attempt was sent.
    pub invoke_ms: f64,
    /// After the definite answer arrived (or when the client gave up, for `Unknown`).
    pub complete_ms: f64,
    /// The node that gave the definite answer, or the last node tried.
    pub node: u64,
    /// How many sends it took (1 = answered at once).
    pub attempts: u32,
    #[serde(flatten)]
    pub request: OpRequest,
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl Op {
    /// The transfer id, for transfer operations.
    pub fn transfer_id(&self) -> Option<&str> {
        match &self.request {
            OpRequest::Transfer { id, .. } => Some(id),
            OpRequest::Read { .. } => None,
        }
    }
}

/// The client number of the liveness probe.
pub const PROBE_CLIENT: u32 = u32::MAX;

/// An account the workload uses, as created before the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountSpec {
    pub id: String,
    pub currency: String,
    pub allow_overdraft: bool,
}

/// Everything recorded during one run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct History {
    pub seed: u64,
    pub accounts: Vec<AccountSpec>,
    pub ops: Vec<Op>,
    pub faults: Vec<FaultEvent>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_op_round_trips_through_json_with_flat_fields() {
        let op = Op {
            client: 3,
            invoke_ms: 1.5,
            complete_ms: 9.25,
            node: 2,
            attempts: 2,
            request: OpRequest::Transfer {
                id: "t-3-1".into(),
                from: "a".into(),
                to: "b".into(),
                amount: 7,
            },
            outcome: Outcome::Ok { seq: 12 },
        };
        let text = serde_json::to_string(&op).unwrap();
        assert!(text.contains(r#""kind":"transfer""#), "{text}");
        assert!(text.contains(r#""outcome":"ok""#), "{text}");
        assert_eq!(serde_json::from_str::<Op>(&text).unwrap(), op);
        let fault = serde_json::to_string(&FaultKind::IsolateLeader).unwrap();
        assert_eq!(fault, r#""isolate-leader""#);
    }
}
