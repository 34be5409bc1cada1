//! The `raftpay` service: configuration, the HTTP API (with forwarding to the leader), metrics,
//! the client library and CLI, and the benchmark tool. The replicated ledger itself is the
//! `raftpay-raft` crate; this crate wires it to the network.
#![forbid(unsafe_code)]

pub mod backup;
pub mod bench;
pub mod chaos;
pub mod cli;
pub mod config;
pub mod http;
pub mod load_window;
pub mod metrics;
pub mod observe;
pub mod plot;
pub mod server;
