//! Injected storage faults: every change under a prefix fails with EIO (`fail-writes`) or ENOSPC
//! (`fail-space`) until `heal`; reads and other paths are unaffected.

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;

use common::Fixture;
use nix::libc;

/// The errno of a failed call, or a panic naming the call if it succeeded.
fn errno_of<T>(what: &str, result: std::io::Result<T>) -> i32 {
    match result {
        Ok(_) => panic!("{what} succeeded under a fault"),
        Err(error) => error
            .raw_os_error()
            .unwrap_or_else(|| panic!("{what}: {error} has no errno")),
    }
}

/// Checks that write, create, truncate, fsync, mkdir, rename and unlink under `data/` fail with
/// `expected` while a fault is in force, that reads and `other/` still work, then heals.
fn faults_then_heal(fx: &Fixture, expected: i32) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(fx.path("data/file"))
        .expect("open");
    assert_eq!(errno_of("write", file.write_all_at(b"x", 0)), expected);
    assert_eq!(errno_of("fsync", file.sync_all()), expected);
    assert_eq!(errno_of("fdatasync", file.sync_data()), expected);
    assert_eq!(errno_of("truncate", file.set_len(1)), expected);
    assert_eq!(
        errno_of("create", std::fs::File::create(fx.path("data/new"))),
        expected
    );
    assert_eq!(
        errno_of("mkdir", std::fs::create_dir(fx.path("data/sub"))),
        expected
    );
    assert_eq!(
        errno_of(
            "rename",
            std::fs::rename(fx.path("data/file"), fx.path("data/moved"))
        ),
        expected
    );
    assert_eq!(
        errno_of("unlink", std::fs::remove_file(fx.path("data/file"))),
        expected
    );
    assert_eq!(
        errno_of(
            "fsyncdir",
            std::fs::File::open(fx.path("data")).and_then(|d| d.sync_all())
        ),
        expected
    );
    let mut buffer = [0; 8];
    file.read_exact_at(&mut buffer, 0)
        .expect("reads still work");
    assert_eq!(&buffer, b"original");
    fx.write("other/file", b"unaffected", true);

    tracing::info!("heal");
    fx.mount.heal().expect("heal");
    file.write_all_at(b"O", 0).expect("write after heal");
    file.sync_all().expect("fsync after heal");
    std::fs::File::create(fx.path("data/new"))
        .expect("create after heal")
        .write_all(b"y")
        .expect("write");
    fx.fsync_dir("data");
    assert_eq!(fx.read("data/file").as_deref(), Some(&b"Original"[..]));
}

fn fixture(test: &str) -> Option<Fixture> {
    let fx = Fixture::start(test)?;
    std::fs::create_dir(fx.path("data")).expect("mkdir");
    std::fs::create_dir(fx.path("other")).expect("mkdir");
    fx.write("data/file", b"original", true);
    fx.fsync_dir("data");
    fx.fsync_dir("");
    Some(fx)
}

#[test]
fn fail_writes_gives_eio_and_heal_restores() {
    // Goal: `fail-writes data` makes every change under data/ fail with EIO, nothing else, until
    // heal. Method: each kind of change under the fault, then after heal.
    let Some(fx) = fixture("fail_writes_gives_eio_and_heal_restores") else {
        return;
    };
    fx.mount.fail_writes("data").expect("fail-writes");
    assert_eq!(fx.mount.stats().expect("stats").faults, 1);
    faults_then_heal(&fx, libc::EIO);
}

#[test]
fn fail_space_gives_enospc_and_heal_restores() {
    // Goal: as `fail-writes`, with ENOSPC. Method: the same checks, and a prefix given with a
    // leading slash (relative to the mount root all the same).
    let Some(fx) = fixture("fail_space_gives_enospc_and_heal_restores") else {
        return;
    };
    fx.mount.fail_space("/data").expect("fail-space");
    faults_then_heal(&fx, libc::ENOSPC);
}

#[test]
fn a_failed_fsync_makes_nothing_durable() {
    // Goal: an fsync that failed under a fault does not make the data durable. Method: write,
    // fsync under fail-writes (fails), heal, cut: the write is gone.
    let Some(fx) = fixture("a_failed_fsync_makes_nothing_durable") else {
        return;
    };
    let file = OpenOptions::new()
        .write(true)
        .open(fx.path("data/file"))
        .expect("open");
    file.write_all_at(b"CHANGED!", 0).expect("write");
    fx.mount.fail_writes("data/file").expect("fail-writes");
    assert_eq!(errno_of("fsync", file.sync_all()), libc::EIO);
    fx.mount.heal().expect("heal");
    drop(file);
    fx.cut();
    assert_eq!(fx.read("data/file").as_deref(), Some(&b"original"[..]));
}
