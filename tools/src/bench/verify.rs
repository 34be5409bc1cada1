//! Verification: re-sending what got no definite answer, reading every account back and judging
//! conservation.

use std::time::Duration;

use futures::stream::{self, StreamExt};
use raftpay_client::{Client, ClientError, Consistency};

use super::report::{Conservation, Verdict};
use super::tasks::{batch_item_outcome, Unresolved};
use super::workload::{Expected, Plan, Route};
use super::SETUP_REQUESTS_IN_FLIGHT;

/// Unanswered requests re-sent at once after the run.
pub(super) const RESOLVE_REQUESTS_IN_FLIGHT: usize = 16;
/// How long the re-send of a request without a definite answer may keep trying.
pub(super) const RESOLVE_RETRY_DEADLINE: Duration = Duration::from_secs(30);
/// Account mismatches listed by name in the report (all are counted).
pub(super) const MISMATCHES_LISTED_MAX: usize = 10;

// ---------------------------------------------------------------------------------------------
// Verification.

/// Re-sends every request that got no definite answer (same ids and content, so each takes
/// effect at most once) and books what it learns; returns (re-sent, still unknown).
pub(super) async fn unresolved_settle(
    client: &Client,
    unresolved: Vec<Unresolved>,
    expected: &mut Expected,
) -> (u64, u64) {
    let n_requests = unresolved.len() as u64;
    let client = client.clone().with_retry_deadline(RESOLVE_RETRY_DEADLINE);
    let answers: Vec<(Vec<Route>, Option<Vec<bool>>)> = stream::iter(unresolved)
        .map(|request| {
            let client = client.clone();
            async move { resend(&client, request).await }
        })
        .buffer_unordered(RESOLVE_REQUESTS_IN_FLIGHT)
        .collect()
        .await;
    let mut unknown = 0;
    for (routes, acked) in answers {
        match acked {
            Some(acked) => {
                for (route, acked) in routes.into_iter().zip(acked) {
                    if acked {
                        expected.post(route);
                    }
                }
            }
            None => unknown += 1,
        }
    }
    (n_requests, unknown)
}

/// One re-send: the routes and, when the answer is definite, which transfers were acknowledged.
pub(super) async fn resend(
    client: &Client,
    request: Unresolved,
) -> (Vec<Route>, Option<Vec<bool>>) {
    match request {
        Unresolved::Single(transfer, route) => {
            let acked = match client.transfer(&transfer).await {
                Ok(_) => Some(vec![true]),
                Err(ClientError::Api { .. }) => Some(vec![false]),
                Err(_) => None,
            };
            (vec![route], acked)
        }
        Unresolved::Batch(transfers, routes) => {
            let acked = match client.batch(&transfers, false).await {
                Ok(items) if items.len() == transfers.len() => Some(
                    items
                        .iter()
                        .zip(&transfers)
                        .map(|(item, transfer)| batch_item_outcome(item, transfer).is_ok())
                        .collect(),
                ),
                Err(ClientError::Api { .. }) => Some(vec![false; transfers.len()]),
                Ok(_) | Err(_) => None,
            };
            (routes, acked)
        }
    }
}

