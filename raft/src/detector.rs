//! Fast failover when the leader process is gone.
//!
//! openraft 0.9 gives a follower two waits before it campaigns: the leader lease
//! (`election_timeout_max` since the last message from the leader, during which it also refuses
//! to vote for anyone) and then a random election timeout on top. Both are right for a leader
//! that is slow, paused or cut off: nobody can tell those from a dead one, and campaigning early
//! against a live leader costs an election. A leader whose port refuses connections is another
//! matter: its process is gone (the kernel answers for it with a reset).
//!
//! So a voter that has heard nothing from its leader for longer than the lease probes the
//! leader's address. Only a refused connection starts an election at once; a probe that connects
//! or times out leaves everything to openraft's own timers. This removes the random election
//! timeout from the failover after a crash, without shortening any timeout that protects a live
//! leader, so it cannot add spurious elections. If the other voter still holds the lease and
//! refuses the vote, the probe repeats a little later with a new term.
//!
//! Two survivors campaigning at once can starve each other: openraft does not adopt the term of
//! a vote request it refuses for a shorter log, so the voter with the longer log keeps choosing
//! terms the other has already used. Hence a voter stands aside, for a while, when its log is
//! behind what it knows to be committed, when a candidate with a longer log asked it for its
//! vote, or when it has just granted its vote to another candidate (campaigning then would
//! depose the candidate it elected a moment ago and cost an election timeout).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;
use rand::Rng;
use tokio::net::{lookup_host, TcpSocket};

use crate::typ::{NodeId, Raft};

/// How often the watch looks at the time since the leader was last heard.
const WATCH_INTERVAL: Duration = Duration::from_millis(10);
/// A probe that has not connected after this long is a slow or cut-off leader, not a dead one.
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);

/// When this node last received an append (entries or heartbeat) from a leader, and until when
/// it stands aside for a candidate with a longer log.
#[derive(Debug)]
pub struct Heard {
    base: Instant,
    last_ms: AtomicU64,
    aside_until_ms: AtomicU64,
}

impl Default for Heard {
    fn default() -> Heard {
        Heard {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
            aside_until_ms: AtomicU64::new(0),
        }
    }
}

impl Heard {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A candidate whose log is longer than ours asked for our vote: let it win, do not
    /// campaign against it for `window`.
    pub fn stand_aside(&self, window: Duration) {
        let until = self
            .now_ms()
            .saturating_add(u64::try_from(window.as_millis()).unwrap_or(u64::MAX));
        self.aside_until_ms.fetch_max(until, Ordering::Relaxed);
    }

    /// Whether this node stands aside for another candidate right now.
    pub fn standing_aside(&self) -> bool {
        self.now_ms() < self.aside_until_ms.load(Ordering::Relaxed)
    }

    /// Records that a leader spoke just now.
    pub fn touch(&self) {
        self.last_ms.fetch_max(self.now_ms(), Ordering::Relaxed);
    }

    /// How long ago a leader last spoke (since the node started, if never).
    pub fn silent(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.base.elapsed().saturating_sub(last)
    }
}

/// What a probe of the leader's address found.
#[derive(Debug, PartialEq, Eq)]
pub enum Probe {
    /// Something accepted the connection: the process is alive (maybe slow or paused).
    Alive,
    /// The connection was refused: no process listens there.
    Refused,
    /// No answer in time, or another error: unknown, so assume alive.
    Unknown,
}

/// Tries a TCP connection to `addr` (`host:port`) from `local_ip` when given.
pub async fn probe(addr: &str, local_ip: Option<IpAddr>) -> Probe {
    let target: Option<SocketAddr> = match lookup_host(addr).await {
        Ok(mut addrs) => addrs.next(),
        Err(_) => None,
    };
    let Some(target) = target else {
        return Probe::Unknown;
    };
    let socket = match target {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    };
    let Ok(socket) = socket else {
        return Probe::Unknown;
    };
    if let Some(ip) = local_ip {
        if socket.bind(SocketAddr::new(ip, 0)).is_err() {
            return Probe::Unknown;
        }
    }
    match tokio::time::timeout(PROBE_TIMEOUT, socket.connect(target)).await {
        Ok(Ok(_stream)) => Probe::Alive,
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused => Probe::Refused,
        Ok(Err(_)) | Err(_) => Probe::Unknown,
    }
}

