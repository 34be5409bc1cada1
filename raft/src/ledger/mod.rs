//! The ledger rules: accounts, double-entry transfers, batches, the id rule and the invariants.
//!
//! Pure: no tokio, sled, openraft, clock or randomness. Storage wraps it (see `crate::store`);
//! [`MemLedger`] is the in-memory state used by unit and property tests.

#![deny(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap,
    clippy::arithmetic_side_effects
)]

mod apply;
mod types;
mod validate;

use std::collections::BTreeMap;

pub use apply::{Changes, CurrencyTotals, HistoryEntry, LedgerRead, Overlay};
pub use types::*;
pub use validate::{
    validate_account, validate_batch, validate_command, validate_currency, validate_id,
    validate_transfer, InvalidRequest,
};

/// The whole ledger in memory: what tests apply commands to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemLedger {
    pub accounts: BTreeMap<String, Account>,
    pub transfers: BTreeMap<String, TransferRecord>,
    pub totals: BTreeMap<String, CurrencyTotals>,
    pub history: Vec<HistoryEntry>,
    pub seq_last: u64,
}

impl LedgerRead for MemLedger {
    fn account(&self, id: &str) -> Option<Account> {
        self.accounts.get(id).cloned()
    }
    fn transfer(&self, id: &str) -> Option<TransferRecord> {
        self.transfers.get(id).cloned()
    }
    fn seq_last(&self) -> u64 {
        self.seq_last
    }
    fn totals(&self, currency: &str) -> CurrencyTotals {
        self.totals.get(currency).copied().unwrap_or_default()
    }
}

impl MemLedger {
    /// Applies the commands in order and keeps their changes.
    pub fn apply(&mut self, commands: &[Command]) -> Vec<CommandResult> {
        let mut overlay = Overlay::new(&*self);
        let results = commands.iter().map(|c| overlay.apply(c)).collect();
        let changes = overlay.into_changes();
        self.commit(changes);
        results
    }

    fn commit(&mut self, changes: Changes) {
        self.accounts.extend(changes.accounts);
        self.transfers.extend(changes.transfers);
        self.totals.extend(changes.totals);
        self.history.extend(changes.history);
        if let Some(seq) = changes.seq_last {
            assert!(seq > self.seq_last, "seq went backwards");
            self.seq_last = seq;
        }
    }
}

/// A broken ledger invariant, found by [`check_accounts`] or [`check_totals`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvariantViolation {
    #[error("currency {currency}: balances sum to {sum}, not 0")]
    NotConserved { currency: String, sum: i128 },
    #[error("account {id} has no overdraft but its balance is {balance}")]
    Negative { id: String, balance: i64 },
    /// A total over [`AMOUNT_MAX`]: the ledger never posts one, so the state was not made by it.
    #[error("account {id}: debits {debits} or credits {credits} over the maximum {AMOUNT_MAX}")]
    OutOfRange {
        id: String,
        debits: u64,
        credits: u64,
    },
    /// The per-currency sums of the accounts' debits or credits do not fit a `u128`.
    #[error("currency {currency}: the accounts' totals overflow")]
    SumOverflow { currency: String },
    /// The stored currency totals (`CurrencyTotals`) differ from the sums over the accounts.
    #[error(
        "currency {currency}: stored totals debits {stored_debits} credits {stored_credits}, \
         accounts sum to debits {debits} credits {credits}"
    )]
    TotalsMismatch {
        currency: String,
        stored_debits: u128,
        stored_credits: u128,
        debits: u128,
        credits: u128,
    },
}

/// Checks conservation per currency and that no non-overdraft account is below zero over a full
/// set of accounts. Used by tests, snapshot install and the chaos checker. Never panics, whatever
/// the accounts hold (a snapshot from a peer is untrusted): a total over [`AMOUNT_MAX`] is a
/// violation, and every sum is checked.
///
/// # Errors
/// The violations found, all of them.
pub fn check_accounts<'a>(
    accounts: impl IntoIterator<Item = &'a Account>,
) -> Result<(), Vec<InvariantViolation>> {
    let mut sums: BTreeMap<&str, Option<i128>> = BTreeMap::new();
    let mut violations = Vec::new();
    for account in accounts {
        if account.debits > AMOUNT_MAX || account.credits > AMOUNT_MAX {
            violations.push(InvariantViolation::OutOfRange {
                id: account.id.clone(),
                debits: account.debits,
                credits: account.credits,
            });
            // Its balance may not fit an i64; the sum is meaningless now.
            sums.insert(&account.currency, None);
            continue;
        }
        // Both totals are at most AMOUNT_MAX (checked above): `balance` cannot fail.
        let balance = account.balance();
        let sum = sums.entry(&account.currency).or_insert(Some(0));
        *sum = sum.and_then(|sum| sum.checked_add(i128::from(balance)));
        if !account.allow_overdraft && balance < 0 {
            violations.push(InvariantViolation::Negative {
                id: account.id.clone(),
                balance,
            });
        }
    }
    for (currency, sum) in sums {
        match sum {
            Some(0) => {}
            Some(sum) => violations.push(InvariantViolation::NotConserved {
                currency: currency.to_string(),
                sum,
            }),
            // Out of range (reported above) or an overflowing sum.
            None => violations.push(InvariantViolation::SumOverflow {
                currency: currency.to_string(),
            }),
        }
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(violations)
    }
}

/// Checks that the stored currency totals are what the accounts add up to: per currency, the
/// accounts' debits sum to the stored debits and their credits to the stored credits (a
/// currency with no stored totals counts as zero). Checked arithmetic throughout.
///
/// # Errors
/// The violations found, all of them.
pub fn check_totals<'a>(
    accounts: impl IntoIterator<Item = &'a Account>,
    totals: &BTreeMap<String, CurrencyTotals>,
) -> Result<(), Vec<InvariantViolation>> {
    let mut sums: BTreeMap<&str, Option<(u128, u128)>> = BTreeMap::new();
    for account in accounts {
        let sum = sums.entry(&account.currency).or_insert(Some((0, 0)));
        *sum = sum.and_then(|(debits, credits)| {
            Some((
                debits.checked_add(u128::from(account.debits))?,
                credits.checked_add(u128::from(account.credits))?,
            ))
        });
    }
    let mut violations = Vec::new();
    let currencies: std::collections::BTreeSet<&str> = sums
        .keys()
        .copied()
        .chain(totals.keys().map(String::as_str))
        .collect();
    for currency in currencies {
        let stored = totals.get(currency).copied().unwrap_or_default();
        let Some((debits, credits)) = sums.get(currency).copied().unwrap_or(Some((0, 0))) else {
            violations.push(InvariantViolation::SumOverflow {
                currency: currency.to_string(),
            });
            continue;
        };
        if (debits, credits) != (stored.debits, stored.credits) {
            violations.push(InvariantViolation::TotalsMismatch {
                currency: currency.to_string(),
                stored_debits: stored.debits,
                stored_credits: stored.credits,
                debits,
                credits,
            });
        }
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(violations)
    }
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)]
mod tests;
