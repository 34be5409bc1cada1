//! Running a node: start the replicated ledger, bind the HTTP listener, serve until SIGTERM or
//! Ctrl-C, then drain in-flight requests (bounded) and stop Raft. Or, when the node stops on a
//! fault (see `raftpay_raft::node::Fault`): log it once, keep answering `503`s for the injected
//! linger (tests only), and end with [`Served::Fault`]; `main` exits with [`EXIT_FAULT`].

use std::time::{Duration, Instant};

use anyhow::Context;
use raftpay_raft::node::{Fault, Node};

use crate::config::Config;
use crate::http::{self, App, Settings};

/// In-flight requests get this long to finish after a shutdown signal.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

/// Exit status of `raftpay serve` when the node stopped on a fault (a storage error in the log
/// or the state machine, or openraft's core ending on its own). A panic aborts instead
/// (SIGABRT, see [`panic_hook_install`]); a clean stop exits 0 and an error at start 1.
pub const EXIT_FAULT: u8 = 3;

/// How serving ended.
#[derive(Debug)]
pub enum Served {
    /// A shutdown signal; requests drained and Raft stopped.
    Signal,
    /// The node stopped on a fault; the process must exit with [`EXIT_FAULT`] without further
    /// storage work.
    Fault(Fault),
}

/// Makes every panic of a node fatal for the whole process, after one error line: a replica
/// whose task panicked (an invariant assertion in apply) must not go on serving with that task
/// gone. Release builds abort on panic anyway (`panic = "abort"`); this hook logs first and
/// makes debug builds do the same.
pub fn panic_hook_install() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        let location = info.location().map(ToString::to_string).unwrap_or_default();
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        tracing::error!(%message, %location, thread, "panic: the node aborts");
        std::process::abort();
    }));
}

/// Serves `config`'s node until a shutdown signal or a fault.
///
/// # Errors
/// When storage cannot be opened, the address cannot be bound, or the server fails.
pub async fn serve(config: Config) -> anyhow::Result<Served> {
    let started = Instant::now();
    // Bind first: a node that cannot serve must not join elections.
    let listener = tokio::net::TcpListener::bind(config.listen_address())
        .await
        .with_context(|| format!("cannot listen on {}", config.listen_address()))?;
    let node = Node::start(crate::config::node_options(&config))
        .await
        .with_context(|| format!("cannot start node {}", config.node_id))?;
    let settings = Settings {
        body_bytes_max: config.http.body_bytes_max,
        api_token: config.http.api_token.clone(),
        forward_timeout: Duration::from_millis(config.http.forward_timeout_ms),
        // Long enough for an election after a crash (the lease, then a vote), well inside a
        // client's request timeout.
        leader_wait: (Duration::from_millis(config.raft.election_timeout_max_ms) * 5)
            .min(Duration::from_millis(config.http.forward_timeout_ms)),
        started,
        outgoing_ip: config.outgoing_ip(),
    };
    let app = App::new(node.clone(), settings)?;
    tracing::info!(node_id = config.node_id, http_addr = %config.http_addr, listen_addr = %config.listen_address(), data_dir = %config.data_dir.display(), "node serving");

    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, http::router(app)).with_graceful_shutdown(async move {
        shutdown_signal().await;
        tracing::info!("shutdown signal received; draining requests");
        // The receiver is gone only if the server already ended; nothing to tell then.
        let _ = drain_tx.send(());
    });
    // The server task: ends when graceful shutdown completes (or the listener fails).
    let mut server_task = tokio::spawn(async move { server.await });
    let fault = tokio::select! {
        // Normal end: the server stopped on its own (listener error) before any signal.
        result = &mut server_task => {
            result.context("server task")?.context("http server")?;
            None
        }
        // A signal arrived: give in-flight requests SHUTDOWN_DRAIN, then stop regardless.
        _ = drain_rx => {
            if tokio::time::timeout(SHUTDOWN_DRAIN, &mut server_task).await.is_err() {
                tracing::warn!("requests still in flight after the drain deadline; stopping anyway");
                server_task.abort();
            }
            None
        }
        // The Raft core ended on its own: from now on every request but /health, /ready and
        // /metrics gets 503 (http::fault_refuse). No drain and no final sync: storage failed.
        fault = node.fault_wait() => Some(fault),
    };
    if let Some(fault) = fault {
        let linger = raftpay_raft::fault::linger();
        tracing::error!(
            node_id = config.node_id,
            kind = %fault.kind,
            reason = %fault.reason,
            exit_status = EXIT_FAULT,
            linger_ms = u64::try_from(linger.as_millis()).unwrap_or(u64::MAX),
            "node stopped on a fatal fault; exiting (restart it: it recovers from its log and its peers)"
        );
        // Injected in tests only (zero otherwise): the 503s and /health stay visible meanwhile.
        tokio::time::sleep(linger).await;
        server_task.abort();
        return Ok(Served::Fault(fault));
    }
    node.shutdown().await;
    tracing::info!("node stopped");
    Ok(Served::Signal)
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        // SIGTERM from the cluster script or an init system.
        () = terminate => {}
        // Ctrl-C in a terminal.
        result = tokio::signal::ctrl_c() => {
            if let Err(error) = result {
                tracing::error!(%error, "cannot listen for Ctrl-C");
            }
        }
    }
}
