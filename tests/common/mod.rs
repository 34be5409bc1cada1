//! The shared harness for integration tests: real `raftpay serve` processes on ephemeral ports
//! and temporary data directories, with kill/pause/restart, an HTTP helper, and polling with
//! deadlines (never bare sleeps). Every child process is killed when the cluster is dropped.
//! `Load` runs a background transfer load whose every transfer ends with a definite answer, so
//! a test knows exactly what was acknowledged, and by which node.
//!
//! Over 800 lines: the one harness every integration test shares (cluster processes, load, waits); splitting it would make each test binary import several modules.
#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftpay::config::{Config, Peer, RaftConfig};
use raftpay_client::{ApiRequest, Delivery, Method};
use serde_json::{json, Value};

/// How long a cluster may take to elect its first leader.
pub const ELECTION_DEADLINE: Duration = Duration::from_secs(30);

pub fn tracing_init() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RAFTPAY_TEST_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Timing of the test nodes; the shipped defaults unless a test asks otherwise.
#[derive(Debug, Clone)]
pub struct Timing {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    pub snapshot_logs_since_last: u64,
    pub logs_kept_behind_snapshot: u64,
    /// When set, nodes require it as a bearer token on `/v1/` and the harness sends it.
    pub api_token: Option<String>,
    /// When set, the cluster secret for `/raft/` routes.
    pub secret: Option<String>,
    /// `RAFTPAY_LOG` for the nodes.
    pub log_filter: String,
    /// `[raft] write_timeout_ms` (the forward timeout is 5 s longer, so that a follower waits
    /// for the leader's answer). Longer than the shipped 5 s: on a shared ext4 disk an fsync
    /// can wait seconds behind the writeback of other tests' files, and these tests check
    /// outcomes, not commit latency (the bench measures that).
    pub write_timeout_ms: u64,
    /// Any other change to every node's config (e.g. `|config| config.log.format = ...`).
    pub configure: fn(&mut Config),
}

impl Default for Timing {
    /// The shipped defaults (`RaftConfig::default()`), but for the longer write timeout.
    fn default() -> Self {
        let shipped = RaftConfig::default();
        Timing {
            heartbeat_ms: shipped.heartbeat_interval_ms,
            election_min_ms: shipped.election_timeout_min_ms,
            election_max_ms: shipped.election_timeout_max_ms,
            snapshot_logs_since_last: shipped.snapshot_logs_since_last,
            logs_kept_behind_snapshot: shipped.logs_kept_behind_snapshot,
            api_token: None,
            secret: None,
            log_filter: "info,openraft=warn".into(),
            write_timeout_ms: 15_000,
            configure: |_| {},
        }
    }
}

pub struct TestNode {
    pub id: u64,
    pub addr: String,
    pub config: PathBuf,
    pub log: PathBuf,
    /// Extra environment variables of this node's process (e.g. `RAFTPAY_FAULT`).
    pub env: BTreeMap<String, String>,
    child: Option<Child>,
}

impl TestNode {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

pub struct TestCluster {
    pub api_token: Option<String>,
    log_filter: String,
    pub dir: tempfile::TempDir,
    pub nodes: BTreeMap<u64, TestNode>,
    pub http: reqwest::Client,
}

/// A free port on 127.0.0.1 (bound and released; the race with other processes is tolerable
/// in tests and shows up as a clear "address in use" at start).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// Writes node `id`'s config file with `Config`, the one writer of node configs.
fn config_write(
    path: &std::path::Path,
    id: u64,
    addr: &str,
    data_dir: &std::path::Path,
    voters: &[(u64, String)],
    timing: &Timing,
) {
    let mut config = Config::new(id, addr, data_dir);
    config.cluster.initial_voters = voters
        .iter()
        .map(|(id, addr)| Peer {
            id: *id,
            http_addr: addr.clone(),
        })
        .collect();
    config.cluster.secret.clone_from(&timing.secret);
    config.raft.heartbeat_interval_ms = timing.heartbeat_ms;
    config.raft.election_timeout_min_ms = timing.election_min_ms;
    config.raft.election_timeout_max_ms = timing.election_max_ms;
    config.raft.snapshot_logs_since_last = timing.snapshot_logs_since_last;
    config.raft.logs_kept_behind_snapshot = timing.logs_kept_behind_snapshot;
    config.raft.write_timeout_ms = timing.write_timeout_ms;
    // Longer than the write timeout, so that a follower waits for the leader's answer.
    config.http.forward_timeout_ms = timing.write_timeout_ms + 5_000;
    config.http.api_token.clone_from(&timing.api_token);
    (timing.configure)(&mut config);
    config.write(path).expect("write config");
}

impl TestCluster {
    /// Starts `n` voters and waits until they agree on a leader.
    pub async fn start(n: u64) -> TestCluster {
        Self::start_with(n, Timing::default()).await
    }

