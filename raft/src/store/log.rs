//! openraft's log storage over the write-ahead log ([`crate::store::wal`]): durable before
//! acknowledged.
//!
//! `append` writes the entries into the active segment at once (so they are readable) and hands
//! the completion callback to the flusher thread. The flusher takes every request queued behind
//! the first, pays one `fdatasync` for all of them (group commit), then completes their
//! callbacks in order. `save_vote`, `truncate` and `purge` are durable before they return (on a
//! blocking thread: each is a few fsyncs).
//! This module must never acknowledge an append before its bytes are on disk.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, PoisonError};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, RaftTypeConfig};
use tokio::sync::mpsc;

use crate::store::wal::WalError;
use crate::store::Storage;
use crate::typ::{Entry, LogId, StorageError, TypeConfig, Vote};

/// How many flush requests may wait for the flusher before `append` waits too.
const FLUSH_QUEUE_MAX: usize = 4096;

/// An append waiting for its entries to be durable.
/// `unsafe-ack-before-flush` only: how long after the acknowledgement the fsync comes.
const UNSAFE_FLUSH_DELAY: std::time::Duration = std::time::Duration::from_millis(50);

/// A flush to run, and the callback to complete after it (`None`: already acknowledged, in the
/// `unsafe-ack-before-flush` negative control).
struct FlushRequest(Option<LogFlushed<TypeConfig>>);

/// The log store. Cloning shares the same log, flusher and committed id.
#[derive(Clone)]
pub struct LogStore {
    storage: Arc<Storage>,
    flush_tx: mpsc::Sender<FlushRequest>,
    /// The last committed id openraft told us of. Kept in memory only: after a restart the
    /// leader tells it again, and the state machine knows what it applied.
    committed: Arc<Mutex<Option<LogId>>>,
    /// Whether openraft has read (or saved) the vote since the open (see `read_vote`).
    vote_read_since_open: Arc<std::sync::atomic::AtomicBool>,
}

fn io_error(error: impl std::fmt::Display) -> io::Error {
    io::Error::other(error.to_string())
}

fn wal_error(subject: ErrorSubject<u64>, verb: ErrorVerb, error: &WalError) -> StorageError {
    StorageError::from_io_error(subject, verb, io_error(error))
}

fn logs_write_error(error: &dyn std::fmt::Display) -> StorageError {
    StorageError::from_io_error(ErrorSubject::Logs, ErrorVerb::Write, io_error(error))
}

impl LogStore {
    /// Opens the log in `storage` and starts its flusher thread, which ends when the last clone
    /// of the store is dropped.
    ///
    /// # Errors
    /// When the flusher thread cannot be spawned.
    pub fn open(storage: Arc<Storage>) -> io::Result<Self> {
        let (flush_tx, flush_rx) = mpsc::channel(FLUSH_QUEUE_MAX);
        let flusher_storage = Arc::clone(&storage);
        std::thread::Builder::new()
            .name("raftpay-log-flusher".into())
            .spawn(move || flusher_run(&flusher_storage, flush_rx))?;
        Ok(LogStore {
            storage,
            flush_tx,
            committed: Arc::default(),
            vote_read_since_open: Arc::default(),
        })
    }

    /// Runs blocking log work (metadata replacement with its fsyncs) off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        subject: ErrorSubject<u64>,
        work: impl FnOnce(&Storage) -> Result<T, WalError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let storage = Arc::clone(&self.storage);
        tokio::task::spawn_blocking(move || work(&storage))
            .await
            .map_err(|e| {
                StorageError::from_io_error(subject.clone(), ErrorVerb::Write, io_error(e))
            })?
            .map_err(|e| wal_error(subject, ErrorVerb::Write, &e))
    }

    /// The last committed index openraft told us of (0 before any, and after a restart until
    /// the leader tells it again).
    pub fn committed_index(&self) -> u64 {
        self.committed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map_or(0, |id| id.index)
    }

    /// True when nothing was ever stored: no vote, no log, no purge marker.
    ///
    /// # Errors
    /// Never today; kept fallible for storage that must read to know.
    pub fn is_pristine(&self) -> Result<bool, StorageError> {
        let meta = self.storage.wal.meta();
        Ok(meta.vote.is_none() && meta.last_purged.is_none() && self.storage.wal.is_empty())
    }
}

