//! Storage: the Raft log and vote in the project's own write-ahead log ([`wal`], under `wal/`),
//! the state machine in a sled database (`state/`, tree `state`), and snapshot files
//! (`snapshot/`). Every value is versioned (`crate::codec`). This layer owns durability:
//! nothing above it touches files or sled.
//!
//! Why not sled for the log: sled 0.34 does not make what it flushed recoverable after a power
//! cut. Measured with a file system that drops unsynced writes: nearly every acknowledged
//! transfer was gone, because sled never syncs its `conf` file, its own snapshot files, the
//! blob files it writes for frames over a quarter of a segment, or its directory. The log is
//! what acknowledgements wait for, so it is written and fsynced by code we can read whole.
//!
//! The state database is a cache of the log: it is fsynced only at checkpoints (before a log
//! purge, after a snapshot install or restore, on shutdown), each time with every file and
//! directory sled keeps ([`Database::sync`]), and the log keeps every entry above the last
//! checkpoint. After a crash the state comes back at (or after) its last checkpoint and
//! openraft re-applies the rest from the log; a state *behind* its last recorded checkpoint
//! lost synced data and is refused (`StateMachine::open`).

// openraft's `StorageError` is what the storage traits must return; boxing it here would only
// unbox it again at the trait boundary.
#![allow(clippy::result_large_err)]

mod backup;
mod log;
mod reader;
mod reserve;
mod state_machine;
pub mod wal;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::codec;
use crate::typ::LogId;

pub use backup::{Backup, BackupError, RESTORE_MARKER};
pub use log::LogStore;
pub use reader::{LedgerReader, ReadError, StateSummary};
pub use reserve::{DiskReserve, ReserveLow};
pub use state_machine::{snapshot_data_of, snapshot_verify, StateMachine};

/// The node's write-ahead log and its state database.
pub struct Storage {
    pub(crate) wal: wal::Wal,
    state_db: Database,
    dir: PathBuf,
    pub(crate) state: sled::Tree,
}

/// sled's cache for the state; beyond it reads go to disk (sled may exceed it somewhat).
const SLED_CACHE_BYTES: u64 = 256 * 1024 * 1024;
/// sled's segment size for the state (its default is 512 KiB). Measured with the ledger's write
/// pattern (a transfer record, two history keys and two account updates per transfer, ten
/// transfers per batch, 400,000 transfers): 8 MiB segments take 818 bytes of disk per transfer
/// against 1,277 with the default, at the same speed. sled keeps it in the database's `conf`.
const SLED_STATE_SEGMENT_BYTES: usize = 8 * 1024 * 1024;

/// One sled database and the directory that holds it.
struct Database {
    db: sled::Db,
    dir: PathBuf,
}

impl Database {
    fn open(dir: &Path, cache_bytes: u64, segment_bytes: usize) -> io::Result<Database> {
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .segment_size(segment_bytes)
            .mode(sled::Mode::HighThroughput)
            // No background flusher: the log flusher flushes (and fsyncs) every group of
            // appends, and state-machine writes need no flush of their own (the log is durable).
            .flush_every_ms(None);
        // sled 0.34 panics on some damaged files while it recovers (measured: a flipped byte in
        // `db` can end in "tried to serialize Uninitialized"); that is a refusal, not a crash.
        let db = caught(dir, "open", || config.open())?;
        let database = Database {
            db,
            dir: dir.to_path_buf(),
        };
        // sled writes its `conf` at creation and never syncs it: an empty `conf` after a power
        // cut makes it start over with an empty database.
        database.files_sync()?;
        Ok(database)
    }

    /// Makes everything written so far durable. sled's `flush` writes its buffers out with
    /// `sync_file_range`, which is no barrier against power loss, and sled syncs none of its
    /// other files: so after the flush every regular file sled keeps (`db`, `conf`, its
    /// snapshots `snap.*`, and the blob files of large frames under `blobs/`) is fsynced, then
    /// both directories.
    fn sync(&self) -> io::Result<()> {
        self.db.flush().map_err(io::Error::other)?;
        self.files_sync()
    }

    fn files_sync(&self) -> io::Result<()> {
        let named = |path: &Path, error: io::Error| {
            io::Error::new(error.kind(), format!("{}: {error}", path.display()))
        };
        for dir in [self.dir.clone(), self.dir.join("blobs")] {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => return Err(named(&dir, error)),
            };
            for item in entries {
                let item = item.map_err(|e| named(&dir, e))?;
                if item
                    .file_type()
                    .map_err(|e| named(&item.path(), e))?
                    .is_file()
                {
                    File::open(item.path())
                        .and_then(|file| file.sync_all())
                        .map_err(|e| named(&item.path(), e))?;
                }
            }
            File::open(&dir)
                .and_then(|file| file.sync_all())
                .map_err(|e| named(&dir, e))?;
        }
        // The data dir holds `state/` itself.
        if let Some(parent) = self.dir.parent() {
            File::open(parent)
                .and_then(|file| file.sync_all())
                .map_err(|e| named(parent, e))?;
        }
        Ok(())
    }

    fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

/// Runs a sled call that may panic on damaged files, turning an error or a panic into an error
/// that names `dir` and tells the operator what to do.
fn caught<T>(dir: &Path, what: &str, call: impl FnOnce() -> sled::Result<T>) -> io::Result<T> {
    let corrupt = |detail: String| {
        io::Error::other(format!(
            "{}: the database cannot be read ({what}: {detail}); rebuild this node from its \
             peers (see the README)",
            dir.display()
        ))
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(corrupt(error.to_string())),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(corrupt(format!("sled panicked: {message}")))
        }
    }
}