/// Reads the treasury and every account back and compares them with what was acknowledged.
pub(super) async fn conservation_check(
    client: &Client,
    plan: &Plan,
    expected: &Expected,
    consistency: Consistency,
    (requests_resent, requests_unresolved): (u64, u64),
) -> Conservation {
    let ids = std::iter::once(&plan.treasury).chain(plan.accounts.iter());
    let reads: Vec<(usize, Result<raftpay_client::Account, ClientError>)> =
        stream::iter(ids.enumerate())
            .map(|(index, id)| async move { (index, client.get_account(id, consistency).await) })
            .buffer_unordered(SETUP_REQUESTS_IN_FLIGHT)
            .collect()
            .await;
    let mut check = Conservation {
        verdict: Verdict::Ok,
        accounts_read: 0,
        balance_sum: 0,
        treasury_debits: 0,
        treasury_credits: 0,
        acknowledged_amount: expected.treasury_debits,
        transfers_acknowledged: expected.transfers,
        requests_resent,
        requests_unresolved,
        accounts_mismatched: 0,
        mismatches: Vec::new(),
        problems: Vec::new(),
    };
    let mut reads_failed = 0_u64;
    for (index, read) in reads {
        let account = match read {
            Ok(account) => account,
            Err(error) => {
                reads_failed += 1;
                if reads_failed <= 3 {
                    check.problems.push(format!("read failed: {error}"));
                }
                continue;
            }
        };
        check.accounts_read += 1;
        check.balance_sum += i128::from(account.balance);
        if index == 0 {
            check.treasury_debits = account.debits;
            check.treasury_credits = account.credits;
            continue;
        }
        let account_index = u32::try_from(index - 1).unwrap_or(u32::MAX);
        let balance_expected = expected.balances.get(&account_index).copied().unwrap_or(0);
        if i128::from(account.balance) != balance_expected {
            check.accounts_mismatched += 1;
            if check.mismatches.len() < MISMATCHES_LISTED_MAX {
                check.mismatches.push(format!(
                    "{}: balance {} expected {balance_expected}",
                    account.id, account.balance
                ));
            }
        }
    }
    conservation_judge(&mut check, reads_failed);
    check
}

/// Sets the verdict from the numbers the read-back collected.
pub(super) fn conservation_judge(check: &mut Conservation, reads_failed: u64) {
    let mut violated = false;
    if check.balance_sum != 0 {
        violated = true;
        check.problems.push(format!(
            "sum of balances is {}, not 0: money was created or destroyed",
            check.balance_sum
        ));
    }
    if reads_failed > 0 {
        check
            .problems
            .push(format!("{reads_failed} account reads failed"));
    }
    if check.requests_unresolved > 0 {
        check.problems.push(format!(
            "{} requests never got a definite answer: their transfers may or may not exist",
            check.requests_unresolved
        ));
    }
    let complete = reads_failed == 0 && check.requests_unresolved == 0;
    if complete {
        if u128::from(check.treasury_debits) != check.acknowledged_amount {
            violated = true;
            check.problems.push(format!(
                "treasury debits {} != acknowledged amount {}: a transfer posted twice, or one \
                 acknowledged was lost, or one not acknowledged posted",
                check.treasury_debits, check.acknowledged_amount
            ));
        }
        if check.treasury_credits != 0 {
            violated = true;
            check.problems.push(format!(
                "treasury credits {}: the bench never pays into the treasury",
                check.treasury_credits
            ));
        }
        if check.accounts_mismatched > 0 {
            violated = true;
            check.problems.push(format!(
                "{} accounts differ from the acknowledged transfers",
                check.accounts_mismatched
            ));
        }
    }
    check.verdict = match (violated, complete) {
        (true, _) => Verdict::Violated,
        (false, false) => Verdict::Unverified,
        (false, true) => Verdict::Ok,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conservation(treasury_debits: u64, acknowledged: u128, sum: i128) -> Conservation {
        Conservation {
            verdict: Verdict::Ok,
            accounts_read: 3,
            balance_sum: sum,
            treasury_debits,
            treasury_credits: 0,
            acknowledged_amount: acknowledged,
            transfers_acknowledged: 2,
            requests_resent: 0,
            requests_unresolved: 0,
            accounts_mismatched: 0,
            mismatches: Vec::new(),
            problems: Vec::new(),
        }
    }

    #[test]
    fn conservation_verdicts() {
        let mut check = conservation(30, 30, 0);
        conservation_judge(&mut check, 0);
        assert_eq!(check.verdict, Verdict::Ok, "{:?}", check.problems);

        let mut check = conservation(40, 30, 0);
        conservation_judge(&mut check, 0);
        assert_eq!(check.verdict, Verdict::Violated, "a transfer posted twice");

        let mut check = conservation(30, 30, 5);
        conservation_judge(&mut check, 0);
        assert_eq!(check.verdict, Verdict::Violated, "money created");

        let mut check = conservation(30, 30, 0);
        check.requests_unresolved = 1;
        conservation_judge(&mut check, 0);
        assert_eq!(check.verdict, Verdict::Unverified);

        let mut check = conservation(30, 30, 0);
        conservation_judge(&mut check, 1);
        assert_eq!(check.verdict, Verdict::Unverified);
    }
}
