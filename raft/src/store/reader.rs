//! The state machine's layout in sled and reads of it: by the HTTP layer (accounts, transfers,
//! history, summary) and by apply (through [`SledView`], which implements the ledger's
//! [`LedgerRead`]). Reads never write.

use std::cell::RefCell;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::codec::{self, CodecError};
use crate::ledger::{Account, CurrencyTotals, LedgerRead, Transfer, TransferRecord};
use crate::store::Storage;
use crate::typ::{LogId, StoredMembership};

pub(crate) const KEY_APPLIED: &[u8] = b"m/applied";
pub(crate) const KEY_MEMBERSHIP: &[u8] = b"m/membership";
pub(crate) const KEY_HASH: &[u8] = b"m/hash";
pub(crate) const KEY_SEQ_LAST: &[u8] = b"m/seq_last";

pub(crate) fn account_key(id: &str) -> Vec<u8> {
    [b"a/", id.as_bytes()].concat()
}
pub(crate) fn transfer_key(id: &str) -> Vec<u8> {
    [b"t/", id.as_bytes()].concat()
}
pub(crate) fn totals_key(currency: &str) -> Vec<u8> {
    [b"c/", currency.as_bytes()].concat()
}
/// `h/<account>\0<seq, big-endian>`: an account's history in seq order (ids never hold `\0`).
pub(crate) fn history_key(account: &str, seq: u64) -> Vec<u8> {
    [b"h/", account.as_bytes(), b"\0", &seq.to_be_bytes()].concat()
}

/// A read of the state machine failed: sled or a stored value is broken.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("storage: {0}")]
    Sled(#[from] sled::Error),
    #[error("stored value: {0}")]
    Codec(#[from] CodecError),
}

/// What `/v1/cluster` reports of the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSummary {
    pub applied: Option<LogId>,
    /// Hash chain over every applied entry's results: equal on replicas at the same index.
    pub state_hash: String,
    pub seq_last: u64,
}

/// Reads of the applied state. Cheap to clone.
#[derive(Clone)]
pub struct LedgerReader {
    storage: Arc<Storage>,
}

fn get<T: DeserializeOwned>(tree: &sled::Tree, key: &[u8]) -> Result<Option<T>, ReadError> {
    match tree.get(key)? {
        Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
        None => Ok(None),
    }
}

impl LedgerReader {
    pub fn new(storage: Arc<Storage>) -> Self {
        LedgerReader { storage }
    }

    /// # Errors
    /// On a storage or decode failure.
    pub fn account(&self, id: &str) -> Result<Option<Account>, ReadError> {
        get(&self.storage.state, &account_key(id))
    }

    /// # Errors
    /// On a storage or decode failure.
    pub fn transfer(&self, id: &str) -> Result<Option<TransferRecord>, ReadError> {
        get(&self.storage.state, &transfer_key(id))
    }

    /// Up to `limit` posted transfers of `account` with `seq > after`, in seq order, and whether
    /// more follow.
    ///
    /// # Errors
    /// On a storage or decode failure, or a history entry without its transfer (corruption).
    pub fn history(
        &self,
        account: &str,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<Transfer>, bool), ReadError> {
        let start = history_key(account, after.saturating_add(1));
        let end = history_key(account, u64::MAX);
        let mut transfers = Vec::with_capacity(limit.min(1024));
        let mut more = false;
        for item in self.storage.state.range(start..=end) {
            let (_, value) = item?;
            if transfers.len() == limit {
                more = true;
                break;
            }
            let transfer_id: String = codec::decode(&value)?;
            let record = self.transfer(&transfer_id)?.ok_or_else(|| {
                ReadError::Sled(sled::Error::Unsupported(format!(
                    "history names transfer {transfer_id}, which is missing"
                )))
            })?;
            match record.result() {
                Ok(transfer) => transfers.push(transfer),
                Err(_) => {
                    return Err(ReadError::Sled(sled::Error::Unsupported(format!(
                        "history names transfer {transfer_id}, which was rejected"
                    ))))
                }
            }
        }
        Ok((transfers, more))
    }

