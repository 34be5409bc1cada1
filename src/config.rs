//! The node's configuration file (TOML, one per node) and its translation into the options of
//! the replicated ledger. Durations are `_ms` integers here, at the edge, and `Duration` inside.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use raftpay_raft::node::NodeOptions;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub node_id: u64,
    /// Where this node listens, and the address peers and clients use to reach it.
    pub http_addr: String,
    pub data_dir: PathBuf,
    #[serde(default)]
    pub cluster: ClusterConfig,
    #[serde(default)]
    pub raft: RaftConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub storage: StorageConfig,
}

/// The node's storage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// The leader answers writes with `507 insufficient_storage` while the file system of
    /// `data_dir` has less free space than this (0 turns the check off). Room for the entries in
    /// flight, snapshots and the final checkpoint of a clean stop.
    pub disk_reserve_bytes: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            disk_reserve_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Logging of a node; `RAFTPAY_LOG` (same syntax as `level`) overrides the level, and
/// `--log-format` the format.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `EnvFilter` syntax, e.g. `info` or `info,openraft=warn`.
    pub level: String,
    pub format: LogFormatConfig,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormatConfig {
    Pretty,
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info,openraft=warn,sled=warn".into(),
            format: LogFormatConfig::Pretty,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The voters the cluster is born with (used once, on a fresh data dir). Empty for a node
    /// that joins an existing cluster.
    #[serde(default)]
    pub initial_voters: Vec<Peer>,
    /// When set, node-to-node `/raft/` calls must present it.
    pub secret: Option<String>,
    /// Bind outgoing connections to other nodes to this node's own IP (from `http_addr`), so
    /// firewall rules can tell the nodes apart when they share a host (the chaos suite does).
    #[serde(default)]
    pub bind_outgoing: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub id: u64,
    pub http_addr: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftConfig {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub snapshot_logs_since_last: u64,
    pub logs_kept_behind_snapshot: u64,
    pub write_timeout_ms: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 200,
            election_timeout_max_ms: 400,
            snapshot_logs_since_last: 20_000,
            logs_kept_behind_snapshot: 1_000,
            write_timeout_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub body_bytes_max: usize,
    /// When set, `/v1/` requests need `Authorization: Bearer <api_token>`.
    pub api_token: Option<String>,
    /// How long a follower waits for the leader's answer to a forwarded request.
    pub forward_timeout_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            body_bytes_max: 1024 * 1024,
            api_token: None,
            forward_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    /// Reads and checks a config file.
    ///
    /// # Errors
    /// When the file cannot be read, is not valid TOML of this shape, or breaks a rule.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        config.check().map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        if self.node_id == 0 {
            return Err("node_id must be at least 1".into());
        }
        let raft = &self.raft;
        if raft.heartbeat_interval_ms == 0
            || raft.election_timeout_min_ms <= raft.heartbeat_interval_ms
        {
            return Err("raft: need 0 < heartbeat_interval_ms < election_timeout_min_ms".into());
        }
        if raft.election_timeout_max_ms <= raft.election_timeout_min_ms {
            return Err("raft: election_timeout_max_ms must exceed election_timeout_min_ms".into());
        }
        if raft.snapshot_logs_since_last == 0 {
            return Err("raft: snapshot_logs_since_last must be at least 1".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for peer in &self.cluster.initial_voters {
            if !seen.insert(peer.id) {
                return Err(format!("cluster: voter {} listed twice", peer.id));
            }
            if peer.id == self.node_id && peer.http_addr != self.http_addr {
                return Err(format!(
                    "cluster: this node is listed at {} but http_addr is {}",
                    peer.http_addr, self.http_addr
                ));
            }
        }
        if self.cluster.bind_outgoing && self.outgoing_ip().is_none() {
            return Err("cluster: bind_outgoing needs http_addr to be an IP:port".into());
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(format!(
                "log: level {:?} is not a valid filter",
                self.log.level
            ));
        }
        if self.http.body_bytes_max == 0 {
            return Err("http: body_bytes_max must be at least 1".into());
        }
        Ok(())
    }

    /// The local IP for outgoing connections, when `bind_outgoing` is set.
    pub fn outgoing_ip(&self) -> Option<std::net::IpAddr> {
        if !self.cluster.bind_outgoing {
            return None;
        }
        self.http_addr
            .parse::<std::net::SocketAddr>()
            .ok()
            .map(|addr| addr.ip())
    }

    pub fn node_options(&self) -> NodeOptions {
        let raft = &self.raft;
        NodeOptions {
            node_id: self.node_id,
            http_addr: self.http_addr.clone(),
            data_dir: self.data_dir.clone(),
            initial_voters: self
                .cluster
                .initial_voters
                .iter()
                .map(|peer| (peer.id, peer.http_addr.clone()))
                .collect::<BTreeMap<_, _>>(),
            secret: self.cluster.secret.clone(),
            outgoing_ip: self.outgoing_ip(),
            heartbeat_interval: Duration::from_millis(raft.heartbeat_interval_ms),
            election_timeout_min: Duration::from_millis(raft.election_timeout_min_ms),
            election_timeout_max: Duration::from_millis(raft.election_timeout_max_ms),
            snapshot_logs_since_last: raft.snapshot_logs_since_last,
            logs_kept_behind_snapshot: raft.logs_kept_behind_snapshot,
            write_timeout: Duration::from_millis(raft.write_timeout_ms),
            disk_reserve_bytes: self.storage.disk_reserve_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config.check()?;
        Ok(config)
    }

    #[test]
    fn the_shipped_configs_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for n in 1..=3 {
            let config =
                Config::load(&root.join(format!("cluster-configs/local-3/node{n}.toml"))).unwrap();
            assert_eq!(config.node_id, n);
            assert_eq!(config.cluster.initial_voters.len(), 3);
        }
        Config::load(&root.join("cluster-configs/multi-host.example.toml")).unwrap();
    }

    #[test]
    fn bad_configs_are_refused() {
        let base = "node_id = 1\nhttp_addr = \"127.0.0.1:1\"\ndata_dir = \"d\"\n";
        assert!(parse(base).is_ok());
        assert!(parse(&format!("{base}unknown = 1\n")).is_err());
        assert!(parse(&base.replace("node_id = 1", "node_id = 0")).is_err());
        assert!(parse(&format!("{base}[raft]\nheartbeat_interval_ms = 600\n")).is_err());
        assert!(parse(&format!("{base}[raft]\nelection_timeout_max_ms = 150\n")).is_err());
        let twice = "[cluster]\ninitial_voters = [{id = 2, http_addr = \"a\"}, {id = 2, http_addr = \"b\"}]\n";
        assert!(parse(&format!("{base}{twice}")).is_err());
        let wrong_addr = "[cluster]\ninitial_voters = [{id = 1, http_addr = \"127.0.0.1:2\"}]\n";
        assert!(parse(&format!("{base}{wrong_addr}")).is_err());
        assert!(parse(&format!(
            "{base}[log]\nlevel = \"debug\"\nformat = \"json\"\n"
        ))
        .is_ok());
        assert!(parse(&format!("{base}[log]\nformat = \"xml\"\n")).is_err());
        assert_eq!(
            parse(base).map(|c| c.storage.disk_reserve_bytes),
            Ok(64 * 1024 * 1024)
        );
        let reserve = parse(&format!("{base}[storage]\ndisk_reserve_bytes = 0\n"));
        assert_eq!(reserve.map(|c| c.storage.disk_reserve_bytes), Ok(0));
        assert!(parse(&format!("{base}[storage]\ndisk_reserve = 1\n")).is_err());
        assert!(parse(&format!("{base}[storage]\ndisk_reserve_bytes = -1\n")).is_err());
        assert!(parse(&format!("{base}[log]\nlevel = \"info,[[\"\n")).is_err());
    }
}
