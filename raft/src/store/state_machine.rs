//! The replicated state machine: applies committed entries to the ledger and persists each apply
//! call's changes, `last_applied`, the membership and the state hash in one atomic sled batch.
//! Snapshots are a copy of the whole state tree at one applied index, serialized and written
//! durably before openraft may purge the log. sled has no point-in-time view, so the state
//! machine keeps one while a copy runs ([`Freeze`]): each apply first records the values it is
//! about to overwrite, and the copy prefers those to what it reads. Applies go on meanwhile.
//!
//! It must never return `Err` for a ledger rejection (that is a result), and never persist a
//! decision computed from a failed read.
//!
//! Over 800 lines on purpose: apply, snapshot build and snapshot install share the `Freeze` protocol and its private state.

use std::collections::BTreeMap;
use std::io::{self, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftTypeConfig};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec;
use crate::ledger::{
    check_accounts, check_totals, Account, Changes, CommandResult, CurrencyTotals, MemLedger,
    Overlay,
};
use crate::stats::Stats;
use crate::store::reader::{
    account_key, history_key, totals_key, transfer_key, HotState, LedgerReader, SledView,
    KEY_APPLIED, KEY_HASH, KEY_MEMBERSHIP, KEY_SEQ_LAST,
};
use crate::store::Storage;
use crate::typ::{
    LogId, ProposalResults, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

/// Snapshot files are `snapshot-<last applied index, 20 digits>.bin`; the highest is current.
const SNAPSHOT_PREFIX: &str = "snapshot-";
const SNAPSHOT_SUFFIX: &str = ".bin";

/// A snapshot's data: every key and value of the state tree.
#[derive(Serialize, Deserialize)]
pub(crate) struct SnapshotData {
    pub(crate) pairs: Vec<(Vec<u8>, Vec<u8>)>,
    /// SHA-256 over every key and value, in order: a flipped bit in an amount still decodes.
    checksum: [u8; 32],
}

pub(crate) fn pairs_checksum(pairs: &[(Vec<u8>, Vec<u8>)]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for (key, value) in pairs {
        hasher.update((key.len() as u64).to_be_bytes());
        hasher.update(key);
        hasher.update((value.len() as u64).to_be_bytes());
        hasher.update(value);
    }
    hasher.finalize().into()
}

impl SnapshotData {
    pub(crate) fn new(pairs: Vec<(Vec<u8>, Vec<u8>)>) -> SnapshotData {
        let checksum = pairs_checksum(&pairs);
        SnapshotData { pairs, checksum }
    }

    /// Decodes snapshot data and proves it sound before anything is written: the checksum
    /// matches, every account and currency total decodes under its own key, and they keep the
    /// ledger invariants (conservation, no non-overdraft account below zero, totals in range
    /// and equal to the stored currency totals). Never panics, whatever the bytes.
    pub(crate) fn decode_verified(data: &[u8]) -> Result<SnapshotData, String> {
        let decoded: SnapshotData = codec::decode(data).map_err(|e| e.to_string())?;
        if pairs_checksum(&decoded.pairs) != decoded.checksum {
            return Err("snapshot checksum mismatch".into());
        }
        let mut accounts = Vec::new();
        let mut totals = BTreeMap::new();
        for (key, value) in &decoded.pairs {
            if key.starts_with(b"a/") {
                let account: Account =
                    codec::decode(value).map_err(|e| format!("account in snapshot: {e}"))?;
                if *key != account_key(&account.id) {
                    return Err(format!("account {} stored under another key", account.id));
                }
                accounts.push(account);
            } else if let Some(currency) = key.strip_prefix(b"c/") {
                let currency = String::from_utf8(currency.to_vec())
                    .map_err(|_| "currency key in snapshot is not UTF-8".to_string())?;
                let value: CurrencyTotals = codec::decode(value)
                    .map_err(|e| format!("totals of {currency} in snapshot: {e}"))?;
                totals.insert(currency, value);
            }
        }
        check_accounts(&accounts)
            .map_err(|violations| format!("snapshot breaks ledger invariants: {violations:?}"))?;
        check_totals(&accounts, &totals)
            .map_err(|violations| format!("snapshot breaks ledger invariants: {violations:?}"))?;
        Ok(decoded)
    }

    /// The state hash (hex), the last seq and the number of accounts held.
    pub(crate) fn summary(&self) -> Result<(String, u64, u64), String> {
        let mut hash = [0u8; 32];
        let mut seq_last = 0;
        let mut accounts = 0u64;
        for (key, value) in &self.pairs {
            if key.as_slice() == KEY_HASH {
                hash = codec::decode(value).map_err(|e| e.to_string())?;
            } else if key.as_slice() == KEY_SEQ_LAST {
                seq_last = codec::decode(value).map_err(|e| e.to_string())?;
            } else if key.starts_with(b"a/") {
                accounts = accounts.saturating_add(1);
            }
        }
        Ok((hex::encode(hash), seq_last, accounts))
    }
}

/// Proves snapshot data sound (see `SnapshotData::decode_verified`) without keeping it: what a
/// node runs on a snapshot from a peer before openraft sees it, and on its own before sending.
///
/// # Errors
/// Why the snapshot is refused.
pub fn snapshot_verify(data: &[u8]) -> Result<(), String> {
    SnapshotData::decode_verified(data).map(|_| ())
}

/// Snapshot data (the state tree's keys, with their checksum) holding `ledger`'s accounts,
/// transfers, currency totals and last seq, and none of the Raft metadata. For tests and tools
/// that craft snapshots; nothing checks `ledger` here.
///
/// # Errors
/// When a value does not encode.
pub fn snapshot_data_of(ledger: &MemLedger) -> Result<Vec<u8>, codec::CodecError> {
    let mut pairs = Vec::new();
    for (id, account) in &ledger.accounts {
        pairs.push((account_key(id), codec::encode(account)?));
    }
    for (id, record) in &ledger.transfers {
        pairs.push((transfer_key(id), codec::encode(record)?));
    }
    for (currency, totals) in &ledger.totals {
        pairs.push((totals_key(currency), codec::encode(totals)?));
    }
    pairs.push((KEY_SEQ_LAST.to_vec(), codec::encode(&ledger.seq_last)?));
    pairs.sort();
    codec::encode(&SnapshotData::new(pairs))
}

/// A snapshot as persisted on disk.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// A snapshot file begins with these bytes, then the SHA-256 of everything after the
/// checksum, then `codec(StoredSnapshot)`. The data's own checksum covers only the key/value
/// pairs; this one covers the whole file (the meta included), so a flipped bit anywhere is found
/// when the file is opened, at start and before the snapshot is sent.
const SNAPSHOT_MAGIC: &[u8; 8] = b"rpsnap02";
const SNAPSHOT_HEADER_BYTES: usize = SNAPSHOT_MAGIC.len() + 32;

fn snapshot_file_encode(stored: &StoredSnapshot) -> io::Result<Vec<u8>> {
    let body = codec::encode(stored).map_err(io_error)?;
    let mut bytes = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + body.len());
    bytes.extend_from_slice(SNAPSHOT_MAGIC);
    bytes.extend_from_slice(&Sha256::digest(&body));
    bytes.extend_from_slice(&body);
    Ok(bytes)
}

