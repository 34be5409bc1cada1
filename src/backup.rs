//! `raftpay backup` and `raftpay restore`: take a consistent, checksummed copy of a node's
//! ledger over HTTP while the cluster serves, and seed the data directories of a new cluster
//! from it. Prints what it did; `--json` for scripts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use raftpay_raft::store::Backup;

use crate::config::Config;
use raftpay_client::{ApiRequest, Client, Delivery};
use raftpay_tools::cli::ClientOpts;

/// The default `--timeout`: a backup builds a snapshot first; on a large ledger that takes a
/// while.
const BACKUP_TIMEOUT: Duration = Duration::from_secs(300);
/// The largest backup file taken: about 1,000 bytes per transfer, so several million transfers.
const BACKUP_BYTES_MAX: usize = 8 << 30;

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// Where to write the backup file.
    #[arg(long)]
    pub out: PathBuf,
    /// Give up after this many seconds: retrying while no node can give a backup (down, no
    /// leader), and waiting for one to build it (a large ledger takes a while).
    #[arg(long, value_name = "SECONDS", default_value_t = BACKUP_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The backup file.
    #[arg(long)]
    pub from: PathBuf,
    /// Config files of the new cluster's nodes: each node's (new, empty) data_dir is seeded.
    #[arg(long = "config", required = true)]
    pub configs: Vec<PathBuf>,
}

/// Downloads a backup through the client's retry loop: any `--node` will do (a node that is
/// down or has no leader is skipped, a `503` retried after its hint), for up to `--timeout`.
///
/// # Errors
/// When no node answers with a valid backup in time, a node refuses (401, ...), or the file
/// cannot be written.
pub async fn backup(opts: ClientOpts, args: BackupArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&opts.node, opts.token.as_deref())
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let timeout = Duration::from_secs(args.timeout);
    let delivery = Delivery {
        node_first: 0,
        attempt_timeout: timeout,
        deadline: tokio::time::Instant::now() + timeout,
    };
    let delivered = client
        .download(&ApiRequest::backup(), delivery, BACKUP_BYTES_MAX)
        .await
        .map_err(|undelivered| anyhow::anyhow!("no node gave a backup: {}", undelivered.error))?;
    let node = &client.nodes()[delivered.node_index];
    let reply = delivered.reply;
    if !reply.is_success() {
        bail!("{node}: {}", reply.api_error());
    }
    let backup = Backup::from_bytes(&reply.bytes)
        .with_context(|| format!("backup from {node} does not verify"))?;
    let temp = args.out.with_extension("partial");
    std::fs::write(&temp, &reply.bytes).with_context(|| format!("writing {}", temp.display()))?;
    std::fs::rename(&temp, &args.out)?;
    report(
        &opts,
        "backup",
        &backup,
        &args.out.display().to_string(),
        reply.bytes.len(),
    );
    Ok(ExitCode::SUCCESS)
}

