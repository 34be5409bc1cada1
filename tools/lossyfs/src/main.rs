//! The `lossyfs` binary: `mount` runs the file system in the foreground until SIGTERM/SIGINT;
//! `ctl` sends one control command to a running mount and prints the answer.
//!
//! Thin: parses arguments, wires `lossyfs::Mount` to a `ControlServer`, waits for a signal.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lossyfs::{Command, ControlServer, Mount, MountOptions};
use signal_hook::consts::{SIGINT, SIGTERM};

/// How often the main thread checks that the FUSE session is still alive between signals.
const SESSION_CHECK_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Parser)]
#[command(
    name = "lossyfs",
    about = "A FUSE file system that simulates power loss"
)]
struct Cli {
    #[command(subcommand)]
    command: CliCommand,
}

#[derive(Subcommand)]
enum CliCommand {
    /// Mount BACKING at MOUNTPOINT in the foreground; unmount on SIGTERM or SIGINT.
    Mount {
        #[arg(long)]
        backing: PathBuf,
        #[arg(long)]
        mountpoint: PathBuf,
        /// Unix socket for `lossyfs ctl`; it exists once the mount is ready.
        #[arg(long)]
        control: PathBuf,
        /// State directory (attic) on the backing file system; wiped at start.
        /// Default: `.<backing name>.lossyfs` beside the backing directory.
        #[arg(long)]
        state: Option<PathBuf>,
        /// Do not pass fsync through to the backing disk (faster; the model is the same).
        #[arg(long)]
        no_sync_backing: bool,
        /// FUSE worker threads.
        #[arg(long, default_value_t = 4)]
        threads: usize,
        /// Let other users than the mounting one use the mount.
        #[arg(long)]
        allow_other: bool,
    },
    /// Send a command to a running `lossyfs mount` and print its answer.
    Ctl {
        #[arg(long)]
        control: PathBuf,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = lossyfs::CONTROL_TIMEOUT.as_secs())]
        timeout_secs: u64,
        #[command(subcommand)]
        command: CtlCommand,
    },
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Power cut: drop everything unsynced. Answers once done.
    Cut,
    /// Make every change under PREFIX (relative to the mount root) fail with EIO.
    FailWrites { prefix: PathBuf },
    /// Make every change under PREFIX fail with ENOSPC.
    FailSpace { prefix: PathBuf },
    /// Clear every fault.
    Heal,
    /// Print the counters.
    Stats,
}

impl From<CtlCommand> for Command {
    fn from(command: CtlCommand) -> Command {
        match command {
            CtlCommand::Cut => Command::Cut,
            CtlCommand::FailWrites { prefix } => Command::FailWrites(prefix),
            CtlCommand::FailSpace { prefix } => Command::FailSpace(prefix),
            CtlCommand::Heal => Command::Heal,
            CtlCommand::Stats => Command::Stats,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        CliCommand::Mount {
            backing,
            mountpoint,
            control,
            state,
            no_sync_backing,
            threads,
            allow_other,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_writer(std::io::stderr)
                .init();
            let options = MountOptions {
                state_dir: state,
                sync_backing: !no_sync_backing,
                threads,
                allow_other,
            };
            mount_run(&backing, &mountpoint, &control, &options)
        }
        CliCommand::Ctl {
            control,
            timeout_secs,
            command,
        } => {
            let answer =
                lossyfs::request(&control, &command.into(), Duration::from_secs(timeout_secs))?;
            println!(
                "{}",
                if answer.is_empty() {
                    "ok"
                } else {
                    answer.as_str()
                }
            );
            Ok(())
        }
    }
}

/// Mounts, serves the control socket, and waits for SIGTERM/SIGINT (or the session ending from
/// outside); then stops the control server and unmounts.
fn mount_run(
    backing: &std::path::Path,
    mountpoint: &std::path::Path,
    control: &std::path::Path,
    options: &MountOptions,
) -> anyhow::Result<()> {
    let (signal_tx, signal_rx) = mpsc::sync_channel(1);
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .context("installing signal handlers")?;
    // Forwards the first SIGTERM/SIGINT; lives until the process exits.
    std::thread::Builder::new()
        .name("lossyfs-signals".to_owned())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let _ = signal_tx.try_send(signal);
            }
        })
        .context("starting the signal thread")?;
    let mount = Mount::start_with(backing, mountpoint, options).context("mounting")?;
    let server =
        ControlServer::start(control, mount.control()).context("starting the control socket")?;
    let outcome = loop {
        match signal_rx.recv_timeout(SESSION_CHECK_INTERVAL) {
            Ok(signal) => {
                tracing::info!(signal, "stopping");
                break Ok(());
            }
            Err(mpsc::RecvTimeoutError::Timeout) if mount.is_running() => {}
            Err(_) => {
                break Err(anyhow::anyhow!(
                    "the FUSE session ended (unmounted from outside?)"
                ))
            }
        }
    };
    drop(server);
    mount.unmount().context("unmounting")?;
    outcome
}