/// The flusher: one fdatasync for every request queued behind the first, then the callbacks
/// in order. Ends when every sender is gone.
fn flusher_run(storage: &Storage, mut flush_rx: mpsc::Receiver<FlushRequest>) {
    let mut pending = Vec::new();
    while let Some(first) = flush_rx.blocking_recv() {
        pending.push(first);
        while let Ok(next) = flush_rx.try_recv() {
            pending.push(next);
        }
        let result = crate::fault::check(crate::fault::FaultPoint::LogSync)
            .and_then(|()| storage.sync_log());
        if let Err(error) = &result {
            tracing::error!(%error, "log flush failed; the node cannot acknowledge writes");
        }
        for request in pending.drain(..) {
            let outcome = match &result {
                Ok(()) => Ok(()),
                Err(error) => Err(io_error(error)),
            };
            if let Some(callback) = request.0 {
                callback.log_io_completed(outcome);
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => i.saturating_add(1),
            Bound::Excluded(&i) => i,
            Bound::Unbounded => u64::MAX,
        };
        self.storage
            .wal
            .read(start, end)
            .map_err(|e| wal_error(ErrorSubject::Logs, ErrorVerb::Read, &e))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.storage.wal.meta().last_purged;
        let last_entry = self
            .storage
            .wal
            .last_log_id()
            .map_err(|e| wal_error(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last_entry.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        // A vote saved in this run is current: handed back as it is (see `read_vote`).
        self.vote_read_since_open
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let vote = *vote;
        self.blocking(ErrorSubject::Vote, move |storage| {
            storage.wal.vote_save(&vote)
        })
        .await
    }

    /// The stored vote; at the first read after an open (openraft's startup), a committed vote
    /// is handed back uncommitted. openraft keeps a restarted leader leading in its old term
    /// without a new blank entry, and the committed index is not stored, so that leader's
    /// read index would be the first entry of its term: a linearizable read right after a
    /// restart of every node could return a state from before acknowledged writes (seen in the
    /// kill-all chaos run: stale_read). Uncommitted, the vote still binds this node in its term
    /// (it grants no other candidate of that term, and takes appends from that term's leader),
    /// but the node trusts no leader until it hears from one, and a leader must win a new
    /// election, whose blank entry makes every read wait for all earlier entries.
    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        let vote = self.storage.wal.meta().vote;
        if self
            .vote_read_since_open
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(vote);
        }
        Ok(vote.map(|vote| match vote.leader_id().voted_for() {
            Some(node) if vote.is_committed() => Vote::new(vote.leader_id().term, node),
            _ => vote,
        }))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        *self
            .committed
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(*self
            .committed
            .lock()
            .unwrap_or_else(PoisonError::into_inner))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = <TypeConfig as RaftTypeConfig>::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.storage
            .wal
            .append(entries)
            .map_err(|e| logs_write_error(&e))?;
        if cfg!(feature = "unsafe-ack-before-flush") {
            // Negative control for the chaos suite ONLY: acknowledges entries written but not
            // yet fsynced; the fsync follows `UNSAFE_FLUSH_DELAY` later (a slow disk), too late.
            // A SIGKILL cannot lose them (they are in the page cache); a power cut of every
            // node in that window does, and the chaos negative control must catch it.
            callback.log_io_completed(Ok(()));
            let flush_tx = self.flush_tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(UNSAFE_FLUSH_DELAY).await;
                let _ = flush_tx.send(FlushRequest(None)).await;
            });
            return Ok(());
        }
        self.flush_tx
            .send(FlushRequest(Some(callback)))
            .await
            .map_err(|_| logs_write_error(&"log flusher stopped"))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "truncate log from");
        // Durable before it returns (the WAL syncs the cut file and the directory itself).
        self.blocking(ErrorSubject::Logs, move |storage| {
            storage.wal.truncate(log_id.index)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purge log up to");
        // What the purged entries built must outlive them. After a snapshot the snapshot file
        // already holds it; but openraft also purges up to the applied index when the log is
        // behind the state, and then only the state holds those entries. Purges are rare:
        // make the state durable first, always, and record how far it is durable.
        self.blocking(ErrorSubject::Logs, move |storage| {
            let state_durable = storage.state_sync_checkpoint()?;
            storage.wal.purge(log_id, state_durable)
        })
        .await
    }
}
