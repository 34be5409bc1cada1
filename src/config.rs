//! The node's configuration (the `raftpay-config` crate: file shape, defaults, rules, writer)
//! and its translation into the options of the replicated ledger, where `_ms` integers become
//! `Duration`s.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub use raftpay_config::*;
use raftpay_raft::node::NodeOptions;

/// The replicated ledger's options for the node `config` describes.
pub fn node_options(config: &Config) -> NodeOptions {
    let raft = &config.raft;
    NodeOptions {
        node_id: config.node_id,
        http_addr: config.http_addr.clone(),
        data_dir: config.data_dir.clone(),
        initial_voters: config
            .cluster
            .initial_voters
            .iter()
            .map(|peer| (peer.id, peer.http_addr.clone()))
            .collect::<BTreeMap<_, _>>(),
        secret: config.cluster.secret.clone(),
        outgoing_ip: config.outgoing_ip(),
        heartbeat_interval: Duration::from_millis(raft.heartbeat_interval_ms),
        election_timeout_min: Duration::from_millis(raft.election_timeout_min_ms),
        election_timeout_max: Duration::from_millis(raft.election_timeout_max_ms),
        snapshot_logs_since_last: raft.snapshot_logs_since_last,
        logs_kept_behind_snapshot: raft.logs_kept_behind_snapshot,
        write_timeout: Duration::from_millis(raft.write_timeout_ms),
        disk_reserve_bytes: config.storage.disk_reserve_bytes,
    }
}

/// `raftpay config`: the one writer of node config files, for people and for scripts.
#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Write a node's config file: every setting at its default (or as in `--from`), changed
    /// by `--set`. Refuses settings a node would refuse.
    Init(InitArgs),
    /// Check config files the way a starting node does; prints one line per file.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    #[arg(long)]
    pub node_id: u64,
    /// The address peers and clients reach this node at.
    #[arg(long)]
    pub http_addr: String,
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Bind here instead of `--http-addr` (a container: `0.0.0.0:7001`).
    #[arg(long)]
    pub listen_addr: Option<String>,
    /// An initial voter, `ID=ADDR`; repeat for each. None: a node that joins a running cluster.
    #[arg(long = "voter", value_name = "ID=ADDR", value_parser = voter_parse)]
    pub voters: Vec<Peer>,
    /// Take every other setting from this config (e.g. another node's of the same cluster).
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
    /// Change one setting, `KEY=VALUE` with a dotted key: `raft.heartbeat_interval_ms=70`,
    /// `log.format=json`, `cluster.secret=...`. Repeat as needed.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub settings: Vec<String>,
    /// Write the file here (default: standard output).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Replace `--out` if it exists.
    #[arg(long)]
    pub force: bool,
}

fn voter_parse(text: &str) -> Result<Peer, String> {
    let (id, addr) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected ID=ADDR"))?;
    let id = id
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: {id:?} is not a node id"))?;
    if addr.trim().is_empty() {
        return Err(format!("{text:?}: no address"));
    }
    Ok(Peer {
        id,
        http_addr: addr.trim().to_owned(),
    })
}

/// The config `raftpay config init` writes for `args`.
///
/// # Errors
/// When `--from` cannot be loaded, a `--set` is refused, or the result breaks a rule.
pub fn init_config(args: &InitArgs) -> anyhow::Result<Config> {
    let mut config = match &args.from {
        Some(path) => Config::load(path)?,
        None => Config::new(args.node_id, "", ""),
    };
    config.node_id = args.node_id;
    config.http_addr.clone_from(&args.http_addr);
    config.listen_addr.clone_from(&args.listen_addr);
    config.data_dir.clone_from(&args.data_dir);
    config.cluster.initial_voters.clone_from(&args.voters);
    for setting in &args.settings {
        let (key, value) = setting
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--set {setting:?}: expected KEY=VALUE"))?;
        config = config
            .with_setting(key.trim(), value.trim())
            .map_err(|error| anyhow::anyhow!("--set {setting}: {error}"))?;
    }
    config.to_toml()?;
    Ok(config)
}

/// Runs `raftpay config`.
///
/// # Errors
/// When the config cannot be made or written, or a checked file is invalid.
pub fn run(command: &ConfigCommand) -> anyhow::Result<std::process::ExitCode> {
    match command {
        ConfigCommand::Init(args) => {
            let config = init_config(args)?;
            match &args.out {
                Some(path) => {
                    if path.exists() && !args.force {
                        anyhow::bail!("{} exists (use --force to replace it)", path.display());
                    }
                    config.write(path)?;
                }
                None => print!("{}", config.to_toml()?),
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        ConfigCommand::Check { files } => {
            let mut bad = 0;
            for file in files {
                match Config::load(file) {
                    Ok(config) => println!(
                        "{}: ok (node {}, {} initial voters)",
                        file.display(),
                        config.node_id,
                        config.cluster.initial_voters.len()
                    ),
                    Err(error) => {
                        bad += 1;
                        eprintln!("{error}");
                    }
                }
            }
            Ok(if bad == 0 {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            })
        }
    }
}
