//! The write-ahead log on its own: what it syncs is what it reads back after a reopen, a torn
//! last record is cut off, and damage anywhere else refuses the open with the file named.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use openraft::{CommittedLeaderId, EntryPayload};

use super::*;
use crate::ledger::{Command, TransferSpec};
use crate::typ::Proposal;

fn entry(index: u64, transfers: usize) -> Entry {
    let commands = (0..transfers)
        .map(|n| {
            Command::Transfer(TransferSpec {
                id: format!("t-{index}-{n}"),
                from: "bank".into(),
                to: "alice".into(),
                amount: 1 + index,
                memo: None,
            })
        })
        .collect();
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(2, 1), index),
        payload: EntryPayload::Normal(Proposal { commands }),
    }
}

fn entries(range: std::ops::Range<u64>) -> Vec<Entry> {
    range.map(|index| entry(index, 3)).collect()
}

/// Appends `range` five entries at a time (a segment rolls only between appends).
fn append_in_fives(wal: &Wal, range: std::ops::Range<u64>) {
    let mut start = range.start;
    while start < range.end {
        let end = (start + 5).min(range.end);
        wal.append(entries(start..end)).expect("append");
        start = end;
    }
}

fn indexes(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.log_id.index).collect()
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found: Vec<_> = fs::read_dir(dir)
        .expect("read dir")
        .map(|item| item.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    found.sort();
    found
}

#[test]
fn appended_and_synced_entries_come_back_after_a_reopen_across_segments() {
    // Goal: the round trip, with segments rolling. Method: a 1 KiB segment size, 200 entries in
    // batches, sync, reopen, read all and ranges back.
    let dir = tempfile::tempdir().expect("temp dir");
    let wal = Wal::open_with(dir.path(), 1024).expect("open");
    for start in (0..200).step_by(10) {
        wal.append(entries(start..start + 10)).expect("append");
    }
    wal.sync().expect("sync");
    assert!(segments(dir.path()).len() > 3, "segments rolled");
    drop(wal);

    let wal = Wal::open_with(dir.path(), 1024).expect("reopen");
    let all = wal.read(0, u64::MAX).expect("read");
    assert_eq!(all, entries(0..200));
    assert_eq!(indexes(&wal.read(57, 61).expect("range")), [57, 58, 59, 60]);
    assert!(wal.read(200, 300).expect("beyond").is_empty());
    assert_eq!(
        wal.last_log_id().expect("last").map(|id| id.index),
        Some(199)
    );
    wal.append(entries(200..201)).expect("append after reopen");
    assert!(matches!(
        wal.append(entries(202..203)),
        Err(WalError::OutOfOrder {
            index: 202,
            expected: 201
        })
    ));
}

#[test]
fn a_torn_last_record_is_cut_off_and_the_log_goes_on() {
    // Goal: a write cut short at the end (never synced, never acknowledged) does not stop the
    // node. Method: append 10, chop bytes off the end of the file (a short record, then a short
    // header), reopen: 9 entries remain, and the next append continues at index 9.
    for chop in [5u64, 30] {
        let dir = tempfile::tempdir().expect("temp dir");
        let wal = Wal::open(dir.path()).expect("open");
        wal.append(entries(0..10)).expect("append");
        wal.sync().expect("sync");
        drop(wal);
        let path = &segments(dir.path())[0];
        let file = OpenOptions::new().write(true).open(path).expect("open seg");
        let len = file.metadata().expect("meta").len();
        let last_record = len - (len - 1) / 10; // somewhere inside the last record
        let cut = if chop == 5 { len - chop } else { last_record };
        file.set_len(cut).expect("chop");
        drop(file);

        let wal = Wal::open(dir.path()).expect("reopen after a torn tail");
        assert_eq!(
            indexes(&wal.read(0, u64::MAX).expect("read")),
            (0..9).collect::<Vec<_>>()
        );
        wal.append(entries(9..11)).expect("append continues at 9");
        wal.sync().expect("sync");
        drop(wal);
        let wal = Wal::open(dir.path()).expect("reopen");
        assert_eq!(wal.read(0, u64::MAX).expect("read"), entries(0..11));
    }
}

