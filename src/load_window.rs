//! The last few minutes of load on this node, for the status page: transfers posted (the state
//! machine's counter, the one `raftpay_transfers_posted_total` shows) and the latency of the
//! `POST /v1/transfers` requests this node answered (as `http::observe` timed them for
//! `raftpay_http_request_duration_seconds`), kept per slot of [`SLOT`] in a ring of [`SLOTS`].
//!
//! One task per node closes a slot every [`SLOT`]; it ends when the node's Raft stops or the
//! window is dropped. Recording a latency must never slow a request down: it is one short lock
//! and a counter increment in a histogram of fixed size; everything else happens on a read.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use raftpay_raft::node::Node;
use serde::Serialize;

/// One slot of the ring.
pub const SLOT: Duration = Duration::from_secs(5);
/// Slots kept: with [`SLOT`], the last five minutes.
pub const SLOTS: usize = 60;
/// Latencies are kept in microseconds up to this (a longer one counts as this long: no
/// request waits a minute, the write and forward timeouts end it first).
const LATENCY_MICROS_MAX: u64 = 60_000_000;
/// Two significant digits: a quantile is off by under 1%, and a slot's histogram is ~10 KiB.
const LATENCY_SIGNIFICANT_DIGITS: u8 = 2;

fn latency_histogram() -> Histogram<u32> {
    Histogram::new_with_bounds(1, LATENCY_MICROS_MAX, LATENCY_SIGNIFICANT_DIGITS)
        .expect("constant bounds: 1 µs to 60 s at 2 significant digits is a valid histogram")
}

/// A closed slot.
struct Slot {
    ended_unix_ms: u64,
    /// Its real length (the ticker may be late).
    length: Duration,
    transfers: u64,
    latency: Histogram<u32>,
}

struct Ring {
    closed: VecDeque<Slot>,
    current: Histogram<u32>,
    current_started: Instant,
    /// The posted-transfers counter when the current slot started.
    posted_at_start: u64,
}

/// What the status page shows for one slot, or for the whole window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadFigures {
    /// When the slot ended (the window: now), in ms since the Unix epoch; display only.
    pub ended_unix_ms: u64,
    /// Time covered, in seconds: [`SLOT`] for a slot, up to [`SLOTS`] × [`SLOT`] for the window
    /// (less while the node is younger).
    pub seconds: f64,
    pub transfers: u64,
    pub transfers_per_second: f64,
    /// `POST /v1/transfers` requests this node answered.
    pub requests: u64,
    /// Their 99th percentile latency in milliseconds; `None` without requests.
    pub p99_ms: Option<f64>,
}

/// The window: closed slots oldest first, and the figures over all of them plus the slot under
/// way.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadSummary {
    pub slot_seconds: u64,
    pub window_seconds: u64,
    pub window: LoadFigures,
    pub slots: Vec<LoadFigures>,
}

/// The ring, shared by the request path, the ticker and the status page.
#[derive(Clone)]
pub struct LoadWindow {
    ring: Arc<Mutex<Ring>>,
}

impl LoadWindow {
    /// A window whose first slot starts now, with `posted` transfers posted so far.
    fn new(posted: u64, now: Instant) -> LoadWindow {
        LoadWindow {
            ring: Arc::new(Mutex::new(Ring {
                closed: VecDeque::with_capacity(SLOTS + 1),
                current: latency_histogram(),
                current_started: now,
                posted_at_start: posted,
            })),
        }
    }

    /// Starts the window of `node` and its ticker.
    pub fn start(node: &Node) -> LoadWindow {
        let window = LoadWindow::new(posted(node), Instant::now());
        let ring = Arc::downgrade(&window.ring);
        let node = node.clone();
        // The ticker: closes a slot every SLOT. Ends when the node's Raft stops (its metrics
        // channel closes) or when every handle of the window is gone (the app was dropped), so
        // its clone of the node never outlives the app by more than a slot.
        tokio::spawn(async move {
            let raft = node.watch();
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + SLOT, SLOT);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if raft.is_closed() {
                    break;
                }
                let Some(ring) = Weak::upgrade(&ring) else {
                    break;
                };
                LoadWindow { ring }.slot_close(posted(&node), Instant::now(), unix_ms_now());
            }
        });
        window
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        // A panic while holding this lock leaves counts behind: still usable for a display.
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the latency of one `POST /v1/transfers` this node answered.
    pub fn latency_record(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.lock().current.saturating_record(micros.max(1));
    }

    /// Ends the slot under way at `now`, with `posted` transfers posted by then.
    fn slot_close(&self, posted: u64, now: Instant, now_unix_ms: u64) {
        let mut ring = self.lock();
        // The oldest slot's histogram is reused for the next one: no allocation once full.
        let next = if ring.closed.len() >= SLOTS {
            ring.closed.pop_front().map(|mut oldest| {
                oldest.latency.reset();
                oldest.latency
            })
        } else {
            None
        };
        let latency = std::mem::replace(&mut ring.current, next.unwrap_or_else(latency_histogram));
        let slot = Slot {
            ended_unix_ms: now_unix_ms,
            length: now.saturating_duration_since(ring.current_started),
            transfers: posted.saturating_sub(ring.posted_at_start),
            latency,
        };
        ring.closed.push_back(slot);
        ring.current_started = now;
        ring.posted_at_start = posted;
    }

    /// The window as of `now`, with `posted` transfers posted by then.
    fn summary_at(&self, posted: u64, now: Instant, now_unix_ms: u64) -> LoadSummary {
        let ring = self.lock();
        let slots = ring
            .closed
            .iter()
            .map(|slot| {
                figures(
                    slot.ended_unix_ms,
                    slot.length,
                    slot.transfers,
                    &slot.latency,
                )
            })
            .collect();
        let mut merged = ring.current.clone();
        let mut length = now.saturating_duration_since(ring.current_started);
        let mut transfers = posted.saturating_sub(ring.posted_at_start);
        for slot in &ring.closed {
            if let Err(error) = merged.add(&slot.latency) {
                // Cannot happen with equal bounds and u32 counts over five minutes; the
                // figures then leave that slot's latencies out rather than fail the page.
                tracing::warn!(%error, "load window: a slot's latencies could not be merged");
            }
            length += slot.length;
            transfers = transfers.saturating_add(slot.transfers);
        }
        LoadSummary {
            slot_seconds: SLOT.as_secs(),
            window_seconds: SLOT.as_secs() * u64::try_from(SLOTS).unwrap_or(u64::MAX),
            window: figures(now_unix_ms, length, transfers, &merged),
            slots,
        }
    }

    /// The window as of now.
    pub fn summary(&self, node: &Node) -> LoadSummary {
        self.summary_at(posted(node), Instant::now(), unix_ms_now())
    }
}

