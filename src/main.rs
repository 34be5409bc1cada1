//! The `raftpay` binary: `serve` runs a node; the other subcommands are the client CLI.
//! Thin on purpose: parse arguments, set up logging, hand over to the library.
#![forbid(unsafe_code)]

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

/// mimalloc: under load glibc's allocator spent ~10% of a node's CPU in fragmentation handling
/// (`_int_malloc`, `unlink_chunk`, `malloc_consolidate` in the profile).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "raftpay",
    version,
    about = "A fault-tolerant clustered payment store"
)]
struct Cli {
    #[command(flatten)]
    client: raftpay_tools::cli::ClientOpts,
    /// Log output format (default: the config's `[log] format` for a node, else pretty).
    #[arg(long, value_enum, global = true)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node of the cluster.
    Serve {
        /// The node's configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Load the cluster with transfers; measure throughput, latency and failover; check that
    /// money was conserved.
    Bench(raftpay_tools::bench::BenchArgs),
    /// Download a consistent, checksummed backup of the ledger from a node.
    Backup(raftpay::backup::BackupArgs),
    /// Seed the (empty) data directories of a new cluster from a backup file.
    Restore(raftpay::backup::RestoreArgs),
    /// Run the chaos suite: a real 3-node cluster under faults, a recorded workload, a checker.
    Chaos(raftpay_tools::chaos::ChaosArgs),
    /// Write or check node config files.
    #[command(subcommand)]
    Config(raftpay::config::ConfigCommand),
    /// Print what a stopped node's write-ahead log holds (vote, last index, purge and state
    /// checkpoint) as JSON; opening it checks every record.
    Inspect {
        /// The node's data directory (`data_dir` in its config).
        #[arg(long)]
        data_dir: PathBuf,
    },
    #[command(flatten)]
    Client(raftpay_tools::cli::ClientCommand),
}

/// Logs go to stderr; the level comes from `RAFTPAY_LOG` (default `info` for a node, `warn` for
/// the CLI), in `EnvFilter` syntax. Colours only on a terminal, and not with `NO_COLOR` set
/// (<https://no-color.org>; `with_ansi` overrides tracing-subscriber's own check of it): a node's
/// stderr is mostly a log file (`cluster.sh`, systemd, the tests), where escape codes only
/// garble grep and less.
fn logging_init(format: Option<LogFormat>, default_level: &str) {
    let format = format.unwrap_or(LogFormat::Pretty);
    let filter =
        EnvFilter::try_from_env("RAFTPAY_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours_wanted())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn colours_wanted() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    std::io::stderr().is_terminal() && !no_color
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            let config = raftpay::config::Config::load(&config).context("configuration")?;
            let format = cli.log_format.or(match config.log.format {
                raftpay::config::LogFormatConfig::Pretty => Some(LogFormat::Pretty),
                raftpay::config::LogFormatConfig::Json => Some(LogFormat::Json),
            });
            logging_init(format, &config.log.level);
            raftpay::server::panic_hook_install();
            match raftpay::server::serve(config).await {
                Ok(raftpay::server::Served::Signal) => Ok(ExitCode::SUCCESS),
                // At once: returning would drop the runtime, which waits for blocking tasks
                // that may hang on the failed disk.
                Ok(raftpay::server::Served::Fault(_)) => {
                    std::process::exit(i32::from(raftpay::server::EXIT_FAULT))
                }
                Err(error) => {
                    // One line that names what failed (for damaged storage: the file and why).
                    eprintln!("error: {error:#}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Bench(args) => {
            logging_init(cli.log_format, "warn");
            raftpay_tools::bench::run(cli.client, args).await
        }
        Command::Backup(args) => {
            logging_init(cli.log_format, "warn");
            raftpay::backup::backup(cli.client, args).await
        }
        Command::Restore(args) => {
            logging_init(cli.log_format, "warn");
            raftpay::backup::restore(&cli.client, &args)
        }
        Command::Chaos(args) => {
            logging_init(cli.log_format, "info,openraft=warn,sled=warn");
            raftpay_tools::chaos::run(args).await
        }
        Command::Config(command) => {
            logging_init(cli.log_format, "warn");
            raftpay::config::run(&command)
        }
        Command::Inspect { data_dir } => {
            logging_init(cli.log_format, "warn");
            let inspection = raftpay_raft::store::log_inspect(&data_dir)
                .with_context(|| format!("inspect {}", data_dir.display()))?;
            println!("{}", serde_json::to_string(&inspection)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Client(command) => {
            logging_init(cli.log_format, "warn");
            raftpay_tools::cli::run(cli.client, command).await
        }
    }
}