/// Checks a snapshot file's magic and checksum, then decodes it. The error names the file.
fn snapshot_file_decode(path: &Path, bytes: &[u8]) -> Result<StoredSnapshot, String> {
    let corrupt = |reason: &str| {
        format!(
            "{}: corrupt snapshot file: {reason}; this node cannot be trusted (rebuild it from \
             its peers, see the README)",
            path.display()
        )
    };
    let body = bytes
        .strip_prefix(SNAPSHOT_MAGIC.as_slice())
        .ok_or_else(|| corrupt("no snapshot header"))?;
    if body.len() < 32 {
        return Err(corrupt("shorter than its header"));
    }
    let (checksum, body) = body.split_at(32);
    if Sha256::digest(body).as_slice() != checksum {
        return Err(corrupt("checksum mismatch"));
    }
    codec::decode(body).map_err(|e| corrupt(&e.to_string()))
}

/// A point-in-time view of the state tree while a snapshot copy runs: for every key an apply
/// wrote since the snapshot point, its value at that point (`None`: it did not exist).
///
/// Order matters: an apply records a key's old value *before* it writes the key, and the copy
/// looks a key up here *after* it read it from the tree. So a value the copy read that is newer
/// than the snapshot point always has its old value recorded here by then.
#[derive(Default)]
struct Freeze {
    before: Mutex<Option<BTreeMap<Vec<u8>, Option<sled::IVec>>>>,
    /// Woken when a freeze ends.
    ended: tokio::sync::Notify,
}