/// Seeds every config's data directory from the backup file.
///
/// # Errors
/// When the file does not verify, a config cannot be read, or a data directory holds data.
pub fn restore(opts: &ClientOpts, args: &RestoreArgs) -> anyhow::Result<ExitCode> {
    let bytes =
        std::fs::read(&args.from).with_context(|| format!("reading {}", args.from.display()))?;
    let backup = Backup::from_bytes(&bytes)
        .with_context(|| format!("{} does not verify", args.from.display()))?;
    let configs: Vec<Config> = args
        .configs
        .iter()
        .map(|path| Config::load(path))
        .collect::<Result<_, _>>()?;
    let voters = restore_voters(&configs)?;
    // Check every target before writing any, so a refusal leaves nothing half-restored.
    for config in &configs {
        let dir = &config.data_dir;
        if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
            bail!("data directory {} of node {} already holds data; restore only into new, empty ones", dir.display(), config.node_id);
        }
    }
    for config in &configs {
        backup.restore_into(&config.data_dir, &voters)?;
        report(
            opts,
            "restored",
            &backup,
            &config.data_dir.display().to_string(),
            bytes.len(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The new cluster's initial voters, which become the restored membership. Every config
/// restored into must name the same voters and be one of them. Nodes added later start empty
/// (no `initial_voters`) and are sent the restored snapshot when they join.
///
/// # Errors
/// When no config is given, the configs disagree, or a restored node is not a voter.
fn restore_voters(configs: &[Config]) -> anyhow::Result<BTreeMap<u64, String>> {
    let Some(first) = configs.first() else {
        bail!("restore needs the config of every initial voter of the new cluster");
    };
    let voters: BTreeMap<u64, String> = first
        .cluster
        .initial_voters
        .iter()
        .map(|peer| (peer.id, peer.http_addr.clone()))
        .collect();
    if voters.is_empty() {
        bail!(
            "node {}: [cluster] initial_voters is empty; restore seeds the initial voters of a \
             new cluster (nodes added later start empty and receive the restored state)",
            first.node_id
        );
    }
    for config in configs {
        let theirs: BTreeMap<u64, String> = config
            .cluster
            .initial_voters
            .iter()
            .map(|peer| (peer.id, peer.http_addr.clone()))
            .collect();
        if theirs != voters {
            bail!(
                "node {} lists other initial_voters than node {}: every node of the new cluster \
                 must list the same ones",
                config.node_id,
                first.node_id
            );
        }
        if !voters.contains_key(&config.node_id) {
            bail!(
                "node {} is not among the initial_voters; restore only the initial voters",
                config.node_id
            );
        }
    }
    // On separate hosts each one restores its own node; the others must be restored from the
    // same file before any node starts (a voter started empty would initialize a cluster).
    let restored: BTreeSet<u64> = configs.iter().map(|config| config.node_id).collect();
    let elsewhere: Vec<u64> = voters
        .keys()
        .copied()
        .filter(|id| !restored.contains(id))
        .collect();
    if !elsewhere.is_empty() {
        eprintln!(
            "note: restore the same backup into initial voters {elsewhere:?} too before starting \
             any node"
        );
    }
    Ok(voters)
}

fn report(opts: &ClientOpts, what: &str, backup: &Backup, place: &str, bytes: usize) {
    let index = backup.applied.map_or(0, |id| id.index);
    if opts.json {
        let line = serde_json::json!({
            "action": what, "path": place, "bytes": bytes, "applied_index": index,
            "seq_last": backup.seq_last, "accounts": backup.accounts, "state_hash": backup.state_hash,
        });
        println!("{line}");
    } else {
        println!(
            "{what} {place}: applied index {index}, {} accounts, {} transfers (seq {}), state hash {}, {bytes} bytes",
            backup.accounts, backup.seq_last, backup.seq_last, &backup.state_hash[..16.min(backup.state_hash.len())]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(id: u64, voters: &[u64]) -> Config {
        let mut config = Config::new(id, format!("127.0.0.1:70{id:02}"), format!("d{id}"));
        config.cluster.initial_voters = voters
            .iter()
            .map(|&v| crate::config::Peer {
                id: v,
                http_addr: format!("127.0.0.1:70{v:02}"),
            })
            .collect();
        config
    }

    #[test]
    fn the_restored_membership_is_the_new_clusters_initial_voters() {
        let configs = [config(1, &[1, 2, 3]), config(2, &[1, 2, 3])];
        let voters = restore_voters(&configs).expect("voters");
        assert_eq!(voters.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(voters[&2], "127.0.0.1:7002");
    }

    #[test]
    fn configs_that_cannot_form_the_restored_cluster_are_refused() {
        let refused = |configs: &[Config]| {
            restore_voters(configs)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(refused(&[]).contains("every initial voter"));
        assert!(refused(&[config(1, &[])]).contains("initial_voters is empty"));
        assert!(
            refused(&[config(1, &[1, 2]), config(2, &[1, 2, 3])]).contains("other initial_voters")
        );
        assert!(refused(&[config(4, &[1, 2, 3])]).contains("not among the initial_voters"));
    }
}
