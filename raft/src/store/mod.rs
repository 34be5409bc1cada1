//! Storage in sled: the Raft log and vote ([`LogStore`]), the state machine ([`StateMachine`])
//! and snapshots. Two sled databases per node: `log/` (trees `log` and `raft_meta`) and
//! `state/` (tree `state`); every value is versioned (`crate::codec`). This layer owns
//! durability: nothing above it calls sled.
//!
//! Why two: the log's flush-and-fsync, paid before every acknowledgement, then writes only log
//! entries, not the state pages the applies dirtied; and the space of purged log entries is
//! reused by later entries instead of sitting between state pages, so with compaction on the
//! log's database stays small. The state database is never fsynced on the write path: after a
//! crash, openraft re-applies from the durable log, and a state behind the persisted snapshot
//! is rebuilt from it (see `StateMachine::open`). A state *ahead* of a log that lost its tail
//! is also sound: it holds only committed entries, and openraft then treats the log as purged
//! up to the applied index.

// openraft's `StorageError` is what the storage traits must return; boxing it here would only
// unbox it again at the trait boundary.
#![allow(clippy::result_large_err)]

mod backup;
mod log;
mod reader;
mod state_machine;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

pub use backup::{Backup, BackupError};
pub use log::LogStore;
pub use reader::{LedgerReader, ReadError, StateSummary};
pub use state_machine::StateMachine;

/// The node's sled databases and their trees.
pub struct Storage {
    log_db: Database,
    state_db: Database,
    dir: PathBuf,
    pub(crate) log: sled::Tree,
    pub(crate) raft_meta: sled::Tree,
    pub(crate) state: sled::Tree,
}

/// sled's caches (state, log); beyond them reads go to disk (sled may exceed them somewhat).
const SLED_CACHE_BYTES: u64 = 256 * 1024 * 1024;
const SLED_LOG_CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// sled's segment size for the state (its default is 512 KiB). Measured with the ledger's write
/// pattern (a transfer record, two history keys and two account updates per transfer, ten
/// transfers per batch, 400,000 transfers): 8 MiB segments take 818 bytes of disk per transfer
/// against 1,277 with the default, at the same speed. sled keeps it in the database's `conf`.
const SLED_STATE_SEGMENT_BYTES: usize = 8 * 1024 * 1024;
/// The log's segments: sled's default; purged entries free whole segments for reuse sooner.
const SLED_LOG_SEGMENT_BYTES: usize = 512 * 1024;

/// One sled database and the file that holds its data.
struct Database {
    db: sled::Db,
    /// Fsynced after each flush (see [`Database::sync`]).
    file: File,
}

impl Database {
    fn open(dir: &Path, cache_bytes: u64, segment_bytes: usize) -> io::Result<Database> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .segment_size(segment_bytes)
            .mode(sled::Mode::HighThroughput)
            // No background flusher: the log flusher flushes (and fsyncs) every group of
            // appends, and state-machine writes need no flush of their own (the log is durable).
            .flush_every_ms(None)
            .open()
            .map_err(io::Error::other)?;
        let file = File::open(dir.join("db"))?;
        Ok(Database { db, file })
    }

    /// sled's `flush` writes its buffers out with `sync_file_range`, which is no barrier against
    /// power loss on Linux, so the data file is also `fdatasync`ed.
    fn sync(&self) -> io::Result<()> {
        self.db.flush().map_err(io::Error::other)?;
        self.file.sync_data()
    }

    fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

impl Storage {
    /// Opens (or creates) the database under `dir`.
    ///
    /// # Errors
    /// When the directory cannot be created or sled cannot open or recover the database.
    pub fn open(dir: &Path) -> io::Result<Storage> {
        std::fs::create_dir_all(dir)?;
        if dir.join("sled").exists() {
            return Err(io::Error::other(format!(
                "{} holds the single-database layout of an older raftpay (sled/); this version \
                 keeps log/ and state/ apart: restore the ledger into a fresh data dir with \
                 `raftpay backup` / `raftpay restore`",
                dir.display()
            )));
        }
        let log_db = Database::open(
            &dir.join("log"),
            SLED_LOG_CACHE_BYTES,
            SLED_LOG_SEGMENT_BYTES,
        )?;
        let state_db = Database::open(
            &dir.join("state"),
            SLED_CACHE_BYTES,
            SLED_STATE_SEGMENT_BYTES,
        )?;
        let log_tree = |name: &str| log_db.db.open_tree(name).map_err(io::Error::other);
        let log = log_tree("log")?;
        let raft_meta = log_tree("raft_meta")?;
        let state = state_db.db.open_tree("state").map_err(io::Error::other)?;
        Ok(Storage {
            log,
            raft_meta,
            state,
            log_db,
            state_db,
            dir: dir.to_path_buf(),
        })
    }

    /// Makes the log and vote written so far durable: what every acknowledgement waits for.
    ///
    /// # Errors
    /// When the flush or the fsync fails; the node must then stop acknowledging writes.
    pub fn sync_log(&self) -> io::Result<()> {
        self.log_db.sync()
    }

    /// Makes the state written so far durable (after a snapshot install or a restore, whose
    /// state the log cannot rebuild).
    ///
    /// # Errors
    /// When the flush or the fsync fails.
    pub fn sync_state(&self) -> io::Result<()> {
        self.state_db.sync()
    }

    /// Makes everything written so far durable.
    ///
    /// # Errors
    /// When a flush or an fsync fails.
    pub fn sync(&self) -> io::Result<()> {
        self.sync_log()?;
        self.sync_state()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes both sled databases occupy on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.log_db.size_on_disk() + self.state_db.size_on_disk()
    }

    /// Bytes the log's database occupies on disk (what compaction bounds).
    pub fn log_size_on_disk(&self) -> u64 {
        self.log_db.size_on_disk()
    }
}

#[cfg(test)]
mod tests;