type FrozenValues = BTreeMap<Vec<u8>, Option<sled::IVec>>;

impl Freeze {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<FrozenValues>> {
        // A panic while holding this lock leaves a consistent map (inserts only).
        self.before.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a freeze; false when one is already running.
    fn begin(&self) -> bool {
        let mut before = self.lock();
        if before.is_some() {
            return false;
        }
        *before = Some(BTreeMap::new());
        true
    }

    fn active(&self) -> bool {
        self.lock().is_some()
    }

    /// Records the current value of each of `keys` not yet recorded, before an apply writes them.
    fn record<'k>(
        &self,
        tree: &sled::Tree,
        keys: impl Iterator<Item = &'k [u8]>,
    ) -> sled::Result<()> {
        let mut guard = self.lock();
        let Some(before) = guard.as_mut() else {
            return Ok(());
        };
        for key in keys {
            if !before.contains_key(key) {
                before.insert(key.to_vec(), tree.get(key)?);
            }
        }
        Ok(())
    }

    /// The value `key` had at the snapshot point, if an apply has changed it since.
    fn before(&self, key: &[u8]) -> Option<Option<sled::IVec>> {
        self.lock()
            .as_ref()
            .and_then(|before| before.get(key).cloned())
    }

    fn end(&self) -> Option<FrozenValues> {
        let frozen = self.lock().take();
        self.ended.notify_waiters();
        frozen
    }

    /// Returns once no freeze runs (a copy always ends: built, failed or dropped).
    async fn idle(&self) {
        loop {
            // Created before the check: a freeze ending in between still wakes it.
            let ended = self.ended.notified();
            if !self.active() {
                return;
            }
            ended.await;
        }
    }
}

/// Copies `tree` as it was when `freeze` began (see [`Freeze`]).
fn frozen_copy(tree: &sled::Tree, freeze: &Freeze) -> Result<SnapshotData, String> {
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let read = tree.iter().try_for_each(|item| {
        let (key, value) = item?;
        match freeze.before(&key) {
            // Unchanged since the snapshot point (so far): the value read is the one then.
            None => pairs.push((key.to_vec(), value.to_vec())),
            Some(Some(old)) => pairs.push((key.to_vec(), old.to_vec())),
            // Written after the snapshot point.
            Some(None) => {}
        }
        Ok::<(), sled::Error>(())
    });
    // Ended on every path: applies stop recording.
    let frozen = freeze.end();
    read.map_err(|e| e.to_string())?;
    let frozen = frozen.ok_or_else(|| "snapshot freeze ended early".to_owned())?;
    // Applies never remove keys, so every key that existed at the snapshot point was read.
    // (`tree.iter()` yields keys in order, so `pairs` is sorted.)
    for (key, old) in &frozen {
        if old.is_some()
            && pairs
                .binary_search_by(|(k, _)| k.as_slice().cmp(key))
                .is_err()
        {
            return Err(format!(
                "snapshot copy missed key {} that existed at the snapshot point",
                String::from_utf8_lossy(key)
            ));
        }
    }
    Ok(SnapshotData::new(pairs))
}

pub struct StateMachine {
    storage: Arc<Storage>,
    freeze: Arc<Freeze>,
    stats: Arc<Stats>,
    hot: HotState,
    reader: LedgerReader,
    applied: Option<LogId>,
    membership: StoredMembership,
    hash: [u8; 32],
    snapshot_dir: PathBuf,
    snapshots_built: u64,
}

fn io_error(error: impl std::fmt::Display) -> io::Error {
    io::Error::other(error.to_string())
}

fn sm_error(verb: ErrorVerb, error: impl std::fmt::Display) -> StorageError {
    StorageError::from_io_error(ErrorSubject::StateMachine, verb, io_error(error))
}

