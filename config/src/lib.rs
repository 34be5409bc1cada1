//! A raftpay node's configuration file (TOML, one per node): its shape, its defaults (the one
//! place where the shipped timing lives), its rules, and the one writer of such files. The
//! node, `raftpay config init`, the chaos suite, the scripts and the tests all go through
//! [`Config`]; none of them formats TOML by hand. Durations are `_ms` integers here, at the
//! edge; the service turns them into `Duration`s.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub node_id: u64,
    /// The address peers and clients use to reach this node (advertised in the membership).
    pub http_addr: String,
    /// Where the node binds, when that differs from `http_addr`: in a container it binds
    /// `0.0.0.0:7001` while peers reach it as `node1:7001`. Default: `http_addr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_addr: Option<String>,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `EnvFilter` syntax, e.g. `info` or `info,openraft=warn`.
    pub level: String,
    pub format: LogFormatConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The voters the cluster is born with (used once, on a fresh data dir). Empty for a node
    /// that joins an existing cluster.
    #[serde(default)]
    pub initial_voters: Vec<Peer>,
    /// When set, node-to-node `/raft/` calls must present it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Bind outgoing connections to other nodes to this node's own IP (from `http_addr`), so
    /// firewall rules can tell the nodes apart when they share a host (the chaos suite does).
    #[serde(default)]
    pub bind_outgoing: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub id: u64,
    pub http_addr: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub body_bytes_max: usize,
    /// When set, `/v1/` requests need `Authorization: Bearer <api_token>`.
    #[serde(skip_serializing_if = "Option::is_none")]
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
    #[error("{}{source}", place(path))]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("{}{message}", place(path))]
    Invalid { path: PathBuf, message: String },
    #[error("cannot write {}{message}", place(path))]
    Write { path: PathBuf, message: String },
}

/// `"<path>: "`, or nothing for text that came from no file.
fn place(path: &Path) -> String {
    if path.as_os_str().is_empty() {
        String::new()
    } else {
        format!("{}: ", path.display())
    }
}

impl ConfigError {
    /// The same error, naming the file it is about.
    fn at(self, file: &Path) -> ConfigError {
        let path = file.to_path_buf();
        match self {
            ConfigError::Read { source, .. } => ConfigError::Read { path, source },
            ConfigError::Parse { source, .. } => ConfigError::Parse { path, source },
            ConfigError::Invalid { message, .. } => ConfigError::Invalid { path, message },
            ConfigError::Write { message, .. } => ConfigError::Write { path, message },
        }
    }
}

/// The first lines of every file [`Config::to_toml`] writes.
const HEADER: &str =
    "# raftpay node configuration, one file per node; written by `raftpay config init`.\n\
# Every key and its default: README.md, section \"Configuration\".\n\n";

impl Config {
    /// A node with every setting at its default and no initial voters (a node that joins a
    /// running cluster; set `cluster.initial_voters` for the nodes a cluster is born with).
    pub fn new(node_id: u64, http_addr: impl Into<String>, data_dir: impl Into<PathBuf>) -> Config {
        Config {
            node_id,
            http_addr: http_addr.into(),
            listen_addr: None,
            data_dir: data_dir.into(),
            cluster: ClusterConfig::default(),
            raft: RaftConfig::default(),
            http: HttpConfig::default(),
            log: LogConfig::default(),
            storage: StorageConfig::default(),
        }
    }

