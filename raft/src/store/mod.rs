//! Storage in sled: the Raft log and vote ([`LogStore`]), the state machine ([`StateMachine`])
//! and snapshots. One sled database per node with three trees; every value is versioned
//! (`crate::codec`). This layer owns durability: nothing above it calls sled.

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

/// The node's sled database and its trees.
pub struct Storage {
    db: sled::Db,
    /// The file that holds sled's data, fsynced after each flush (see [`Storage::sync`]).
    db_file: File,
    dir: PathBuf,
    pub(crate) log: sled::Tree,
    pub(crate) raft_meta: sled::Tree,
    pub(crate) state: sled::Tree,
}

/// sled's cache; beyond it reads go to disk (sled may exceed it somewhat).
const SLED_CACHE_BYTES: u64 = 256 * 1024 * 1024;

impl Storage {
    /// Opens (or creates) the database under `dir`.
    ///
    /// # Errors
    /// When the directory cannot be created or sled cannot open or recover the database.
    pub fn open(dir: &Path) -> io::Result<Storage> {
        std::fs::create_dir_all(dir)?;
        let sled_dir = dir.join("sled");
        let db = sled::Config::new()
            .path(&sled_dir)
            .cache_capacity(SLED_CACHE_BYTES)
            .mode(sled::Mode::HighThroughput)
            // No background flusher: the log flusher already flushes (and fsyncs) every group of
            // appends, and state-machine writes need no flush of their own (the log is durable).
            .flush_every_ms(None)
            .open()
            .map_err(io::Error::other)?;
        let db_file = File::open(sled_dir.join("db"))?;
        let tree = |name: &str| db.open_tree(name).map_err(io::Error::other);
        Ok(Storage {
            log: tree("log")?,
            raft_meta: tree("raft_meta")?,
            state: tree("state")?,
            db_file,
            dir: dir.to_path_buf(),
            db,
        })
    }

    /// Makes everything written so far durable. sled's `flush` writes its buffers out with
    /// `sync_file_range`, which is no barrier against power loss on Linux, so the data file is
    /// also `fdatasync`ed.
    ///
    /// # Errors
    /// When the flush or the fsync fails; the node must then stop acknowledging writes.
    pub fn sync(&self) -> io::Result<()> {
        self.db.flush().map_err(io::Error::other)?;
        self.db_file.sync_data()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes sled occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests;
