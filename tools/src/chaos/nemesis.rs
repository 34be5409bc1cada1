//! The nemesis: a seeded schedule of faults and their injection into the real node processes.
//!
//! The schedule depends on the seed alone: every step draws the same number of values (kind,
//! random node, hold fraction, restart order), so the same seed gives the same sequence of kinds, random
//! targets and hold times. Who the leader is when a "leader" fault strikes is up to the
//! cluster. Each fault is injected, held, and healed before the next one; every step is logged
//! with `tracing::info!`.
//!
//! Must never: signal a process other than a node it started (all by pid, through `Cluster`),
//! or leave a fault in place when it returns (on an error mid-fault the runner's `heal_all`
//! cleans up).

use std::time::Duration;

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::cluster::{election_timeout_max, Cluster, NODES};
use super::history::{FaultEvent, FaultKind};
use super::workload::Recorder;

/// How long a restarted node may take to serve `/health`.
const RESTART_DEADLINE: Duration = Duration::from_secs(30);
/// How long the cluster may take to agree on a leader before a leader fault.
pub const LEADER_DEADLINE: Duration = Duration::from_secs(30);
/// In a leader-last kill-all, the leader dies this long after the followers.
const KILL_ALL_LEADER_LAG: Duration = Duration::from_millis(50);
/// How long to look for the leader before a kill-all that restarts it last.
const LEADER_QUICK_DEADLINE: Duration = Duration::from_secs(5);

/// One step of the schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedFault {
    pub kind: FaultKind,
    /// The node `kill-random` hits (drawn for every step, used only by that kind).
    pub random_node: u64,
    /// How long the fault lasts before it is healed.
    pub hold: Duration,
    /// kill-all only: kill the followers first and the leader `KILL_ALL_LEADER_LAG` later, and
    /// restart the old leader last, once the other two have elected a leader among themselves
    /// (so an entry that only the followers acknowledged, and then lost, cannot be brought back
    /// by the old leader). Otherwise all three die and restart at once.
    pub leader_last: bool,
}

/// The seeded sequence of faults.
#[derive(Debug)]
pub struct Schedule {
    rng: StdRng,
    kinds: Vec<FaultKind>,
    leader_last_always: bool,
    /// Take the kinds in turn instead of drawing them.
    in_turn: bool,
    drawn: usize,
}

impl Schedule {
    /// A schedule drawing from `kinds` (duplicates removed, order kept).
    pub fn new(seed: u64, kinds: &[FaultKind]) -> Schedule {
        let mut unique = Vec::new();
        for kind in kinds {
            if !unique.contains(kind) {
                unique.push(*kind);
            }
        }
        Schedule {
            rng: StdRng::seed_from_u64(seed),
            kinds: unique,
            leader_last_always: false,
            in_turn: false,
            drawn: 0,
        }
    }

    /// Every kill-all restarts the old leader last (the negative control wants that).
    pub fn with_leader_last_always(mut self) -> Schedule {
        self.leader_last_always = true;
        self
    }

    /// The kinds come in turn (the other draws stay seeded).
    pub fn with_kinds_in_turn(mut self) -> Schedule {
        self.in_turn = true;
        self
    }

    /// The next fault; `None` only when the schedule has no kinds.
    pub fn next_fault(&mut self) -> Option<PlannedFault> {
        let kind_index = self.rng.gen_range(0..self.kinds.len().max(1));
        let random_node = self.rng.gen_range(1..=NODES);
        let fraction: f64 = self.rng.gen();
        let leader_last = self.rng.gen_bool(0.5);
        let kind_index = if self.in_turn {
            self.drawn % self.kinds.len().max(1)
        } else {
            kind_index
        };
        self.drawn += 1;
        let kind = *self.kinds.get(kind_index)?;
        Some(PlannedFault {
            kind,
            random_node,
            hold: hold(kind, fraction),
            leader_last: leader_last || self.leader_last_always,
        })
    }
}

