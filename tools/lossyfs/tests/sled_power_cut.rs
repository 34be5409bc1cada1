//! The workload lossyfs exists for: sled (as raftpay configures it) in a process that is
//! SIGKILLed, then a power cut. Everything sled flushed and fsynced before the kill must be there
//! after the cut.
//!
//! The writer runs in a child process: this test binary re-executed to run only
//! `sled_writer_child`, which does nothing unless `LOSSYFS_SLED_DIR` is set.

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const CHILD_DIR_ENV: &str = "LOSSYFS_SLED_DIR";
const KEYS_PER_BATCH: u64 = 100;
/// Batches the writer must report durable before it is killed.
const BATCHES_DURABLE_BEFORE_KILL: u64 = 25;
/// The writer stops on its own after this many batches, should the parent never kill it.
const BATCHES_MAX: u64 = 10_000;

fn value_of(key: u64) -> Vec<u8> {
    format!("value-{key}-{}", "x".repeat((key % 200) as usize)).into_bytes()
}

fn sled_open(dir: &Path) -> sled::Db {
    sled::Config::new()
        .path(dir)
        .segment_size(256 * 1024)
        .mode(sled::Mode::HighThroughput)
        .flush_every_ms(None)
        .open()
        .expect("opening sled")
}

/// What raftpay does after `flush` (sled's own flush ends in `sync_file_range`, no barrier):
/// fsync every regular file sled keeps, then the directories.
fn sled_files_sync(dir: &Path) {
    for sub in [dir.to_path_buf(), dir.join("blobs")] {
        let Ok(entries) = std::fs::read_dir(&sub) else {
            continue;
        };
        for entry in entries {
            let entry = entry.expect("entry");
            if entry.file_type().expect("type").is_file() {
                File::open(entry.path())
                    .and_then(|file| file.sync_all())
                    .expect("fsync file");
            }
        }
        File::open(&sub)
            .and_then(|file| file.sync_all())
            .expect("fsync dir");
    }
    if let Some(parent) = dir.parent() {
        File::open(parent)
            .and_then(|file| file.sync_all())
            .expect("fsync parent");
    }
}

#[test]
fn sled_writer_child() {
    // Not a test on its own: the writer process of `sled_flushed_writes_survive_kill_and_cut`.
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    let db = sled_open(dir);
    sled_files_sync(dir);
    let mut stdout = std::io::stdout();
    for batch in 0..BATCHES_MAX {
        for key in batch * KEYS_PER_BATCH..(batch + 1) * KEYS_PER_BATCH {
            db.insert(key.to_be_bytes(), value_of(key)).expect("insert");
        }
        db.flush().expect("flush");
        sled_files_sync(dir);
        // Written to the files by sled's flush, but not fsynced: what a cut must drop.
        for extra in 0..KEYS_PER_BATCH / 2 {
            db.insert(unsynced_key(batch, extra), value_of(extra))
                .expect("insert");
        }
        db.flush().expect("flush");
        writeln!(stdout, "durable {batch}").expect("report");
        stdout.flush().expect("report");
        if batch + 1 >= BATCHES_DURABLE_BEFORE_KILL {
            // Waits for the SIGKILL (the parent never writes to stdin).
            let _ = std::io::stdin().read_line(&mut String::new());
            return;
        }
    }
}

fn unsynced_key(batch: u64, extra: u64) -> String {
    format!("unsynced-{batch:06}-{extra}")
}

#[test]
fn sled_flushed_writes_survive_kill_and_cut() {
    // Goal: sled data flushed and fsynced before a SIGKILL survives a power cut, and sled opens
    // the cut image. Method: a child process writes batches on the mount, reporting each durable
    // one; SIGKILL it mid-stream, cut, reopen sled and check every reported batch.
    let Some(fx) = common::Fixture::start("sled_flushed_writes_survive_kill_and_cut") else {
        return;
    };
    std::fs::create_dir(fx.path("data")).expect("mkdir");
    fx.fsync_dir("");
    let db_dir = fx.path("data/db");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "sled_writer_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, &db_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the writer");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut durable = None;
    // Kept open until the kill: a closed pipe would fail the writer's next report first.
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.expect("writer output");
        if let Some(batch) = line
            .strip_prefix("durable ")
            .and_then(|n| n.parse::<u64>().ok())
        {
            durable = Some(batch);
            if batch + 1 >= BATCHES_DURABLE_BEFORE_KILL {
                break;
            }
        }
    }
    let durable = durable.expect("the writer reported no durable batch");
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
    kill(pid, Signal::SIGKILL).expect("SIGKILL");
    let _ = child.wait();
    drop(lines);
    let stats = fx.mount.stats().expect("stats");
    tracing::info!(durable, %stats, "writer killed");
    assert!(
        stats.bytes_unsynced > 0,
        "the writer left no unsynced data: the cut tests nothing"
    );

    fx.cut();
    let db = sled_open(&db_dir);
    let keys_durable = (durable + 1) * KEYS_PER_BATCH;
    for key in 0..keys_durable {
        let value = db.get(key.to_be_bytes()).expect("get");
        assert_eq!(
            value.as_deref(),
            Some(value_of(key).as_slice()),
            "key {key} of a durable batch"
        );
    }
    // Each batch's unsynced keys became durable with the next batch's fsyncs; the last ones
    // were on disk but never fsynced, and the cut must have dropped them.
    let unsynced_kept = db.scan_prefix("unsynced-").count() as u64;
    tracing::info!(
        keys_durable,
        unsynced_kept,
        keys_total = db.len(),
        "sled reopened after the cut"
    );
    assert_eq!(unsynced_kept, durable * (KEYS_PER_BATCH / 2));
    assert_eq!(db.get(unsynced_key(durable, 0)).expect("get"), None);
}
