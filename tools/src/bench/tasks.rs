//! The client tasks: each sends transfers (single or batched) until the window ends, measures
//! every request and books what was acknowledged, refused or left without an answer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use raftpay_client::{BatchItem, Client, ClientError, NewTransfer};
use tokio::time::Instant;

use super::stats::{latency_histogram, latency_record, RequestEvent};
use super::workload::{Expected, Route, Source};

// ---------------------------------------------------------------------------------------------
// Client tasks.

/// Live counters for the progress bar.
#[derive(Default)]
pub(super) struct Progress {
    pub(super) acked: AtomicU64,
    pub(super) errors: AtomicU64,
}

/// The run's clock: the client tasks start at `start`, measure from `window_start` and stop
/// sending at `window_end`.
#[derive(Clone, Copy)]
pub(super) struct Clock {
    pub(super) start: Instant,
    pub(super) window_start: Instant,
    pub(super) window_end: Instant,
}

impl Clock {
    pub(super) fn micros_since_start(&self, at: Instant) -> u64 {
        micros(at.saturating_duration_since(self.start))
    }

    pub(super) fn in_window(&self, at: Instant) -> bool {
        at >= self.window_start && at < self.window_end
    }
}

pub(super) fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// A request that got no definite answer: re-sent after the run to learn its outcome.
pub(super) enum Unresolved {
    Single(NewTransfer, Route),
    Batch(Vec<NewTransfer>, Vec<Route>),
}

/// What one client task measured and learned.
pub(super) struct TaskOutcome {
    pub(super) request_latency: Histogram<u64>,
    pub(super) transfer_latency: Histogram<u64>,
    pub(super) events: Vec<RequestEvent>,
    pub(super) errors: BTreeMap<String, u64>,
    pub(super) expected: Expected,
    pub(super) unresolved: Vec<Unresolved>,
}

impl TaskOutcome {
    pub(super) fn new() -> Self {
        Self {
            request_latency: latency_histogram(),
            transfer_latency: latency_histogram(),
            events: Vec::new(),
            errors: BTreeMap::new(),
            expected: Expected::default(),
            unresolved: Vec::new(),
        }
    }

    pub(super) fn error(&mut self, code: &str, count: u64) {
        *self.errors.entry(code.to_owned()).or_default() += count;
    }
}

/// Counts of one request's transfers.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Counts {
    pub(super) acked: u32,
    pub(super) failed: u32,
}

/// One client task: sends until the window ends (or `stop`), one request at a time.
pub(super) async fn client_run(
    client: Client,
    mut source: Source,
    clock: Clock,
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
) -> Result<TaskOutcome, ClientError> {
    let mut outcome = TaskOutcome::new();
    let batch = source.plan.batch;
    while Instant::now() < clock.window_end && !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let counts = match batch {
            None => single_send(&client, &mut source, &mut outcome).await?,
            Some(size) => batch_send(&client, &mut source, &mut outcome, size).await?,
        };
        let done = Instant::now();
        let latency_us = micros(done.saturating_duration_since(started));
        outcome.events.push(RequestEvent {
            done_us: clock.micros_since_start(done),
            latency_us,
            transfers_acked: counts.acked,
            transfers_failed: counts.failed,
        });
        if clock.in_window(done) {
            latency_record(&mut outcome.request_latency, latency_us, 1);
            latency_record(
                &mut outcome.transfer_latency,
                latency_us,
                u64::from(counts.acked),
            );
        }
        progress
            .acked
            .fetch_add(u64::from(counts.acked), Ordering::Relaxed);
        progress
            .errors
            .fetch_add(u64::from(counts.failed), Ordering::Relaxed);
    }
    Ok(outcome)
}

