//! The tasks a [`Node`](super::Node) runs beside openraft: the state checkpoint every second,
//! the handoff watcher (a leader without a vote gives way), and the fault watcher (the Raft core
//! ended on its own: record the fault, stop).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::Fatal;
use openraft::{BasicNode, RaftMetrics, ServerState};
use tokio::sync::watch;

use super::{Fault, FaultKind, Handoff};
use crate::store::Storage;
use crate::typ::{NodeId, Raft};

/// How often the state database is made durable in the background (a state checkpoint). After a
/// power cut a node replays its log from its last checkpoint: without these, that is from the
/// last log purge, which under a heavy load took tens of seconds (measured: a median of 24 s
/// before writes resumed after a power cut of every node, 525,000 transfers in 4 minutes).
const STATE_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// The background checkpoint: every `STATE_CHECKPOINT_INTERVAL`, fsync the log and the state
/// and record how far the state is durable (`Storage::sync`). A failure is a storage fault:
/// the node stops like on any other (see `fault_watch_run`).
pub(super) async fn checkpoint_run(
    storage: Arc<Storage>,
    fault_tx: Arc<watch::Sender<Option<Fault>>>,
    stopping: Arc<AtomicBool>,
) {
    if cfg!(feature = "unsafe-skip-fsync") {
        // The power-loss negative control models a node whose writes never reach the disk:
        // no background fsync either.
        return;
    }
    let mut interval = tokio::time::interval(STATE_CHECKPOINT_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        interval.tick().await;
        if stopping.load(Ordering::SeqCst) || fault_tx.borrow().is_some() {
            return;
        }
        let storage = Arc::clone(&storage);
        let result = tokio::task::spawn_blocking(move || storage.sync()).await;
        let error = match result {
            Ok(Ok(())) => continue,
            Ok(Err(error)) => error.to_string(),
            Err(join) => format!("state checkpoint task: {join}"),
        };
        tracing::debug!(%error, "state checkpoint failed");
        fault_tx.send_if_modified(|fault| {
            if fault.is_some() {
                return false;
            }
            *fault = Some(Fault {
                kind: FaultKind::Storage,
                reason: format!("state checkpoint: {error}"),
            });
            true
        });
        return;
    }
}

/// How often the handoff watcher looks at the membership and the change counter (the counter
/// has no notification of its own).
const HANDOFF_WATCH_INTERVAL: Duration = Duration::from_millis(20);
/// A step-down that has found no successor after this long is reported (warn) again each time.
const HANDOFF_SLOW: Duration = Duration::from_secs(10);

/// The handoff watcher: makes a leader that lost its vote give way to a remaining voter.
///
/// openraft 0.9 has no leadership transfer, and a leader that a committed change demoted to
/// learner goes on leading (as designed: a learner may lead; openraft steps a leader down only
/// when it leaves the membership entirely). Its heartbeats keep every follower inside the leader
/// lease, so they refuse to vote for anyone and the non-voter leads until it dies. So once such
/// a change is committed and applied, and no membership change of this node is still running,
/// the leader steps down in the only way 0.9 allows: it stops heartbeats and refuses writes
/// (see [`Node::is_leader`], `proposer_run`). The followers' leases expire and openraft's
/// election timers elect a voter, usually the one with the longest log, within the lease plus
/// one election timeout. Its first append tells this node of the new term and it follows; then
/// heartbeats are switched back on for any later leadership.
///
/// Safety does not depend on this: the voters' quorums decide every commit either way. Entries
/// this node proposed before stepping down commit or not as any in-flight write does.
pub(super) async fn handoff_run(raft: Raft, node_id: NodeId, handoff: Arc<Handoff>) {
    let mut metrics = raft.metrics();
    let mut stepped_down_at: Option<tokio::time::Instant> = None;
    let mut slow_reported_at: Option<tokio::time::Instant> = None;
    loop {
        tokio::time::sleep(HANDOFF_WATCH_INTERVAL).await;
        if metrics.has_changed().is_err() {
            return; // openraft stopped
        }
        let (leader, voter, applied) = {
            let m = metrics.borrow_and_update();
            if m.running_state.is_err() || m.state == ServerState::Shutdown {
                return;
            }
            let membership = m.membership_config.membership();
            let voter = membership.voter_ids().any(|id| id == node_id);
            let membership_index = m.membership_config.log_id().map(|id| id.index);
            let applied = m.last_applied.map(|id| id.index) >= membership_index;
            (m.state == ServerState::Leader, voter, applied)
        };
        let stepping_down = handoff.stepping_down.load(Ordering::SeqCst);
        if !stepping_down {
            let idle = handoff.changes_running.load(Ordering::SeqCst) == 0;
            if leader && !voter && applied && idle {
                handoff.stepping_down.store(true, Ordering::SeqCst);
                raft.runtime_config().heartbeat(false);
                stepped_down_at = Some(tokio::time::Instant::now());
                slow_reported_at = None;
                tracing::info!(
                    "this leader is no longer a voter: stepping down (no heartbeats, no writes) \
                     so that a remaining voter is elected"
                );
            }
            continue;
        }
        if !leader || voter {
            raft.runtime_config().heartbeat(true);
            handoff.stepping_down.store(false, Ordering::SeqCst);
            let leader_now = metrics.borrow().current_leader;
            let took_ms = stepped_down_at.take().map_or(0, |at| {
                u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX)
            });
            tracing::info!(leader_id = ?leader_now, took_ms, "leadership handed over");
            continue;
        }
        let now = tokio::time::Instant::now();
        let since = slow_reported_at.or(stepped_down_at).unwrap_or(now);
        if now.duration_since(since) >= HANDOFF_SLOW {
            slow_reported_at = Some(now);
            tracing::warn!(
                "stepping down: no voter has taken over yet (are the remaining voters reachable?)"
            );
        }
    }
}

/// The fault watcher: follows openraft's metrics until the Raft core has ended, then records
/// why (unless `stopping` says it was asked to stop). openraft sets `running_state` to the
/// fatal error as the core's last word, before it drops the metrics sender.
pub(super) async fn fault_watch_run(
    mut metrics: watch::Receiver<RaftMetrics<NodeId, BasicNode>>,
    fault_tx: Arc<watch::Sender<Option<Fault>>>,
    stopping: Arc<AtomicBool>,
) {
    let fatal = loop {
        if let Err(fatal) = &metrics.borrow_and_update().running_state {
            break fatal.clone();
        }
        if metrics.changed().await.is_err() {
            // The core is gone without a last word: it did not stop normally.
            break Fatal::Panicked;
        }
    };
    if matches!(fatal, Fatal::Stopped) && stopping.load(Ordering::SeqCst) {
        tracing::debug!("raft core stopped on request");
        return;
    }
    let fault = Fault::of_fatal(&fatal);
    tracing::debug!(kind = %fault.kind, reason = %fault.reason, "fault recorded");
    fault_tx.send_replace(Some(fault));
}