#[test]
fn a_flipped_byte_before_the_end_refuses_the_open_naming_the_file() {
    // Goal: bit rot is loud. Method: flip one byte in the payload of the 3rd record, and
    // separately in the header of the 3rd record; reopen must fail with `Corrupt` naming the
    // segment file; a flipped byte in `meta` too.
    for target in ["payload", "header", "meta"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let wal = Wal::open(dir.path()).expect("open");
        wal.append(entries(0..10)).expect("append");
        wal.sync().expect("sync");
        wal.vote_save(&Vote::new(4, 2)).expect("vote");
        let record_start = wal.inner().segments[0].offsets[2];
        drop(wal);
        let (path, at) = match target {
            "payload" => (segments(dir.path())[0].clone(), record_start + 30),
            "header" => (segments(dir.path())[0].clone(), record_start + 1),
            _ => (dir.path().join(META_FILE), 3),
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open");
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, at).expect("read byte");
        file.write_all_at(&[byte[0] ^ 0x10], at).expect("flip");
        drop(file);
        match Wal::open(dir.path()) {
            Err(error @ WalError::Corrupt { .. }) => {
                let message = error.to_string();
                assert!(
                    message.contains(&path.display().to_string()),
                    "{target}: error names the file: {message}"
                );
            }
            Err(other) => panic!("{target}: expected Corrupt, got {other}"),
            Ok(_) => panic!("{target}: a flipped byte went unnoticed"),
        }
    }
}

#[test]
fn truncate_is_durable_and_removes_later_segments() {
    // Goal: a truncated suffix never comes back. Method: 1 KiB segments, 100 entries, truncate
    // from 35 (inside a segment), reopen: 0..35 remain, no later segment file; then append 35
    // with another term and truncate at a segment's first index.
    let dir = tempfile::tempdir().expect("temp dir");
    let wal = Wal::open_with(dir.path(), 1024).expect("open");
    append_in_fives(&wal, 0..100);
    wal.sync().expect("sync");
    wal.truncate(35).expect("truncate");
    drop(wal);
    let wal = Wal::open_with(dir.path(), 1024).expect("reopen");
    assert_eq!(wal.read(0, u64::MAX).expect("read"), entries(0..35));
    let first_of_last = wal.inner().segments.last().expect("segment").first_index;
    assert!(segments(dir.path()).iter().all(|p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        segment_first_index(name).is_some_and(|first| first < 35)
    }));
    wal.truncate(first_of_last)
        .expect("truncate at a segment start");
    assert_eq!(
        wal.last_log_id().expect("last").map(|id| id.index),
        first_of_last.checked_sub(1)
    );
    wal.append(entries(first_of_last..first_of_last + 1))
        .expect("append where the cut was");
}

#[test]
fn purge_keeps_the_marker_and_a_resurrected_segment_is_ignored() {
    // Goal: purged entries stay gone even if a crash undoes the file deletion. Method: 1 KiB
    // segments, 100 entries, copy the first segment aside, purge up to 60, put the copy back
    // (a delete the crash undid), reopen: marker at 60, entries from the first kept segment on.
    let dir = tempfile::tempdir().expect("temp dir");
    let wal = Wal::open_with(dir.path(), 1024).expect("open");
    append_in_fives(&wal, 0..100);
    wal.sync().expect("sync");
    let first = segments(dir.path())[0].clone();
    let saved = fs::read(&first).expect("save first segment");
    let purged = LogId::new(CommittedLeaderId::new(2, 1), 60);
    wal.purge(purged, Some(purged)).expect("purge");
    assert!(!first.exists());
    drop(wal);
    fs::write(&first, saved).expect("resurrect");

    let wal = Wal::open_with(dir.path(), 1024).expect("reopen");
    assert!(
        !first.exists(),
        "a wholly purged segment is removed at open"
    );
    let meta = wal.meta();
    assert_eq!(meta.last_purged, Some(purged));
    assert_eq!(meta.state_durable, Some(purged));
    let kept = wal.read(61, u64::MAX).expect("read");
    assert_eq!(kept, entries(61..100));

    tracing::info!("purge past the end: the next append starts after the marker");
    let far = LogId::new(CommittedLeaderId::new(2, 1), 150);
    wal.purge(far, None).expect("purge past the end");
    assert!(wal.is_empty());
    wal.append(entries(151..152))
        .expect("append after the marker");
    drop(wal);
    let wal = Wal::open_with(dir.path(), 1024).expect("reopen");
    assert_eq!(indexes(&wal.read(0, u64::MAX).expect("read")), [151]);
}

