//! raftpay's client-side tools, behind the `raftpay` binary's subcommands: the client commands
//! (`account`, `transfer`, `history`, `cluster`), `bench`, `chaos`, and the SVG charts both
//! draw. They reach a cluster only through `raftpay-client` (and start nodes as processes of the
//! `raftpay` binary, with configs written by `raftpay-config`); Cargo keeps them from using any
//! node code.
#![forbid(unsafe_code)]

pub mod bench;
pub mod chaos;
pub mod cli;
pub mod plot;
