//! lossyfs: a FUSE pass-through file system that simulates power loss, for crash tests.
//!
//! Everything under the mount point is passed through to a backing directory at once, so reads
//! see every write, synced or not. Beside that, lossyfs keeps what a disk would still hold after
//! a power cut, and [`Control::cut`] rewrites the backing directory to exactly that image.
//!
//! # The durability model
//!
//! - **File data and size** are durable as of the file's last `fsync` or `fdatasync`, through
//!   any handle on the inode (both are the same here), or a write on a handle opened with
//!   `O_SYNC` / `O_DSYNC`. A cut puts back the content and the size the file had then: writes
//!   since are undone, an extension is truncated away, bytes truncated or punched away return.
//!   A file lossyfs never saw changed is durable as it is.
//! - **Directory entries** (create, mknod, symlink, link, unlink, and a file renamed in or out)
//!   are durable as of the directory's last fsync (`fsyncdir`, i.e. `fsync` on an `O_DIRECTORY`
//!   handle). A file created, its directory fsynced, but itself never fsynced is durable as an
//!   empty file. An unlinked file whose directory was not fsynced comes back with its durable
//!   content. No file fsync ever makes a name durable.
//! - **File rename** is two directory changes: the new name is durable when the target directory
//!   is fsynced, the old name disappears durably when the source directory is. Within one
//!   directory that is one fsync. Across directories, a cut between the two fsyncs leaves the
//!   file under both names (hard links) or, if only the source was fsynced, under neither.
//! - **Directories** (mkdir, rmdir, rename) are placed by their parents: a new directory exists
//!   durably once its parent is fsynced (empty until it is fsynced itself); a removed one goes
//!   durably when its parent is fsynced. A directory cannot have two names, so a directory
//!   rename is durable as soon as *either* the old or the new parent is fsynced (as in a
//!   journaling file system). A directory whose durable parent would not exist is lost.
//! - **Not modelled**: metadata other than names and sizes (mode, owner, times, xattrs) is
//!   durable at once; `sync(2)`/`syncfs(2)` never reach a FUSE file system and make nothing
//!   durable; writes are never torn (a cut never keeps half of a write) and never reordered (a
//!   cut never keeps a later unsynced write and drops an earlier one: all unsynced data of a file
//!   goes). Operations that run concurrently with an `fsync` may or may not be durable after it.
//!
//! # How it is kept
//!
//! An undo record, not a copy: on the first change of a durable byte range since the file's last
//! fsync, lossyfs reads the range's bytes (its pre-image) into memory before letting the write
//! through; appends past the durable size need nothing. An fsync just drops the file's record,
//! so a write-ahead log costs one map look-up per write. Before the first change of a directory
//! since its last fsync, lossyfs notes its durable entries. A file that loses its last live name
//! while a durable entry still names it (or a handle uses it) is kept alive by a hard link in the
//! *attic*, a state directory next to the backing one (same file system), so a cut can link it
//! back. Pre-images are capped at [`model::PREIMAGE_BYTES_MAX`] in all; a write past it fails with
//! EIO and an error log.
//!
//! # Caches
//!
//! No kernel writeback cache, attribute and entry TTL zero, no `keep_cache` on open (the kernel
//! drops a file's page cache at each open). A cut renumbers every inode, so nothing the kernel
//! held before a cut (dentries, inodes, handles) refers to anything after it: such handles answer
//! EIO, such inodes ESTALE.
//!
//! # Faults
//!
//! [`Control::fail_writes`] / [`Control::fail_space`] make every change under a path prefix
//! (relative to the mount root, matched by whole components; the empty prefix matches all) fail
//! with EIO / ENOSPC: write, create, mknod, mkdir, symlink, link, rename and unlink/rmdir (either
//! side), truncate, fallocate, fsync and fsyncdir. Reads still work. [`Control::heal`] clears
//! every fault. A failed fsync makes nothing durable.
//!
//! Never: use the kernel's writeback cache, touch the mount point from inside the file system
//! (it would deadlock), or keep state across mounts (a mount starts with everything durable).

#![forbid(unsafe_code)]

mod control;
mod cut;
mod fs;
mod model;
mod mount;
mod names;
mod ops;
mod unsynced;

pub use control::{request, Command, ControlServer, CONTROL_TIMEOUT};
pub use model::PREIMAGE_BYTES_MAX;
pub use mount::{Control, Mount, MountOptions, Stats};

/// Errors of the library and the control protocol.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file system call outside the FUSE operations failed (setup, cut, control socket).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The arguments cannot work (paths that overlap, a state directory in use, ...).
    #[error("invalid setup: {0}")]
    Setup(String),
    /// A file system operation panicked while holding the model; the model cannot be trusted.
    #[error("the model lock is poisoned: a file system operation panicked")]
    Poisoned,
    /// The control command line is not one lossyfs knows.
    #[error("invalid control command: {0}")]
    Command(String),
    /// The mount process answered with an error.
    #[error("lossyfs answered: {0}")]
    Remote(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