/// Sends one transfer and books the answer.
pub(super) async fn single_send(
    client: &Client,
    source: &mut Source,
    outcome: &mut TaskOutcome,
) -> Result<Counts, ClientError> {
    let (transfer, route) = source.next();
    let failed = Counts {
        acked: 0,
        failed: 1,
    };
    match client.transfer(&transfer).await {
        Ok((posted, _created))
            if posted.id == transfer.id
                && posted.amount == transfer.amount
                && posted.from == transfer.from
                && posted.to == transfer.to =>
        {
            outcome.expected.post(route);
            source.acked(route);
            Ok(Counts {
                acked: 1,
                failed: 0,
            })
        }
        Ok(_) => {
            // A 2xx for something else: not booked; the read-back will show what it did.
            outcome.error("mismatched_answer", 1);
            Ok(failed)
        }
        Err(ClientError::Api { code, .. }) => {
            outcome.error(&code, 1);
            source.refused(route);
            Ok(failed)
        }
        Err(ClientError::Unavailable { .. }) => {
            outcome.error("unavailable", 1);
            outcome.unresolved.push(Unresolved::Single(transfer, route));
            Ok(failed)
        }
        Err(ClientError::Decode(_)) => {
            outcome.error("decode", 1);
            outcome.unresolved.push(Unresolved::Single(transfer, route));
            Ok(failed)
        }
        Err(error @ ClientError::Config(_)) => Err(error),
    }
}

/// Sends one batch of `size` transfers and books each item's answer.
pub(super) async fn batch_send(
    client: &Client,
    source: &mut Source,
    outcome: &mut TaskOutcome,
    size: usize,
) -> Result<Counts, ClientError> {
    let (transfers, routes): (Vec<NewTransfer>, Vec<Route>) =
        (0..size).map(|_| source.next()).unzip();
    let n = u32::try_from(size).unwrap_or(u32::MAX);
    let all_failed = Counts {
        acked: 0,
        failed: n,
    };
    match client.batch(&transfers, false).await {
        Ok(items) if items.len() == transfers.len() => {
            let mut counts = Counts::default();
            for ((item, transfer), route) in items.iter().zip(&transfers).zip(&routes) {
                match batch_item_outcome(item, transfer) {
                    Ok(()) => {
                        outcome.expected.post(*route);
                        source.acked(*route);
                        counts.acked += 1;
                    }
                    Err(code) => {
                        outcome.error(&code, 1);
                        if item.status != 200 && item.status != 201 {
                            source.refused(*route);
                        }
                        counts.failed += 1;
                    }
                }
            }
            Ok(counts)
        }
        Ok(_) => {
            outcome.error("decode", u64::from(n));
            outcome
                .unresolved
                .push(Unresolved::Batch(transfers, routes));
            Ok(all_failed)
        }
        Err(ClientError::Api { code, .. }) => {
            outcome.error(&code, u64::from(n));
            for route in routes {
                source.refused(route);
            }
            Ok(all_failed)
        }
        Err(ClientError::Unavailable { .. }) => {
            outcome.error("unavailable", u64::from(n));
            outcome
                .unresolved
                .push(Unresolved::Batch(transfers, routes));
            Ok(all_failed)
        }
        Err(ClientError::Decode(_)) => {
            outcome.error("decode", u64::from(n));
            outcome
                .unresolved
                .push(Unresolved::Batch(transfers, routes));
            Ok(all_failed)
        }
        Err(error @ ClientError::Config(_)) => Err(error),
    }
}

/// `Ok` when a batch item acknowledges exactly `transfer`; else the error code to count.
pub(super) fn batch_item_outcome(item: &BatchItem, transfer: &NewTransfer) -> Result<(), String> {
    if item.status == 200 || item.status == 201 {
        return match &item.transfer {
            Some(posted)
                if posted.id == transfer.id
                    && posted.amount == transfer.amount
                    && posted.from == transfer.from
                    && posted.to == transfer.to =>
            {
                Ok(())
            }
            _ => Err("mismatched_answer".to_owned()),
        };
    }
    Err(match &item.error {
        Some(error) => error.code.clone(),
        None => format!("http_{}", item.status),
    })
}