    /// Starts `n` voters with `timing`.
    pub async fn start_with(n: u64, timing: Timing) -> TestCluster {
        let mut cluster = Self::prepare(n, timing);
        cluster.start_prepared().await;
        cluster
    }

    /// Writes the configs of `n` voters without starting them.
    pub fn prepare(n: u64, timing: Timing) -> TestCluster {
        tracing_init();
        let dir = tempfile::tempdir().expect("temp dir");
        let voters: Vec<(u64, String)> = (1..=n)
            .map(|id| (id, format!("127.0.0.1:{}", free_port())))
            .collect();
        let mut nodes = BTreeMap::new();
        for (id, addr) in &voters {
            let data_dir = dir.path().join(format!("node{id}"));
            let config = dir.path().join(format!("node{id}.toml"));
            config_write(&config, *id, addr, &data_dir, &voters, &timing);
            let log = dir.path().join(format!("node{id}.log"));
            nodes.insert(
                *id,
                TestNode {
                    id: *id,
                    addr: addr.clone(),
                    config,
                    log,
                    env: BTreeMap::new(),
                    child: None,
                },
            );
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(15))
            .build()
            .expect("http client");
        TestCluster {
            api_token: timing.api_token.clone(),
            log_filter: timing.log_filter.clone(),
            dir,
            nodes,
            http,
        }
    }

    /// Starts every prepared node and waits for a leader.
    pub async fn start_prepared(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.spawn(id);
        }
        self.leader_wait(ELECTION_DEADLINE).await;
    }

    /// Adds a node that is not an initial voter (config only; start it with `spawn`).
    pub fn node_prepare(&mut self, id: u64, timing: &Timing) -> String {
        let addr = format!("127.0.0.1:{}", free_port());
        let data_dir = self.dir.path().join(format!("node{id}"));
        let config = self.dir.path().join(format!("node{id}.toml"));
        config_write(&config, id, &addr, &data_dir, &[], timing);
        let log = self.dir.path().join(format!("node{id}.log"));
        self.nodes.insert(
            id,
            TestNode {
                id,
                addr: addr.clone(),
                config,
                log,
                env: BTreeMap::new(),
                child: None,
            },
        );
        addr
    }

    /// Starts node `id`'s process (its log is appended to).
    pub fn spawn(&mut self, id: u64) {
        let log_filter = self.log_filter.clone();
        let node = self.nodes.get_mut(&id).expect("known node");
        assert!(node.child.is_none(), "node {id} already runs");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("open log");
        let child = Command::new(env!("CARGO_BIN_EXE_raftpay"))
            .args(["serve", "--config"])
            .arg(&node.config)
            .env("RAFTPAY_LOG", &log_filter)
            .envs(&node.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn raftpay");
        tracing::info!(node = id, pid = child.id(), addr = %node.addr, "node started");
        node.child = Some(child);
    }

    /// SIGKILL: the process dies at once, with whatever sled had not flushed.
    pub fn kill(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("known node");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            tracing::info!(node = id, "node killed (SIGKILL)");
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).expect("known node");
        if let Some(mut child) = node.child.take() {
            signal(child.id(), "TERM");
            let status = child.wait().expect("wait for node");
            tracing::info!(node = id, ?status, "node stopped (SIGTERM)");
        }
    }