fn posted(node: &Node) -> u64 {
    node.stats().transfers_posted.load(Ordering::Relaxed)
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A count as a float for a rate. Exact below 2^53, which no count here reaches.
#[allow(clippy::cast_precision_loss)]
fn float(count: u64) -> f64 {
    count as f64
}

fn figures(
    ended_unix_ms: u64,
    length: Duration,
    transfers: u64,
    latency: &Histogram<u32>,
) -> LoadFigures {
    let seconds = length.as_secs_f64();
    let requests = latency.len();
    LoadFigures {
        ended_unix_ms,
        seconds: (seconds * 1000.0).round() / 1000.0,
        transfers,
        transfers_per_second: if seconds > 0.0 {
            (float(transfers) / seconds * 10.0).round() / 10.0
        } else {
            0.0
        },
        requests,
        p99_ms: (requests > 0).then(|| float(latency.value_at_quantile(0.99)) / 1000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn slots_count_transfers_and_latencies_and_the_window_adds_them_up() {
        let start = Instant::now();
        let window = LoadWindow::new(100, start);
        // Slot 1: 98 requests of 2 ms and 2 of 40 ms; 50 transfers posted.
        for _ in 0..98 {
            window.latency_record(ms(2));
        }
        window.latency_record(ms(40));
        window.latency_record(ms(40));
        window.slot_close(150, start + SLOT, 1_000);
        // Slot 2 is under way: 1 request of 300 ms, 10 more transfers, 2.5 s in.
        window.latency_record(ms(300));
        let summary = window.summary_at(160, start + SLOT + ms(2500), 2_000);
        assert_eq!(summary.slots.len(), 1);
        let slot = &summary.slots[0];
        assert_eq!(
            (slot.seconds, slot.transfers, slot.requests),
            (5.0, 50, 100)
        );
        assert_eq!(slot.transfers_per_second, 10.0);
        // The 99th of 100 requests is a 40 ms one (within the histogram's 1%).
        let p99 = slot.p99_ms.expect("a p99");
        assert!((39.6..=40.4).contains(&p99), "p99 {p99}");
        let all = &summary.window;
        assert_eq!((all.seconds, all.transfers, all.requests), (7.5, 60, 101));
        assert_eq!(all.transfers_per_second, 8.0);
        let p99 = all.p99_ms.expect("a p99");
        assert!((39.6..=40.4).contains(&p99), "window p99 {p99}");
        assert_eq!(all.ended_unix_ms, 2_000);
    }

    #[test]
    fn a_window_without_requests_has_no_p99() {
        let start = Instant::now();
        let window = LoadWindow::new(0, start);
        let summary = window.summary_at(0, start, 0);
        assert_eq!(summary.window.p99_ms, None);
        assert_eq!(summary.window.transfers_per_second, 0.0);
        assert!(summary.slots.is_empty());
    }

    #[test]
    fn only_the_last_slots_are_kept() {
        let start = Instant::now();
        let window = LoadWindow::new(0, start);
        let mut at = start;
        for n in 1..=u64::try_from(SLOTS).unwrap() + 5 {
            window.latency_record(ms(n));
            at += SLOT;
            window.slot_close(n * 10, at, n);
        }
        let summary = window.summary_at(u64::try_from(SLOTS + 5).unwrap() * 10, at, 0);
        assert_eq!(summary.slots.len(), SLOTS);
        // The five oldest slots are gone, with their transfers and requests.
        assert_eq!(summary.slots[0].ended_unix_ms, 6);
        assert_eq!(summary.window.requests, u64::try_from(SLOTS).unwrap());
        assert_eq!(summary.window.transfers, u64::try_from(SLOTS).unwrap() * 10);
        assert_eq!(summary.window.seconds, SLOT.as_secs_f64() * 60.0);
    }

    #[test]
    fn a_latency_over_the_range_counts_as_the_longest() {
        let start = Instant::now();
        let window = LoadWindow::new(0, start);
        window.latency_record(Duration::from_secs(3600));
        let p99 = window.summary_at(0, start, 0).window.p99_ms.expect("a p99");
        assert!(p99 >= 59_000.0, "p99 {p99}");
    }
}
