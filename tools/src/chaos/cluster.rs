//! The cluster under test: three real `raftpay serve` processes, node N on 127.0.0.N, with
//! `bind_outgoing = true` so iptables rules can tell the nodes apart; the HTTP access every other
//! part of the chaos suite uses (`Api`, bound to its own client address so that cutting the
//! nodes apart never cuts the clients off); and the packet filter of the private network
//! namespace (`Firewall`).
//!
//! Owns: node processes (spawn, SIGKILL, SIGSTOP/SIGCONT, all by pid), their config files, data
//! directories and logs, and the iptables rules it added. Must never: signal a process it did
//! not start, send traffic anywhere but 127.0.0.0/8, or touch iptables outside the namespace it
//! was given.
//!
//! Over 800 lines on purpose: node processes, their network and power control, and the HTTP access to them are one fixture with one owner of every pid and rule.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use raftpay_client::{ApiRequest, Client, Delivery, Method, Reply, Transport};
use raftpay_config::{Config, Peer, RaftConfig};

/// Number of nodes in a chaos cluster.
pub const NODES: u64 = 3;
/// Source address of every request the chaos suite sends (workload, probes, status polls): not
/// a node's address, so the DROP rules between node addresses never match it.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 100);
/// Timeout of one status poll.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);
/// Between polls while waiting for a condition.
const POLL_PAUSE: Duration = Duration::from_millis(50);

/// The chaos nodes run with the shipped Raft timing (`RaftConfig::default()`), but for more
/// frequent snapshots, so that faults also hit snapshot building and installing.
const SNAPSHOT_LOGS_SINCE_LAST: u64 = 5_000;

/// The chaos nodes' leader lease (`election_timeout_max_ms`): the shipped default.
pub fn election_timeout_max() -> Duration {
    Duration::from_millis(RaftConfig::default().election_timeout_max_ms)
}

/// The address of node `id`: 127.0.0.`id`.
pub fn node_ip(id: u64) -> Ipv4Addr {
    let last = u8::try_from(id).unwrap_or(u8::MAX);
    Ipv4Addr::new(127, 0, 0, last)
}

/// HTTP access to the nodes: the project's one client (its transport and its retry loop), bound
/// to `CLIENT_IP`, addressed by node id.
#[derive(Debug, Clone)]
pub struct Api {
    client: Client,
    /// The node id of each of the client's nodes, in the same order.
    ids: Vec<u64>,
}

/// A definite (2xx/4xx) answer, from which node, after how many sends.
#[derive(Debug, Clone)]
pub struct Answered {
    pub reply: Reply,
    pub node: u64,
    pub attempts: u32,
}

/// No definite answer before the deadline.
#[derive(Debug, Clone)]
pub struct NoAnswer {
    pub node: u64,
    pub attempts: u32,
    pub last: String,
}

impl Api {
    /// # Errors
    /// When the node list is empty or the HTTP client cannot be built.
    pub fn new(nodes: Vec<(u64, String)>) -> anyhow::Result<Api> {
        let urls: Vec<&str> = nodes.iter().map(|(_, url)| url.as_str()).collect();
        let transport = Transport {
            local_address: Some(IpAddr::V4(CLIENT_IP)),
            connect_timeout: Some(Duration::from_millis(500)),
        };
        // The workload picks the node of every operation itself: no moving to the leader.
        let client = Client::with_transport(&urls, None, &transport)
            .context("HTTP client")?
            .with_follow_leader(false);
        Ok(Api {
            client,
            ids: nodes.iter().map(|(id, _)| *id).collect(),
        })
    }

    pub fn node_ids(&self) -> Vec<u64> {
        self.ids.clone()
    }

    /// One send to one node: the status and body (whatever the status), or why there was none.
    ///
    /// # Errors
    /// A description of the transport failure (connect, timeout, reset).
    pub async fn once(
        &self,
        node: u64,
        request: &ApiRequest,
        timeout: Duration,
    ) -> Result<Reply, String> {
        let Some(index) = self.ids.iter().position(|id| *id == node) else {
            return Err(format!("no node {node}"));
        };
        self.client
            .send_once(index, request, timeout)
            .await
            .map_err(|error| error.to_string())
    }

