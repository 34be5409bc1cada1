//! What `raftpay inspect --data-dir DIR` prints (one JSON line): the chaos suite and scripts
//! read it back with this type.

/// What a stopped node's write-ahead log holds, read offline (`raftpay inspect`): the power-loss
/// test compares it with what the node had acknowledged before its power was cut.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogInspection {
    /// Term of the stored vote (0: no vote).
    pub vote_term: u64,
    /// The node the stored vote is for.
    pub vote_for: Option<u64>,
    /// Whether the stored vote is a committed (leader-granted) one.
    pub vote_committed: bool,
    /// Index of the last entry in the log, or of the last purged one when the log is empty.
    pub last_log_index: Option<u64>,
    pub last_purged_index: Option<u64>,
    /// The state database was fsynced with everything up to here applied.
    pub state_durable_index: Option<u64>,
}
