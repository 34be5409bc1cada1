//! Measures what lossyfs costs on an fsync-heavy workload: the same small writes and fsyncs
//! straight on the backing directory, then through a lossyfs mount (with fsync passed through,
//! the default, and without).
//!
//! Run as root: `cargo run -p lossyfs --release --example fsync_overhead [OPERATIONS]`.
//! Prints one line per workload and mode: operations per second and the ratio to direct.

#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use lossyfs::{Mount, MountOptions};

const OPERATIONS_DEFAULT: u32 = 5000;
const RECORD_BYTES: usize = 128;
const PAGE_BYTES: usize = 4096;

/// A write-ahead log: append a record, fdatasync after every one.
fn wal_each(dir: &Path, operations: u32) -> anyhow::Result<Duration> {
    let mut log = File::create(dir.join("wal-each"))?;
    let record = [7u8; RECORD_BYTES];
    let started = Instant::now();
    for _ in 0..operations {
        log.write_all(&record)?;
        log.sync_data()?;
    }
    Ok(started.elapsed())
}

/// Group commit: four appends per fdatasync.
fn wal_grouped(dir: &Path, operations: u32) -> anyhow::Result<Duration> {
    let mut log = File::create(dir.join("wal-grouped"))?;
    let record = [7u8; RECORD_BYTES];
    let started = Instant::now();
    for index in 0..operations {
        log.write_all(&record)?;
        if index % 4 == 3 {
            log.sync_data()?;
        }
    }
    Ok(started.elapsed())
}

/// In-place page rewrites of a durable 4 MiB file, fsync after each (every write needs a
/// pre-image: the worst case for lossyfs).
fn page_rewrite(dir: &Path, operations: u32) -> anyhow::Result<Duration> {
    let path = dir.join("pages");
    let pages = 1024u64;
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)?;
    file.set_len(pages * PAGE_BYTES as u64)?;
    file.sync_all()?;
    let page = [9u8; PAGE_BYTES];
    let started = Instant::now();
    for index in 0..u64::from(operations) {
        let offset = (index * 7919 % pages) * PAGE_BYTES as u64;
        file.write_all_at(&page, offset)?;
        file.sync_data()?;
    }
    Ok(started.elapsed())
}

type Workload = fn(&Path, u32) -> anyhow::Result<Duration>;

fn main() -> anyhow::Result<()> {
    let operations = match std::env::args().nth(1) {
        Some(text) => text.parse().context("OPERATIONS must be a number")?,
        None => OPERATIONS_DEFAULT,
    };
    let workloads: [(&str, Workload); 3] = [
        ("wal append+fdatasync", wal_each),
        ("wal 4 appends/fdatasync", wal_grouped),
        ("4k rewrite+fdatasync", page_rewrite),
    ];
    let dir = tempfile::tempdir_in("/var/tmp").context("temporary directory")?;
    let backing = dir.path().join("backing");
    let mountpoint = dir.path().join("mnt");
    std::fs::create_dir(&backing)?;
    std::fs::create_dir(&mountpoint)?;
    println!("operations per workload: {operations}");
    for (name, workload) in workloads {
        let direct = workload(&backing, operations)?;
        let mut line = format!(
            "{name:<26} direct {:>8.0} op/s",
            f64::from(operations) / direct.as_secs_f64()
        );
        for sync_backing in [true, false] {
            let options = MountOptions {
                sync_backing,
                ..MountOptions::default()
            };
            let mount = Mount::start_with(&backing, &mountpoint, &options).context("mounting")?;
            let through = workload(&mountpoint, operations)?;
            mount.unmount().context("unmounting")?;
            let label = if sync_backing {
                "lossyfs"
            } else {
                "lossyfs(no-sync)"
            };
            line.push_str(&format!(
                " | {label} {:>8.0} op/s ({:.2}x time)",
                f64::from(operations) / through.as_secs_f64(),
                through.as_secs_f64() / direct.as_secs_f64()
            ));
        }
        println!("{line}");
    }
    Ok(())
}
