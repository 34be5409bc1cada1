//! Mounting and unmounting, the state shared by the FUSE threads and the controls, and the
//! control API (`cut`, faults, `stats`).
//!
//! Owns the lifetime of the mount and of the state directory. Must never leave a mount behind
//! on a normal exit: `Drop` unmounts (lazily if the mount is busy).

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use fuser::{Errno, MountOption, SessionACL};

use crate::control::Command;
use crate::fs::LossyFs;
use crate::model::{Fault, Model, ROOT};
use crate::Error;

/// Marks a state directory as lossyfs's own, so a restart may wipe it.
const STATE_MARKER: &str = "lossyfs-state";
/// FUSE worker threads by default: an fsync in flight must not stall reads and writes.
const THREADS_DEFAULT: usize = 4;

/// The state every FUSE thread and the controls share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Each FUSE operation holds it shared for its whole length; a cut holds it exclusive, so no
    /// operation is ever half done across a cut.
    gate: RwLock<()>,
    model: Mutex<Model>,
    pub(crate) sync_backing: bool,
    pub(crate) writes: AtomicU64,
    pub(crate) fsyncs: AtomicU64,
    pub(crate) cuts: AtomicU64,
}

impl Shared {
    pub(crate) fn gate(&self) -> Result<RwLockReadGuard<'_, ()>, Errno> {
        self.gate.read().map_err(|_| Errno::EIO)
    }

    pub(crate) fn gate_exclusive(&self) -> Result<RwLockWriteGuard<'_, ()>, Error> {
        self.gate.write().map_err(|_| Error::Poisoned)
    }

    /// The model; a poisoned lock (a panic mid-operation) fails every later operation with EIO.
    pub(crate) fn model(&self) -> Result<MutexGuard<'_, Model>, Errno> {
        self.model.lock().map_err(|_| {
            tracing::error!("model lock poisoned: failing the operation");
            Errno::EIO
        })
    }

    pub(crate) fn model_for_control(&self) -> Result<MutexGuard<'_, Model>, Error> {
        self.model.lock().map_err(|_| Error::Poisoned)
    }
}

/// How to mount; `Default` suits tests.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Where lossyfs keeps its attic; must be on the backing directory's file system and is
    /// wiped at start. Default: `.<backing name>.lossyfs` beside the backing directory.
    pub state_dir: Option<PathBuf>,
    /// Pass fsync and fsyncdir through to the backing file system, so timings stay those of the
    /// disk below (default `true`). The model does not depend on it.
    pub sync_backing: bool,
    /// FUSE worker threads (default 4).
    pub threads: usize,
    /// Let users other than the mounting one use the mount (`allow_other`).
    pub allow_other: bool,
}

impl Default for MountOptions {
    fn default() -> MountOptions {
        MountOptions {
            state_dir: None,
            sync_backing: true,
            threads: THREADS_DEFAULT,
            allow_other: false,
        }
    }
}

/// Counters reported by `stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Write operations passed through since the mount.
    pub writes: u64,
    /// fsync, fdatasync and fsyncdir operations since the mount.
    pub fsyncs: u64,
    /// Bytes written since their file's last fsync (what a cut would drop, at most).
    pub bytes_unsynced: u64,
    /// Bytes of pre-images held in memory.
    pub preimage_bytes: u64,
    /// Files with unsynced data or size.
    pub files_unsynced: u64,
    /// Directories with unsynced entries.
    pub dirs_unsynced: u64,
    /// Cuts done since the mount.
    pub cuts: u64,
    /// Faults in force.
    pub faults: u64,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "writes={} fsyncs={} bytes_unsynced={} preimage_bytes={} files_unsynced={} \
             dirs_unsynced={} cuts={} faults={}",
            self.writes,
            self.fsyncs,
            self.bytes_unsynced,
            self.preimage_bytes,
            self.files_unsynced,
            self.dirs_unsynced,
            self.cuts,
            self.faults
        )
    }
}

/// A cheap handle on a mount's controls, for the control socket or another thread.
#[derive(Debug, Clone)]
pub struct Control {
    shared: Arc<Shared>,
}