fn snapshot_error(
    meta: Option<&SnapshotMeta>,
    verb: ErrorVerb,
    error: impl std::fmt::Display,
) -> StorageError {
    let subject = match meta {
        Some(meta) => ErrorSubject::Snapshot(Some(meta.signature())),
        None => ErrorSubject::Snapshot(None),
    };
    StorageError::from_io_error(subject, verb, io_error(error))
}

/// The next link of the state hash chain: every replica that applied the same entries has the
/// same hash at the same index.
fn hash_next(hash: &[u8; 32], index: u64, results: &[CommandResult]) -> [u8; 32] {
    let encoded = codec::encode(&results).expect("results always encode");
    let mut hasher = Sha256::new();
    hasher.update(hash);
    hasher.update(index.to_be_bytes());
    hasher.update(&encoded);
    hasher.finalize().into()
}

fn snapshot_path(dir: &Path, applied: Option<LogId>) -> PathBuf {
    let index = applied.map_or(0, |a| a.index);
    dir.join(format!("{SNAPSHOT_PREFIX}{index:020}{SNAPSHOT_SUFFIX}"))
}

/// The snapshot files in `dir`, oldest first.
fn snapshot_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with(SNAPSHOT_PREFIX) && name.ends_with(SNAPSHOT_SUFFIX) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn snapshot_latest(dir: &Path) -> io::Result<Option<PathBuf>> {
    Ok(snapshot_files(dir)?.pop())
}

/// Persists a snapshot as `dir`'s newest file and removes the older ones. A snapshot older than
/// one already there (a build racing an install) is not kept.
fn snapshot_write(dir: &Path, stored: &StoredSnapshot) -> io::Result<()> {
    let path = snapshot_path(dir, stored.meta.last_log_id);
    if snapshot_latest(dir)?.is_some_and(|latest| latest > path) {
        return Ok(());
    }
    let bytes = snapshot_file_encode(stored)?;
    write_durably(&path, &bytes)?;
    for older in snapshot_files(dir)?.into_iter().filter(|p| *p < path) {
        std::fs::remove_file(older)?;
    }
    Ok(())
}

/// Bytes written between two `fdatasync`s of a snapshot file. On ext4 (ordered data) an fsync
/// of the Raft log also waits for other files' dirty pages; a snapshot of hundreds of MB written
/// in one go would stall every log flush behind it for seconds, long enough for the followers to
/// start elections.
const SNAPSHOT_SYNC_CHUNK: usize = 4 << 20;

/// Writes `bytes` to `path` durably: temp file (synced chunk by chunk), fsync, rename, fsync the
/// directory.
fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    // Unique per write: a snapshot build and an install may write the same index at once.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temp = path.with_extension(format!("tmp{n}"));
    let mut file = std::fs::File::create(&temp)?;
    for chunk in bytes.chunks(SNAPSHOT_SYNC_CHUNK) {
        file.write_all(chunk)?;
        file.sync_data()?;
    }
    file.sync_all()?;
    std::fs::rename(&temp, path)?;
    let dir = path
        .parent()
        .ok_or_else(|| io_error("snapshot path has no parent"))?;
    std::fs::File::open(dir)?.sync_all()
}

