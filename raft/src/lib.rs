//! raftpay's replicated ledger: the pure ledger rules, the openraft type configuration, the sled
//! log store and state machine, the node-to-node network, and the [`node::Node`] handle the
//! service uses. Nothing here knows HTTP status codes; that mapping lives in the service.
#![forbid(unsafe_code)]

pub mod codec;
pub mod detector;
pub mod fault;
pub mod ledger;
pub mod network;
pub mod node;
pub mod stats;
pub mod store;
pub mod typ;
