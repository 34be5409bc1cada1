//! Running a node: start the replicated ledger, bind the HTTP listener, serve until SIGTERM or
//! Ctrl-C, then drain in-flight requests (bounded) and stop Raft.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use raftpay_raft::node::Node;

use crate::config::Config;
use crate::http::{self, App, Settings};
use crate::metrics::Metrics;

/// In-flight requests get this long to finish after a shutdown signal.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

/// Serves `config`'s node until a shutdown signal.
///
/// # Errors
/// When storage cannot be opened, the address cannot be bound, or the server fails.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let started = Instant::now();
    // Bind first: a node that cannot serve must not join elections.
    let listener = tokio::net::TcpListener::bind(&config.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.http_addr))?;
    let node = Node::start(config.node_options())
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
    let app = App::new(
        node.clone(),
        Arc::new(Metrics::new(config.node_id)),
        settings,
    )?;
    tracing::info!(node_id = config.node_id, http_addr = %config.http_addr, data_dir = %config.data_dir.display(), "node serving");

    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, http::router(app)).with_graceful_shutdown(async move {
        shutdown_signal().await;
        tracing::info!("shutdown signal received; draining requests");
        // The receiver is gone only if the server already ended; nothing to tell then.
        let _ = drain_tx.send(());
    });
    // The server task: ends when graceful shutdown completes (or the listener fails).
    let mut server_task = tokio::spawn(async move { server.await });
    tokio::select! {
        // Normal end: the server stopped on its own (listener error) before any signal.
        result = &mut server_task => result.context("server task")?.context("http server")?,
        // A signal arrived: give in-flight requests SHUTDOWN_DRAIN, then stop regardless.
        _ = drain_rx => {
            if tokio::time::timeout(SHUTDOWN_DRAIN, &mut server_task).await.is_err() {
                tracing::warn!("requests still in flight after the drain deadline; stopping anyway");
                server_task.abort();
            }
        }
    }
    node.shutdown().await;
    tracing::info!("node stopped");
    Ok(())
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