    /// Every account, in id order.
    ///
    /// # Errors
    /// On a storage or decode failure.
    pub fn accounts(&self) -> Result<Vec<Account>, ReadError> {
        let mut accounts = Vec::new();
        for item in self.storage.state.scan_prefix(b"a/") {
            let (_, value) = item?;
            accounts.push(codec::decode(&value)?);
        }
        Ok(accounts)
    }

    /// # Errors
    /// On a storage or decode failure.
    pub fn summary(&self) -> Result<StateSummary, ReadError> {
        let hash: Option<[u8; 32]> = get(&self.storage.state, KEY_HASH)?;
        Ok(StateSummary {
            applied: get::<Option<LogId>>(&self.storage.state, KEY_APPLIED)?.flatten(),
            state_hash: hex::encode(hash.unwrap_or_default()),
            seq_last: get(&self.storage.state, KEY_SEQ_LAST)?.unwrap_or(0),
        })
    }

    /// # Errors
    /// On a storage or decode failure.
    pub fn membership(&self) -> Result<Option<StoredMembership>, ReadError> {
        get(&self.storage.state, KEY_MEMBERSHIP)
    }
}

/// The ledger's view of sled during apply. The ledger's reads cannot fail, so the first storage
/// error is kept here, and apply checks it before it persists anything: a failed read can then
/// never turn into a recorded decision.
pub(crate) struct SledView<'a> {
    reader: &'a LedgerReader,
    cache: &'a HotState,
    error: RefCell<Option<ReadError>>,
}

/// The state apply reads on every transfer, kept in memory by the state machine (its only
/// writer): accounts seen recently, currency totals and the last seq. What it holds always
/// equals sled's applied state; it is refreshed after each persisted apply and dropped on a
/// snapshot install.
#[derive(Debug, Default)]
pub(crate) struct HotState {
    accounts: std::collections::HashMap<String, Account>,
    totals: std::collections::HashMap<String, CurrencyTotals>,
    seq_last: Option<u64>,
}

/// Past this many cached accounts the cache starts over (memory stays bounded).
const HOT_ACCOUNTS_MAX: usize = 200_000;

impl HotState {
    /// Takes in what an apply call persisted.
    pub(crate) fn absorb(&mut self, changes: &crate::ledger::Changes) {
        if self.accounts.len() + changes.accounts.len() > HOT_ACCOUNTS_MAX {
            self.accounts.clear();
        }
        for (id, account) in &changes.accounts {
            self.accounts.insert(id.clone(), account.clone());
        }
        for (currency, totals) in &changes.totals {
            self.totals.insert(currency.clone(), *totals);
        }
        if let Some(seq) = changes.seq_last {
            self.seq_last = Some(seq);
        }
    }

    pub(crate) fn clear(&mut self) {
        *self = HotState::default();
    }
}

impl<'a> SledView<'a> {
    pub(crate) fn new(reader: &'a LedgerReader, cache: &'a HotState) -> Self {
        SledView {
            reader,
            cache,
            error: RefCell::new(None),
        }
    }

    pub(crate) fn take_error(&self) -> Option<ReadError> {
        self.error.borrow_mut().take()
    }

    fn keep<T>(&self, result: Result<Option<T>, ReadError>) -> Option<T> {
        result.unwrap_or_else(|error| {
            self.error.borrow_mut().get_or_insert(error);
            None
        })
    }
}

impl LedgerRead for SledView<'_> {
    fn account(&self, id: &str) -> Option<Account> {
        if let Some(account) = self.cache.accounts.get(id) {
            return Some(account.clone());
        }
        self.keep(self.reader.account(id))
    }
    fn transfer(&self, id: &str) -> Option<TransferRecord> {
        self.keep(self.reader.transfer(id))
    }
    fn seq_last(&self) -> u64 {
        if let Some(seq) = self.cache.seq_last {
            return seq;
        }
        self.keep(get(&self.reader.storage.state, KEY_SEQ_LAST))
            .unwrap_or(0)
    }
    fn totals(&self, currency: &str) -> CurrencyTotals {
        if let Some(totals) = self.cache.totals.get(currency) {
            return *totals;
        }
        self.keep(get(&self.reader.storage.state, &totals_key(currency)))
            .unwrap_or_default()
    }
}
