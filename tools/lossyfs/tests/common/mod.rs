//! The shared harness of lossyfs's tests: a mount over a fresh temporary backing directory, and
//! the file calls the tests make through it.
//!
//! Mounting needs root and `/dev/fuse`. Without them a test prints why and returns early, except
//! under CI (`CI=true`), where it fails: CI must never pass by skipping.

#![allow(dead_code)] // Each test binary uses part of the harness.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use lossyfs::Mount;
use tempfile::TempDir;

/// Why FUSE mounts cannot work here, if they cannot.
fn fuse_missing() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        Some("not running as root")
    } else if !Path::new("/dev/fuse").exists() {
        Some("/dev/fuse is missing")
    } else {
        None
    }
}

/// True when the test can mount. Otherwise prints why and returns false, or panics under CI.
///
/// # Panics
/// Under `CI=true` when root or `/dev/fuse` is missing.
pub fn fuse_ready(test: &str) -> bool {
    let Some(reason) = fuse_missing() else {
        return true;
    };
    if std::env::var("CI").is_ok_and(|value| value == "true") {
        panic!("{test}: lossyfs tests need root and /dev/fuse, and CI must run them: {reason}");
    }
    // Straight to the stderr handle: libtest captures `eprintln!` of passing tests.
    let message = format!("{test}: SKIPPED, lossyfs tests need root and /dev/fuse: {reason}\n");
    let _ = std::io::stderr().write_all(message.as_bytes());
    false
}

pub fn tracing_init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,fuser=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A mounted lossyfs over a fresh backing directory. Unmounts before the directories go.
pub struct Fixture {
    // Dropped first: unmount before the temporary directory is removed.
    pub mount: Mount,
    pub backing: PathBuf,
    pub mountpoint: PathBuf,
    _dir: TempDir,
}

impl Fixture {
    /// Mounts, or returns `None` when the test must be skipped (see `fuse_ready`).
    pub fn start(test: &str) -> Option<Fixture> {
        tracing_init();
        if !fuse_ready(test) {
            return None;
        }
        let dir = tempfile::tempdir().expect("temporary directory");
        let backing = dir.path().join("backing");
        let mountpoint = dir.path().join("mnt");
        std::fs::create_dir(&backing).expect("backing directory");
        std::fs::create_dir(&mountpoint).expect("mount point");
        let mount = Mount::start(&backing, &mountpoint).expect("mounting lossyfs");
        Some(Fixture {
            mount,
            backing,
            mountpoint,
            _dir: dir,
        })
    }

    /// `relative` under the mount point.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.mountpoint.join(relative)
    }

    pub fn cut(&self) {
        tracing::info!("power cut");
        self.mount.cut().expect("cut");
    }

    /// Writes `data` to a new (or truncated) file; fsyncs it when `sync`.
    pub fn write(&self, relative: &str, data: &[u8], sync: bool) {
        let mut file = File::create(self.path(relative)).expect("create");
        file.write_all(data).expect("write");
        if sync {
            file.sync_all().expect("fsync");
        }
    }

    /// Appends `data`; fdatasyncs when `sync`.
    pub fn append(&self, relative: &str, data: &[u8], sync: bool) {
        let mut file = OpenOptions::new()
            .append(true)
            .open(self.path(relative))
            .expect("open for append");
        file.write_all(data).expect("append");
        if sync {
            file.sync_data().expect("fdatasync");
        }
    }

    /// fsync on the directory (an O_DIRECTORY handle): its entries become durable.
    pub fn fsync_dir(&self, relative: &str) {
        File::open(self.path(relative))
            .expect("open directory")
            .sync_all()
            .expect("fsyncdir");
    }

    /// The file's content, or `None` if it does not exist.
    pub fn read(&self, relative: &str) -> Option<Vec<u8>> {
        let mut file = match File::open(self.path(relative)) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
            Err(error) => panic!("open {relative}: {error}"),
        };
        let mut data = Vec::new();
        file.read_to_end(&mut data).expect("read");
        Some(data)
    }

    pub fn exists(&self, relative: &str) -> bool {
        self.path(relative).symlink_metadata().is_ok()
    }

    /// Sorted names in a directory of the mount.
    pub fn names(&self, relative: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path(relative))
            .expect("read_dir")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }
}

/// Deterministic bytes for position `index` of stream `seed`.
pub fn pattern(seed: u8, length: usize) -> Vec<u8> {
    (0..length)
        .map(|index| seed.wrapping_add((index % 251) as u8))
        .collect()
}