impl Control {
    /// Power cut: rewrites the backing directory to the durable image and drops every unsynced
    /// change. Returns once done; open handles become stale (EIO).
    ///
    /// # Errors
    /// If a backing file system call fails mid-way (the backing directory is then in between:
    /// unmount and start over) or the model is poisoned.
    pub fn cut(&self) -> Result<(), Error> {
        self.shared.cut()
    }

    /// Makes every change under `prefix` fail with EIO until `heal`.
    ///
    /// # Errors
    /// If `prefix` leaves the mount (`..`) or the model is poisoned.
    pub fn fail_writes(&self, prefix: impl AsRef<Path>) -> Result<(), Error> {
        self.fault_add(prefix.as_ref(), Errno::EIO)
    }

    /// Makes every change under `prefix` fail with ENOSPC until `heal`.
    ///
    /// # Errors
    /// If `prefix` leaves the mount (`..`) or the model is poisoned.
    pub fn fail_space(&self, prefix: impl AsRef<Path>) -> Result<(), Error> {
        self.fault_add(prefix.as_ref(), Errno::ENOSPC)
    }

    fn fault_add(&self, prefix: &Path, errno: Errno) -> Result<(), Error> {
        let prefix = prefix_normalize(prefix)?;
        tracing::info!(prefix = %prefix.display(), errno = errno.code(), "fault injected");
        self.shared
            .model_for_control()?
            .faults
            .push(Fault { prefix, errno });
        Ok(())
    }

    /// Clears every fault.
    ///
    /// # Errors
    /// If the model is poisoned.
    pub fn heal(&self) -> Result<(), Error> {
        self.shared.model_for_control()?.faults.clear();
        tracing::info!("faults healed");
        Ok(())
    }

    /// The counters.
    ///
    /// # Errors
    /// If the model is poisoned.
    pub fn stats(&self) -> Result<Stats, Error> {
        let model = self.shared.model_for_control()?;
        let (files_unsynced, dirs_unsynced) = model.dirty_counts();
        Ok(Stats {
            writes: self.shared.writes.load(Ordering::Relaxed),
            fsyncs: self.shared.fsyncs.load(Ordering::Relaxed),
            bytes_unsynced: model.bytes_unsynced,
            preimage_bytes: model.preimage_bytes,
            files_unsynced,
            dirs_unsynced,
            cuts: self.shared.cuts.load(Ordering::Relaxed),
            faults: model.faults.len() as u64,
        })
    }

    /// Runs one control command and returns the text of its answer (`ok`, or the stats line).
    ///
    /// # Errors
    /// As the command's own method.
    pub fn execute(&self, command: &Command) -> Result<String, Error> {
        match command {
            Command::Cut => self.cut().map(|()| "ok".to_owned()),
            Command::FailWrites(prefix) => self.fail_writes(prefix).map(|()| "ok".to_owned()),
            Command::FailSpace(prefix) => self.fail_space(prefix).map(|()| "ok".to_owned()),
            Command::Heal => self.heal().map(|()| "ok".to_owned()),
            Command::Stats => self.stats().map(|stats| stats.to_string()),
        }
    }
}

/// A path prefix relative to the mount root, by whole components; refuses `..`.
fn prefix_normalize(prefix: &Path) -> Result<PathBuf, Error> {
    let mut normal = PathBuf::new();
    for component in prefix.components() {
        match component {
            Component::Normal(name) => normal.push(name),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(Error::Command(format!(
                    "prefix {} leaves the mount",
                    prefix.display()
                )));
            }
        }
    }
    Ok(normal)
}

/// A mounted lossyfs. Dropping it unmounts.
#[derive(Debug)]
pub struct Mount {
    control: Control,
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
    state_dir: PathBuf,
}

impl Mount {
    /// Mounts `backing` at `mountpoint` with default options.
    ///
    /// # Errors
    /// See [`Mount::start_with`].
    pub fn start(backing: impl AsRef<Path>, mountpoint: impl AsRef<Path>) -> Result<Mount, Error> {
        Mount::start_with(backing, mountpoint, &MountOptions::default())
    }

