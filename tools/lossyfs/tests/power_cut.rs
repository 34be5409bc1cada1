//! What survives a power cut: file data and sizes as of their last fsync, directory entries as of
//! their directory's last fsync, nothing else.

mod common;

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use common::{pattern, Fixture};

#[test]
fn synced_data_survives_and_unsynced_data_is_dropped() {
    // Goal: a cut puts every file back to its content and size at its last fsync. Method: three
    // durable files, then an unsynced extension, a truncation, and an overwrite; cut; compare.
    let Some(fx) = Fixture::start("synced_data_survives_and_unsynced_data_is_dropped") else {
        return;
    };
    fx.write("extended", b"durable", true);
    fx.write("truncated", &pattern(1, 4096), true);
    fx.write("overwritten", &pattern(2, 1000), true);
    fx.fsync_dir("");

    tracing::info!("unsynced changes");
    fx.append("extended", b" and more", false);
    let truncated = OpenOptions::new()
        .write(true)
        .open(fx.path("truncated"))
        .expect("open");
    truncated.set_len(100).expect("truncate");
    truncated.write_all_at(b"new tail", 50).expect("write");
    drop(truncated);
    let overwritten = OpenOptions::new()
        .write(true)
        .open(fx.path("overwritten"))
        .expect("open");
    overwritten.write_all_at(&[0xbb; 100], 200).expect("write");
    overwritten.sync_data().expect("fdatasync");
    overwritten.write_all_at(&[0xcc; 150], 250).expect("write");
    overwritten
        .write_all_at(&[0xdd; 10], 2000)
        .expect("write past the end");
    drop(overwritten);
    assert_eq!(
        fx.read("extended").as_deref(),
        Some(&b"durable and more"[..])
    );
    assert_eq!(fx.read("truncated").map(|data| data.len()), Some(100));

    fx.cut();
    assert_eq!(fx.read("extended").as_deref(), Some(&b"durable"[..]));
    assert_eq!(fx.read("truncated"), Some(pattern(1, 4096)));
    let mut expected = pattern(2, 1000);
    expected[200..300].fill(0xbb);
    assert_eq!(fx.read("overwritten"), Some(expected));
}

#[test]
fn reads_see_unsynced_writes_before_the_cut() {
    // Goal: the layer is a pass-through: unsynced writes are visible at once, through another
    // handle and in the backing directory. Method: write without fsync, read back both ways.
    let Some(fx) = Fixture::start("reads_see_unsynced_writes_before_the_cut") else {
        return;
    };
    let mut file = std::fs::File::create(fx.path("f")).expect("create");
    file.write_all(b"not yet durable").expect("write");
    assert_eq!(fx.read("f").as_deref(), Some(&b"not yet durable"[..]));
    assert_eq!(
        std::fs::read(fx.backing.join("f")).ok().as_deref(),
        Some(&b"not yet durable"[..])
    );
    file.seek(SeekFrom::Start(4)).expect("seek");
    file.write_all(b"YET").expect("overwrite");
    let mut again = String::new();
    std::fs::File::open(fx.path("f"))
        .expect("open")
        .read_to_string(&mut again)
        .expect("read");
    assert_eq!(again, "not YET durable");
    drop(file);
    fx.cut();
    assert!(
        !fx.exists("f"),
        "a file created without a directory fsync must not survive"
    );
}

#[test]
fn new_files_need_a_directory_fsync_and_their_own() {
    // Goal: a new file's name is durable only through its directory's fsync, its data only
    // through its own. Method: one file synced but not its directory, one directory-synced but
    // not itself, one both; cut.
    let Some(fx) = Fixture::start("new_files_need_a_directory_fsync_and_their_own") else {
        return;
    };
    std::fs::create_dir(fx.path("d")).expect("mkdir");
    std::fs::create_dir(fx.path("e")).expect("mkdir");
    fx.fsync_dir("");
    fx.write("e/data-synced-only", b"lost with its name", true);
    fx.write("d/dir-synced-only", b"name kept, data lost", false);
    fx.write("d/both", b"kept", true);
    fx.fsync_dir("d");
    fx.write("d/after", b"created after the directory fsync", true);

    fx.cut();
    assert_eq!(fx.names("d"), vec!["both", "dir-synced-only"]);
    assert_eq!(fx.names("e"), Vec::<String>::new());
    assert_eq!(fx.read("d/dir-synced-only").as_deref(), Some(&b""[..]));
    assert_eq!(fx.read("d/both").as_deref(), Some(&b"kept"[..]));
}

