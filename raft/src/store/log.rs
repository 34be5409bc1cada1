//! The Raft log and vote in sled, durable before acknowledged.
//!
//! `append` writes the entries into sled at once (so they are readable) and hands the completion
//! callback to the flusher thread. The flusher takes every request queued behind the first, pays
//! one `flush` + `fsync` for all of them (group commit), then completes their callbacks in order.
//! `save_vote`, `truncate` and `purge` wait for a flush barrier before they return.
//! This module must never acknowledge an append before its bytes are on disk.

use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, RaftTypeConfig};
use tokio::sync::{mpsc, oneshot};

use crate::codec;
use crate::store::Storage;
use crate::typ::{Entry, LogId, StorageError, TypeConfig, Vote};

const KEY_VOTE: &[u8] = b"vote";
const KEY_PURGED: &[u8] = b"last_purged";
const KEY_COMMITTED: &[u8] = b"committed";
/// How many flush requests may wait for the flusher before `append` waits too.
const FLUSH_QUEUE_MAX: usize = 4096;

enum FlushRequest {
    Append(LogFlushed<TypeConfig>),
    Barrier(oneshot::Sender<io::Result<()>>),
}

/// The log store. Cloning shares the same trees and flusher.
#[derive(Clone)]
pub struct LogStore {
    storage: Arc<Storage>,
    flush_tx: mpsc::Sender<FlushRequest>,
}

fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn index_of(key: &[u8]) -> u64 {
    let bytes: [u8; 8] = key
        .try_into()
        .expect("log keys are 8 bytes: we only write those");
    u64::from_be_bytes(bytes)
}

fn io_error(error: impl std::fmt::Display) -> io::Error {
    io::Error::other(error.to_string())
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
        Ok(LogStore { storage, flush_tx })
    }

    /// Waits until everything written so far is on disk.
    async fn flush_barrier(&self) -> io::Result<()> {
        let (done_tx, done_rx) = oneshot::channel();
        self.flush_tx
            .send(FlushRequest::Barrier(done_tx))
            .await
            .map_err(|_| io_error("log flusher stopped"))?;
        done_rx.await.map_err(|_| io_error("log flusher stopped"))?
    }

    fn meta_get<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        let read_error = |e: &dyn std::fmt::Display| {
            StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Read, io_error(e))
        };
        match self
            .storage
            .raft_meta
            .get(key)
            .map_err(|e| read_error(&e))?
        {
            Some(bytes) => codec::decode(&bytes).map(Some).map_err(|e| read_error(&e)),
            None => Ok(None),
        }
    }

    fn meta_put<T: serde::Serialize>(
        &self,
        key: &[u8],
        value: &T,
        subject: ErrorSubject<u64>,
    ) -> Result<(), StorageError> {
        let bytes = codec::encode(value).map_err(|e| {
            StorageError::from_io_error(subject.clone(), ErrorVerb::Write, io_error(e))
        })?;
        self.storage
            .raft_meta
            .insert(key, bytes)
            .map_err(|e| StorageError::from_io_error(subject, ErrorVerb::Write, io_error(e)))?;
        Ok(())
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId>, StorageError> {
        let last = self.storage.log.last().map_err(|e| {
            StorageError::from_io_error(ErrorSubject::Logs, ErrorVerb::Read, io_error(e))
        })?;
        match last {
            Some((_, bytes)) => {
                let entry: Entry = codec::decode(&bytes).map_err(|e| {
                    StorageError::from_io_error(ErrorSubject::Logs, ErrorVerb::Read, io_error(e))
                })?;
                Ok(Some(entry.log_id))
            }
            None => Ok(None),
        }
    }

    /// Removes the log entries whose keys fall in `range`, in one batch (not yet flushed).
    fn remove_range(&self, range: impl std::ops::RangeBounds<[u8; 8]>) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for key in self.storage.log.range(range).keys() {
            batch.remove(key.map_err(|e| logs_write_error(&e))?);
        }
        self.storage
            .log
            .apply_batch(batch)
            .map_err(|e| logs_write_error(&e))
    }

    /// The last committed index openraft told us of (0 before any).
    pub fn committed_index(&self) -> u64 {
        self.meta_get::<Option<LogId>>(KEY_COMMITTED)
            .ok()
            .flatten()
            .flatten()
            .map_or(0, |id| id.index)
    }

    /// True when nothing was ever stored: no vote, no log, no purge marker.
    ///
    /// # Errors
    /// When sled cannot be read.
    pub fn is_pristine(&self) -> Result<bool, StorageError> {
        let vote: Option<Vote> = self.meta_get(KEY_VOTE)?;
        let purged: Option<LogId> = self.meta_get(KEY_PURGED)?;
        Ok(vote.is_none() && purged.is_none() && self.storage.log.is_empty())
    }
}

