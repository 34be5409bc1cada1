//! Applying commands to the ledger: the payment rules and the invariants that guard them.
//!
//! Apply reads the current state through [`LedgerRead`] and writes only into a [`Changes`] set,
//! which the storage layer then persists in one atomic batch. It never touches I/O, the clock or
//! randomness, so every replica computes the same result from the same log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::types::{
    Account, AccountSpec, Command, CommandResult, Rejection, RejectionCode, TransferOutcome,
    TransferRecord, TransferResult, TransferSpec, AMOUNT_MAX,
};
use super::validate::{validate_account, validate_batch, validate_transfer};

/// The sums over every account of one currency. Conservation means `debits == credits`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrencyTotals {
    pub debits: u128,
    pub credits: u128,
}

/// Read access to the ledger's state.
pub trait LedgerRead {
    fn account(&self, id: &str) -> Option<Account>;
    fn transfer(&self, id: &str) -> Option<TransferRecord>;
    /// The seq of the last posted transfer (0 before the first).
    fn seq_last(&self) -> u64;
    fn totals(&self, currency: &str) -> CurrencyTotals;
}

/// One entry of an account's history: transfer `transfer_id` posted at `seq` touched `account`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub account: String,
    pub seq: u64,
    pub transfer_id: String,
}

/// Everything one or more commands changed, to be persisted atomically.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub accounts: BTreeMap<String, Account>,
    pub transfers: BTreeMap<String, TransferRecord>,
    pub totals: BTreeMap<String, CurrencyTotals>,
    pub history: Vec<HistoryEntry>,
    /// `Some` once a transfer was posted in these changes.
    pub seq_last: Option<u64>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty() && self.transfers.is_empty() && self.seq_last.is_none()
    }

    /// Folds `later` (computed on top of `self`) into `self`.
    fn absorb(&mut self, later: Changes) {
        self.accounts.extend(later.accounts);
        for (id, record) in later.transfers {
            let previous = self.transfers.insert(id, record);
            assert!(previous.is_none(), "a transfer id was decided twice");
        }
        self.totals.extend(later.totals);
        self.history.extend(later.history);
        if later.seq_last.is_some() {
            self.seq_last = later.seq_last;
        }
    }
}

/// The state seen through pending changes: reads fall through to `base` for what the changes
/// do not hold. Commands are applied here, one after another.
pub struct Overlay<'base, R: LedgerRead + ?Sized> {
    base: &'base R,
    changes: Changes,
}

impl<R: LedgerRead + ?Sized> LedgerRead for Overlay<'_, R> {
    fn account(&self, id: &str) -> Option<Account> {
        match self.changes.accounts.get(id) {
            Some(account) => Some(account.clone()),
            None => self.base.account(id),
        }
    }

    fn transfer(&self, id: &str) -> Option<TransferRecord> {
        match self.changes.transfers.get(id) {
            Some(record) => Some(record.clone()),
            None => self.base.transfer(id),
        }
    }

    fn seq_last(&self) -> u64 {
        self.changes
            .seq_last
            .unwrap_or_else(|| self.base.seq_last())
    }

    fn totals(&self, currency: &str) -> CurrencyTotals {
        match self.changes.totals.get(currency) {
            Some(totals) => *totals,
            None => self.base.totals(currency),
        }
    }
}

impl<'base, R: LedgerRead + ?Sized> Overlay<'base, R> {
    pub fn new(base: &'base R) -> Self {
        Overlay {
            base,
            changes: Changes::default(),
        }
    }

    pub fn into_changes(self) -> Changes {
        self.changes
    }

    /// Applies one command and returns its result. Rejections are results, never panics; a
    /// broken invariant is a bug and panics.
    pub fn apply(&mut self, command: &Command) -> CommandResult {
        match command {
            Command::CreateAccount(spec) => self.account_create(spec),
            Command::Transfer(spec) => CommandResult::Transfer(self.transfer_apply(spec)),
            Command::Batch { transfers, atomic } => {
                if let Err(error) = validate_batch(transfers) {
                    let rejection = Rejection {
                        code: RejectionCode::InvalidRequest,
                        message: error.0,
                    };
                    let results = transfers
                        .iter()
                        .map(|_| TransferResult::Rejected(rejection.clone()))
                        .collect();
                    return CommandResult::Batch(results);
                }
                let results = if *atomic {
                    self.batch_atomic_apply(transfers)
                } else {
                    transfers
                        .iter()
                        .map(|spec| self.transfer_apply(spec))
                        .collect()
                };
                CommandResult::Batch(results)
            }
        }
    }

