//! The short chaos suite CI runs on every change: `raftpay chaos` (the real binary, three real
//! node processes in a private network namespace) under each kind of fault with a fixed seed, and
//! the negative control. Together the runs inject at least 5 leader kills, 3 leader pauses,
//! 3 leader isolations and 2 kill-alls, each run with zero violations; the negative control
//! (a build that acknowledges appends before they are flushed) must be caught losing
//! acknowledged transfers.
//!
//! The runs share two cores, so they take turns (`SERIAL`). Isolation needs root, `ip` and
//! `iptables` (CI has them: `.ci/run` installs iptables); without them its test FAILS, it is
//! never skipped. Each run keeps its report under `target/tmp/chaos-<test>/` and prints its seed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use serde_json::Value;

/// One chaos run at a time: they measure availability on a 2-core machine.
static SERIAL: Mutex<()> = Mutex::new(());

fn out_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("chaos-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Prints a finished command's output (shown by the test harness when the test fails).
fn output_print(output: &std::process::Output) {
    println!("{}", String::from_utf8_lossy(&output.stdout));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    println!("--- stderr (last 80 lines) ---");
    println!("{}", lines[lines.len().saturating_sub(80)..].join("\n"));
}

fn summary_read(out: &Path) -> Value {
    let text = std::fs::read_to_string(out.join("summary.json"))
        .unwrap_or_else(|e| panic!("{}/summary.json: {e}", out.display()));
    serde_json::from_str(&text).expect("summary.json is JSON")
}

/// Runs `raftpay chaos` with `args` and returns its summary; fails the test on a FAIL verdict.
fn chaos_run(name: &str, args: &[&str]) -> Value {
    let _turn = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let out = out_dir(name);
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_raftpay"))
        .arg("chaos")
        .args(args)
        .arg("--out")
        .arg(&out)
        .env("RAFTPAY_LOG", "info,openraft=warn,sled=warn")
        .output()
        .expect("run raftpay chaos");
    println!("{name}: {:.1} s", started.elapsed().as_secs_f64());
    output_print(&output);
    assert!(
        output.status.success(),
        "chaos run {name} failed ({}); report in {}",
        output.status,
        out.display()
    );
    let summary = summary_read(&out);
    assert_eq!(summary["verdict"], "PASS", "{summary:#}");
    assert_eq!(summary["violations_total"], 0, "{summary:#}");
    summary
}

fn faults_of(summary: &Value, kind: &str) -> u64 {
    summary["faults"][kind].as_u64().unwrap_or(0)
}

#[test]
fn leader_kills_lose_no_acknowledged_transfer() {
    // Goal: SIGKILL of the leader, again and again under load, loses, doubles or reorders
    // nothing. Method: 8 clients, a leader kill every 3 s for 24 s, then heal and check.
    let summary = chaos_run(
        "kill-leader",
        &[
            "--nemesis",
            "kill-leader",
            "--seconds",
            "24",
            "--interval-secs",
            "3",
            "--seed",
            "101",
            "--min-acked",
            "1000",
            "--min-faults",
            "5",
        ],
    );
    assert!(faults_of(&summary, "kill-leader") >= 5, "{summary:#}");
}

#[test]
fn leader_pauses_lose_no_acknowledged_transfer() {
    // Goal: a leader frozen (SIGSTOP) for longer than the election timeout and then thawed
    // cannot serve stale reads or lose writes. Method: a pause every 4 s for 18 s.
    let summary = chaos_run(
        "pause-leader",
        &[
            "--nemesis",
            "pause-leader",
            "--seconds",
            "18",
            "--interval-secs",
            "4",
            "--seed",
            "202",
            "--min-acked",
            "500",
            "--min-faults",
            "3",
        ],
    );
    assert!(faults_of(&summary, "pause-leader") >= 3, "{summary:#}");
}

#[test]
fn leader_isolations_lose_no_acknowledged_transfer() {
    // Goal: a leader cut off from both followers (iptables DROP in a private namespace) cannot
    // acknowledge writes or serve stale linearizable reads, and rejoins cleanly. Method: an
    // isolation every 4 s for 20 s. Needs root, ip and iptables: fails (never skips) without.
    let summary = chaos_run(
        "isolate-leader",
        &[
            "--nemesis",
            "isolate-leader",
            "--seconds",
            "20",
            "--interval-secs",
            "4",
            "--seed",
            "303",
            "--min-acked",
            "500",
            "--min-faults",
            "3",
        ],
    );
    assert!(faults_of(&summary, "isolate-leader") >= 3, "{summary:#}");
}

#[test]
fn killing_every_node_at_once_loses_no_acknowledged_transfer() {
    // Goal: durable before acknowledged: SIGKILL of all three nodes while writes are in flight
    // loses no acknowledged transfer. Method: a kill-all every 4 s for 14 s.
    let summary = chaos_run(
        "kill-all",
        &[
            "--nemesis",
            "kill-all",
            "--seconds",
            "14",
            "--interval-secs",
            "4",
            "--seed",
            "404",
            "--min-acked",
            "500",
            "--min-faults",
            "2",
        ],
    );
    assert!(faults_of(&summary, "kill-all") >= 2, "{summary:#}");
}

#[test]
fn mixed_faults_lose_no_acknowledged_transfer() {
    // Goal: the faults interleaved (including SIGKILL of a random node) keep every promise.
    // Method: every kind drawn by a seeded schedule, a fault every 3 s for 30 s.
    let summary = chaos_run(
        "mixed",
        &[
            "--seconds",
            "30",
            "--interval-secs",
            "3",
            "--seed",
            "505",
            "--min-acked",
            "1000",
            "--min-faults",
            "6",
        ],
    );
    assert!(
        summary["faults_total"].as_u64().unwrap_or(0) >= 6,
        "{summary:#}"
    );
}

#[test]
fn the_negative_control_is_caught_losing_acknowledged_transfers() {
    // Goal: prove the checker would see lost money. Method: scripts/negative-control.sh builds
    // raftpay with `unsafe-ack-before-flush` (acks before the fsync) into its own target dir
    // and cuts the power of every node (data dirs on lossyfs) with `--negative-control` until
    // acknowledged transfers are gone; the run passes only if the loss is reported.
    let _turn = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let out = out_dir("negative-control");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let started = Instant::now();
    let lossyfs = Path::new(env!("CARGO_BIN_EXE_raftpay")).with_file_name("lossyfs");
    let output = Command::new("bash")
        .arg(root.join("scripts/negative-control.sh"))
        .arg("--out")
        .arg(&out)
        .env("LOSSYFS_BIN", &lossyfs)
        .current_dir(root)
        .output()
        .expect("run scripts/negative-control.sh");
    println!("negative control: {:.1} s", started.elapsed().as_secs_f64());
    output_print(&output);
    assert!(
        output.status.success(),
        "negative control not caught ({})",
        output.status
    );
    let summary = summary_read(&out);
    assert_eq!(summary["negative_control_caught"], true, "{summary:#}");
    assert!(
        summary["violations"]["lost_ack"].as_u64().unwrap_or(0) > 0,
        "{summary:#}"
    );
}
