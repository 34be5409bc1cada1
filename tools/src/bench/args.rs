//! The command line of `raftpay bench`: [`BenchArgs`] and its value parsers.

use std::path::PathBuf;
use std::time::Duration;

use raftpay_api::rules::BATCH_TRANSFERS_MAX;

/// Longest accepted `--duration`, `--warmup`, `--kill-leader-every`, `--restart-after`.
pub(super) const SECONDS_MAX: f64 = 86_400.0;

/// `raftpay bench`: load, latency, failover and a conservation check against a running cluster.
/// Nodes, token and read consistency come from the global `--node`, `--token` and
/// `--consistency`; the global `--json` prints the report as JSON instead of text.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Accounts that receive transfers (plus one treasury account).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub accounts: u32,
    /// Concurrent clients, spread over the nodes (they move to the leader once a node names it,
    /// unless `--no-follow-leader`).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub clients: u32,
    /// Keep each client on its node, so followers forward its writes to the leader (measures
    /// the forwarding hop).
    #[arg(long)]
    pub no_follow_leader: bool,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value = "20", value_parser = parse_seconds)]
    pub duration: Duration,
    /// Warm-up seconds: load runs but is not measured.
    #[arg(long, default_value = "3", value_parser = parse_seconds)]
    pub warmup: Duration,
    /// Send K transfers per request through POST /v1/transfers/batch (non-atomic) instead of
    /// one per POST /v1/transfers.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..=BATCH_TRANSFERS_MAX as i64))]
    pub batch: Option<u32>,
    /// Percent of transfers that go from one account to another instead of from the treasury.
    #[arg(long, value_name = "PERCENT", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub mix: u8,
    /// Currency of the bench's accounts.
    #[arg(long, default_value = "CNY", value_parser = parse_currency)]
    pub currency: String,
    /// SIGKILL the leader every S seconds of the measured window (and restart it).
    #[arg(long, value_name = "S", value_parser = parse_seconds)]
    pub kill_leader_every: Option<Duration>,
    /// Shell command that kills the leader; `{node}` is replaced by the leader's id as
    /// GET /v1/cluster reported it. Run from the current directory.
    #[arg(long, default_value = "scripts/cluster.sh kill-leader")]
    pub kill_command: String,
    /// Shell command that restarts a killed node; `{node}` is replaced by its id.
    #[arg(long, default_value = "scripts/cluster.sh restart {node}")]
    pub restart_command: String,
    /// Seconds between a kill and the restart of the killed node.
    #[arg(long, default_value = "2", value_parser = parse_seconds)]
    pub restart_after: Duration,
    /// Write the full results (config, totals, percentiles, per second, kills) as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
    /// Write an SVG plot here: transfers/s and p99 per second, kills marked.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Name of this run in reports and the plot title (default: derived from the options).
    #[arg(long)]
    pub label: Option<String>,
    /// Seed of the workload's random choices (default: random; the report shows it).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Directory with the nodes' pid files (`node<N>.pid`, as scripts/cluster.sh writes them
    /// under RAFTPAY_DATA): the report then shows each node's CPU use in the window.
    #[arg(long, value_name = "DIR")]
    pub pid_dir: Option<PathBuf>,
}

pub(super) fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !seconds.is_finite() || !(0.0..=SECONDS_MAX).contains(&seconds) {
        return Err(format!("seconds must be between 0 and {SECONDS_MAX}"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

pub(super) fn parse_currency(text: &str) -> Result<String, String> {
    raftpay_api::rules::currency_check(text)
        .map(|()| text.to_owned())
        .map_err(|error| format!("{text:?}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_parse_with_limits() {
        assert_eq!(parse_seconds("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_seconds("0"), Ok(Duration::ZERO));
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("NaN").is_err());
        assert!(parse_seconds("1e9").is_err());
        assert!(parse_seconds("ten").is_err());
    }
}
