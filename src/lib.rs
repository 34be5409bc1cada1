//! The `raftpay` service: configuration, the HTTP API (with forwarding to the leader), metrics,
//! backup and restore. The replicated ledger itself is the `raftpay-raft` crate; this crate wires
//! it to the network. The client commands, bench and chaos suite are `raftpay-tools`.
#![forbid(unsafe_code)]

pub mod backup;
pub mod config;
pub mod http;
pub mod load_window;
pub mod metrics;
pub mod observe;
pub mod server;
