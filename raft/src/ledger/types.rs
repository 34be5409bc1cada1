//! The ledger's data: commands that go into the Raft log, the records kept in the state machine,
//! and the results that apply hands back. Everything here is part of a durable format (log
//! entries, sled values, snapshots): add enum variants only at the end, never reorder fields.

use serde::{Deserialize, Serialize};

pub use raftpay_api::rules::{AMOUNT_MAX, BATCH_TRANSFERS_MAX, ID_BYTES_MAX, MEMO_BYTES_MAX};

/// An account as the state machine keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub currency: String,
    pub allow_overdraft: bool,
    /// Total ever posted as debits (money that left), at most [`AMOUNT_MAX`].
    pub debits: u64,
    /// Total ever posted as credits (money that arrived), at most [`AMOUNT_MAX`].
    pub credits: u64,
}

impl Account {
    /// `credits - debits`. Cannot overflow: both totals are capped at [`AMOUNT_MAX`].
    pub fn balance(&self) -> i64 {
        i128::from(self.credits)
            .checked_sub(i128::from(self.debits))
            .and_then(|balance| i64::try_from(balance).ok())
            .expect("totals are capped at AMOUNT_MAX, so the balance fits an i64")
    }
}

/// What a client asks for when it creates an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountSpec {
    pub id: String,
    pub currency: String,
    pub allow_overdraft: bool,
}

/// What a client asks for when it creates a transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferSpec {
    pub id: String,
    pub from: String,
    pub to: String,
    pub amount: u64,
    pub memo: Option<String>,
}

/// A posted transfer, as reported to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub id: String,
    pub from: String,
    pub to: String,
    pub amount: u64,
    pub currency: String,
    pub memo: Option<String>,
    /// The ledger's global sequence number of posted transfers: 1, 2, 3, … without gaps.
    pub seq: u64,
}

/// One state-changing request. It is validated before it is proposed; apply re-checks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    CreateAccount(AccountSpec),
    Transfer(TransferSpec),
    Batch {
        transfers: Vec<TransferSpec>,
        atomic: bool,
    },
}

/// Why a transfer was not posted. Recorded under the transfer's id: the decision is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RejectionCode {
    InsufficientFunds,
    CurrencyMismatch,
    Overflow,
    AccountNotFound,
    /// Another transfer of the same atomic batch failed, so this one was not posted.
    LinkedFailed,
    /// The command broke a validation rule. Proposers validate first, so this is never expected;
    /// apply records it rather than crash every replica on a bad entry.
    InvalidRequest,
}

impl RejectionCode {
    /// The stable machine-readable code of the HTTP contract.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectionCode::InsufficientFunds => "insufficient_funds",
            RejectionCode::CurrencyMismatch => "currency_mismatch",
            RejectionCode::Overflow => "overflow",
            RejectionCode::AccountNotFound => "account_not_found",
            RejectionCode::LinkedFailed => "linked_failed",
            RejectionCode::InvalidRequest => "invalid_request",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub code: RejectionCode,
    pub message: String,
}

/// The decided outcome of a transfer id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferOutcome {
    Posted { seq: u64, currency: String },
    Rejected(Rejection),
}

/// What the state machine keeps under a transfer id: the request as first seen and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRecord {
    pub spec: TransferSpec,
    pub outcome: TransferOutcome,
}

impl TransferRecord {
    /// The posted transfer, or the recorded rejection.
    ///
    /// # Errors
    /// The rejection recorded for this id.
    pub fn result(&self) -> Result<Transfer, Rejection> {
        match &self.outcome {
            TransferOutcome::Posted { seq, currency } => Ok(Transfer {
                id: self.spec.id.clone(),
                from: self.spec.from.clone(),
                to: self.spec.to.clone(),
                amount: self.spec.amount,
                currency: currency.clone(),
                memo: self.spec.memo.clone(),
                seq: *seq,
            }),
            TransferOutcome::Rejected(rejection) => Err(rejection.clone()),
        }
    }
}

/// The result of one transfer command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferResult {
    /// Posted now (`created`) or earlier under the same id with the same content.
    Posted { transfer: Transfer, created: bool },
    /// Rejected now or earlier; the rejection is recorded under the id.
    Rejected(Rejection),
    /// The id was decided earlier with different content; nothing changed.
    IdConflict,
}

impl TransferResult {
    pub fn is_posted(&self) -> bool {
        matches!(self, TransferResult::Posted { .. })
    }
}

/// The result of one command, in the order of the proposal's commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    Account {
        account: Account,
        created: bool,
    },
    AccountIdConflict,
    Transfer(TransferResult),
    Batch(Vec<TransferResult>),
    /// An account command that breaks a validation rule (proposers validate first, so never
    /// expected); nothing changed.
    AccountInvalid(Rejection),
}
