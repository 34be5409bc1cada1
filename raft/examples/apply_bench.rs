//! Measures the state machine alone: how long apply takes for entries carrying batches of
//! transfers, on sled in a temp directory, without HTTP or Raft. Prints transfers per second.
//!
//!     cargo run --release -p raftpay-raft --example apply_bench -- [BATCHES] [PER_BATCH]

use std::time::Instant;

use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use raftpay_raft::ledger::{AccountSpec, Command, TransferSpec};
use raftpay_raft::store::{StateMachine, Storage};
use raftpay_raft::typ::{Proposal, TypeConfig};

/// The same allocator as the `raftpay` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn entry(index: u64, commands: Vec<Command>) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Proposal { commands }),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let batches: u64 = args.next().map_or(Ok(200), |a| a.parse())?;
    let per_batch: u64 = args.next().map_or(Ok(1000), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let storage = std::sync::Arc::new(Storage::open(dir.path())?);
    let mut machine = StateMachine::open(storage)?;
    let mut accounts = vec![Command::CreateAccount(AccountSpec {
        id: "bank".into(),
        currency: "CNY".into(),
        allow_overdraft: true,
    })];
    for i in 0..1000 {
        accounts.push(Command::CreateAccount(AccountSpec {
            id: format!("a{i}"),
            currency: "CNY".into(),
            allow_overdraft: false,
        }));
    }
    machine.apply([entry(1, accounts)]).await?;
    let started = Instant::now();
    for batch in 0..batches {
        let transfers = (0..per_batch)
            .map(|i| TransferSpec {
                id: format!("t{batch}-{i}"),
                from: "bank".into(),
                to: format!("a{}", i % 1000),
                amount: 1,
                memo: None,
            })
            .collect();
        machine
            .apply([entry(
                2 + batch,
                vec![Command::Batch {
                    transfers,
                    atomic: false,
                }],
            )])
            .await?;
    }
    let elapsed = started.elapsed();
    let total = batches * per_batch;
    println!(
        "{total} transfers in {elapsed:?}: {:.0} transfers/s applied",
        total as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}