impl StateMachine {
    /// Opens the state machine. If the persisted snapshot is ahead of the state tree (a crash
    /// during install), the snapshot is installed again first.
    ///
    /// # Errors
    /// When sled or the snapshot file cannot be read.
    pub fn open(storage: Arc<Storage>) -> Result<StateMachine, StorageError> {
        let reader = LedgerReader::new(Arc::clone(&storage));
        let snapshot_dir = storage.dir().join("snapshot");
        std::fs::create_dir_all(&snapshot_dir)
            .map_err(|e| snapshot_error(None, ErrorVerb::Write, e))?;
        let mut machine = StateMachine {
            reader,
            applied: None,
            membership: StoredMembership::default(),
            hash: [0; 32],
            snapshot_dir,
            snapshots_built: 0,
            stats: Arc::default(),
            hot: HotState::default(),
            freeze: Arc::default(),
            storage,
        };
        machine.load_from_tree()?;
        if let Some(stored) = machine.snapshot_read()? {
            if stored.meta.last_log_id > machine.applied {
                tracing::warn!(snapshot = ?stored.meta.last_log_id, applied = ?machine.applied,
                    "state is behind the persisted snapshot; installing it again");
                let data = SnapshotData::decode_verified(&stored.data)
                    .map_err(|e| snapshot_error(Some(&stored.meta), ErrorVerb::Read, e))?;
                machine.install_data(&stored.meta, data)?;
            }
        }
        // The state was fsynced with everything up to `state_durable` applied (a checkpoint);
        // coming back below it means the database lost synced data, and the log may no longer
        // hold the entries to rebuild it.
        let state_durable = machine.storage.wal.meta().state_durable;
        if machine.applied < state_durable {
            let state_dir = machine.storage.dir().join("state");
            return Err(sm_error(
                ErrorVerb::Read,
                format!(
                    "{}: the state database is at applied {:?}, behind its last checkpoint {:?}: \
                     it lost synced data; rebuild this node from its peers (see the README)",
                    state_dir.display(),
                    machine.applied,
                    state_durable
                ),
            ));
        }
        Ok(machine)
    }

    /// The counters this state machine updates on every apply.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    pub fn reader(&self) -> LedgerReader {
        self.reader.clone()
    }

    fn load_from_tree(&mut self) -> Result<(), StorageError> {
        let summary = self
            .reader
            .summary()
            .map_err(|e| sm_error(ErrorVerb::Read, e))?;
        self.applied = summary.applied;
        self.membership = self
            .reader
            .membership()
            .map_err(|e| sm_error(ErrorVerb::Read, e))?
            .unwrap_or_default();
        let hash: Option<[u8; 32]> = self
            .storage
            .state
            .get(KEY_HASH)
            .map_err(|e| sm_error(ErrorVerb::Read, e))?
            .map(|bytes| codec::decode(&bytes))
            .transpose()
            .map_err(|e| sm_error(ErrorVerb::Read, e))?;
        self.hash = hash.unwrap_or_default();
        Ok(())
    }

    fn snapshot_read(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        let Some(path) = snapshot_latest(&self.snapshot_dir)
            .map_err(|e| snapshot_error(None, ErrorVerb::Read, e))?
        else {
            return Ok(None);
        };
        let bytes = std::fs::read(&path).map_err(|e| {
            snapshot_error(None, ErrorVerb::Read, format!("{}: {e}", path.display()))
        })?;
        snapshot_file_decode(&path, &bytes)
            .map(Some)
            .map_err(|e| snapshot_error(None, ErrorVerb::Read, e))
    }

    /// Replaces the whole state tree with the (verified) snapshot's, in one atomic batch.
    fn install_data(
        &mut self,
        meta: &SnapshotMeta,
        decoded: SnapshotData,
    ) -> Result<(), StorageError> {
        // The cached hot state describes the state being replaced.
        self.hot.clear();
        let mut batch = sled::Batch::default();
        for key in self.storage.state.iter().keys() {
            batch.remove(key.map_err(|e| sm_error(ErrorVerb::Read, e))?);
        }
        for (key, value) in decoded.pairs {
            batch.insert(key, value);
        }
        let encode =
            |value: &dyn erased::Encode| value.encode().map_err(|e| sm_error(ErrorVerb::Write, e));
        batch.insert(KEY_APPLIED, encode(&meta.last_log_id)?);
        batch.insert(KEY_MEMBERSHIP, encode(&meta.last_membership)?);
        self.storage
            .state
            .apply_batch(batch)
            .map_err(|e| sm_error(ErrorVerb::Write, e))?;
        // A checkpoint: the installed state is durable, and recorded as such.
        self.storage
            .sync()
            .map_err(|e| sm_error(ErrorVerb::Write, e))?;
        self.load_from_tree()
    }

    /// Makes `data` this node's state and its current snapshot at `meta`, exactly as a snapshot
    /// received from a leader is installed: the snapshot file first (durable), then the whole
    /// tree replaced and synced (a checkpoint). Used by restore, so that the restored node has a
    /// snapshot to send to nodes that join later.
    ///
    /// # Errors
    /// When the data does not verify, or the file or the tree cannot be written.
    pub(crate) fn restore(
        &mut self,
        meta: &SnapshotMeta,
        data: SnapshotData,
    ) -> Result<(), StorageError> {
        let encoded =
            codec::encode(&data).map_err(|e| snapshot_error(Some(meta), ErrorVerb::Write, e))?;
        // The same checks as a received snapshot: nothing unverified becomes state.
        let verified = SnapshotData::decode_verified(&encoded)
            .map_err(|e| snapshot_error(Some(meta), ErrorVerb::Read, e))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: encoded,
        };
        snapshot_write(&self.snapshot_dir, &stored)
            .map_err(|e| snapshot_error(Some(meta), ErrorVerb::Write, e))?;
        self.install_data(meta, verified)
    }

    /// Writes an apply call's changes and the new applied state as one batch.
    fn persist(
        &self,
        changes: &Changes,
        applied: Option<LogId>,
        membership: &StoredMembership,
        hash: &[u8; 32],
    ) -> Result<(), StorageError> {
        // Test builds only: an injected write failure (see `crate::fault`).
        crate::fault::check(crate::fault::FaultPoint::StateApply)
            .map_err(|e| sm_error(ErrorVerb::Write, e))?;
        let encode =
            |value: &dyn erased::Encode| value.encode().map_err(|e| sm_error(ErrorVerb::Write, e));
        let mut writes: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(
            changes.accounts.len() + changes.transfers.len() + changes.history.len() + 8,
        );
        for (id, account) in &changes.accounts {
            writes.push((account_key(id), encode(account)?));
        }
        for (id, record) in &changes.transfers {
            writes.push((transfer_key(id), encode(record)?));
        }
        for (currency, totals) in &changes.totals {
            writes.push((totals_key(currency), encode(totals)?));
        }
        for entry in &changes.history {
            writes.push((
                history_key(&entry.account, entry.seq),
                encode(&entry.transfer_id)?,
            ));
        }
        if let Some(seq_last) = changes.seq_last {
            writes.push((KEY_SEQ_LAST.to_vec(), encode(&seq_last)?));
        }
        writes.push((KEY_APPLIED.to_vec(), encode(&applied)?));
        writes.push((KEY_MEMBERSHIP.to_vec(), encode(membership)?));
        writes.push((KEY_HASH.to_vec(), encode(hash)?));
        // A snapshot copy may be running: keep what it must see (before the write, see Freeze).
        self.freeze
            .record(
                &self.storage.state,
                writes.iter().map(|(key, _)| key.as_slice()),
            )
            .map_err(|e| sm_error(ErrorVerb::Read, e))?;
        let mut batch = sled::Batch::default();
        for (key, value) in writes {
            batch.insert(key, value);
        }
        self.storage
            .state
            .apply_batch(batch)
            .map_err(|e| sm_error(ErrorVerb::Write, e))
    }
}

