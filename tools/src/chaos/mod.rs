//! The chaos suite: real `raftpay serve` processes under a seeded schedule of faults (SIGKILL of
//! the leader, of a random node and of all three; SIGSTOP of the leader; the leader cut off by
//! iptables in a private network namespace), a workload that records every operation, and a
//! checker that proves, after healing, that no money was lost, created or moved twice, that
//! acknowledged transfers survived with their seq in real-time order, and that reads were
//! linearizable. `raftpay chaos` (`runner::run`) ties them together; `scripts/chaos.sh` runs
//! long soaks and `tests/chaos.rs` the short CI suite.
//!
//! Layout: `history` (the recorded data), `workload` (clients), `cluster` (node processes, HTTP
//! access, iptables), `nemesis` (the schedule and the faults), `checker` (pure verdict),
//! `report` (figures, verdict line, JSON, SVG), `runner` (`ChaosArgs`, the phases).

pub mod checker;
pub mod cluster;
pub mod history;
pub mod nemesis;
pub mod report;
pub mod runner;
pub mod workload;

pub use runner::{run, ChaosArgs};