    /// Sends the same request until some node gives a definite answer (2xx or 4xx): first to
    /// the node at `start` (an index into the node list), then to the next ones round-robin
    /// (the client's retry loop, `Client::deliver`); gives up at `deadline`. A timeout, a
    /// connection error, a 503 or any other 5xx says nothing about the outcome, so the same
    /// request (same id) goes to another node.
    ///
    /// # Errors
    /// `NoAnswer` when the deadline passes first.
    pub async fn until_definite(
        &self,
        request: &ApiRequest,
        start: usize,
        attempt_timeout: Duration,
        deadline: Instant,
    ) -> Result<Answered, NoAnswer> {
        let delivery = Delivery {
            node_first: start,
            attempt_timeout,
            deadline,
        };
        let node_of = |index: usize| self.ids.get(index).copied().unwrap_or(0);
        match self.client.deliver(request, delivery).await {
            Ok(delivered) => Ok(Answered {
                reply: delivered.reply,
                node: node_of(delivered.node_index),
                attempts: delivered.attempts,
            }),
            Err(undelivered) => Err(NoAnswer {
                node: node_of(undelivered.node_index),
                attempts: undelivered.attempts,
                last: undelivered.error.to_string(),
            }),
        }
    }

    /// `GET /v1/cluster` of one node, or `None` when it does not answer in time.
    pub async fn status(&self, node: u64) -> Option<serde_json::Value> {
        let reply = self
            .once(node, &ApiRequest::cluster_status(), STATUS_TIMEOUT)
            .await
            .ok()?;
        if reply.status != 200 {
            return None;
        }
        serde_json::from_str(&reply.body).ok()
    }
}

/// The iptables rules of the private network namespace: DROP between node addresses.
#[derive(Debug)]
pub struct Firewall {
    netns: String,
    /// `(source, destination)` pairs currently dropped.
    rules: Vec<(Ipv4Addr, Ipv4Addr)>,
}

impl Firewall {
    pub fn new(netns: String) -> Firewall {
        Firewall {
            netns,
            rules: Vec::new(),
        }
    }