#[test]
fn renames_and_unlinks_without_a_directory_fsync_are_undone() {
    // Goal: rename, rename over a file, and unlink are directory changes: undone unless the
    // directory was fsynced. Method: durable files, each change, cut, check; then the same
    // changes with a directory fsync, cut, check they stay.
    let Some(fx) = Fixture::start("renames_and_unlinks_without_a_directory_fsync_are_undone")
    else {
        return;
    };
    fx.write("old", b"renamed", true);
    fx.write("victim", b"replaced", true);
    fx.write("source", b"replacer", true);
    fx.write("gone", b"unlinked", true);
    fx.fsync_dir("");

    std::fs::rename(fx.path("old"), fx.path("new")).expect("rename");
    std::fs::rename(fx.path("source"), fx.path("victim")).expect("rename over");
    fx.append("gone", b" plus unsynced", false);
    std::fs::remove_file(fx.path("gone")).expect("unlink");
    assert_eq!(fx.names(""), vec!["new", "victim"]);

    fx.cut();
    assert_eq!(fx.names(""), vec!["gone", "old", "source", "victim"]);
    assert_eq!(fx.read("old").as_deref(), Some(&b"renamed"[..]));
    assert_eq!(fx.read("victim").as_deref(), Some(&b"replaced"[..]));
    assert_eq!(fx.read("source").as_deref(), Some(&b"replacer"[..]));
    assert_eq!(fx.read("gone").as_deref(), Some(&b"unlinked"[..]));

    tracing::info!("the same changes, then a directory fsync");
    std::fs::rename(fx.path("old"), fx.path("new")).expect("rename");
    std::fs::rename(fx.path("source"), fx.path("victim")).expect("rename over");
    std::fs::remove_file(fx.path("gone")).expect("unlink");
    fx.fsync_dir("");
    fx.cut();
    assert_eq!(fx.names(""), vec!["new", "victim"]);
    assert_eq!(fx.read("new").as_deref(), Some(&b"renamed"[..]));
    assert_eq!(fx.read("victim").as_deref(), Some(&b"replacer"[..]));
}

#[test]
fn directories_follow_their_parents_fsync() {
    // Goal: mkdir and rmdir are undone without the parent's fsync; a removed directory comes
    // back with its durable files; a directory renamed across parents stays where either parent's
    // fsync put it. Method: each change, cut, check.
    let Some(fx) = Fixture::start("directories_follow_their_parents_fsync") else {
        return;
    };
    std::fs::create_dir_all(fx.path("a/keep")).expect("mkdir");
    std::fs::create_dir(fx.path("b")).expect("mkdir");
    fx.write("a/keep/file", b"inside", true);
    fx.fsync_dir("a/keep");
    fx.fsync_dir("a");
    fx.fsync_dir("");

    std::fs::create_dir(fx.path("unsynced-dir")).expect("mkdir");
    std::fs::remove_file(fx.path("a/keep/file")).expect("unlink");
    std::fs::remove_dir(fx.path("a/keep")).expect("rmdir");
    fx.cut();
    assert_eq!(fx.names(""), vec!["a", "b"]);
    assert_eq!(fx.read("a/keep/file").as_deref(), Some(&b"inside"[..]));

    tracing::info!("move a/keep to b/moved, fsync only the target");
    std::fs::rename(fx.path("a/keep"), fx.path("b/moved")).expect("rename");
    fx.fsync_dir("b");
    fx.cut();
    assert_eq!(fx.names("a"), Vec::<String>::new());
    assert_eq!(fx.names("b"), vec!["moved"]);
    assert_eq!(fx.read("b/moved/file").as_deref(), Some(&b"inside"[..]));

    tracing::info!("a new directory durable through its parent is empty without its own fsync");
    std::fs::create_dir(fx.path("b/new")).expect("mkdir");
    fx.write("b/new/file", b"x", true);
    fx.fsync_dir("b");
    fx.cut();
    assert_eq!(fx.names("b/new"), Vec::<String>::new());
}

#[test]
fn a_write_ahead_log_keeps_exactly_its_synced_prefix() {
    // Goal: like a write-ahead log, many small appends with an fdatasync every few: a cut keeps
    // exactly the records up to the last fdatasync. Method: 500 appends of 64-byte records,
    // fdatasync every 7th, then some unsynced ones; cut; compare with the synced prefix.
    let Some(fx) = Fixture::start("a_write_ahead_log_keeps_exactly_its_synced_prefix") else {
        return;
    };
    let mut log = std::fs::File::create(fx.path("wal")).expect("create");
    log.sync_all().expect("fsync");
    fx.fsync_dir("");
    let mut written = Vec::new();
    let mut synced_length = 0;
    for index in 0..500u32 {
        let record = pattern((index % 256) as u8, 64);
        log.write_all(&record).expect("append");
        written.extend_from_slice(&record);
        if index % 7 == 6 {
            log.sync_data().expect("fdatasync");
            synced_length = written.len();
        }
    }
    assert!(
        synced_length < written.len(),
        "the test must leave unsynced records"
    );
    assert_eq!(fx.read("wal").map(|data| data.len()), Some(written.len()));
    let stats = fx.mount.stats().expect("stats");
    assert_eq!(stats.bytes_unsynced, (written.len() - synced_length) as u64);
    drop(log);

    fx.cut();
    assert_eq!(fx.read("wal"), Some(written[..synced_length].to_vec()));
}

