//! Setup: the run's plan (per-run id prefix, account names) and the creation of its treasury
//! and accounts.

use anyhow::Context;
use futures::stream::{self, StreamExt};
use raftpay_client::{Client, ClientError, NewAccount};

use super::args::BenchArgs;
use super::workload::Plan;
use super::SETUP_REQUESTS_IN_FLIGHT;

// ---------------------------------------------------------------------------------------------
// Setup.

pub(super) fn plan_make(args: &BenchArgs, seed: u64) -> Plan {
    let prefix = format!("b{:08x}", rand::random::<u32>());
    Plan {
        treasury: format!("{prefix}-treasury"),
        accounts: (0..args.accounts)
            .map(|i| format!("{prefix}-a{i}"))
            .collect(),
        prefix,
        batch: args.batch.map(|k| usize::try_from(k).unwrap_or(1)),
        mix_percent: args.mix,
        clients: args.clients,
        seed,
    }
}

pub(super) async fn accounts_create(
    client: &Client,
    plan: &Plan,
    currency: &str,
) -> anyhow::Result<()> {
    let treasury = NewAccount {
        id: plan.treasury.clone(),
        currency: currency.to_owned(),
        allow_overdraft: true,
    };
    client
        .create_account(&treasury)
        .await
        .context("create the treasury account")?;
    let results: Vec<Result<(), ClientError>> = stream::iter(plan.accounts.iter())
        .map(|id| async move {
            let account = NewAccount {
                id: id.clone(),
                currency: currency.to_owned(),
                allow_overdraft: false,
            };
            client.create_account(&account).await.map(|_| ())
        })
        .buffer_unordered(SETUP_REQUESTS_IN_FLIGHT)
        .collect()
        .await;
    for result in results {
        result.context("create the bench accounts")?;
    }
    Ok(())
}