    async fn iptables(
        &self,
        action: &str,
        source: Ipv4Addr,
        destination: Ipv4Addr,
    ) -> anyhow::Result<()> {
        let output = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "iptables",
                "-w",
                action,
                "INPUT",
                "-s",
            ])
            .arg(source.to_string())
            .arg("-d")
            .arg(destination.to_string())
            .args(["-j", "DROP"])
            .stdin(Stdio::null())
            .output()
            .await
            .context("run `ip netns exec ... iptables`")?;
        if !output.status.success() {
            bail!(
                "iptables {action} INPUT -s {source} -d {destination} -j DROP in {} failed: {}",
                self.netns,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// Cuts `node` off from every other node, both directions.
    ///
    /// # Errors
    /// When iptables refuses a rule (the rules added so far stay recorded for `heal`).
    pub async fn isolate(&mut self, node: u64, others: &[u64]) -> anyhow::Result<()> {
        for other in others {
            for (source, destination) in [
                (node_ip(node), node_ip(*other)),
                (node_ip(*other), node_ip(node)),
            ] {
                self.iptables("-A", source, destination).await?;
                self.rules.push((source, destination));
            }
        }
        tracing::info!(node, ?others, netns = %self.netns, "isolated (iptables DROP)");
        Ok(())
    }

    /// Deletes every rule this firewall added.
    ///
    /// # Errors
    /// When a rule cannot be deleted (it stays recorded, so a later heal retries it).
    pub async fn heal(&mut self) -> anyhow::Result<()> {
        while let Some((source, destination)) = self.rules.last().copied() {
            self.iptables("-D", source, destination).await?;
            self.rules.pop();
        }
        Ok(())
    }

    pub fn is_cut(&self) -> bool {
        !self.rules.is_empty()
    }
}

struct NodeProcess {
    addr: String,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// Three node processes and what the suite knows about them.
pub struct Cluster {
    binary: PathBuf,
    nodes: BTreeMap<u64, NodeProcess>,
    paused: BTreeSet<u64>,
    pub api: Api,
    /// Present when the run has a private network namespace.
    pub firewall: Option<Firewall>,
    /// Present in a power-cut run: every node's data directory is a `lossyfs` mount.
    power: Option<Power>,
}

/// How long a `lossyfs` mount may take to be ready, or to unmount on SIGTERM.
const MOUNT_DEADLINE: Duration = Duration::from_secs(20);
/// How long one `lossyfs ctl cut` may take (it rewrites the unsynced files).
const CUT_DEADLINE: Duration = Duration::from_secs(120);

/// The `lossyfs` mounts of a power-cut run, one per node, and the binary that controls them.
struct Power {
    lossyfs: PathBuf,
    mounts: BTreeMap<u64, LossyMount>,
}

/// One `lossyfs mount` process: the node's data directory, backed by a directory beside it.
struct LossyMount {
    mountpoint: PathBuf,
    control: PathBuf,
    process: std::process::Child,
}

impl LossyMount {
    /// Mounts `backing` at `mountpoint` and waits until its control socket is there.
    fn start(
        lossyfs: &Path,
        backing: &Path,
        mountpoint: &Path,
        control: &Path,
        log: &Path,
    ) -> anyhow::Result<LossyMount> {
        for dir in [backing, mountpoint] {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let _ = std::fs::remove_file(control);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        let process = std::process::Command::new(lossyfs)
            .arg("mount")
            .arg("--backing")
            .arg(backing)
            .arg("--mountpoint")
            .arg(mountpoint)
            .arg("--control")
            .arg(control)
            // fsync reaches lossyfs's model either way; the backing disk need not pay for it.
            .arg("--no-sync-backing")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", lossyfs.display()))?;
        let mut mount = LossyMount {
            mountpoint: mountpoint.to_path_buf(),
            control: control.to_path_buf(),
            process,
        };
        let until = std::time::Instant::now() + MOUNT_DEADLINE;
        while !mount.control.exists() {
            if let Ok(Some(status)) = mount.process.try_wait() {
                bail!(
                    "lossyfs mount of {} exited ({status}) before it was ready",
                    mountpoint.display()
                );
            }
            if std::time::Instant::now() >= until {
                bail!(
                    "lossyfs mount of {} not ready within {MOUNT_DEADLINE:?}",
                    mountpoint.display()
                );
            }
            std::thread::sleep(POLL_PAUSE);
        }
        tracing::info!(mountpoint = %mountpoint.display(), pid = mount.process.id(), "lossyfs mounted");
        Ok(mount)
    }
}

impl Drop for LossyMount {
    /// SIGTERM (lossyfs unmounts and exits); if it does not within `MOUNT_DEADLINE`, SIGKILL
    /// and a lazy unmount, so no dead mount is left behind.
    fn drop(&mut self) {
        let pid = self.process.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let until = std::time::Instant::now() + MOUNT_DEADLINE;
        loop {
            match self.process.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if std::time::Instant::now() < until => std::thread::sleep(POLL_PAUSE),
                _ => break,
            }
        }
        tracing::warn!(mountpoint = %self.mountpoint.display(), "lossyfs did not unmount on SIGTERM; killing it");
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.mountpoint)
            .status();
    }
}

/// A free TCP port on `ip` (bound and released at once).
fn free_port(ip: Ipv4Addr) -> anyhow::Result<u16> {
    let listener = TcpListener::bind(SocketAddr::new(IpAddr::V4(ip), 0))
        .with_context(|| format!("bind an ephemeral port on {ip}"))?;
    Ok(listener.local_addr()?.port())
}

/// Node `id`'s config, written by `Config` (the one writer of node configs).
fn config_of(id: u64, addr: &str, data_dir: &Path, voters: &[(u64, String)]) -> Config {
    let mut config = Config::new(id, addr, data_dir);
    config.cluster.initial_voters = voters
        .iter()
        .map(|(id, addr)| Peer {
            id: *id,
            http_addr: addr.clone(),
        })
        .collect();
    config.cluster.bind_outgoing = true;
    config.raft.snapshot_logs_since_last = SNAPSHOT_LOGS_SINCE_LAST;
    config
}

impl Cluster {
    /// Writes the configs of a three-node cluster under `dir` (data in `dir/nodeN`, logs in
    /// `logs_dir/nodeN.log`) and starts every node.
    ///
    /// # Errors
    /// When a port, a file or a process cannot be had.
    ///
    /// With `lossyfs` (a power-cut run), each node's data directory is first mounted as a
    /// `lossyfs` file system backed by `dir/backing/nodeN`.
    pub fn start(
        binary: &Path,
        dir: &Path,
        logs_dir: &Path,
        firewall: Option<Firewall>,
        lossyfs: Option<&Path>,
    ) -> anyhow::Result<Cluster> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let power = match lossyfs {
            Some(lossyfs) => {
                let mut mounts = BTreeMap::new();
                for id in 1..=NODES {
                    let mount = LossyMount::start(
                        lossyfs,
                        &dir.join("backing").join(format!("node{id}")),
                        &dir.join(format!("node{id}")),
                        &dir.join(format!("lossyfs-node{id}.sock")),
                        &logs_dir.join(format!("lossyfs-node{id}.log")),
                    )?;
                    mounts.insert(id, mount);
                }
                Some(Power {
                    lossyfs: lossyfs.to_path_buf(),
                    mounts,
                })
            }
            None => None,
        };
        let mut voters = Vec::new();
        for id in 1..=NODES {
            let ip = node_ip(id);
            voters.push((id, format!("{ip}:{}", free_port(ip)?)));
        }
        let mut nodes = BTreeMap::new();
        for (id, addr) in &voters {
            let config = dir.join(format!("node{id}.toml"));
            config_of(*id, addr, &dir.join(format!("node{id}")), &voters)
                .write(&config)
                .with_context(|| format!("write {}", config.display()))?;
            nodes.insert(
                *id,
                NodeProcess {
                    addr: addr.clone(),
                    config,
                    log: logs_dir.join(format!("node{id}.log")),
                    child: None,
                },
            );
        }
        let api = Api::new(
            voters
                .iter()
                .map(|(id, addr)| (*id, format!("http://{addr}")))
                .collect(),
        )?;
        let mut cluster = Cluster {
            binary: binary.to_path_buf(),
            nodes,
            paused: BTreeSet::new(),
            api,
            firewall,
            power,
        };
        for id in 1..=NODES {
            cluster.spawn(id)?;
        }
        Ok(cluster)
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    pub fn addr(&self, id: u64) -> Option<&str> {
        self.nodes.get(&id).map(|node| node.addr.as_str())
    }

    /// Nodes whose process runs and is not paused.
    pub fn serving(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(id, node)| node.child.is_some() && !self.paused.contains(id))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Starts node `id`'s process; its output is appended to its log.
    ///
    /// # Errors
    /// When the node is unknown, already runs, or the process cannot be started.
    pub fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        let Some(node) = self.nodes.get_mut(&id) else {
            bail!("no node {id}");
        };
        if node.child.is_some() {
            bail!("node {id} already runs");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .with_context(|| format!("open {}", node.log.display()))?;
        let child = Command::new(&self.binary)
            .args(["serve", "--config"])
            .arg(&node.config)
            .env("RAFTPAY_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", self.binary.display()))?;
        tracing::info!(node = id, pid = child.id(), addr = %node.addr, "node started");
        node.child = Some(child);
        Ok(())
    }

    /// SIGKILL node `id` (by its pid) and reap it; nothing if it does not run.
    pub async fn kill(&mut self, id: u64) {
        self.kill_many(&[id]).await;
    }

    /// SIGKILL every listed node first, then reap them: as close to "at once" as it gets.
    pub async fn kill_many(&mut self, ids: &[u64]) {
        let mut killed = Vec::new();
        for id in ids {
            if let Some(mut child) = self.nodes.get_mut(id).and_then(|node| node.child.take()) {
                let pid = child.id();
                if let Err(error) = child.start_kill() {
                    tracing::warn!(node = id, ?pid, %error, "SIGKILL failed (already exited?)");
                }
                killed.push((*id, pid, child));
            }
        }
        for (id, pid, mut child) in killed {
            let status = child.wait().await;
            self.paused.remove(&id);
            tracing::info!(node = id, ?pid, ?status, "node killed (SIGKILL)");
        }
    }

    async fn signal(&self, id: u64, signal: &str) -> anyhow::Result<()> {
        let Some(pid) = self
            .nodes
            .get(&id)
            .and_then(|node| node.child.as_ref())
            .and_then(Child::id)
        else {
            bail!("node {id} does not run");
        };
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .await
            .context("run kill")?;
        if !status.success() {
            bail!("kill -{signal} {pid} (node {id}) failed");
        }
        Ok(())
    }

    /// SIGSTOP node `id`.
    ///
    /// # Errors
    /// When it does not run or the signal fails.
    pub async fn pause(&mut self, id: u64) -> anyhow::Result<()> {
        self.signal(id, "STOP").await?;
        self.paused.insert(id);
        tracing::info!(node = id, "node paused (SIGSTOP)");
        Ok(())
    }

    /// SIGCONT node `id`.
    ///
    /// # Errors
    /// When it does not run or the signal fails.
    pub async fn resume(&mut self, id: u64) -> anyhow::Result<()> {
        self.signal(id, "CONT").await?;
        self.paused.remove(&id);
        tracing::info!(node = id, "node resumed (SIGCONT)");
        Ok(())
    }

    /// Nodes whose process exited although nobody killed it, with the exit status; they are
    /// forgotten (so `spawn` can restart them).
    pub fn exited_on_their_own(&mut self) -> Vec<(u64, String)> {
        let mut exited = Vec::new();
        for (id, node) in &mut self.nodes {
            let Some(child) = node.child.as_mut() else {
                continue;
            };
            match child.try_wait() {
                Ok(None) => {}
                Ok(Some(status)) => {
                    exited.push((*id, status.to_string()));
                    node.child = None;
                }
                Err(error) => exited.push((*id, format!("cannot wait: {error}"))),
            }
        }
        for (id, _) in &exited {
            self.paused.remove(id);
        }
        exited
    }

    /// Polls `GET /health` of node `id` until it answers 200.
    ///
    /// # Errors
    /// When it does not within `within`.
    pub async fn health_wait(&self, id: u64, within: Duration) -> anyhow::Result<()> {
        let until = Instant::now() + within;
        let request = ApiRequest {
            method: Method::Get,
            path: "/health".into(),
            body: None,
        };
        loop {
            if let Ok(reply) = self.api.once(id, &request, STATUS_TIMEOUT).await {
                if reply.status == 200 {
                    return Ok(());
                }
            }
            if Instant::now() >= until {
                bail!("node {id} did not serve /health within {within:?}");
            }
            tokio::time::sleep(POLL_PAUSE).await;
        }
    }

    /// Polls until every serving node names the same leader, itself serving; returns it.
    ///
    /// # Errors
    /// When that does not happen within `within`.
    pub async fn leader_wait(&self, within: Duration) -> anyhow::Result<u64> {
        let until = Instant::now() + within;
        loop {
            let serving = self.serving();
            let mut leaders = Vec::new();
            for id in &serving {
                leaders.push(
                    self.api
                        .status(*id)
                        .await
                        .and_then(|s| s["leader_id"].as_u64()),
                );
            }
            if let Some(Some(leader)) = leaders.first() {
                if leaders.iter().all(|l| *l == Some(*leader)) && serving.contains(leader) {
                    return Ok(*leader);
                }
            }
            if Instant::now() >= until {
                bail!(
                    "no agreed leader within {within:?} (serving {serving:?}, leaders {leaders:?})"
                );
            }
            tokio::time::sleep(POLL_PAUSE).await;
        }
    }

    /// Polls until every node reports the same last log index, applied all of it, and the same
    /// state hash index.
    ///
    /// # Errors
    /// When that does not happen within `within`.
    pub async fn converged_wait(&self, within: Duration) -> anyhow::Result<()> {
        let until = Instant::now() + within;
        loop {
            let mut keys = Vec::new();
            for id in self.ids() {
                keys.push(self.api.status(id).await.map(|s| {
                    (
                        s["last_log_index"].as_u64(),
                        s["last_applied"].as_u64(),
                        s["state_hash_index"].as_u64(),
                    )
                }));
            }
            let converged = match keys.first() {
                Some(Some((log, applied, hash_index))) => {
                    log.is_some()
                        && log == applied
                        && applied == hash_index
                        && keys.iter().all(|key| key == &keys[0])
                }
                _ => false,
            };
            if converged {
                return Ok(());
            }
            if Instant::now() >= until {
                bail!("nodes did not converge within {within:?}: {keys:?}");
            }
            tokio::time::sleep(POLL_PAUSE).await;
        }
    }

    /// The last lines of every node's log, for failure messages.
    pub fn logs_tail(&self, lines_max: usize) -> String {
        let mut out = String::new();
        for (id, node) in &self.nodes {
            let text = std::fs::read_to_string(&node.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out += &format!(
                "--- node {id} ({}) ---\n{}\n",
                node.log.display(),
                lines[lines.len().saturating_sub(lines_max)..].join("\n")
            );
        }
        out
    }

    /// Whether every node's data directory is a `lossyfs` mount (power cuts possible).
    pub fn has_power_control(&self) -> bool {
        self.power.is_some()
    }

    /// The data directory of node `id`.
    pub fn data_dir(&self, id: u64) -> Option<PathBuf> {
        self.power
            .as_ref()
            .and_then(|power| power.mounts.get(&id))
            .map(|mount| mount.mountpoint.clone())
    }

    /// What node `id`'s write-ahead log holds (`raftpay inspect`); the node must be stopped.
    ///
    /// # Errors
    /// When the node has no known data directory, or its log cannot be opened.
    pub async fn inspect(&self, id: u64) -> anyhow::Result<raftpay_api::inspect::LogInspection> {
        let dir = self
            .data_dir(id)
            .with_context(|| format!("no data directory known for node {id}"))?;
        let output = Command::new(&self.binary)
            .arg("inspect")
            .arg("--data-dir")
            .arg(&dir)
            .output()
            .await
            .with_context(|| format!("run {} inspect", self.binary.display()))?;
        if !output.status.success() {
            bail!(
                "node {id}: raftpay inspect {} failed: {}",
                dir.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        serde_json::from_slice(&output.stdout)
            .with_context(|| format!("node {id}: raftpay inspect output"))
    }

    /// Power cut of `ids`: SIGKILL them all, then drop every write their data directories have
    /// not fsynced. The nodes stay down.
    ///
    /// # Errors
    /// Without `lossyfs` mounts, or when a cut fails.
    pub async fn power_cut(&mut self, ids: &[u64]) -> anyhow::Result<()> {
        let Some(power) = self.power.as_ref() else {
            bail!("power cuts need every data directory on lossyfs (--lossyfs)");
        };
        let mut controls = Vec::new();
        for id in ids {
            let mount = power
                .mounts
                .get(id)
                .with_context(|| format!("no lossyfs mount for node {id}"))?;
            controls.push((*id, mount.control.clone()));
        }
        let lossyfs = power.lossyfs.clone();
        self.kill_many(ids).await;
        for (id, control) in controls {
            let output = tokio::time::timeout(
                CUT_DEADLINE,
                Command::new(&lossyfs)
                    .arg("ctl")
                    .arg("--control")
                    .arg(&control)
                    .arg("--timeout-secs")
                    .arg(CUT_DEADLINE.as_secs().to_string())
                    .arg("cut")
                    .output(),
            )
            .await
            .with_context(|| format!("lossyfs cut of node {id} took over {CUT_DEADLINE:?}"))?
            .with_context(|| format!("run {} ctl", lossyfs.display()))?;
            if !output.status.success() {
                bail!(
                    "lossyfs cut of node {id} failed: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                );
            }
            tracing::info!(node = id, answer = %String::from_utf8_lossy(&output.stdout).trim(), "power cut: unsynced writes dropped");
        }
        Ok(())
    }

    /// Resumes paused nodes, removes every DROP rule, restarts every node that is not running.
    ///
    /// # Errors
    /// When a signal, a rule deletion or a start fails.
    pub async fn heal_all(&mut self) -> anyhow::Result<()> {
        for id in self.paused.clone() {
            self.resume(id).await?;
        }
        if let Some(firewall) = self.firewall.as_mut() {
            firewall.heal().await?;
        }
        for id in self.ids() {
            if self.nodes.get(&id).is_some_and(|node| node.child.is_none()) {
                self.spawn(id)?;
            }
        }
        Ok(())
    }

    /// SIGKILL every node (resumed first, so nothing lingers stopped).
    pub async fn shutdown(&mut self) {
        for id in self.paused.clone() {
            let _ = self.resume(id).await;
        }
        let ids = self.ids();
        self.kill_many(&ids).await;
        // Unmounts (each mount's Drop) once no node uses its data directory any more.
        self.power = None;
    }
}