#[test]
fn a_cut_with_a_file_still_open_leaves_the_daemon_serving() {
    // Goal: a handle left open across a cut gets errors, not a crash, and the mount keeps
    // working. Method: keep a handle with unsynced writes, cut, use the old handle, then use the
    // mount afresh.
    let Some(fx) = Fixture::start("a_cut_with_a_file_still_open_leaves_the_daemon_serving") else {
        return;
    };
    fx.write("open", b"durable", true);
    fx.fsync_dir("");
    let mut stale = OpenOptions::new()
        .read(true)
        .write(true)
        .open(fx.path("open"))
        .expect("open");
    stale.write_all_at(b"DUR", 0).expect("write");

    fx.cut();
    let error = stale
        .write_all_at(b"after", 0)
        .expect_err("a write on a stale handle must fail");
    tracing::info!(%error, "stale handle write");
    let _ = stale.sync_all();
    let _ = stale.read(&mut [0; 16]);
    drop(stale);

    assert_eq!(fx.read("open").as_deref(), Some(&b"durable"[..]));
    fx.write("fresh", b"works", true);
    assert_eq!(fx.read("fresh").as_deref(), Some(&b"works"[..]));
    assert_eq!(fx.mount.stats().expect("stats").cuts, 1);
}

#[test]
fn an_unlinked_file_open_across_a_cut_comes_back_durable() {
    // Goal: a durable file unlinked (directory not fsynced) while a handle still writes to it
    // comes back with its synced content. Method: open, unlink, write more, cut, read.
    let Some(fx) = Fixture::start("an_unlinked_file_open_across_a_cut_comes_back_durable") else {
        return;
    };
    fx.write("tmp", b"synced", true);
    fx.fsync_dir("");
    let handle = OpenOptions::new()
        .read(true)
        .write(true)
        .open(fx.path("tmp"))
        .expect("open");
    std::fs::remove_file(fx.path("tmp")).expect("unlink");
    handle
        .write_all_at(b"SYN", 0)
        .expect("write to an unlinked file");
    let mut check = [0; 6];
    handle.read_exact_at(&mut check, 0).expect("read");
    assert_eq!(&check, b"SYNced");
    drop(handle);
    fx.cut();
    assert_eq!(fx.read("tmp").as_deref(), Some(&b"synced"[..]));
}

#[test]
fn concurrent_logs_each_keep_their_synced_prefix() {
    // Goal: with several writers at once (the daemon runs several FUSE threads), each file keeps
    // exactly its own synced prefix. Method: four threads append records to their own log with
    // an fdatasync every few records, stop with unsynced records left, cut, compare.
    let Some(fx) = Fixture::start("concurrent_logs_each_keep_their_synced_prefix") else {
        return;
    };
    let names = ["log0", "log1", "log2", "log3"];
    for name in names {
        fx.write(name, b"", true);
    }
    fx.fsync_dir("");
    let expected: Vec<Vec<u8>> = std::thread::scope(|scope| {
        let writers: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(index, name)| {
                let path = fx.path(name);
                scope.spawn(move || {
                    let mut log = OpenOptions::new().append(true).open(path).expect("open");
                    let mut written = Vec::new();
                    let mut synced = 0;
                    for record in 0..300u32 {
                        let bytes =
                            pattern((record as u8).wrapping_add(index as u8), 50 + index * 13);
                        log.write_all(&bytes).expect("append");
                        written.extend_from_slice(&bytes);
                        if record % (3 + index as u32) == 0 {
                            log.sync_data().expect("fdatasync");
                            synced = written.len();
                        }
                    }
                    assert!(
                        synced < written.len(),
                        "each log must end with unsynced records"
                    );
                    written.truncate(synced);
                    written
                })
            })
            .collect();
        writers
            .into_iter()
            .map(|writer| writer.join().expect("writer thread"))
            .collect()
    });
    fx.cut();
    for (name, synced) in names.iter().zip(expected) {
        assert_eq!(fx.read(name), Some(synced), "{name}");
    }
}