/// The hold time of a fault: kills are down 0.3–1.5 s; a pause lasts 1.0–2.5 s, always well over
/// the election timeout (so the others elect a new leader); an isolation lasts 2–4 s.
fn hold(kind: FaultKind, fraction: f64) -> Duration {
    let (min_s, span_s) = match kind {
        FaultKind::KillLeader
        | FaultKind::KillRandom
        | FaultKind::KillAll
        | FaultKind::PowerCutAll
        | FaultKind::PowerCutLeader
        | FaultKind::PowerCutFollower => (0.3, 1.2),
        FaultKind::PauseLeader => (1.0, 1.5),
        FaultKind::IsolateLeader => (2.0, 2.0),
    };
    let hold = Duration::from_secs_f64(min_s + span_s * fraction.clamp(0.0, 1.0));
    if kind == FaultKind::PauseLeader {
        // Longer than the election timeout, whatever the numbers above become.
        return hold.max(3 * election_timeout_max());
    }
    hold
}

/// What a node must still hold after a power cut, read just before it: every vote it cast (its
/// term then) and every entry it acknowledged to the leader (the leader's matched index for
/// it), counting only entries the leader had already applied (committed entries; an
/// uncommitted one may be legitimately overwritten by a later leader).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurableFloor {
    pub term: u64,
    pub log_index: u64,
    /// The node led the cluster when the floor was read.
    pub was_leader: bool,
}

impl DurableFloor {
    /// How `kept` (the node's log read after the cut) falls short of this floor.
    pub fn violations(&self, node: u64, kept: &raftpay_api::inspect::LogInspection) -> Vec<String> {
        let mut problems = Vec::new();
        if kept.vote_term < self.term {
            problems.push(format!(
                "node {node} forgot its vote: term {} after the power cut, {} before",
                kept.vote_term, self.term
            ));
        }
        let last = kept.last_log_index.unwrap_or(0);
        if last < self.log_index {
            problems.push(format!(
                "node {node} lost acknowledged entries: its log ends at {last} after the power cut, \
                 it had acknowledged {} before",
                self.log_index
            ));
        }
        problems
    }
}

/// Reads every target's floor from the nodes' status (the leader's for the matched indexes).
async fn durable_floors(
    cluster: &Cluster,
    nodes: &[u64],
) -> anyhow::Result<Vec<(u64, DurableFloor)>> {
    let leader = cluster.leader_wait(LEADER_DEADLINE).await?;
    let leader_status = cluster
        .api
        .status(leader)
        .await
        .with_context(|| format!("status of the leader {leader}"))?;
    let applied = leader_status["last_applied"].as_u64().unwrap_or(0);
    let mut floors = Vec::new();
    for node in nodes {
        let status = cluster
            .api
            .status(*node)
            .await
            .with_context(|| format!("status of node {node}"))?;
        let matched = leader_status["replication_matched"][node.to_string()]
            .as_u64()
            .unwrap_or(0);
        floors.push((
            *node,
            DurableFloor {
                term: status["term"].as_u64().unwrap_or(0),
                log_index: matched.min(applied),
                was_leader: *node == leader,
            },
        ));
    }
    Ok(floors)
}

/// Starts `nodes` and waits until each serves `/health`.
async fn restart(cluster: &mut Cluster, nodes: &[u64]) -> anyhow::Result<()> {
    for node in nodes {
        cluster.spawn(*node)?;
    }
    for node in nodes {
        cluster.health_wait(*node, RESTART_DEADLINE).await?;
    }
    Ok(())
}

/// Logs that a fault is in effect and returns the instant.
fn in_effect(recorder: &Recorder, index: u64, kind: FaultKind, nodes: &[u64]) -> f64 {
    let at_ms = recorder.now_ms();
    tracing::info!(index, %kind, ?nodes, at_ms = at_ms as u64, "fault: in effect");
    at_ms
}