    /// Reads and checks a config file.
    ///
    /// # Errors
    /// When the file cannot be read, is not valid TOML of this shape, or breaks a rule.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text).map_err(|error| error.at(path))
    }

    /// Parses and checks the text of a config file.
    ///
    /// # Errors
    /// When it is not valid TOML of this shape, or breaks a rule.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: PathBuf::new(),
            source,
        })?;
        config.check().map_err(|message| ConfigError::Invalid {
            path: PathBuf::new(),
            message,
        })?;
        Ok(config)
    }

    /// The config as the text of a file, every setting spelled out. [`Config::parse`] gives it
    /// back unchanged (tested).
    ///
    /// # Errors
    /// When the config breaks a rule: nothing writes a file a node would refuse.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        self.check().map_err(|message| ConfigError::Invalid {
            path: PathBuf::new(),
            message,
        })?;
        let body = toml::to_string(self).map_err(|source| ConfigError::Write {
            path: PathBuf::new(),
            message: source.to_string(),
        })?;
        Ok(format!("{HEADER}{body}"))
    }

    /// Writes the config to `path` (through a temporary file and a rename, so a reader never
    /// sees half a file).
    ///
    /// # Errors
    /// When the config breaks a rule or the file cannot be written.
    pub fn write(&self, path: &Path) -> Result<(), ConfigError> {
        let text = self.to_toml().map_err(|error| error.at(path))?;
        let temp = path.with_extension("toml.partial");
        let io = |source: std::io::Error| ConfigError::Write {
            path: path.to_path_buf(),
            message: source.to_string(),
        };
        std::fs::write(&temp, text).map_err(io)?;
        std::fs::rename(&temp, path).map_err(io)
    }

    /// The config with one setting changed: `key` is a dotted path (`raft.heartbeat_interval_ms`,
    /// `log.format`), `value` a TOML value (`70`, `"json"`, `true`); a bare word is taken as a
    /// string, so `log.format=json` works from a shell.
    ///
    /// # Errors
    /// When the key is unknown, the value has the wrong type, or the result breaks a rule.
    pub fn with_setting(&self, key: &str, value: &str) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: PathBuf::new(),
            message,
        };
        let value: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {value}")) {
            Ok(mut table) => table
                .remove("v")
                .ok_or_else(|| invalid(format!("{key}: no value")))?,
            Err(_) => toml::Value::String(value.to_owned()),
        };
        let mut root = toml::Value::try_from(self).map_err(|e| invalid(e.to_string()))?;
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts
            .pop()
            .filter(|last| !last.is_empty())
            .ok_or_else(|| invalid(format!("{key:?} is not a setting")))?;
        let mut table = root
            .as_table_mut()
            .ok_or_else(|| invalid("the config is not a table".into()))?;
        for part in parts {
            table = table
                .entry(part)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| invalid(format!("{key}: {part} is not a section")))?;
        }
        table.insert(last.to_owned(), value);
        let text = toml::to_string(&root).map_err(|e| invalid(e.to_string()))?;
        Config::parse(&text).map_err(|error| match error {
            ConfigError::Parse { source, .. } => invalid(format!("{key}: {}", source.message())),
            other => other,
        })
    }

    /// The address the node binds: `listen_addr`, else `http_addr`.
    pub fn listen_address(&self) -> &str {
        self.listen_addr.as_deref().unwrap_or(&self.http_addr)
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
        if self.listen_addr.as_deref().is_some_and(str::is_empty) || self.http_addr.is_empty() {
            return Err("http_addr and listen_addr must not be empty".into());
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text).map_err(|e| e.to_string())
    }

    fn repo_file(path: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
    }

    #[test]
    fn the_shipped_configs_load() {
        for n in 1..=3 {
            let config = Config::load(&repo_file(&format!("cluster-configs/local-3/node{n}.toml")))
                .expect("shipped config");
            assert_eq!(config.node_id, n);
            assert_eq!(config.cluster.initial_voters.len(), 3);
        }
        Config::load(&repo_file("cluster-configs/multi-host.example.toml")).expect("example");
    }

    #[test]
    fn the_shipped_configs_keep_the_defaults() {
        // The checked-in files are what users copy: their timing must be the shipped defaults,
        // not a copy that drifts from `RaftConfig::default()`.
        let config =
            Config::load(&repo_file("cluster-configs/local-3/node1.toml")).expect("shipped config");
        assert_eq!(config.raft, RaftConfig::default());
        assert_eq!(config.http, HttpConfig::default());
        assert_eq!(config.storage, StorageConfig::default());
    }

    #[test]
    fn a_written_config_reads_back_unchanged() {
        let mut config = Config::new(4, "node4.example:7004", "/var/lib/raftpay/node 4");
        config.listen_addr = Some("0.0.0.0:7004".into());
        config.cluster.initial_voters = vec![
            Peer {
                id: 4,
                http_addr: "node4.example:7004".into(),
            },
            Peer {
                id: 5,
                http_addr: "node5.example:7005".into(),
            },
        ];
        config.cluster.secret = Some("a \"quoted\" secret".into());
        config.cluster.bind_outgoing = false;
        config.raft.heartbeat_interval_ms = 70;
        config.http.api_token = Some("token".into());
        config.log.format = LogFormatConfig::Json;
        config.storage.disk_reserve_bytes = 0;
        let text = config.to_toml().expect("valid config");
        assert!(text.starts_with("# raftpay node configuration"), "{text}");
        assert_eq!(Config::parse(&text).expect("reads back"), config);

        let plain = Config::new(1, "127.0.0.1:7001", "data/node1");
        let text = plain.to_toml().expect("valid config");
        assert!(
            !text.contains("listen_addr") && !text.contains("secret"),
            "{text}"
        );
        assert_eq!(Config::parse(&text).expect("reads back"), plain);
    }

    #[test]
    fn an_invalid_config_is_not_written() {
        let dir = std::env::temp_dir().join(format!("raftpay-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("node.toml");
        let mut config = Config::new(1, "127.0.0.1:7001", "d");
        config.raft.election_timeout_max_ms = config.raft.election_timeout_min_ms;
        let error = config.write(&path).expect_err("refused").to_string();
        assert!(error.contains("election_timeout_max_ms"), "{error}");
        assert!(!path.exists());
        config.raft = RaftConfig::default();
        config.write(&path).expect("written");
        assert_eq!(Config::load(&path).expect("loads"), config);
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn a_setting_changes_that_setting_only_and_bad_ones_are_refused() {
        let config = Config::new(1, "127.0.0.1:7001", "d");
        let changed = config
            .with_setting("raft.heartbeat_interval_ms", "70")
            .expect("valid");
        assert_eq!(changed.raft.heartbeat_interval_ms, 70);
        assert_eq!(
            Config {
                raft: RaftConfig::default(),
                ..changed.clone()
            },
            config
        );
        let json = config
            .with_setting("log.format", "json")
            .expect("bare word");
        assert_eq!(json.log.format, LogFormatConfig::Json);
        let secret = config
            .with_setting("cluster.secret", "s3cret")
            .expect("valid");
        assert_eq!(secret.cluster.secret.as_deref(), Some("s3cret"));
        let listen = config
            .with_setting("listen_addr", "\"0.0.0.0:7001\"")
            .expect("valid");
        assert_eq!(listen.listen_address(), "0.0.0.0:7001");
        for (key, value, says) in [
            ("raft.heartbeat_ms", "70", "unknown field"),
            ("raft.heartbeat_interval_ms", "soon", "invalid type"),
            ("raft.heartbeat_interval_ms", "0", "heartbeat_interval_ms"),
            ("node_id.x", "1", "not a section"),
            ("", "1", "not a setting"),
            ("log.format", "xml", "unknown variant"),
        ] {
            let error = config.with_setting(key, value).expect_err(key).to_string();
            assert!(error.contains(says), "{key}={value}: {error}");
        }
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
        assert!(parse(&format!("listen_addr = \"\"\n{base}")).is_err());
        let listen = parse(&format!("listen_addr = \"0.0.0.0:1\"\n{base}")).expect("valid");
        assert_eq!(listen.listen_address(), "0.0.0.0:1");
        assert_eq!(parse(base).expect("valid").listen_address(), "127.0.0.1:1");
    }
}