#[test]
fn the_vote_survives_a_reopen_and_a_leftover_temp_file_is_ignored() {
    // Goal: the vote is durable on return, and a replacement that never finished changes
    // nothing. Method: save two votes, leave garbage in meta.tmp, reopen.
    let dir = tempfile::tempdir().expect("temp dir");
    let wal = Wal::open(dir.path()).expect("open");
    wal.vote_save(&Vote::new(3, 1)).expect("vote");
    wal.vote_save(&Vote::new(5, 2)).expect("later vote");
    drop(wal);
    fs::write(dir.path().join(META_TMP_FILE), b"half written").expect("garbage");
    let wal = Wal::open(dir.path()).expect("reopen");
    assert_eq!(wal.meta().vote, Some(Vote::new(5, 2)));
    assert!(!dir.path().join(META_TMP_FILE).exists());
}

#[test]
fn a_gap_between_segments_is_corruption() {
    // Goal: a missing segment in the middle (a lost file) is not silently skipped. Method: 1 KiB
    // segments, 100 entries, delete the second segment file, reopen.
    let dir = tempfile::tempdir().expect("temp dir");
    let wal = Wal::open_with(dir.path(), 1024).expect("open");
    append_in_fives(&wal, 0..100);
    wal.sync().expect("sync");
    drop(wal);
    let files = segments(dir.path());
    assert!(files.len() >= 3);
    fs::remove_file(&files[1]).expect("lose a segment");
    assert!(matches!(
        Wal::open_with(dir.path(), 1024),
        Err(WalError::Corrupt { .. })
    ));
}

#[test]
fn large_entries_round_trip() {
    // Goal: an entry of a full batch (8190 transfers) is one record like any other. Method:
    // append one, sync, reopen, compare.
    let dir = tempfile::tempdir().expect("temp dir");
    let wal = Wal::open(dir.path()).expect("open");
    let big = entry(0, 8190);
    wal.append([big.clone()]).expect("append");
    wal.sync().expect("sync");
    drop(wal);
    let wal = Wal::open(dir.path()).expect("reopen");
    assert_eq!(wal.read(0, 1).expect("read"), [big]);
}

#[test]
fn a_sync_does_not_return_while_another_sync_of_the_same_appends_is_under_way() {
    // Goal: the log flusher's sync (which acknowledges) cannot return before the files it
    // covers are durable, even when a state checkpoint took them off the unsynced list a moment
    // earlier and is still fsyncing them. Method: a first sync pauses in the hook right after
    // taking the list; a second sync, started then, must still be waiting while the first is
    // paused, and return once it is released.
    let dir = tempfile::tempdir().expect("temp dir");
    let wal = std::sync::Arc::new(Wal::open(dir.path()).expect("open"));
    wal.append(entries(0..5)).expect("append");
    let (paused_tx, paused_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = std::sync::Mutex::new(release_rx);
    let paused_tx = std::sync::Mutex::new(paused_tx);
    let first_call = std::sync::atomic::AtomicBool::new(true);
    *wal.sync_hook.lock().expect("hook") = Some(std::sync::Arc::new(move || {
        // Only the first sync pauses.
        if !first_call.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let _ = paused_tx.lock().expect("paused").send(());
        let _ = release_rx
            .lock()
            .expect("release")
            .recv_timeout(Duration::from_secs(30));
    }));
    let first = {
        let wal = std::sync::Arc::clone(&wal);
        std::thread::spawn(move || wal.sync())
    };
    paused_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the first sync took the list and paused");
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let second = {
        let wal = std::sync::Arc::clone(&wal);
        std::thread::spawn(move || {
            let result = wal.sync();
            let _ = done_tx.send(());
            result
        })
    };
    assert!(
        done_rx.recv_timeout(Duration::from_millis(500)).is_err(),
        "the second sync returned while the first was still syncing the appended segment"
    );
    release_tx.send(()).expect("release the first sync");
    first.join().expect("first thread").expect("first sync");
    done_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the second sync returned after the first");
    second.join().expect("second thread").expect("second sync");
}
