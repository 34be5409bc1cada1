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

/// A broken ledger invariant, found by [`check_accounts`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvariantViolation {
    #[error("currency {currency}: balances sum to {sum}, not 0")]
    NotConserved { currency: String, sum: i128 },
    #[error("account {id} has no overdraft but its balance is {balance}")]
    Negative { id: String, balance: i64 },
}

/// Checks conservation per currency and that no non-overdraft account is below zero over a full
/// set of accounts. Used by tests, snapshot install and the chaos checker.
///
/// # Errors
/// The violations found, all of them.
pub fn check_accounts<'a>(
    accounts: impl IntoIterator<Item = &'a Account>,
) -> Result<(), Vec<InvariantViolation>> {
    let mut sums: BTreeMap<&str, i128> = BTreeMap::new();
    let mut violations = Vec::new();
    for account in accounts {
        let sum = sums.entry(&account.currency).or_default();
        // Fewer than 2^64 accounts of at most 2^63 each: the i128 sum cannot overflow.
        *sum = sum
            .checked_add(i128::from(account.balance()))
            .expect("i128 sum of i64 balances");
        if !account.allow_overdraft && account.balance() < 0 {
            violations.push(InvariantViolation::Negative {
                id: account.id.clone(),
                balance: account.balance(),
            });
        }
    }
    for (currency, sum) in sums {
        if sum != 0 {
            violations.push(InvariantViolation::NotConserved {
                currency: currency.to_string(),
                sum,
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
