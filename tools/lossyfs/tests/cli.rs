//! The `lossyfs` binary as a harness uses it: `mount` in the foreground, `ctl` commands over the
//! control socket, a clean unmount on SIGTERM.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const BINARY: &str = env!("CARGO_BIN_EXE_lossyfs");
/// How long the mount may take to come up, and the process to exit after SIGTERM.
const DEADLINE: Duration = Duration::from_secs(20);
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Waits until `ready()` or the deadline; panics naming `what` on timeout.
fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(POLL_INTERVAL);
    }
}

fn ctl(socket: &Path, arguments: &[&str]) -> Output {
    Command::new(BINARY)
        .arg("ctl")
        .arg("--control")
        .arg(socket)
        .args(arguments)
        .output()
        .expect("running lossyfs ctl")
}

fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "ctl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn is_mounted(mountpoint: &Path) -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let target = mountpoint.to_string_lossy();
    mountinfo
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(target.as_ref()))
}

/// Stops the mount process if the test panics before its own SIGTERM: SIGTERM and a bounded
/// wait (it unmounts), else SIGKILL and a lazy unmount, so no mount outlives the test.
struct MountProcess {
    child: Child,
    mountpoint: PathBuf,
}

impl Drop for MountProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let started = Instant::now();
        while started.elapsed() < DEADLINE {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn the_binary_mounts_answers_ctl_and_unmounts_on_sigterm() {
    // Goal: the CLI works end to end. Method: start `lossyfs mount`, wait for its control socket,
    // drive stats/cut/fail-writes/heal through `lossyfs ctl`, check a failing ctl exits non-zero,
    // then SIGTERM: exit 0 and no mount left.
    common::tracing_init();
    if !common::fuse_ready("the_binary_mounts_answers_ctl_and_unmounts_on_sigterm") {
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let backing = dir.path().join("backing");
    let mountpoint = std::fs::canonicalize(dir.path())
        .expect("canonical")
        .join("mnt");
    let socket = dir.path().join("control.sock");
    std::fs::create_dir(&backing).expect("mkdir");
    std::fs::create_dir(&mountpoint).expect("mkdir");
    std::fs::write(backing.join("existing"), b"was there before").expect("seed file");

    let child = Command::new(BINARY)
        .args(["mount", "--backing"])
        .arg(&backing)
        .arg("--mountpoint")
        .arg(&mountpoint)
        .arg("--control")
        .arg(&socket)
        .stdin(Stdio::null())
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("starting lossyfs mount");
    let mut process = MountProcess {
        child,
        mountpoint: mountpoint.clone(),
    };
    wait_for("the control socket", || socket.exists());
    assert!(is_mounted(&mountpoint));

    tracing::info!("existing data is durable; unsynced changes go on cut");
    assert_eq!(
        std::fs::read(mountpoint.join("existing")).ok().as_deref(),
        Some(&b"was there before"[..])
    );
    std::fs::write(mountpoint.join("existing"), b"overwritten").expect("overwrite");
    let stats = stdout_of(&ctl(&socket, &["stats"]));
    assert!(
        stats.contains("writes=1") && stats.contains("files_unsynced=1"),
        "stats: {stats}"
    );
    assert_eq!(stdout_of(&ctl(&socket, &["cut"])), "ok");
    assert_eq!(
        std::fs::read(mountpoint.join("existing")).ok().as_deref(),
        Some(&b"was there before"[..])
    );

    tracing::info!("faults through ctl");
    assert_eq!(stdout_of(&ctl(&socket, &["fail-writes", "existing"])), "ok");
    let error =
        std::fs::write(mountpoint.join("existing"), b"x").expect_err("write under fail-writes");
    assert_eq!(error.raw_os_error(), Some(nix::libc::EIO));
    assert_eq!(stdout_of(&ctl(&socket, &["heal"])), "ok");
    std::fs::write(mountpoint.join("existing"), b"x").expect("write after heal");

    tracing::info!("a failing ctl exits non-zero with a message");
    let failed = ctl(&dir.path().join("no-such.sock"), &["stats"]);
    assert!(!failed.status.success());
    assert!(!failed.stderr.is_empty());
    let refused = ctl(&socket, &["fail-writes", "../outside"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("leaves the mount"));

    tracing::info!("SIGTERM unmounts and exits 0");
    let pid = Pid::from_raw(i32::try_from(process.child.id()).expect("pid fits"));
    kill(pid, Signal::SIGTERM).expect("SIGTERM");
    let mut status = None;
    wait_for("the mount process to exit", || {
        status = process.child.try_wait().expect("try_wait");
        status.is_some()
    });
    assert_eq!(status.and_then(|status| status.code()), Some(0));
    assert!(!is_mounted(&mountpoint));
    assert!(!socket.exists());
    assert_eq!(
        std::fs::read(backing.join("existing")).ok().as_deref(),
        Some(&b"x"[..])
    );
}