/// Object-safe encoding, so one closure can encode values of different types.
mod erased {
    pub trait Encode {
        fn encode(&self) -> Result<Vec<u8>, crate::codec::CodecError>;
    }
    impl<T: serde::Serialize> Encode for T {
        fn encode(&self) -> Result<Vec<u8>, crate::codec::CodecError> {
            crate::codec::encode(self)
        }
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.applied, self.membership.clone()))
    }

    #[tracing::instrument(level = "trace", skip_all)]
    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ProposalResults>, StorageError>
    where
        I: IntoIterator<Item = <TypeConfig as RaftTypeConfig>::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let view = SledView::new(&self.reader, &self.hot);
        let mut overlay = Overlay::new(&view);
        let mut responses = Vec::new();
        let mut applied = self.applied;
        let mut hash = self.hash;
        let mut membership = None;
        for entry in entries {
            if Some(entry.log_id) <= applied {
                // Replay after a crash: already in the state.
                tracing::debug!(log_id = %entry.log_id, "skip entry at or below last_applied");
                responses.push(ProposalResults::default());
                continue;
            }
            assert!(
                applied.is_none_or(|a| entry.log_id.index > a.index),
                "applied index must only rise"
            );
            let results = match &entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(proposal) => {
                    proposal.commands.iter().map(|c| overlay.apply(c)).collect()
                }
                EntryPayload::Membership(config) => {
                    membership = Some(StoredMembership::new(Some(entry.log_id), config.clone()));
                    Vec::new()
                }
            };
            hash = hash_next(&hash, entry.log_id.index, &results);
            applied = Some(entry.log_id);
            responses.push(ProposalResults { results });
        }
        let changes = overlay.into_changes();
        if let Some(error) = view.take_error() {
            return Err(sm_error(ErrorVerb::Read, error));
        }
        let membership = membership.unwrap_or_else(|| self.membership.clone());
        self.persist(&changes, applied, &membership, &hash)?;
        // Point of no return: the batch is written; memory follows.
        self.hot.absorb(&changes);
        self.applied = applied;
        self.membership = membership;
        self.hash = hash;
        for result in responses.iter().flat_map(|r| &r.results) {
            self.stats.result_observe(result);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Called on the state-machine worker between applies: the state tree is exactly at
        // `self.applied` now. The copy itself runs later, while applies go on (see Freeze).
        // openraft builds one snapshot at a time, so a copy still running is rare (a backup
        // racing a build): wait for it, with applies held back.
        self.freeze.idle().await;
        let began = self.freeze.begin();
        debug_assert!(began, "only the state-machine worker begins a freeze");
        self.snapshots_built += 1;
        SnapshotBuilder {
            tree: self.storage.state.clone(),
            freeze: Arc::clone(&self.freeze),
            built: false,
            applied: self.applied,
            membership: self.membership.clone(),
            dir: self.snapshot_dir.clone(),
            snapshot_id: format!(
                "{}-{}",
                self.applied.map_or(0, |a| a.index),
                self.snapshots_built
            ),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    #[tracing::instrument(level = "info", skip_all, fields(last_log_id = ?meta.last_log_id))]
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        // A snapshot copy reads the tree this install replaces: let it finish first.
        self.freeze.idle().await;
        // Verified before anything is written: a bad snapshot is refused and leaves no trace.
        let decoded = SnapshotData::decode_verified(&data)
            .map_err(|e| snapshot_error(Some(meta), ErrorVerb::Read, e))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        // Durable first: if we crash while replacing the tree, open() installs it again.
        snapshot_write(&self.snapshot_dir, &stored)
            .map_err(|e| snapshot_error(Some(meta), ErrorVerb::Write, e))?;
        self.install_data(meta, decoded)?;
        tracing::info!(applied = ?self.applied, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.snapshot_read()?.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}

/// Copies the live tree through the freeze begun by `get_snapshot_builder`, then serializes and
/// persists it: the state as of that call.
pub struct SnapshotBuilder {
    tree: sled::Tree,
    freeze: Arc<Freeze>,
    built: bool,
    applied: Option<LogId>,
    membership: StoredMembership,
    dir: PathBuf,
    snapshot_id: String,
}

impl Drop for SnapshotBuilder {
    /// A builder dropped unbuilt must not leave applies recording old values forever.
    fn drop(&mut self) {
        if !self.built {
            self.freeze.end();
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        if self.built {
            return Err(snapshot_error(
                None,
                ErrorVerb::Read,
                "snapshot already built",
            ));
        }
        // From here the copy task ends the freeze, whatever happens to this future.
        self.built = true;
        let (tree, freeze) = (self.tree.clone(), Arc::clone(&self.freeze));
        let meta = SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
            snapshot_id: self.snapshot_id.clone(),
        };
        let (dir, meta_written) = (self.dir.clone(), meta.clone());
        // Copying, encoding and writing hundreds of MB is blocking work.
        let stored = tokio::task::spawn_blocking(move || {
            let copy = frozen_copy(&tree, &freeze)?;
            let data = codec::encode(&copy).map_err(|e| e.to_string())?;
            let stored = StoredSnapshot {
                meta: meta_written,
                data,
            };
            snapshot_write(&dir, &stored).map_err(|e| e.to_string())?;
            Ok::<_, String>(stored)
        })
        .await
        .map_err(|e| snapshot_error(Some(&meta), ErrorVerb::Write, e))?
        .map_err(|e| snapshot_error(Some(&meta), ErrorVerb::Write, e))?;
        tracing::info!(last_log_id = ?stored.meta.last_log_id, bytes = stored.data.len(), "snapshot built");
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}