    /// Mounts `backing` at `mountpoint`. Everything already in `backing` counts as durable. A
    /// stale FUSE mount left at `mountpoint` by a killed lossyfs is detached first.
    ///
    /// # Errors
    /// If a directory is missing, the paths overlap, the state directory is on another file
    /// system or is not lossyfs's, or the mount fails (not root, no `/dev/fuse`).
    pub fn start_with(
        backing: impl AsRef<Path>,
        mountpoint: impl AsRef<Path>,
        options: &MountOptions,
    ) -> Result<Mount, Error> {
        let backing = std::fs::canonicalize(backing.as_ref()).map_err(|e| {
            Error::io(
                format!("backing directory {}", backing.as_ref().display()),
                e,
            )
        })?;
        let mountpoint = mountpoint_prepare(mountpoint.as_ref())?;
        if mountpoint.starts_with(&backing) || backing.starts_with(&mountpoint) {
            return Err(Error::Setup(format!(
                "mount point {} and backing directory {} overlap",
                mountpoint.display(),
                backing.display()
            )));
        }
        let state_dir = match &options.state_dir {
            Some(dir) => dir.clone(),
            None => state_dir_default(&backing)?,
        };
        state_dir_prepare(&state_dir, &backing)?;
        let model = Model::new(backing.clone(), &state_dir, ROOT + 1)
            .map_err(|e| Error::io("backing directory", e))?;
        let shared = Arc::new(Shared {
            gate: RwLock::new(()),
            model: Mutex::new(model),
            sync_backing: options.sync_backing,
            writes: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
        });
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            MountOption::FSName("lossyfs".to_owned()),
            MountOption::DefaultPermissions,
        ];
        config.acl = if options.allow_other {
            SessionACL::All
        } else {
            SessionACL::Owner
        };
        config.n_threads = Some(options.threads.max(1));
        let filesystem = LossyFs::new(Arc::clone(&shared));
        let session = fuser::spawn_mount(filesystem, &mountpoint, &config)
            .map_err(|e| Error::io(format!("mounting at {}", mountpoint.display()), e))?;
        tracing::info!(backing = %backing.display(), mountpoint = %mountpoint.display(), "mounted");
        Ok(Mount {
            control: Control { shared },
            session: Some(session),
            mountpoint,
            state_dir,
        })
    }

    /// The controls, to hand to a control server or another thread.
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// See [`Control::cut`].
    ///
    /// # Errors
    /// See [`Control::cut`].
    pub fn cut(&self) -> Result<(), Error> {
        self.control.cut()
    }

    /// See [`Control::fail_writes`].
    ///
    /// # Errors
    /// See [`Control::fail_writes`].
    pub fn fail_writes(&self, prefix: impl AsRef<Path>) -> Result<(), Error> {
        self.control.fail_writes(prefix)
    }

    /// See [`Control::fail_space`].
    ///
    /// # Errors
    /// See [`Control::fail_space`].
    pub fn fail_space(&self, prefix: impl AsRef<Path>) -> Result<(), Error> {
        self.control.fail_space(prefix)
    }

    /// See [`Control::heal`].
    ///
    /// # Errors
    /// See [`Control::heal`].
    pub fn heal(&self) -> Result<(), Error> {
        self.control.heal()
    }

    /// See [`Control::stats`].
    ///
    /// # Errors
    /// See [`Control::stats`].
    pub fn stats(&self) -> Result<Stats, Error> {
        self.control.stats()
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// False once the FUSE session ended (someone unmounted it from outside).
    pub fn is_running(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|session| !session.guard.is_finished())
    }

    /// Unmounts and removes the state directory. What is in the backing directory stays as it
    /// is (like a clean shutdown: nothing is dropped).
    ///
    /// # Errors
    /// If the state directory cannot be removed.
    pub fn unmount(mut self) -> Result<(), Error> {
        self.unmount_inner();
        std::fs::remove_dir_all(&self.state_dir).map_err(|e| {
            Error::io(
                format!("removing state directory {}", self.state_dir.display()),
                e,
            )
        })
    }

    fn unmount_inner(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        if let Err(error) = session.umount_and_join() {
            tracing::warn!(%error, mountpoint = %self.mountpoint.display(), "unmount failed; detaching lazily");
            if let Err(error) =
                nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH)
            {
                tracing::error!(%error, mountpoint = %self.mountpoint.display(), "lazy unmount failed");
            }
        }
        tracing::info!(mountpoint = %self.mountpoint.display(), "unmounted");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.session.is_some() {
            self.unmount_inner();
            if let Err(error) = std::fs::remove_dir_all(&self.state_dir) {
                tracing::warn!(%error, state_dir = %self.state_dir.display(), "could not remove state directory");
            }
        }
    }
}