    /// Waits until node `id`'s process exits on its own (a node that refuses to start), up to
    /// `deadline`; returns its exit status and the last line of its log.
    ///
    /// # Panics
    /// When it still runs at the deadline (it is killed first).
    pub async fn refusal_wait(
        &mut self,
        id: u64,
        deadline: Duration,
    ) -> (std::process::ExitStatus, String) {
        let until = Instant::now() + deadline;
        loop {
            let node = self.nodes.get_mut(&id).expect("known node");
            let child = node.child.as_mut().expect("node was started");
            if let Some(status) = child.try_wait().expect("wait for node") {
                node.child = None;
                let text = std::fs::read_to_string(&node.log).unwrap_or_default();
                let last = text.lines().last().unwrap_or_default().to_string();
                return (status, last);
            }
            if Instant::now() >= until {
                self.kill(id);
                panic!(
                    "node {id} still runs after {deadline:?}\n{}",
                    self.logs_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sets (`Some`) or removes (`None`) an environment variable for node `id`'s next start.
    pub fn node_env(&mut self, id: u64, key: &str, value: Option<&str>) {
        let env = &mut self.nodes.get_mut(&id).expect("known node").env;
        match value {
            Some(value) => env.insert(key.to_string(), value.to_string()),
            None => env.remove(key),
        };
    }

    /// Node `id`'s exit status if its process has ended (the process is then reaped and the node
    /// counts as stopped); `None` while it runs.
    pub fn exited(&mut self, id: u64) -> Option<std::process::ExitStatus> {
        let node = self.nodes.get_mut(&id).expect("known node");
        let child = node.child.as_mut()?;
        let status = child.try_wait().expect("try_wait on a node")?;
        node.child = None;
        tracing::info!(node = id, ?status, "node exited on its own");
        Some(status)
    }

    /// Waits until node `id`'s process ends on its own and returns its exit status.
    pub async fn exit_wait(&mut self, id: u64, deadline: Duration) -> std::process::ExitStatus {
        let until = Instant::now() + deadline;
        loop {
            if let Some(status) = self.exited(id) {
                return status;
            }
            assert!(
                Instant::now() < until,
                "node {id} did not exit within {deadline:?}\n{}",
                self.logs_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Node `id`'s data directory.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node{id}"))
    }

    /// Lines of node `id`'s log that contain `needle`, without colour codes.
    pub fn log_lines(&self, id: u64, needle: &str) -> Vec<String> {
        let text = std::fs::read_to_string(&self.nodes[&id].log).unwrap_or_default();
        ansi_strip(&text)
            .lines()
            .filter(|line| line.contains(needle))
            .map(str::to_string)
            .collect()
    }

    /// Makes node `id` the leader: while another node leads, SIGKILLs that leader, waits for the
    /// next one and starts the killed node again (each round hands `id` the lead with p ~ 1/2).
    pub async fn leader_make(&mut self, id: u64, deadline: Duration) {
        let until = Instant::now() + deadline;
        loop {
            let leader = self.leader_wait(ELECTION_DEADLINE).await;
            if leader == id {
                tracing::info!(node = id, "node leads");
                return;
            }
            assert!(
                Instant::now() < until,
                "node {id} did not become leader within {deadline:?}"
            );
            self.kill(leader);
            let next = self.leader_wait(ELECTION_DEADLINE).await;
            tracing::info!(
                killed = leader,
                next,
                "leader_make: new leader after a kill"
            );
            self.spawn(leader);
        }
    }

    pub fn pause(&self, id: u64) {
        signal(self.nodes[&id].pid().expect("running node"), "STOP");
    }

    pub fn resume(&self, id: u64) {
        signal(self.nodes[&id].pid().expect("running node"), "CONT");
    }

    pub fn addr(&self, id: u64) -> &str {
        &self.nodes[&id].addr
    }

    pub fn addrs(&self) -> Vec<String> {
        self.nodes.values().map(|n| n.addr.clone()).collect()
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect()
    }

    /// One request to one node: status and JSON body (Null when the body is not JSON).
    pub async fn call(
        &self,
        id: u64,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let url = format!("http://{}{path}", self.addr(id));
        let mut request = self.http.request(method, &url);
        if let Some(token) = &self.api_token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn post(&self, id: u64, path: &str, body: Value) -> (u16, Value) {
        self.call(id, reqwest::Method::POST, path, Some(&body))
            .await
    }

    pub async fn get(&self, id: u64, path: &str) -> (u16, Value) {
        self.call(id, reqwest::Method::GET, path, None).await
    }

    /// `/v1/cluster` of node `id`, or `None` when it does not answer.
    pub async fn status(&self, id: u64) -> Option<Value> {
        let url = format!("http://{}/v1/cluster", self.addr(id));
        let mut request = self.http.get(&url).timeout(Duration::from_secs(2));
        if let Some(token) = &self.api_token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.ok()?;
        response.json().await.ok()
    }

    /// Waits until every running node names the same leader, which itself runs; returns it.
    pub async fn leader_wait(&self, deadline: Duration) -> u64 {
        let until = Instant::now() + deadline;
        loop {
            let mut leaders = Vec::new();
            for id in self.running() {
                leaders.push(self.status(id).await.and_then(|s| s["leader_id"].as_u64()));
            }
            if let Some(Some(leader)) = leaders.first() {
                if leaders.iter().all(|l| *l == Some(*leader)) && self.running().contains(leader) {
                    return *leader;
                }
            }
            assert!(
                Instant::now() < until,
                "no agreed leader within {deadline:?}: {leaders:?}\n{}",
                self.logs_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every running node has applied all of the same log, with the same state
    /// hash.
    pub async fn converged_wait(&self, deadline: Duration) -> Value {
        let until = Instant::now() + deadline;
        loop {
            let mut states = Vec::new();
            for id in self.running() {
                states.push(self.status(id).await);
            }
            let key = |s: &Option<Value>| {
                s.as_ref().map(|s| {
                    (
                        s["state_hash_index"].clone(),
                        s["state_hash"].clone(),
                        s["last_log_index"].clone(),
                    )
                })
            };
            // Applied all of its log, too: nodes can agree on a log whose tail is not committed
            // yet (entries of an old term wait for the new leader's first entry).
            let caught_up = |s: &Option<Value>| {
                s.as_ref()
                    .is_some_and(|s| s["last_applied"] == s["last_log_index"])
            };
            if let Some(first) = states.first() {
                if first.is_some() && states.iter().all(|s| key(s) == key(first) && caught_up(s)) {
                    return first.clone().expect("checked");
                }
            }
            assert!(
                Instant::now() < until,
                "nodes did not converge within {deadline:?}: {states:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines of every node's log, for failure messages.
    pub fn logs_tail(&self) -> String {
        let mut out = String::new();
        for node in self.nodes.values() {
            let text = std::fs::read_to_string(&node.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out += &format!(
                "--- node {} ---\n{}\n",
                node.id,
                lines[lines.len().saturating_sub(15)..].join("\n")
            );
        }
        out
    }

    /// A retrying API client over every node.
    pub fn client(&self) -> raftpay_client::Client {
        raftpay_client::Client::new(&self.addrs(), self.api_token.as_deref()).expect("client")
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            // A paused process would ignore nothing, but resume it so the kill is prompt.
            if let Some(pid) = self.nodes[&id].pid() {
                signal(pid, "CONT");
            }
            self.kill(id);
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs_tail());
        }
    }
}

/// `text` without ANSI colour sequences (`ESC [ ... m`), as the pretty log format writes them.
pub fn ansi_strip(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip up to and including the final letter of the sequence.
            for next in chars.by_ref() {
                if next.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

pub fn account_body(id: &str, currency: &str, overdraft: bool) -> Value {
    json!({"id": id, "currency": currency, "allow_overdraft": overdraft})
}

pub fn transfer_body(id: &str, from: &str, to: &str, amount: u64) -> Value {
    json!({"id": id, "from": from, "to": to, "amount": amount})
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long one transfer of a [`Load`] may take to get a definite answer, failovers included.
pub const LOAD_DEFINITE_DEADLINE: Duration = Duration::from_secs(30);
/// Timeout of one attempt of a load transfer against one node.
const LOAD_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a background transfer load does: `writers` tasks, each posting one transfer after the
/// other from `{prefix}-bank` (overdraft allowed) to its own `{prefix}-to-{writer}`, until
/// stopped. Every `reject_every`-th transfer of a writer (0: none) comes from the empty
/// `{prefix}-empty` instead and must be rejected (`422 insufficient_funds`).
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub prefix: String,
    pub writers: usize,
    pub reject_every: u64,
}

/// One load transfer and its definite answer (a 2xx or 4xx).
#[derive(Debug, Clone)]
pub struct LoadOutcome {
    pub id: String,
    pub request: Value,
    pub status: u16,
    pub answer: Value,
    /// The node that gave the definite answer (it may have forwarded the request).
    pub node: u64,
    /// Attempts it took, the definite one included.
    pub attempts: u32,
}

impl LoadOutcome {
    /// Posted: 201 (this attempt created it) or 200 (an earlier attempt of the same id did).
    pub fn is_posted(&self) -> bool {
        matches!(self.status, 200 | 201)
    }

    pub fn seq(&self) -> Option<u64> {
        self.answer["seq"].as_u64()
    }
}

/// What a stopped load saw. Every transfer it started got a definite answer (a writer re-sends
/// the same id until it does, or panics), so the ids posted are exactly the ids created.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub outcomes: Vec<LoadOutcome>,
    /// Responses to `POST /v1/transfers` received, by (node that sent it, HTTP status),
    /// definite or not: each is a request that node served.
    pub answered: BTreeMap<(u64, u16), u64>,
    /// Attempts that got no HTTP response at all (refused, reset, timed out), by node.
    pub unanswered: BTreeMap<u64, u64>,
}

impl LoadReport {
    fn absorb(&mut self, other: LoadReport) {
        self.outcomes.extend(other.outcomes);
        for (key, n) in other.answered {
            *self.answered.entry(key).or_default() += n;
        }
        for (key, n) in other.unanswered {
            *self.unanswered.entry(key).or_default() += n;
        }
    }

    /// The outcomes that posted a transfer.
    pub fn posted(&self) -> Vec<&LoadOutcome> {
        self.outcomes.iter().filter(|o| o.is_posted()).collect()
    }

    /// Responses of one node with one status.
    pub fn answered_by(&self, node: u64, status: u16) -> u64 {
        self.answered.get(&(node, status)).copied().unwrap_or(0)
    }

    /// Every load transfer is there when read back through the API (`GET /v1/transfers/{id}`,
    /// linearizable, any node): a posted one exactly as acknowledged (same seq, accounts,
    /// amount), a rejected one with its recorded error. Acknowledged seqs are all distinct.
    ///
    /// # Panics
    /// When an acknowledged transfer is missing or differs: an acknowledged write was lost.
    pub async fn verify_present(&self, cluster: &TestCluster) {
        self.verify_present_through(&cluster.client()).await;
    }

    /// [`LoadReport::verify_present`] through any client (a cluster the harness did not start).
    pub async fn verify_present_through(&self, client: &raftpay_client::Client) {
        use futures::StreamExt as _;
        let ids: BTreeSet<&str> = self.outcomes.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(ids.len(), self.outcomes.len(), "a load id was used twice");
        let seqs: BTreeSet<u64> = self.posted().iter().filter_map(|o| o.seq()).collect();
        assert_eq!(
            seqs.len(),
            self.posted().len(),
            "acknowledged transfers share a seq or lack one"
        );
        let checks = self.outcomes.iter().map(|outcome| {
            let client = client.clone();
            async move {
                let path = format!("/v1/transfers/{}", outcome.id);
                let read = client.raw(Method::Get, &path, None).await;
                let (status, body) = read.unwrap_or_else(|e| panic!("GET {path}: {e}"));
                let expected_status = if outcome.is_posted() {
                    200
                } else {
                    outcome.status
                };
                assert_eq!(
                    (status, &body),
                    (expected_status, &outcome.answer),
                    "transfer {} read back differs from its acknowledgement ({} attempts)",
                    outcome.id,
                    outcome.attempts
                );
            }
        });
        futures::stream::iter(checks)
            .buffer_unordered(4)
            .collect::<Vec<()>>()
            .await;
        tracing::info!(
            transfers = self.outcomes.len(),
            "every load transfer read back"
        );
    }
}

/// Responses to the load's `POST /v1/transfers` attempts, by (node, status), and attempts that
/// got no response at all, by node: what the client's observer saw.
#[derive(Debug, Default)]
struct LoadCounts {
    answered: BTreeMap<(u64, u16), u64>,
    unanswered: BTreeMap<u64, u64>,
}

impl LoadReport {
    /// Every account of the load holds exactly what the acknowledged transfers moved (read
    /// linearizably): nothing lost, nothing applied twice, and the money sums to zero.
    ///
    /// # Panics
    /// When a balance differs from the sum of the posted transfers.
    pub async fn balances_check_through(&self, spec: &LoadSpec, client: &raftpay_client::Client) {
        let mut expected: BTreeMap<String, i128> =
            spec.accounts().into_iter().map(|(id, _)| (id, 0)).collect();
        for outcome in self.posted() {
            let field = |name: &str| outcome.request[name].clone();
            let amount = i128::from(field("amount").as_u64().expect("amount"));
            let from = field("from").as_str().expect("from").to_string();
            let to = field("to").as_str().expect("to").to_string();
            *expected.entry(from).or_default() -= amount;
            *expected.entry(to).or_default() += amount;
        }
        assert_eq!(expected.values().sum::<i128>(), 0, "the load's own sums");
        for (id, want) in &expected {
            let account = client
                .get_account(id, raftpay_client::Consistency::Linearizable)
                .await
                .unwrap_or_else(|e| panic!("read account {id}: {e}"));
            assert_eq!(
                i128::from(account.balance),
                *want,
                "balance of {id} differs from the acknowledged transfers"
            );
        }
        tracing::info!(
            accounts = expected.len(),
            "every load balance matches the acknowledged transfers"
        );
    }
}

/// State shared by a load's writers.
struct LoadShared {
    spec: LoadSpec,
    /// Over the running nodes, in `ids` order; no moving to the leader (each writer keeps to
    /// its own node first).
    client: raftpay_client::Client,
    ids: Vec<u64>,
    counts: Arc<std::sync::Mutex<LoadCounts>>,
    stop: AtomicBool,
    answered: AtomicU64,
    seq_max: AtomicU64,
}

/// A running background transfer load; see [`LoadSpec`]. Dropping it aborts the writers.
pub struct Load {
    shared: Arc<LoadShared>,
    writers: Vec<tokio::task::JoinHandle<LoadReport>>,
}

impl LoadSpec {
    pub fn new(prefix: &str, writers: usize) -> LoadSpec {
        LoadSpec {
            prefix: prefix.to_string(),
            writers,
            reject_every: 0,
        }
    }

    pub fn rejecting_every(mut self, n: u64) -> LoadSpec {
        self.reject_every = n;
        self
    }

    fn bank(&self) -> String {
        format!("{}-bank", self.prefix)
    }

    fn empty(&self) -> String {
        format!("{}-empty", self.prefix)
    }

    fn sink(&self, writer: usize) -> String {
        format!("{}-to-{writer}", self.prefix)
    }

    /// The accounts the load needs, as (id, allow_overdraft).
    pub fn accounts(&self) -> Vec<(String, bool)> {
        let mut accounts = vec![(self.bank(), true), (self.empty(), false)];
        accounts.extend((0..self.writers).map(|w| (self.sink(w), false)));
        accounts
    }

    /// Creates the accounts (idempotent); returns how many this call created.
    pub async fn accounts_create(&self, cluster: &TestCluster) -> u64 {
        self.accounts_create_through(&cluster.client()).await
    }

    /// [`LoadSpec::accounts_create`] through any client.
    pub async fn accounts_create_through(&self, client: &raftpay_client::Client) -> u64 {
        let mut created = 0;
        for (id, allow_overdraft) in self.accounts() {
            let account = raftpay_client::NewAccount {
                id: id.clone(),
                currency: "CNY".into(),
                allow_overdraft,
            };
            let (_, new) = client
                .create_account(&account)
                .await
                .unwrap_or_else(|e| panic!("create account {id}: {e}"));
            created += u64::from(new);
        }
        created
    }

    /// Starts the writers (the accounts must exist). Writer `w` sends each transfer first to
    /// the `w`-th running node (modulo), and on no definite answer to the next ones in turn.
    pub fn start(&self, cluster: &TestCluster) -> Load {
        let nodes: Vec<(u64, String)> = cluster
            .running()
            .into_iter()
            .map(|id| (id, cluster.addr(id).to_string()))
            .collect();
        self.start_on(nodes, cluster.api_token.clone())
    }

    /// [`LoadSpec::start`] against the given `(id, host:port)` nodes (a cluster the harness did
    /// not start).
    pub fn start_on(&self, nodes: Vec<(u64, String)>, api_token: Option<String>) -> Load {
        let ids: Vec<u64> = nodes.iter().map(|(id, _)| *id).collect();
        let addrs: Vec<&str> = nodes.iter().map(|(_, addr)| addr.as_str()).collect();
        let counts = Arc::new(std::sync::Mutex::new(LoadCounts::default()));
        let observed = Arc::clone(&counts);
        let node_ids = ids.clone();
        let client = raftpay_client::Client::new(&addrs, api_token.as_deref())
            .expect("load client")
            .with_follow_leader(false)
            .with_observer(move |attempted| {
                let node = node_ids[attempted.node_index];
                let mut counts = observed.lock().expect("load counts");
                match attempted.status {
                    Some(status) => *counts.answered.entry((node, status)).or_default() += 1,
                    None => *counts.unanswered.entry(node).or_default() += 1,
                }
            });
        let shared = Arc::new(LoadShared {
            spec: self.clone(),
            client,
            ids,
            counts,
            stop: AtomicBool::new(false),
            answered: AtomicU64::new(0),
            seq_max: AtomicU64::new(0),
        });
        // One task per writer: posts until `Load::stop` raises the flag, then finishes its
        // transfer in flight (to a definite answer) and returns what it saw. `Load`'s drop
        // aborts them if the test ends without `stop`.
        let writers = (0..self.writers)
            .map(|writer| tokio::spawn(load_writer(Arc::clone(&shared), writer)))
            .collect();
        tracing::info!(prefix = %self.prefix, writers = self.writers, "load started");
        Load { shared, writers }
    }
}

impl Load {
    /// `writers` writers under the prefix `load`, no rejections; creates the accounts first.
    pub async fn start(cluster: &TestCluster, writers: usize) -> Load {
        let spec = LoadSpec::new("load", writers);
        spec.accounts_create(cluster).await;
        spec.start(cluster)
    }

    /// Transfers that got a definite answer so far.
    pub fn answered(&self) -> u64 {
        self.shared.answered.load(Ordering::SeqCst)
    }

    /// The highest seq acknowledged so far.
    pub fn seq_max(&self) -> u64 {
        self.shared.seq_max.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` transfers got a definite answer.
    pub async fn answered_wait(&self, n: u64, deadline: Duration) {
        let what = format!("{n} answered load transfers");
        eventually(deadline, &what, || async {
            (self.answered() >= n).then_some(())
        })
        .await;
    }

    /// Stops the writers, waits for their transfers in flight to be decided, and reports.
    ///
    /// # Panics
    /// When a writer panicked (a transfer got no definite answer within
    /// [`LOAD_DEFINITE_DEADLINE`]) or does not finish in time.
    pub async fn stop(mut self) -> LoadReport {
        self.shared.stop.store(true, Ordering::SeqCst);
        let mut report = LoadReport::default();
        for writer in std::mem::take(&mut self.writers) {
            let joined = tokio::time::timeout(LOAD_DEFINITE_DEADLINE * 2, writer)
                .await
                .expect("a load writer did not finish");
            match joined {
                Ok(part) => report.absorb(part),
                Err(error) => std::panic::resume_unwind(error.into_panic()),
            }
        }
        let counts = std::mem::take(&mut *self.shared.counts.lock().expect("load counts"));
        report.answered = counts.answered;
        report.unanswered = counts.unanswered;
        tracing::info!(
            transfers = report.outcomes.len(),
            posted = report.posted().len(),
            answered = ?report.answered,
            unanswered = ?report.unanswered,
            "load stopped"
        );
        report
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for writer in &self.writers {
            writer.abort();
        }
    }
}

async fn load_writer(shared: Arc<LoadShared>, writer: usize) -> LoadReport {
    let spec = &shared.spec;
    let mut report = LoadReport::default();
    let mut n: u64 = 0;
    while !shared.stop.load(Ordering::SeqCst) {
        n += 1;
        let id = format!("{}-w{writer}-{n}", spec.prefix);
        let request = if spec.reject_every != 0 && n.is_multiple_of(spec.reject_every) {
            transfer_body(&id, &spec.empty(), &spec.bank(), 1)
        } else {
            transfer_body(&id, &spec.bank(), &spec.sink(writer), 1 + n % 7)
        };
        let outcome = load_send(&shared, writer, id, request).await;
        if let Some(seq) = outcome.seq() {
            shared.seq_max.fetch_max(seq, Ordering::SeqCst);
        }
        report.outcomes.push(outcome);
        shared.answered.fetch_add(1, Ordering::SeqCst);
    }
    report
}

/// Sends one transfer until a node gives a definite answer (2xx/4xx), the same request each
/// time, trying the nodes in turn from the writer's own: the client's retry loop
/// (`Client::deliver`); its observer counts the answers per node.
async fn load_send(shared: &LoadShared, writer: usize, id: String, request: Value) -> LoadOutcome {
    let api_request = ApiRequest {
        method: Method::Post,
        path: "/v1/transfers".into(),
        body: Some(request.to_string()),
    };
    let delivery = Delivery {
        node_first: writer,
        attempt_timeout: LOAD_ATTEMPT_TIMEOUT,
        deadline: tokio::time::Instant::now() + LOAD_DEFINITE_DEADLINE,
    };
    match shared.client.deliver(&api_request, delivery).await {
        Ok(delivered) => LoadOutcome {
            id,
            request,
            status: delivered.reply.status,
            answer: serde_json::from_str(&delivered.reply.body).unwrap_or(Value::Null),
            node: shared.ids[delivered.node_index],
            attempts: delivered.attempts,
        },
        Err(undelivered) => panic!(
            "transfer {id}: no definite answer within {LOAD_DEFINITE_DEADLINE:?} ({} attempts): {}",
            undelivered.attempts, undelivered.error
        ),
    }
}