/// The watch's settings.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub node_id: NodeId,
    /// openraft's leader lease: `election_timeout_max`.
    pub lease: Duration,
    pub heartbeat: Duration,
    pub local_ip: Option<IpAddr>,
}

/// Runs until the Raft node shuts down. `committed` tells the highest log index this node knows
/// to be committed.
pub async fn run(
    raft: Raft,
    heard: Arc<Heard>,
    committed: impl Fn() -> u64 + Send + 'static,
    options: WatchOptions,
) {
    let mut metrics = raft.metrics();
    // The leader this node followed last, kept while an election is under way.
    let mut followed: Option<(NodeId, String)> = None;
    let mut next_try = Instant::now();
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        if metrics.has_changed().is_err() {
            return; // openraft stopped
        }
        let (state, leader_now, voter, last_log) = {
            let m = metrics.borrow_and_update();
            let voter = m
                .membership_config
                .membership()
                .voter_ids()
                .any(|id| id == options.node_id);
            let leader_now = m.current_leader.and_then(|id| {
                let addr = m.membership_config.membership().get_node(&id)?.addr.clone();
                Some((id, addr))
            });
            (m.state, leader_now, voter, m.last_log_index.unwrap_or(0))
        };
        if state == ServerState::Leader || state == ServerState::Shutdown || !voter {
            followed = None;
            continue;
        }
        if let Some((id, addr)) = leader_now {
            if id != options.node_id {
                followed = Some((id, addr));
            }
        }
        let Some((leader_id, leader_addr)) = &followed else {
            continue;
        };
        let silent = heard.silent();
        // Past the lease, plus a little jitter so two followers rarely campaign in the same
        // instant (a split vote costs a retry).
        let jitter_ms = rand::thread_rng().gen_range(0..=options.heartbeat.as_millis().max(1) / 2);
        let wait = options.lease + Duration::from_millis(u64::try_from(jitter_ms).unwrap_or(0));
        if silent < wait || Instant::now() < next_try {
            continue;
        }
        // A log behind the commit index cannot win; another candidate's longer log will.
        if last_log < committed() || heard.standing_aside() {
            continue;
        }
        let term_before = metrics.borrow().current_term;
        let found = probe(leader_addr, options.local_ip).await;
        if found != Probe::Refused {
            continue;
        }
        // The probe took time: meanwhile a new leader may have spoken, or this node may have
        // voted for another candidate (a new term). Campaigning now would depose or split it.
        if heard.silent() < wait
            || heard.standing_aside()
            || metrics.borrow().current_term != term_before
        {
            continue;
        }
        tracing::info!(
            leader_id,
            silent_ms = u64::try_from(silent.as_millis()).unwrap_or(u64::MAX),
            "leader is down (connection refused) and silent past its lease: starting an election"
        );
        if let Err(error) = raft.trigger().elect().await {
            tracing::warn!(%error, "could not start an election");
            return;
        }
        let pause_ms = rand::thread_rng().gen_range(
            options.heartbeat.as_millis().max(1)..=options.heartbeat.as_millis().max(1) * 2,
        );
        next_try = Instant::now() + Duration::from_millis(u64::try_from(pause_ms).unwrap_or(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_is_refused_and_a_listening_one_alive() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        assert_eq!(probe(&addr, None).await, Probe::Alive);
        drop(listener);
        assert_eq!(probe(&addr, None).await, Probe::Refused);
        assert_eq!(probe("no-such-host.invalid:1", None).await, Probe::Unknown);
    }

    #[test]
    fn standing_aside_ends_after_its_window() {
        let heard = Heard::default();
        assert!(!heard.standing_aside());
        heard.stand_aside(Duration::from_secs(60));
        assert!(heard.standing_aside());
        let brief = Heard::default();
        brief.stand_aside(Duration::ZERO);
        assert!(!brief.standing_aside());
    }

    #[test]
    fn heard_counts_from_the_last_touch() {
        let heard = Heard::default();
        std::thread::sleep(Duration::from_millis(30));
        assert!(heard.silent() >= Duration::from_millis(30));
        let before = Instant::now();
        heard.touch();
        // `last_ms` keeps whole milliseconds, so the reading may be up to 1 ms long.
        assert!(heard.silent() <= before.elapsed() + Duration::from_millis(1));
    }
}