    fn account_create(&mut self, spec: &AccountSpec) -> CommandResult {
        if let Err(error) = validate_account(spec) {
            // Proposers validate first; an invalid entry changes nothing.
            return CommandResult::AccountInvalid(Rejection {
                code: RejectionCode::InvalidRequest,
                message: error.0,
            });
        }
        if let Some(existing) = self.account(&spec.id) {
            let same = existing.currency == spec.currency
                && existing.allow_overdraft == spec.allow_overdraft;
            return if same {
                CommandResult::Account {
                    account: existing,
                    created: false,
                }
            } else {
                CommandResult::AccountIdConflict
            };
        }
        let account = Account {
            id: spec.id.clone(),
            currency: spec.currency.clone(),
            allow_overdraft: spec.allow_overdraft,
            debits: 0,
            credits: 0,
        };
        self.changes
            .accounts
            .insert(account.id.clone(), account.clone());
        CommandResult::Account {
            account,
            created: true,
        }
    }

    /// Decides a transfer id: the earlier outcome if the id is known, else post or reject now
    /// and record the decision.
    fn transfer_apply(&mut self, spec: &TransferSpec) -> TransferResult {
        if let Some(record) = self.transfer(&spec.id) {
            return Self::transfer_replay(&record, spec);
        }
        let outcome = match self.transfer_check(spec) {
            Ok((from, to)) => self.transfer_post(spec, from, to),
            Err(rejection) => TransferOutcome::Rejected(rejection),
        };
        self.transfer_record(spec, outcome)
    }

    fn transfer_replay(record: &TransferRecord, spec: &TransferSpec) -> TransferResult {
        if record.spec != *spec {
            return TransferResult::IdConflict;
        }
        match record.result() {
            Ok(transfer) => TransferResult::Posted {
                transfer,
                created: false,
            },
            Err(rejection) => TransferResult::Rejected(rejection),
        }
    }

    fn transfer_record(&mut self, spec: &TransferSpec, outcome: TransferOutcome) -> TransferResult {
        let record = TransferRecord {
            spec: spec.clone(),
            outcome,
        };
        let result = match record.result() {
            Ok(transfer) => TransferResult::Posted {
                transfer,
                created: true,
            },
            Err(rejection) => TransferResult::Rejected(rejection),
        };
        assert!(
            self.transfer(&spec.id).is_none(),
            "transfer id decided twice"
        );
        self.changes.transfers.insert(spec.id.clone(), record);
        result
    }

    /// Every rule a transfer must pass, with the accounts it would post to. Changes nothing.
    fn transfer_check(&self, spec: &TransferSpec) -> Result<(Account, Account), Rejection> {
        let reject = |code: RejectionCode, message: String| Rejection { code, message };
        if let Err(error) = validate_transfer(spec) {
            return Err(reject(RejectionCode::InvalidRequest, error.0));
        }
        let from = self.account(&spec.from).ok_or_else(|| {
            reject(
                RejectionCode::AccountNotFound,
                format!("account {} does not exist", spec.from),
            )
        })?;
        let to = self.account(&spec.to).ok_or_else(|| {
            reject(
                RejectionCode::AccountNotFound,
                format!("account {} does not exist", spec.to),
            )
        })?;
        if from.currency != to.currency {
            return Err(reject(
                RejectionCode::CurrencyMismatch,
                format!(
                    "account {} holds {} but account {} holds {}",
                    from.id, from.currency, to.id, to.currency
                ),
            ));
        }
        let overflow = || {
            reject(
                RejectionCode::Overflow,
                format!("a total would exceed {AMOUNT_MAX}"),
            )
        };
        let debits = from.debits.checked_add(spec.amount).ok_or_else(overflow)?;
        let credits = to.credits.checked_add(spec.amount).ok_or_else(overflow)?;
        if debits > AMOUNT_MAX || credits > AMOUNT_MAX {
            return Err(overflow());
        }
        if !from.allow_overdraft && from.balance() < 0 {
            unreachable!("a non-overdraft account is below zero before posting");
        }
        // balance >= amount, computed without a subtraction that could wrap.
        let funded = i128::from(from.balance()) >= i128::from(spec.amount);
        if !from.allow_overdraft && !funded {
            return Err(reject(
                RejectionCode::InsufficientFunds,
                format!(
                    "account {} has {} but the transfer needs {}",
                    from.id,
                    from.balance(),
                    spec.amount
                ),
            ));
        }
        Ok((from, to))
    }