/// The flusher: one flush + fsync for every request queued behind the first, then the callbacks
/// in order. Ends when every sender is gone.
fn flusher_run(storage: &Storage, mut flush_rx: mpsc::Receiver<FlushRequest>) {
    let mut pending = Vec::new();
    while let Some(first) = flush_rx.blocking_recv() {
        pending.push(first);
        while let Ok(next) = flush_rx.try_recv() {
            pending.push(next);
        }
        let result = storage.sync_log();
        if let Err(error) = &result {
            tracing::error!(%error, "log flush failed; the node cannot acknowledge writes");
        }
        for request in pending.drain(..) {
            let outcome = match &result {
                Ok(()) => Ok(()),
                Err(error) => Err(io_error(error)),
            };
            match request {
                FlushRequest::Append(callback) => callback.log_io_completed(outcome),
                // The waiter may have given up; nothing to do then.
                FlushRequest::Barrier(done_tx) => drop(done_tx.send(outcome)),
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let read_error = |e: &dyn std::fmt::Display| {
            StorageError::from_io_error(ErrorSubject::Logs, ErrorVerb::Read, io_error(e))
        };
        let start = match range.start_bound() {
            std::ops::Bound::Included(&i) => i,
            std::ops::Bound::Excluded(&i) => i.saturating_add(1),
            std::ops::Bound::Unbounded => 0,
        };
        let mut entries = Vec::new();
        for item in self.storage.log.range(log_key(start)..) {
            let (key, bytes) = item.map_err(|e| read_error(&e))?;
            if !range.contains(&index_of(&key)) {
                break;
            }
            entries.push(codec::decode::<Entry>(&bytes).map_err(|e| read_error(&e))?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.meta_get(KEY_PURGED)?;
        let last_log_id = self.last_entry_log_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.meta_put(KEY_VOTE, vote, ErrorSubject::Vote)?;
        self.flush_barrier()
            .await
            .map_err(|e| StorageError::from_io_error(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.meta_get(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not flushed on its own: losing it only means re-applying from the last applied index.
        self.meta_put(KEY_COMMITTED, &committed, ErrorSubject::Store)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.meta_get::<Option<LogId>>(KEY_COMMITTED)?.flatten())
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
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes = codec::encode(&entry).map_err(|e| logs_write_error(&e))?;
            batch.insert(&log_key(entry.log_id.index), bytes);
        }
        self.storage
            .log
            .apply_batch(batch)
            .map_err(|e| logs_write_error(&e))?;
        if cfg!(feature = "unsafe-ack-before-flush") {
            // Negative control for the chaos suite ONLY: acknowledges entries that may still be
            // in memory. The kill-all scenario must catch the loss this causes.
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        self.flush_tx
            .send(FlushRequest::Append(callback))
            .await
            .map_err(|_| logs_write_error(&"log flusher stopped"))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "truncate log from");
        self.remove_range(log_key(log_id.index)..)?;
        self.flush_barrier().await.map_err(|e| logs_write_error(&e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "purge log up to");
        // What the purged entries built must outlive them. After a snapshot the snapshot file
        // already holds it; but openraft also purges up to the applied index when the log lost
        // its tail in a crash while the state kept it, and then only the state holds those
        // entries. Purges are rare: make the state durable first, always.
        let storage = Arc::clone(&self.storage);
        tokio::task::spawn_blocking(move || storage.sync_state())
            .await
            .map_err(|e| logs_write_error(&io_error(e)))?
            .map_err(|e| logs_write_error(&e))?;
        // The marker first: a crash between the two leaves entries below the marker, which
        // readers never ask for; never the reverse (a gap with no marker).
        self.meta_put(KEY_PURGED, &log_id, ErrorSubject::Logs)?;
        self.flush_barrier()
            .await
            .map_err(|e| logs_write_error(&e))?;
        self.remove_range(..=log_key(log_id.index))?;
        self.flush_barrier().await.map_err(|e| logs_write_error(&e))
    }
}