/// Reads every key and value of `tree`, so that sled checks the checksum of every page the
/// state lives in: a damaged page is found at open, not at the first read that reaches it.
fn tree_verify(dir: &Path, tree: &sled::Tree) -> io::Result<u64> {
    caught(dir, "verify", || {
        let mut pairs = 0u64;
        for item in tree.iter() {
            item?;
            pairs += 1;
        }
        Ok(pairs)
    })
}

impl Storage {
    /// Opens (or creates) the database under `dir`.
    ///
    /// # Errors
    /// When the directory cannot be created or sled cannot open or recover the database.
    pub fn open(dir: &Path) -> io::Result<Storage> {
        let marker = dir.join(backup::RESTORE_MARKER);
        if marker.exists() {
            return Err(io::Error::other(format!(
                "{}: a restore into this data dir did not complete; remove the directory and \
                 run `raftpay restore` again",
                marker.display()
            )));
        }
        Self::open_restoring(dir)
    }

    /// [`Storage::open`] without the check for an unfinished restore: for the restore itself.
    ///
    /// # Errors
    /// As [`Storage::open`].
    pub(crate) fn open_restoring(dir: &Path) -> io::Result<Storage> {
        std::fs::create_dir_all(dir)?;
        for (old, layout) in [
            ("sled", "the single-database layout (sled/)"),
            ("log", "the Raft log in sled (log/)"),
        ] {
            if dir.join(old).exists() {
                return Err(io::Error::other(format!(
                    "{} holds {layout} of an older raftpay; this version keeps the log in its \
                     own write-ahead log (wal/): restore the ledger into a fresh data dir with \
                     `raftpay backup` / `raftpay restore`",
                    dir.display()
                )));
            }
        }
        let wal = wal::Wal::open(&dir.join("wal")).map_err(io::Error::other)?;
        let state_db = Database::open(
            &dir.join("state"),
            SLED_CACHE_BYTES,
            SLED_STATE_SEGMENT_BYTES,
        )?;
        let state_dir = dir.join("state");
        let state = caught(&state_dir, "open tree", || state_db.db.open_tree("state"))?;
        let started = std::time::Instant::now();
        let pairs = tree_verify(&state_dir, &state)?;
        tracing::info!(pairs, elapsed = ?started.elapsed(), "state database read whole");
        Ok(Storage {
            wal,
            state,
            state_db,
            dir: dir.to_path_buf(),
        })
    }

    /// Makes the log and vote written so far durable: what every acknowledgement waits for.
    ///
    /// # Errors
    /// When a write or the fsync failed; the log then refuses every further write.
    pub fn sync_log(&self) -> io::Result<()> {
        self.wal.sync().map_err(io::Error::other)
    }

    /// Makes the state written so far durable (after a snapshot install or a restore, whose
    /// state the log cannot rebuild).
    ///
    /// # Errors
    /// When the flush or an fsync fails.
    pub fn sync_state(&self) -> io::Result<()> {
        self.state_db.sync()
    }

    /// A state checkpoint: makes the state durable and returns the applied id it is durable
    /// at (at least; read before the sync, so applies racing it only add to it).
    ///
    /// # Errors
    /// When the state cannot be read or synced.
    pub(crate) fn state_sync_checkpoint(&self) -> Result<Option<LogId>, wal::WalError> {
        let path = self.dir.join("state");
        let as_wal_error = |error: &dyn std::fmt::Display| wal::WalError::Io {
            path: path.clone(),
            source: io::Error::other(error.to_string()),
        };
        let applied: Option<LogId> = match self
            .state
            .get(reader::KEY_APPLIED)
            .map_err(|e| as_wal_error(&e))?
        {
            Some(bytes) => codec::decode::<Option<LogId>>(&bytes).map_err(|e| as_wal_error(&e))?,
            None => None,
        };
        self.sync_state().map_err(|e| as_wal_error(&e))?;
        Ok(applied)
    }

    /// Makes everything written so far durable, and records the state checkpoint.
    ///
    /// # Errors
    /// When a flush or an fsync fails.
    pub fn sync(&self) -> io::Result<()> {
        self.sync_log()?;
        let durable = self.state_sync_checkpoint().map_err(io::Error::other)?;
        self.wal
            .state_durable_save(durable)
            .map_err(io::Error::other)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes the log and the state database occupy on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.wal.size_on_disk() + self.state_db.size_on_disk()
    }

    /// Bytes the log occupies on disk (what compaction bounds).
    pub fn log_size_on_disk(&self) -> u64 {
        self.wal.size_on_disk()
    }
}

pub use raftpay_api::inspect::LogInspection;

/// Opens the log under `dir` (a node's data directory) and reports what it holds. Opening is
/// what a starting node does: a torn tail is cut, a corrupt record is an error.
///
/// # Errors
/// When the log cannot be opened (missing, unreadable, corrupt).
pub fn log_inspect(dir: &Path) -> Result<LogInspection, wal::WalError> {
    let wal_dir = dir.join("wal");
    if !wal_dir.is_dir() {
        return Err(wal::WalError::Io {
            path: wal_dir,
            source: io::Error::new(io::ErrorKind::NotFound, "no write-ahead log here"),
        });
    }
    let wal = wal::Wal::open(&wal_dir)?;
    let meta = wal.meta();
    let last = wal.last_log_id()?;
    Ok(LogInspection {
        vote_term: meta.vote.map_or(0, |vote| vote.leader_id().term),
        vote_for: meta.vote.and_then(|vote| vote.leader_id().voted_for()),
        vote_committed: meta.vote.is_some_and(|vote| vote.is_committed()),
        last_log_index: last.or(meta.last_purged).map(|id| id.index),
        last_purged_index: meta.last_purged.map(|id| id.index),
        state_durable_index: meta.state_durable.map(|id| id.index),
    })
}

#[cfg(test)]
mod tests;