/// Canonical mount point; detaches a stale FUSE mount ("transport endpoint is not connected")
/// left by a lossyfs that was killed.
fn mountpoint_prepare(mountpoint: &Path) -> Result<PathBuf, Error> {
    if let Err(error) = std::fs::metadata(mountpoint) {
        if error.raw_os_error() == Some(nix::libc::ENOTCONN) {
            tracing::warn!(mountpoint = %mountpoint.display(), "detaching a stale FUSE mount");
            nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_DETACH)
                .map_err(|e| Error::io("detaching a stale mount", e.into()))?;
        }
    }
    std::fs::canonicalize(mountpoint)
        .map_err(|e| Error::io(format!("mount point {}", mountpoint.display()), e))
}

fn state_dir_default(backing: &Path) -> Result<PathBuf, Error> {
    let (Some(parent), Some(name)) = (backing.parent(), backing.file_name()) else {
        return Err(Error::Setup(
            "the backing directory has no parent: give a state directory".to_owned(),
        ));
    };
    let mut state_name = std::ffi::OsString::from(".");
    state_name.push(name);
    state_name.push(".lossyfs");
    Ok(parent.join(state_name))
}

/// Creates an empty state directory (wiping one lossyfs left behind) with `attic/` and `stage/`,
/// on the backing directory's file system (hard links and renames cross between them).
fn state_dir_prepare(state_dir: &Path, backing: &Path) -> Result<(), Error> {
    let context = |what: &str| format!("{what} {}", state_dir.display());
    if state_dir.exists() {
        let ours = state_dir.join(STATE_MARKER).exists();
        let empty = std::fs::read_dir(state_dir)
            .map_err(|e| Error::io(context("reading state directory"), e))?
            .next()
            .is_none();
        if !ours && !empty {
            return Err(Error::Setup(format!(
                "state directory {} is not empty and not lossyfs's; refusing to wipe it",
                state_dir.display()
            )));
        }
        std::fs::remove_dir_all(state_dir)
            .map_err(|e| Error::io(context("wiping state directory"), e))?;
    }
    for sub in ["attic", "stage"] {
        std::fs::create_dir_all(state_dir.join(sub))
            .map_err(|e| Error::io(context("creating"), e))?;
    }
    std::fs::write(
        state_dir.join(STATE_MARKER),
        b"lossyfs state directory; wiped at mount\n",
    )
    .map_err(|e| Error::io(context("marking"), e))?;
    let state_dev = std::fs::metadata(state_dir)
        .map_err(|e| Error::io(context("stat"), e))?
        .dev();
    let backing_dev = std::fs::metadata(backing)
        .map_err(|e| Error::io("stat backing", e))?
        .dev();
    if state_dev != backing_dev {
        return Err(Error::Setup(format!(
            "state directory {} is not on the backing directory's file system",
            state_dir.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::prefix_normalize;
    use std::path::{Path, PathBuf};

    #[test]
    fn prefixes_are_relative_and_may_not_leave_the_mount() {
        assert_eq!(
            prefix_normalize(Path::new("/a/./b/")).ok(),
            Some(PathBuf::from("a/b"))
        );
        assert_eq!(prefix_normalize(Path::new("")).ok(), Some(PathBuf::new()));
        assert!(prefix_normalize(Path::new("a/../b")).is_err());
    }
}