    /// Posts a checked transfer. Point of no return: nothing here can fail, only assert.
    fn transfer_post(
        &mut self,
        spec: &TransferSpec,
        mut from: Account,
        mut to: Account,
    ) -> TransferOutcome {
        let seq = self
            .seq_last()
            .checked_add(1)
            .expect("2^64 transfers are never posted");
        let pair_sum = |a: &Account, b: &Account| {
            i128::from(a.balance())
                .checked_add(i128::from(b.balance()))
                .expect("the sum of two i64 fits an i128")
        };
        let balance_before = pair_sum(&from, &to);
        from.debits = from
            .debits
            .checked_add(spec.amount)
            .expect("checked in transfer_check");
        to.credits = to
            .credits
            .checked_add(spec.amount)
            .expect("checked in transfer_check");
        assert!(from.debits <= AMOUNT_MAX);
        assert!(to.credits <= AMOUNT_MAX);
        assert!(from.allow_overdraft || from.balance() >= 0);
        let balance_after = pair_sum(&from, &to);
        assert_eq!(
            balance_before, balance_after,
            "a transfer created or lost money"
        );

        let mut totals = self.totals(&from.currency);
        // u128 sums of u64 amounts: 2^64 transfers of the largest amount still fit.
        totals.debits = totals
            .debits
            .checked_add(u128::from(spec.amount))
            .expect("u128 total");
        totals.credits = totals
            .credits
            .checked_add(u128::from(spec.amount))
            .expect("u128 total");
        assert_eq!(
            totals.debits, totals.credits,
            "currency {} is not conserved",
            from.currency
        );

        for account in [&from, &to] {
            self.changes.history.push(HistoryEntry {
                account: account.id.clone(),
                seq,
                transfer_id: spec.id.clone(),
            });
        }
        let currency = from.currency.clone();
        self.changes.totals.insert(currency.clone(), totals);
        self.changes.accounts.insert(from.id.clone(), from);
        self.changes.accounts.insert(to.id.clone(), to);
        self.changes.seq_last = Some(seq);
        TransferOutcome::Posted { seq, currency }
    }

    /// All or nothing: the transfers are tried on a scratch overlay; on the first failure the
    /// scratch is dropped and every undecided transfer is recorded as `linked_failed`.
    fn batch_atomic_apply(&mut self, transfers: &[TransferSpec]) -> Vec<TransferResult> {
        let mut scratch = Overlay::new(&*self);
        let mut results = Vec::with_capacity(transfers.len());
        let mut failed_at = None;
        for (index, spec) in transfers.iter().enumerate() {
            let result = scratch.transfer_apply(spec);
            if !result.is_posted() {
                failed_at = Some((index, result));
                break;
            }
            results.push(result);
        }
        let Some((failed_index, failure)) = failed_at else {
            let changes = scratch.into_changes();
            self.changes.absorb(changes);
            return results;
        };
        drop(scratch);

        let failed_id = &transfers[failed_index].id;
        let mut results = Vec::with_capacity(transfers.len());
        for (index, spec) in transfers.iter().enumerate() {
            if index == failed_index {
                // Record the failing item's own rejection (a first decision) or keep its
                // earlier outcome.
                let result = match &failure {
                    TransferResult::Rejected(rejection) if self.transfer(&spec.id).is_none() => {
                        self.transfer_record(spec, TransferOutcome::Rejected(rejection.clone()))
                    }
                    other => other.clone(),
                };
                results.push(result);
                continue;
            }
            if let Some(record) = self.transfer(&spec.id) {
                results.push(Self::transfer_replay(&record, spec));
                continue;
            }
            let rejection = Rejection {
                code: RejectionCode::LinkedFailed,
                message: format!("atomic batch failed at transfers[{failed_index}] ({failed_id})"),
            };
            results.push(self.transfer_record(spec, TransferOutcome::Rejected(rejection)));
        }
        results
    }
}
