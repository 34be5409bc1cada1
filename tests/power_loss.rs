//! The short power-loss run CI does on every change, and its negative control, both through
//! `scripts/power-loss.sh` (the script a longer run uses: `--cycles 20`).
//!
//! A run: three real nodes whose data directories are `lossyfs` mounts, single transfers and
//! batches of up to 8190, and one power cut of every kind in turn (all nodes, the leader, a
//! follower): SIGKILL, every unsynced write dropped, each cut node's log inspected offline (its
//! vote and every entry it acknowledged must be there), restart; then the chaos checker on the
//! final state of every node. The negative control runs a build whose log never fsyncs and must
//! be caught losing acknowledged transfers.
//!
//! Needs root and /dev/fuse. Without them the tests say so and pass, except under `CI=true`,
//! where they fail: CI must run them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use serde_json::Value;

/// One run at a time: each is a three-node cluster on a 2-core machine.
static SERIAL: Mutex<()> = Mutex::new(());

/// Why these tests cannot run here, if they cannot.
fn missing() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|line| line.starts_with("Uid:"))
        .and_then(|line| line.split_whitespace().nth(2))
        == Some("0");
    if !root {
        return Some("not running as root".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("no /dev/fuse".into());
    }
    None
}

/// True when the test may go on; panics under CI when it may not.
fn can_run(test: &str) -> bool {
    let Some(reason) = missing() else {
        return true;
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: power-loss tests need root and /dev/fuse, and CI must run them: {reason}"
    );
    eprintln!("{test}: SKIPPED, power-loss tests need root and /dev/fuse: {reason}");
    false
}

/// The `lossyfs` binary `cargo test --workspace` built beside raftpay.
fn lossyfs_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_raftpay")).with_file_name("lossyfs");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build -p lossyfs` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

fn out_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("power-loss-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Runs scripts/power-loss.sh with `args`; returns its exit success, its last line and summary.
fn power_loss_run(name: &str, args: &[&str], raftpay: Option<&str>) -> (bool, String, Value) {
    let _turn = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let out = out_dir(name);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let started = Instant::now();
    let mut command = Command::new("bash");
    command
        .arg(root.join("scripts/power-loss.sh"))
        .args(args)
        .arg("--debug")
        .arg("--out")
        .arg(&out)
        .env("LOSSYFS_BIN", lossyfs_bin())
        .current_dir(root);
    if let Some(raftpay) = raftpay {
        command.env("RAFTPAY_BIN", raftpay);
    }
    let output = command.output().expect("run scripts/power-loss.sh");
    println!("{name}: {:.1} s", started.elapsed().as_secs_f64());
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    println!("{stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    println!("--- stderr (last 80 lines) ---");
    println!("{}", lines[lines.len().saturating_sub(80)..].join("\n"));
    let last = stdout.lines().last().unwrap_or_default().to_owned();
    let summary = std::fs::read_to_string(out.join("summary.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null);
    (output.status.success(), last, summary)
}

/// `key=value` from the verdict line.
fn field(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|part| part.strip_prefix(&format!("{key}=")))
        .and_then(|value| value.parse().ok())
}

#[test]
fn power_cuts_of_all_nodes_the_leader_and_a_follower_lose_nothing_acknowledged() {
    // Goal: acknowledged transfers survive power cuts, with large batches in the load, and
    // every cut node keeps its vote and its acknowledged entries. Method: three cycles, one of
    // each kind, through the script; the checker and the offline log inspection decide.
    if !can_run("power_cuts_lose_nothing") {
        return;
    }
    let (ok, last, summary) = power_loss_run(
        "short",
        &["--cycles", "3", "--seed", "11"],
        Some(env!("CARGO_BIN_EXE_raftpay")),
    );
    assert!(ok, "power-loss run failed: {last}\n{summary:#}");
    assert!(last.ends_with("result=PASS"), "{last}");
    assert_eq!(field(&last, "cycles"), Some(3), "{last}");
    assert_eq!(field(&last, "lost"), Some(0), "{last}");
    assert_eq!(field(&last, "duplicated"), Some(0), "{last}");
    for kind in ["power-cut-all", "power-cut-leader", "power-cut-follower"] {
        assert_eq!(summary["faults"][kind], 1, "{kind}: {summary:#}");
    }
    assert!(
        field(&last, "acked").unwrap_or(0) >= 1000,
        "too little load to prove anything: {last}"
    );
}

#[test]
fn the_power_loss_negative_control_is_caught_losing_transfers() {
    // Goal: prove the power-loss test can fail. Method: the script builds raftpay with
    // `unsafe-skip-fsync` (the log never fsyncs) and cuts the power of every node until
    // acknowledged transfers are gone; it passes only when the checker reports them lost.
    if !can_run("power_loss_negative_control") {
        return;
    }
    let (ok, last, summary) = power_loss_run("negative-control", &["--negative-control"], None);
    assert!(ok, "negative control not caught: {last}\n{summary:#}");
    assert!(last.ends_with("result=CAUGHT"), "{last}");
    assert!(field(&last, "lost").unwrap_or(0) > 0, "{last}");
    assert_eq!(summary["negative_control_caught"], true, "{summary:#}");
}