/// Injects `fault` into `cluster`, holds it, heals it, and returns what happened. The recorded
/// injection instant is when the fault is fully in effect (signals delivered, every DROP rule
/// in place), so that unavailability is not flattered by writes that slipped in before.
///
/// # Errors
/// When there is no leader to hit within `LEADER_DEADLINE`, a signal or an iptables rule fails,
/// or a restarted node does not serve within `RESTART_DEADLINE`. The fault may then still be in
/// place: the caller heals everything.
pub async fn inject(
    cluster: &mut Cluster,
    recorder: &Recorder,
    index: u64,
    fault: &PlannedFault,
) -> anyhow::Result<FaultEvent> {
    let kind = fault.kind;
    let nodes: Vec<u64> = match kind {
        FaultKind::KillLeader | FaultKind::PauseLeader | FaultKind::IsolateLeader => {
            vec![cluster.leader_wait(LEADER_DEADLINE).await?]
        }
        FaultKind::KillRandom => vec![fault.random_node],
        FaultKind::KillAll | FaultKind::PowerCutAll => cluster.ids(),
        FaultKind::PowerCutLeader => vec![cluster.leader_wait(LEADER_DEADLINE).await?],
        FaultKind::PowerCutFollower => {
            let leader = cluster.leader_wait(LEADER_DEADLINE).await?;
            let followers: Vec<u64> = cluster
                .ids()
                .into_iter()
                .filter(|id| *id != leader)
                .collect();
            let pick = usize::try_from(fault.random_node).unwrap_or(0) % followers.len().max(1);
            followers.get(pick).copied().into_iter().collect()
        }
    };
    tracing::info!(index, %kind, ?nodes, hold_ms = fault.hold.as_millis() as u64, "fault: inject");
    let mut fault_problems = Vec::new();
    let inject_ms = match kind {
        FaultKind::KillLeader | FaultKind::KillRandom => {
            cluster.kill_many(&nodes).await;
            let inject_ms = in_effect(recorder, index, kind, &nodes);
            // Spacing on the schedule, not synchronization: the node stays down this long.
            tokio::time::sleep(fault.hold).await;
            restart(cluster, &nodes).await?;
            inject_ms
        }
        FaultKind::KillAll => {
            // Who led, for a leader-last restart (none agreed: everyone restarts at once).
            let leader = if fault.leader_last {
                cluster.leader_wait(LEADER_QUICK_DEADLINE).await.ok()
            } else {
                None
            };
            match leader {
                Some(leader) => {
                    // The followers first, the leader a moment later: it may still answer for
                    // entries the followers acknowledged just before they died.
                    let others: Vec<u64> = nodes.iter().copied().filter(|n| *n != leader).collect();
                    cluster.kill_many(&others).await;
                    tokio::time::sleep(KILL_ALL_LEADER_LAG).await;
                    cluster.kill(leader).await;
                }
                None => cluster.kill_many(&nodes).await,
            }
            let inject_ms = in_effect(recorder, index, kind, &nodes);
            tokio::time::sleep(fault.hold).await;
            match leader {
                Some(leader) => {
                    let others: Vec<u64> = nodes.iter().copied().filter(|n| *n != leader).collect();
                    restart(cluster, &others).await?;
                    match cluster.leader_wait(LEADER_DEADLINE).await {
                        Ok(new_leader) => tracing::info!(
                            index,
                            new_leader,
                            old_leader = leader,
                            "the others elected a leader; restarting the old leader last"
                        ),
                        Err(error) => {
                            tracing::warn!(index, old_leader = leader, error = %format!("{error:#}"), "the others elected no leader; restarting the old leader anyway")
                        }
                    }
                    restart(cluster, &[leader]).await?;
                }
                None => restart(cluster, &nodes).await?,
            }
            inject_ms
        }
        FaultKind::PowerCutAll | FaultKind::PowerCutLeader | FaultKind::PowerCutFollower => {
            let floors = durable_floors(cluster, &nodes).await?;
            cluster.power_cut(&nodes).await?;
            let inject_ms = in_effect(recorder, index, kind, &nodes);
            // Before any restart: what each node kept, against what it had acknowledged.
            let mut problems = Vec::new();
            for (node, floor) in &floors {
                match cluster.inspect(*node).await {
                    Ok(kept) => problems.extend(floor.violations(*node, &kept)),
                    Err(error) => problems.push(format!("{error:#}")),
                }
            }
            tokio::time::sleep(fault.hold).await;
            // As in kill-all: half the time (always in a negative control) the old leader comes
            // back last, once the others have elected a leader, so an entry only it still
            // holds cannot come back with it.
            let leader = floors
                .iter()
                .find(|(_, floor)| floor.was_leader)
                .map(|(node, _)| *node);
            match leader {
                Some(leader) if fault.leader_last && nodes.len() > 1 => {
                    let others: Vec<u64> = nodes.iter().copied().filter(|n| *n != leader).collect();
                    restart(cluster, &others).await?;
                    if let Err(error) = cluster.leader_wait(LEADER_DEADLINE).await {
                        tracing::warn!(index, old_leader = leader, error = %format!("{error:#}"), "the others elected no leader; restarting the old leader anyway");
                    }
                    restart(cluster, &[leader]).await?;
                }
                _ => restart(cluster, &nodes).await?,
            }
            if problems.is_empty() {
                tracing::info!(
                    index,
                    ?floors,
                    "power cut: every node kept its vote and its acknowledged entries"
                );
            } else {
                tracing::error!(
                    index,
                    ?problems,
                    "power cut: a node forgot what it acknowledged"
                );
            }
            fault_problems = problems;
            inject_ms
        }
        FaultKind::PauseLeader => {
            for node in &nodes {
                cluster.pause(*node).await?;
            }
            let inject_ms = in_effect(recorder, index, kind, &nodes);
            tokio::time::sleep(fault.hold).await;
            for node in &nodes {
                cluster.resume(*node).await?;
            }
            inject_ms
        }
        FaultKind::IsolateLeader => {
            let Some(leader) = nodes.first().copied() else {
                anyhow::bail!("no leader to isolate");
            };
            let others: Vec<u64> = cluster
                .ids()
                .into_iter()
                .filter(|id| *id != leader)
                .collect();
            let firewall = cluster.firewall.as_mut().context(
                "isolate-leader needs the private network namespace (root, ip, iptables)",
            )?;
            firewall.isolate(leader, &others).await?;
            let inject_ms = in_effect(recorder, index, kind, &nodes);
            tokio::time::sleep(fault.hold).await;
            firewall.heal().await?;
            tracing::info!(node = leader, "isolation healed");
            inject_ms
        }
    };
    let heal_ms = recorder.now_ms();
    tracing::info!(index, %kind, ?nodes, at_ms = heal_ms as u64, "fault: healed");
    Ok(FaultEvent {
        index,
        kind,
        nodes,
        inject_ms,
        heal_ms,
        problems: fault_problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let kinds = FaultKind::ALL;
        let mut a = Schedule::new(42, &kinds);
        let mut b = Schedule::new(42, &kinds);
        let mut c = Schedule::new(43, &kinds);
        let first: Vec<_> = (0..50).map(|_| a.next_fault().unwrap()).collect();
        let second: Vec<_> = (0..50).map(|_| b.next_fault().unwrap()).collect();
        let other: Vec<_> = (0..50).map(|_| c.next_fault().unwrap()).collect();
        assert_eq!(first, second);
        assert_ne!(first, other);
        for kind in FaultKind::ALL {
            assert!(first.iter().any(|f| f.kind == kind), "{kind} never drawn");
        }
        assert!(first.iter().all(|f| (1..=NODES).contains(&f.random_node)));
    }

    #[test]
    fn a_pause_outlasts_the_election_timeout() {
        for fraction in [0.0, 0.5, 1.0] {
            assert!(hold(FaultKind::PauseLeader, fraction) > election_timeout_max());
        }
    }

    #[test]
    fn kinds_in_turn_come_in_order() {
        let mut schedule = Schedule::new(5, &FaultKind::POWER).with_kinds_in_turn();
        let kinds: Vec<FaultKind> = (0..6)
            .map(|_| schedule.next_fault().unwrap().kind)
            .collect();
        let expected: Vec<FaultKind> = FaultKind::POWER
            .iter()
            .chain(FaultKind::POWER.iter())
            .copied()
            .collect();
        assert_eq!(kinds, expected);
    }

    #[test]
    fn a_single_kind_schedule_only_draws_that_kind() {
        let mut schedule = Schedule::new(1, &[FaultKind::KillAll, FaultKind::KillAll]);
        assert!((0..20).all(|_| schedule.next_fault().unwrap().kind == FaultKind::KillAll));
    }
}
