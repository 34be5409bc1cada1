//! Leader kills: the killer task that SIGKILLs the leader through a shell command and restarts
//! it, and the Raft term read that counts elections.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use raftpay_client::Client;
use tokio::time::Instant;

use super::stats::KillTimes;
use super::tasks::Clock;

/// Deadline of one kill or restart command.
pub(super) const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest command output kept in the report.
pub(super) const COMMAND_OUTPUT_CHARS_MAX: usize = 400;

// ---------------------------------------------------------------------------------------------
// Leader kills.

/// What the killer task needs.
pub(super) struct KillSetup {
    pub(super) every: Duration,
    pub(super) restart_after: Duration,
    pub(super) kill_command: String,
    pub(super) restart_command: String,
}

/// One kill as it happened, in µs since the run started.
pub(super) struct KillEvent {
    pub(super) times: KillTimes,
    pub(super) node: Option<u64>,
    pub(super) ok: bool,
    pub(super) output: String,
    pub(super) restart_ok: Option<bool>,
    pub(super) restart_output: String,
    /// When the restart command returned (the node serves /health again), µs since start.
    pub(super) restart_done_us: Option<u64>,
}

/// Kills the leader every `every` of the measured window — only while a whole period remains
/// after the kill, so each outage is measured before the next kill or the end — and restarts it
/// `restart_after` later. Ends with the window or on `stop`; a restart in progress is awaited.
pub(super) async fn killer_run(
    client: Client,
    setup: KillSetup,
    clock: Clock,
    stop: Arc<AtomicBool>,
) -> Vec<KillEvent> {
    let mut kills = Vec::new();
    for k in 1_u32.. {
        let at = clock.window_start + setup.every * k;
        if at + setup.every > clock.window_end {
            break;
        }
        tokio::time::sleep_until(at).await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let event = kill_once(&client, &setup, clock).await;
        tokio::time::sleep(setup.restart_after).await;
        kills.push(restart_once(&setup, clock, event).await);
    }
    kills
}

pub(super) async fn kill_once(client: &Client, setup: &KillSetup, clock: Clock) -> KillEvent {
    let leader = client
        .cluster_status(None)
        .await
        .ok()
        .and_then(|status| status.leader_id);
    let started = Instant::now();
    let (ok, output) = if setup.kill_command.contains("{node}") && leader.is_none() {
        (false, "no leader known: nothing to kill".to_owned())
    } else {
        let node_text = leader.map(|id| id.to_string()).unwrap_or_default();
        shell_run(&setup.kill_command.replace("{node}", &node_text)).await
    };
    let done = Instant::now();
    let node = killed_node_parse(&output).or(leader);
    tracing::info!(?node, ok, "leader kill");
    KillEvent {
        times: KillTimes {
            started_us: clock.micros_since_start(started),
            done_us: clock.micros_since_start(done),
        },
        node,
        ok,
        output,
        restart_ok: None,
        restart_output: String::new(),
        restart_done_us: None,
    }
}

pub(super) async fn restart_once(
    setup: &KillSetup,
    clock: Clock,
    mut event: KillEvent,
) -> KillEvent {
    let Some(node) = event.node.filter(|_| event.ok) else {
        return event;
    };
    let command = setup.restart_command.replace("{node}", &node.to_string());
    let (ok, output) = shell_run(&command).await;
    event.restart_ok = Some(ok);
    event.restart_output = output;
    event.restart_done_us = Some(clock.micros_since_start(Instant::now()));
    event
}

/// `scripts/cluster.sh kill-leader` prints `killed leader node N (pid P)`.
pub(super) fn killed_node_parse(output: &str) -> Option<u64> {
    let rest = output.split("killed leader node ").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Runs `sh -c command` with no stdin under `COMMAND_TIMEOUT`; success and its output (stdout
/// then stderr, trimmed and shortened). A command still running at the deadline is killed.
pub(super) async fn shell_run(command: &str) -> (bool, String) {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(COMMAND_TIMEOUT, child).await {
        Ok(Ok(output)) => {
            let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&output.stderr));
            let text: String = text.trim().chars().take(COMMAND_OUTPUT_CHARS_MAX).collect();
            (output.status.success(), text)
        }
        Ok(Err(error)) => (false, format!("cannot run {command:?}: {error}")),
        Err(_) => (
            false,
            format!("{command:?} still running after {COMMAND_TIMEOUT:?}: killed"),
        ),
    }
}

/// The highest term any of `nodes` reports now (each asked once, directly).
pub(super) async fn term_highest(client: &Client, nodes: &[String]) -> Option<u64> {
    let mut highest = None;
    for node in nodes {
        if let Ok(status) = client.cluster_status(Some(node)).await {
            highest = highest.max(Some(status.term));
        }
    }
    highest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_killed_node_is_read_from_the_script_output() {
        assert_eq!(
            killed_node_parse("killed leader node 2 (pid 1234)"),
            Some(2)
        );
        assert_eq!(killed_node_parse("cluster.sh: no leader"), None);
    }
}
