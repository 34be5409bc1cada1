//! Watches this node's Raft metrics for leadership changes: counts them, accumulates the time
//! without a known leader, and keeps the most recent changes for the status page. One task per
//! node, ended when the node's metrics channel closes (Raft shut down).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use raftpay_raft::node::Node;
use serde::Serialize;

/// How many leader changes the status page shows.
const LEADER_CHANGES_KEPT: usize = 20;

/// One observed change of the known leader.
#[derive(Debug, Clone, Serialize)]
pub struct LeaderChange {
    /// Milliseconds since the Unix epoch (for display only; nothing in the ledger uses it).
    pub at_unix_ms: u64,
    pub term: u64,
    pub leader_id: Option<u64>,
}

#[derive(Debug, Default)]
struct State {
    changes: VecDeque<LeaderChange>,
    changes_total: u64,
    leaderless_total: Duration,
    leaderless_since: Option<Instant>,
}

/// Shared view of what the watcher saw.
#[derive(Debug, Clone, Default)]
pub struct LeaderWatch {
    state: Arc<Mutex<State>>,
}

impl LeaderWatch {
    /// Starts watching `node`; the task ends when the node's Raft stops.
    pub fn start(node: &Node) -> LeaderWatch {
        let watch = LeaderWatch::default();
        let mut raft = node.watch();
        let state = Arc::clone(&watch.state);
        // The watcher: wakes on every metrics change; ends when the sender (Raft) is dropped.
        tokio::spawn(async move {
            let mut leader = None;
            let mut first = true;
            loop {
                let view = raft.view();
                let (current, term) = (view.leader_id, view.term);
                if first || current != leader {
                    record(&state, current, term, !first);
                    leader = current;
                    first = false;
                }
                if !raft.changed().await {
                    break;
                }
            }
        });
        watch
    }

    /// How often a leader became known since this node started (after none, or another):
    /// the first leader it learns of counts, an election that ends with no leader does not.
    pub fn changes_total(&self) -> u64 {
        self.lock().changes_total
    }

    /// Time this node knew no leader, including a running stretch.
    pub fn leaderless(&self) -> Duration {
        let state = self.lock();
        state.leaderless_total
            + state
                .leaderless_since
                .map_or(Duration::ZERO, |since| since.elapsed())
    }

    /// The most recent changes, newest first.
    pub fn recent(&self) -> Vec<LeaderChange> {
        self.lock().changes.iter().rev().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain counters behind: still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn record(state: &Mutex<State>, leader: Option<u64>, term: u64, counts: bool) {
    let mut state = state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let now = Instant::now();
    match (leader, state.leaderless_since) {
        (None, None) => state.leaderless_since = Some(now),
        (Some(_), Some(since)) => {
            state.leaderless_total += now - since;
            state.leaderless_since = None;
        }
        _ => {}
    }
    if counts && leader.is_some() {
        state.changes_total += 1;
    }
    let at_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    state.changes.push_back(LeaderChange {
        at_unix_ms,
        term,
        leader_id: leader,
    });
    while state.changes.len() > LEADER_CHANGES_KEPT {
        state.changes.pop_front();
    }
    tracing::info!(leader_id = ?leader, term, "leader change observed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_and_leaderless_time_are_counted() {
        let state = Mutex::new(State::default());
        record(&state, None, 0, false);
        assert!(state.lock().unwrap().leaderless_since.is_some());
        record(&state, Some(1), 1, true);
        record(&state, None, 1, true);
        record(&state, Some(2), 2, true);
        let state = state.into_inner().unwrap();
        assert_eq!(state.changes_total, 2, "two leaders became known");
        assert!(state.leaderless_since.is_none());
        assert_eq!(state.changes.len(), 4);
        assert_eq!(state.changes.back().unwrap().leader_id, Some(2));
    }

    #[test]
    fn only_the_latest_changes_are_kept() {
        let state = Mutex::new(State::default());
        for term in 0..50 {
            record(&state, Some(term % 3), term, true);
        }
        assert_eq!(state.lock().unwrap().changes.len(), LEADER_CHANGES_KEPT);
    }
}
