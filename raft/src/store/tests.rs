//! Storage contract tests: openraft's own storage suite against [`LogStore`] + [`StateMachine`],
//! then what the suite cannot check: reopening the same directory, applying real proposals,
//! moving a snapshot between machines, and corrupt bytes surfacing as errors, not panics.
//!
//! Reopening in-process proves that our own read path recovers what we wrote, not power-loss
//! durability (dropping sled flushes it); the crash tests with real processes cover that.
//!
//! Over 800 lines: the storage contract tests, grouped by section (suite, reopen, snapshots, damage) and sharing private fixtures.

use std::collections::BTreeSet;
use std::io::Cursor;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use openraft::storage::{LogState, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, EntryPayload, Membership, RaftLogReader};
use tempfile::TempDir;

use crate::ledger::{
    Account, AccountSpec, Command, CommandResult, Rejection, RejectionCode, Transfer,
    TransferOutcome, TransferRecord, TransferResult, TransferSpec,
};
use crate::store::{LedgerReader, LogStore, StateMachine, Storage};
use crate::typ::{Entry, LogId, Proposal, ProposalResults, StorageError, TypeConfig, Vote};

/// Builds a fresh store in its own temp dir for each of the suite's cases; the dir is the guard.
struct SledStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for SledStoreBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let Opened { log, machine, .. } = opened(dir.path());
        Ok((dir, log, machine))
    }
}

/// openraft's suite, with our builder. Its `feed_10_logs_vote_self` is also our only way to
/// append: `LogFlushed::new` is crate-private in openraft 0.9, so only the suite can make the
/// completion callback `append` needs.
type OpenraftSuite = Suite<TypeConfig, LogStore, StateMachine, SledStoreBuilder, TempDir>;

/// Opens the storage in `dir`. sled 0.34 releases its file lock from background threads a
/// moment after the last handle is dropped, so a lock conflict is retried until a deadline.
fn storage_open(dir: &Path) -> Arc<Storage> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Storage::open(dir) {
            Ok(storage) => return Arc::new(storage),
            Err(error)
                if error.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::yield_now();
            }
            Err(error) => panic!("open storage in {}: {error}", dir.display()),
        }
    }
}

/// Waits until every handle on a [`Storage`] is gone, so that sled's lock on its files is free
/// and the directory can be opened again. The caller drops its handles first; the log flusher
/// thread lets go of its own a moment after the last [`LogStore`] clone is dropped.
fn wait_closed(storage: &Weak<Storage>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while storage.strong_count() > 0 {
        assert!(
            Instant::now() < deadline,
            "storage still held 5 s after every handle was dropped"
        );
        std::thread::yield_now();
    }
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

/// The log id `feed_10_logs_vote_self` gives entry `index` (node 0; term 0 for index 0, else 1).
fn suite_log_id(index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(u64::from(index > 0), 0), index)
}

fn indexes(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.log_id.index).collect()
}

fn normal(term: u64, index: u64, commands: Vec<Command>) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Proposal { commands }),
    }
}

fn membership(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1, 2, 3])], None)),
    }
}

fn blank(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Blank,
    }
}

fn account(id: &str, currency: &str, allow_overdraft: bool) -> Command {
    Command::CreateAccount(AccountSpec {
        id: id.into(),
        currency: currency.into(),
        allow_overdraft,
    })
}

fn spec(id: &str, from: &str, to: &str, amount: u64) -> TransferSpec {
    TransferSpec {
        id: id.into(),
        from: from.into(),
        to: to.into(),
        amount,
        memo: Some(format!("memo of {id}")),
    }
}

fn transfer(id: &str, from: &str, to: &str, amount: u64) -> Command {
    Command::Transfer(spec(id, from, to, amount))
}

/// A membership entry, then accounts, transfers (one rejected), a blank entry and an atomic
/// batch, at indexes 1..=5 of term 1.
fn ledger_entries() -> Vec<Entry> {
    vec![
        membership(1, 1),
        normal(
            1,
            2,
            vec![
                account("bank", "CNY", true),
                account("alice", "CNY", false),
                account("bob", "CNY", false),
            ],
        ),
        normal(
            1,
            3,
            vec![
                transfer("t1", "bank", "alice", 500),
                transfer("t2", "alice", "bob", 200),
                transfer("t3", "bob", "alice", 1_000),
            ],
        ),
        blank(1, 4),
        normal(
            1,
            5,
            vec![Command::Batch {
                transfers: vec![
                    spec("t4", "alice", "bob", 50),
                    spec("t5", "bob", "bank", 25),
                ],
                atomic: true,
            }],
        ),
    ]
}

fn balance(reader: &LedgerReader, id: &str) -> i64 {
    reader
        .account(id)
        .expect("read account")
        .unwrap_or_else(|| panic!("account {id} missing"))
        .balance()
}

/// Everything a client can read of the ledger, to compare two machines or a machine with itself
/// after a reopen.
#[derive(Debug, PartialEq, Eq)]
struct Visible {
    accounts: Vec<Account>,
    transfers: Vec<Option<TransferRecord>>,
    histories: Vec<(Vec<Transfer>, bool)>,
    summary: crate::store::StateSummary,
    membership: Option<crate::typ::StoredMembership>,
}

fn visible(reader: &LedgerReader) -> Visible {
    let transfer_ids = ["t1", "t2", "t3", "t4", "t5", "t-unknown"];
    let account_ids = ["bank", "alice", "bob", "nobody"];
    Visible {
        accounts: reader.accounts().expect("read accounts"),
        transfers: transfer_ids
            .iter()
            .map(|id| reader.transfer(id).expect("read transfer"))
            .collect(),
        histories: account_ids
            .iter()
            .map(|id| reader.history(id, 0, 100).expect("read history"))
            .collect(),
        summary: reader.summary().expect("read summary"),
        membership: reader.membership().expect("read membership"),
    }
}

/// The state `ledger_entries` must leave, checked through the reader.
fn assert_ledger_state(reader: &LedgerReader) {
    assert_eq!(balance(reader, "bank"), -475);
    assert_eq!(balance(reader, "alice"), 250);
    assert_eq!(balance(reader, "bob"), 225);
    let t2 = reader
        .transfer("t2")
        .expect("read t2")
        .expect("t2 recorded");
    assert_eq!(
        t2.outcome,
        TransferOutcome::Posted {
            seq: 2,
            currency: "CNY".into()
        }
    );
    let t3 = reader
        .transfer("t3")
        .expect("read t3")
        .expect("t3 recorded");
    assert!(
        matches!(
            &t3.outcome,
            TransferOutcome::Rejected(Rejection {
                code: RejectionCode::InsufficientFunds,
                ..
            })
        ),
        "t3 must be recorded as rejected: {t3:?}"
    );
    let (history, more) = reader.history("alice", 0, 10).expect("alice history");
    assert!(!more);
    let ids: Vec<(&str, u64)> = history.iter().map(|t| (t.id.as_str(), t.seq)).collect();
    assert_eq!(ids, [("t1", 1), ("t2", 2), ("t4", 3)]);
    let (page, more) = reader.history("bob", 1, 1).expect("bob history page");
    assert!(
        more,
        "bob has seqs 2, 3 and 4: one page of 1 after seq 1 leaves more"
    );
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, "t2");
    let summary = reader.summary().expect("summary");
    assert_eq!(summary.applied, Some(log_id(1, 5)));
    assert_eq!(summary.seq_last, 4);
    assert_ne!(summary.state_hash, hex::encode([0u8; 32]));
    let members = reader
        .membership()
        .expect("read membership")
        .expect("membership stored");
    assert_eq!(members.log_id(), &Some(log_id(1, 1)));
}

// ---------------------------------------------------------------------------------------------
// 1. openraft's storage suite

/// Runs the named cases of openraft's suite concurrently, each on a fresh store in its own temp
/// dir, and returns `(case, failure)` for those that failed or panicked.
macro_rules! suite_run {
    ($($case:ident),* $(,)?) => {{
        let mut cases = Vec::new();
        $(
            cases.push((
                stringify!($case),
                tokio::spawn(async {
                    let (_dir, log, machine) = SledStoreBuilder.build().await?;
                    OpenraftSuite::$case(log, machine).await
                }),
            ));
        )*
        cases.push((
            "transfer_snapshot",
            tokio::spawn(async { OpenraftSuite::transfer_snapshot(&SledStoreBuilder).await }),
        ));
        let mut failures = Vec::new();
        for (case, handle) in cases {
            match handle.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => failures.push((case, error.to_string())),
                Err(join_error) => failures.push((case, format!("panicked: {join_error:?}"))),
            }
        }
        failures
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes() {
    // Goal: our log store and state machine meet openraft's own storage contract. Method: the
    // cases of `openraft::testing::Suite::test_store` (0.9.25, same order), run concurrently
    // rather than through `test_all`, because four cases sleep 1 s each and `test_all` runs
    // them one after another (over 8 s here).
    //
    // Left out, on purpose: `last_membership_in_log`, `last_membership_in_log_multi_step`,
    // `get_membership_from_log_and_empty_sm`, `get_membership_from_log_le_sm_last_applied`,
    // `get_membership_from_log_gt_sm_last_applied_1` and `_2`,
    // `get_initial_state_membership_from_log_and_sm`, `get_initial_state_last_log_lt_sm` and
    // `get_initial_state_re_apply_committed`. Their fixtures append logs with holes (entry 1 or
    // 2 into an empty log, 5 after 3) or rewrite an entry without truncating first, which
    // `RaftLogStorage::append`'s own contract forbids ("There must not be a hole in logs") and
    // which our write-ahead log refuses as `OutOfOrder` by design: a hole in a Raft log is a bug
    // to stop on, not to store. What they check (membership found in log and state machine) is
    // openraft's logic over reads the other cases cover.
    let failures = suite_run!(
        last_membership_in_log_initial,
        get_membership_initial,
        get_membership_from_empty_log_and_sm,
        get_initial_state_without_init,
        get_initial_state_with_state,
        get_initial_state_last_log_gt_sm,
        get_initial_state_log_ids,
        save_vote,
        get_log_entries,
        limited_get_log_entries,
        try_get_log_entry,
        initial_logs,
        get_log_state,
        get_log_id,
        last_id_in_log,
        last_applied_state,
        purge_logs_upto_0,
        purge_logs_upto_5,
        purge_logs_upto_20,
        delete_logs_since_11,
        delete_logs_since_0,
        append_to_log,
        snapshot_meta,
        apply_single,
        apply_multiple,
    );
    assert!(
        failures.is_empty(),
        "openraft suite cases failed: {failures:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. The log after a reopen

/// Drops `log` (and the caller's other handles must already be gone), waits until the database
/// is released, and opens the same directory again.
fn log_reopen(dir: &Path, log: LogStore, storage: &Weak<Storage>) -> (LogStore, Weak<Storage>) {
    drop(log);
    wait_closed(storage);
    log_open(dir)
}

fn log_open(dir: &Path) -> (LogStore, Weak<Storage>) {
    let storage = storage_open(dir);
    let weak = Arc::downgrade(&storage);
    (LogStore::open(storage).expect("open log store"), weak)
}

#[tokio::test]
async fn a_committed_vote_comes_back_uncommitted_at_the_first_read_after_a_reopen() {
    // Goal: a restarted node, even the leader of its term, trusts no leader until it hears
    // from one (a restarted leader must win a new election, whose blank entry makes reads wait
    // for every earlier entry; see `LogStore::read_vote`). Method: save a committed vote,
    // reopen; the first read gives the same term and node uncommitted, later reads and a vote
    // saved after the open come back as stored.
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut log, storage) = log_open(dir.path());
    let committed = Vote::new_committed(5, 3);
    log.save_vote(&committed).await.expect("save vote");
    assert_eq!(log.read_vote().await.expect("read"), Some(committed));

    let (mut log, storage) = log_reopen(dir.path(), log, &storage);
    assert_eq!(
        log.read_vote().await.expect("first read"),
        Some(Vote::new(5, 3))
    );
    assert_eq!(log.read_vote().await.expect("second read"), Some(committed));
    let later = Vote::new_committed(6, 1);
    log.save_vote(&later).await.expect("save later vote");
    assert_eq!(log.read_vote().await.expect("read later"), Some(later));

    // An uncommitted vote comes back as it is.
    let (mut log, storage) = log_reopen(dir.path(), log, &storage);
    log.save_vote(&Vote::new(7, 2)).await.expect("save");
    let (mut log, _) = log_reopen(dir.path(), log, &storage);
    assert_eq!(log.read_vote().await.expect("read"), Some(Vote::new(7, 2)));
}

#[tokio::test]
async fn log_reopen_returns_vote_and_entries() {
    // Goal: what the log store acknowledged is what it reads back after a restart. Method: append
    // entries 0..=10 through openraft's suite (real completion callbacks), save a vote and the
    // committed id, drop every handle, reopen the directory and read everything back.
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut log, storage) = log_open(dir.path());
    assert!(log.is_pristine().expect("is_pristine"));
    assert_eq!(log.read_vote().await.expect("read vote"), None);
    assert_eq!(
        log.get_log_state().await.expect("log state"),
        LogState::default()
    );

    tracing::info!("append 0..=10 and save a vote, then a later one, and the committed id");
    OpenraftSuite::feed_10_logs_vote_self(&mut log)
        .await
        .expect("append entries");
    let vote = Vote::new(3, 2);
    log.save_vote(&vote).await.expect("save vote");
    log.save_committed(Some(suite_log_id(7)))
        .await
        .expect("save committed");
    let written = log.try_get_log_entries(..).await.expect("read entries");
    assert_eq!(indexes(&written), (0..=10).collect::<Vec<_>>());

    tracing::info!("reopen");
    let (mut log, _) = log_reopen(dir.path(), log, &storage);
    assert!(!log.is_pristine().expect("is_pristine"));
    assert_eq!(log.read_vote().await.expect("read vote"), Some(vote));
    assert_eq!(
        log.get_log_state().await.expect("log state"),
        LogState {
            last_purged_log_id: None,
            last_log_id: Some(suite_log_id(10)),
        }
    );
    // The committed id is kept in memory only: the leader tells it again after a restart.
    assert_eq!(log.read_committed().await.expect("read committed"), None);
    assert_eq!(log.committed_index(), 0);
    assert_eq!(log.try_get_log_entries(..).await.expect("all"), written);
    let mut reader = log.get_log_reader().await;
    let middle = reader.try_get_log_entries(3..6).await.expect("3..6");
    assert_eq!(middle, written[3..6]);
    let tail = reader.try_get_log_entries(8..).await.expect("8..");
    assert_eq!(indexes(&tail), [8, 9, 10]);
    let head = reader.try_get_log_entries(..=2).await.expect("..=2");
    assert_eq!(indexes(&head), [0, 1, 2]);
    let beyond = reader.try_get_log_entries(11..20).await.expect("11..20");
    assert!(beyond.is_empty());
}

#[tokio::test]
async fn log_reopen_after_truncate_keeps_only_the_prefix() {
    // Goal: a truncation is as durable as the entries it removed. Method: append 0..=10,
    // truncate from 6, reopen, and check that 0..=5 and nothing after are there.
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut log, storage) = log_open(dir.path());
    OpenraftSuite::feed_10_logs_vote_self(&mut log)
        .await
        .expect("append entries");
    log.truncate(suite_log_id(6)).await.expect("truncate");

    let (mut log, _) = log_reopen(dir.path(), log, &storage);
    let entries = log.try_get_log_entries(..).await.expect("read entries");
    assert_eq!(indexes(&entries), (0..=5).collect::<Vec<_>>());
    assert_eq!(
        log.get_log_state().await.expect("log state"),
        LogState {
            last_purged_log_id: None,
            last_log_id: Some(suite_log_id(5)),
        }
    );
    assert_eq!(
        log.read_vote().await.expect("read vote"),
        Some(Vote::new(1, 0))
    );
}

#[tokio::test]
async fn log_reopen_after_purge_keeps_the_marker_and_later_entries() {
    // Goal: `last_purged_log_id` survives a restart, purged entries stay gone and the ones after
    // them stay; a purge past the last entry (after a snapshot install) leaves the marker as the
    // last log id. Method: append 0..=10, purge up to 4, reopen, check; purge up to 20, reopen,
    // check.
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut log, storage) = log_open(dir.path());
    OpenraftSuite::feed_10_logs_vote_self(&mut log)
        .await
        .expect("append entries");
    log.purge(suite_log_id(4)).await.expect("purge up to 4");

    tracing::info!("reopen after purge up to 4");
    let (mut log, storage) = log_reopen(dir.path(), log, &storage);
    assert_eq!(
        log.get_log_state().await.expect("log state"),
        LogState {
            last_purged_log_id: Some(suite_log_id(4)),
            last_log_id: Some(suite_log_id(10)),
        }
    );
    let entries = log.try_get_log_entries(..).await.expect("read entries");
    assert_eq!(indexes(&entries), (5..=10).collect::<Vec<_>>());
    assert!(log
        .try_get_log_entries(0..5)
        .await
        .expect("0..5")
        .is_empty());
    assert!(!log.is_pristine().expect("is_pristine"));

    tracing::info!("purge past the last entry, reopen");
    log.purge(suite_log_id(20)).await.expect("purge up to 20");
    let (mut log, _) = log_reopen(dir.path(), log, &storage);
    assert_eq!(
        log.get_log_state().await.expect("log state"),
        LogState {
            last_purged_log_id: Some(suite_log_id(20)),
            last_log_id: Some(suite_log_id(20)),
        }
    );
    assert!(log.try_get_log_entries(..).await.expect("all").is_empty());
}

// ---------------------------------------------------------------------------------------------
// 3. The state machine: apply, reopen, replay

/// A log store and a state machine on one database, and a weak handle to wait for its release.
struct Opened {
    log: LogStore,
    machine: StateMachine,
    storage: Weak<Storage>,
}

fn opened(dir: &Path) -> Opened {
    let storage = storage_open(dir);
    let weak = Arc::downgrade(&storage);
    Opened {
        log: LogStore::open(Arc::clone(&storage)).expect("open log store"),
        machine: StateMachine::open(storage).expect("open state machine"),
        storage: weak,
    }
}

impl Opened {
    /// Drops every handle (the caller must hold no reader), waits for the release, reopens.
    fn reopen(self, dir: &Path) -> Opened {
        let Opened {
            log,
            machine,
            storage,
        } = self;
        drop((log, machine));
        wait_closed(&storage);
        opened(dir)
    }
}

fn posted(result: &TransferResult) -> (&str, u64, bool) {
    match result {
        TransferResult::Posted { transfer, created } => {
            (transfer.id.as_str(), transfer.seq, *created)
        }
        other => panic!("not posted: {other:?}"),
    }
}

fn transfer_results(response: &ProposalResults) -> Vec<&TransferResult> {
    response
        .results
        .iter()
        .flat_map(|result| match result {
            CommandResult::Transfer(result) => vec![result],
            CommandResult::Batch(results) => results.iter().collect(),
            other => panic!("not a transfer result: {other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn apply_returns_one_response_per_entry_and_state_survives_reopen() {
    // Goal: apply turns proposals into ledger results, one response per entry, and persists
    // exactly what it applied. Method: apply membership, account, transfer, blank and batch
    // entries, check the responses and the reader, reopen, and check `applied_state` and the
    // reader again.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut node = opened(dir.path());
    let responses = node.machine.apply(ledger_entries()).await.expect("apply");

    tracing::info!("check responses");
    assert_eq!(responses.len(), 5, "one response per entry");
    assert_eq!(responses[0], ProposalResults::default(), "membership");
    assert_eq!(responses[3], ProposalResults::default(), "blank");
    assert_eq!(responses[1].results.len(), 3);
    for result in &responses[1].results {
        assert!(
            matches!(result, CommandResult::Account { created: true, .. }),
            "{result:?}"
        );
    }
    let transfers = transfer_results(&responses[2]);
    assert_eq!(posted(transfers[0]), ("t1", 1, true));
    assert_eq!(posted(transfers[1]), ("t2", 2, true));
    assert!(
        matches!(transfers[2], TransferResult::Rejected(r) if r.code == RejectionCode::InsufficientFunds),
        "{:?}",
        transfers[2]
    );
    let batch = transfer_results(&responses[4]);
    assert_eq!(posted(batch[0]), ("t4", 3, true));
    assert_eq!(posted(batch[1]), ("t5", 4, true));

    let applied = node.machine.applied_state().await.expect("applied state");
    assert_eq!(applied.0, Some(log_id(1, 5)));
    assert_eq!(applied.1.log_id(), &Some(log_id(1, 1)));
    assert_eq!(
        applied.1.membership(),
        &Membership::new(vec![BTreeSet::from([1, 2, 3])], None)
    );
    let reader = node.machine.reader();
    assert_ledger_state(&reader);
    let before = visible(&reader);
    drop(reader);

    tracing::info!("reopen");
    let mut node = node.reopen(dir.path());
    assert_eq!(
        node.machine.applied_state().await.expect("applied state"),
        applied
    );
    let reader = node.machine.reader();
    assert_ledger_state(&reader);
    assert_eq!(visible(&reader), before);
}

#[tokio::test]
async fn replay_after_reopen_is_skipped_and_new_entries_continue() {
    // Goal: entries at or below `last_applied` are a no-op after a restart (openraft re-applies
    // from its committed index), while later entries in the same call are applied. Method: apply,
    // reopen, apply the same entries again, then entries 4..=6 where 6 is new and retries t1.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut node = opened(dir.path());
    node.machine.apply(ledger_entries()).await.expect("apply");
    let mut node = node.reopen(dir.path());
    let before = visible(&node.machine.reader());

    tracing::info!("re-apply 1..=5");
    let responses = node
        .machine
        .apply(ledger_entries())
        .await
        .expect("re-apply");
    assert_eq!(responses, vec![ProposalResults::default(); 5]);
    assert_eq!(
        visible(&node.machine.reader()),
        before,
        "replay changed state"
    );

    tracing::info!("apply 4..=6: two replays and a new entry");
    let mut entries = ledger_entries().split_off(3);
    entries.push(normal(
        2,
        6,
        vec![
            transfer("t1", "bank", "alice", 500),
            transfer("t6", "bob", "alice", 25),
        ],
    ));
    let responses = node.machine.apply(entries).await.expect("apply 4..=6");
    assert_eq!(responses.len(), 3, "one response per entry");
    assert_eq!(
        responses[..2],
        [ProposalResults::default(), ProposalResults::default()]
    );
    let transfers = transfer_results(&responses[2]);
    assert_eq!(
        posted(transfers[0]),
        ("t1", 1, false),
        "t1 is already decided"
    );
    assert_eq!(posted(transfers[1]), ("t6", 5, true));
    let reader = node.machine.reader();
    let after = reader.summary().expect("summary");
    assert_eq!(after.applied, Some(log_id(2, 6)));
    assert_eq!(after.seq_last, 5);
    assert_ne!(after.state_hash, before.summary.state_hash);
    assert_eq!(balance(&reader, "alice"), 275);
    assert_eq!(balance(&reader, "bob"), 200);
}

#[tokio::test]
async fn apply_after_a_corrupt_read_fails_and_persists_nothing() {
    // Goal: a stored value that cannot be decoded makes apply fail (the node must stop) rather
    // than panic or record a decision made without it. Method: apply the ledger, overwrite
    // alice's account with garbage, reopen, apply a transfer from alice, and check that apply returns
    // Err and neither `last_applied` nor any balance or transfer record moved.
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = storage_open(dir.path());
    let mut machine = StateMachine::open(Arc::clone(&storage)).expect("open state machine");
    machine.apply(ledger_entries()).await.expect("apply");
    storage
        .state
        .insert(
            super::reader::account_key("alice"),
            b"\x01\xff\xff\xff".to_vec(),
        )
        .expect("corrupt alice");
    // As after a restart: the state machine's hot cache (which would still hold the good
    // account it wrote) starts empty, so apply must read alice from sled.
    drop(machine);
    let mut machine = StateMachine::open(Arc::clone(&storage)).expect("reopen state machine");

    let reader = machine.reader();
    assert!(
        reader.account("alice").is_err(),
        "a corrupt value reads as Err"
    );
    assert!(reader.accounts().is_err());
    let result = machine
        .apply([normal(1, 6, vec![transfer("t6", "alice", "bob", 10)])])
        .await;
    assert!(result.is_err(), "apply over a corrupt account must fail");
    assert_eq!(
        machine.applied_state().await.expect("applied state").0,
        Some(log_id(1, 5))
    );
    assert_eq!(
        reader.summary().expect("summary").applied,
        Some(log_id(1, 5))
    );
    assert_eq!(reader.transfer("t6").expect("read t6"), None);
    assert_eq!(balance(&reader, "bob"), 225);
}

#[tokio::test]
async fn open_over_a_corrupt_state_tree_is_an_error() {
    // Goal: a state machine whose metadata cannot be decoded refuses to open instead of
    // panicking or starting from zero. Method: apply, overwrite `last_applied` with a wrong
    // version byte, reopen.
    let dir = tempfile::tempdir().expect("temp dir");
    let storage = storage_open(dir.path());
    let mut machine = StateMachine::open(Arc::clone(&storage)).expect("open state machine");
    machine.apply(ledger_entries()).await.expect("apply");
    storage
        .state
        .insert(super::reader::KEY_APPLIED, b"\x09\x00".to_vec())
        .expect("corrupt last_applied");
    let weak = Arc::downgrade(&storage);
    drop((machine, storage));
    wait_closed(&weak);
    assert!(StateMachine::open(storage_open(dir.path())).is_err());
}

// ---------------------------------------------------------------------------------------------
// 4. Snapshots

/// The bytes of a snapshot's data.
fn snapshot_bytes(snapshot: crate::typ::Snapshot) -> Vec<u8> {
    snapshot.snapshot.into_inner()
}

async fn install(
    machine: &mut StateMachine,
    meta: &crate::typ::SnapshotMeta,
    data: Vec<u8>,
) -> Result<(), StorageError> {
    let mut receiving = machine
        .begin_receiving_snapshot()
        .await
        .expect("begin receiving");
    *receiving = Cursor::new(data);
    machine.install_snapshot(meta, receiving).await
}

#[tokio::test]
async fn snapshot_installs_identical_state_into_a_fresh_machine_and_survives_reopen() {
    // Goal: a snapshot carries the whole ledger: accounts, transfer records (idempotency),
    // history, seq, state hash, `last_applied` and membership. Method: build one on machine A,
    // install it into a fresh machine B in another directory, compare everything a client can
    // read, reopen B and compare again, then apply the same next entry on both and compare the
    // hashes.
    let dir_a = tempfile::tempdir().expect("temp dir");
    let dir_b = tempfile::tempdir().expect("temp dir");
    let mut a = opened(dir_a.path());
    a.machine.apply(ledger_entries()).await.expect("apply");
    let snapshot = a
        .machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build snapshot");
    let meta = snapshot.meta.clone();
    assert_eq!(meta.last_log_id, Some(log_id(1, 5)));
    assert_eq!(meta.last_membership.log_id(), &Some(log_id(1, 1)));
    let data = snapshot_bytes(snapshot);
    let current = a
        .machine
        .get_current_snapshot()
        .await
        .expect("current snapshot")
        .expect("a snapshot after build");
    assert_eq!(current.meta, meta);
    assert_eq!(snapshot_bytes(current), data);
    let state_a = visible(&a.machine.reader());
    let applied_a = a.machine.applied_state().await.expect("applied state");

    tracing::info!("install into a fresh machine");
    let mut b = opened(dir_b.path());
    assert!(b
        .machine
        .get_current_snapshot()
        .await
        .expect("none yet")
        .is_none());
    install(&mut b.machine, &meta, data.clone())
        .await
        .expect("install snapshot");
    assert_eq!(b.machine.applied_state().await.expect("applied"), applied_a);
    assert_eq!(visible(&b.machine.reader()), state_a);
    assert_ledger_state(&b.machine.reader());

    tracing::info!("reopen the receiver");
    let mut b = b.reopen(dir_b.path());
    assert_eq!(b.machine.applied_state().await.expect("applied"), applied_a);
    assert_eq!(visible(&b.machine.reader()), state_a);
    let current = b
        .machine
        .get_current_snapshot()
        .await
        .expect("current snapshot")
        .expect("the installed snapshot after reopen");
    assert_eq!(current.meta, meta);
    assert_eq!(snapshot_bytes(current), data);

    tracing::info!("reopen the builder");
    let mut a = a.reopen(dir_a.path());
    let current = a
        .machine
        .get_current_snapshot()
        .await
        .expect("current snapshot")
        .expect("the built snapshot after reopen");
    assert_eq!(current.meta, meta);

    tracing::info!("the hash chain continues from the snapshot");
    let next = || normal(2, 6, vec![transfer("t6", "alice", "bob", 1)]);
    let response_a = a.machine.apply([next()]).await.expect("apply on A");
    let response_b = b.machine.apply([next()]).await.expect("apply on B");
    assert_eq!(response_a, response_b);
    assert_eq!(visible(&a.machine.reader()), visible(&b.machine.reader()));
}

#[tokio::test]
async fn open_reinstalls_a_snapshot_that_is_ahead_of_the_state() {
    // Goal: a crash between persisting a received snapshot and replacing the state tree is
    // repaired on open. Method: install a snapshot into B, then wipe B's state tree (the state a
    // crash right after the snapshot file was written leaves), reopen, compare with A.
    let dir_a = tempfile::tempdir().expect("temp dir");
    let dir_b = tempfile::tempdir().expect("temp dir");
    let mut a = opened(dir_a.path());
    a.machine.apply(ledger_entries()).await.expect("apply");
    let snapshot = a
        .machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build snapshot");
    let meta = snapshot.meta.clone();

    let storage = storage_open(dir_b.path());
    let mut machine = StateMachine::open(Arc::clone(&storage)).expect("open state machine");
    install(&mut machine, &meta, snapshot_bytes(snapshot))
        .await
        .expect("install snapshot");
    storage.state.clear().expect("wipe the state tree");
    let weak = Arc::downgrade(&storage);
    drop((machine, storage));
    wait_closed(&weak);

    let mut b = opened(dir_b.path());
    assert_eq!(
        b.machine.applied_state().await.expect("applied"),
        a.machine.applied_state().await.expect("applied")
    );
    assert_eq!(visible(&b.machine.reader()), visible(&a.machine.reader()));
}

// ---------------------------------------------------------------------------------------------
// 5. Corrupt snapshots

/// A real snapshot of `ledger_entries` built on a machine in `dir`, and a machine in `dir_b`
/// that applied entries 1..=2 of its own, with its applied state and visible state.
async fn snapshot_and_receiver(
    dir: &Path,
    dir_b: &Path,
) -> (
    crate::typ::SnapshotMeta,
    Vec<u8>,
    Opened,
    (Option<LogId>, crate::typ::StoredMembership),
    Visible,
) {
    let mut a = opened(dir);
    a.machine.apply(ledger_entries()).await.expect("apply");
    let snapshot = a
        .machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build snapshot");
    let meta = snapshot.meta.clone();
    let data = snapshot_bytes(snapshot);
    let mut b = opened(dir_b);
    let mut head = ledger_entries();
    head.truncate(2);
    b.machine.apply(head).await.expect("apply 1..=2");
    let applied_b = b.machine.applied_state().await.expect("applied");
    let state_b = visible(&b.machine.reader());
    (meta, data, b, applied_b, state_b)
}

/// Damaged copies of a snapshot's data: garbage, empty, wrong version, cut short, trailing.
fn damaged_copies(data: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let mut wrong_version = data.to_vec();
    wrong_version[0] = 0xff;
    let mut trailing = data.to_vec();
    trailing.push(0);
    vec![
        ("garbage", b"\x01not a snapshot at all".to_vec()),
        ("empty", Vec::new()),
        ("wrong version", wrong_version),
        ("cut short", data[..data.len() / 2].to_vec()),
        ("trailing byte", trailing),
    ]
}

#[tokio::test]
async fn installing_a_corrupt_snapshot_is_an_error_and_changes_nothing() {
    // Goal: snapshot bytes that do not decode make `install_snapshot` return Err (not panic) and
    // leave the receiver's state as it was. Method: build a real snapshot on A, install damaged
    // copies of its data into B (which applied 1..=2 of its own) and check B after each.
    let dir_a = tempfile::tempdir().expect("temp dir");
    let dir_b = tempfile::tempdir().expect("temp dir");
    let (meta, data, mut b, applied_b, state_b) =
        snapshot_and_receiver(dir_a.path(), dir_b.path()).await;
    for (what, bytes) in damaged_copies(&data) {
        tracing::info!(what, "install a damaged snapshot");
        let result = install(&mut b.machine, &meta, bytes).await;
        assert!(result.is_err(), "{what}: install must fail");
        assert_eq!(
            b.machine.applied_state().await.expect("applied"),
            applied_b,
            "{what}"
        );
        assert_eq!(visible(&b.machine.reader()), state_b, "{what}");
    }
}

#[tokio::test]
async fn a_snapshot_that_failed_to_install_is_not_kept() {
    // Goal: a snapshot that failed to install is neither served as the current snapshot nor
    // blocks the next open (a node that failed once must be able to restart and catch up).
    // Method: install damaged copies of a real snapshot into B, check `get_current_snapshot`
    // after each, then reopen B; every breach is collected so one run shows all of them.
    let dir_a = tempfile::tempdir().expect("temp dir");
    let dir_b = tempfile::tempdir().expect("temp dir");
    let (meta, data, mut b, applied_b, state_b) =
        snapshot_and_receiver(dir_a.path(), dir_b.path()).await;
    let mut breaches = Vec::new();
    for (what, bytes) in damaged_copies(&data) {
        assert!(
            install(&mut b.machine, &meta, bytes).await.is_err(),
            "{what}"
        );
        match b.machine.get_current_snapshot().await {
            Ok(None) => {}
            Ok(Some(current)) => breaches.push(format!(
                "{what}: the failed snapshot is served as current ({:?})",
                current.meta.last_log_id
            )),
            Err(error) => breaches.push(format!(
                "{what}: get_current_snapshot fails after the failed install: {error}"
            )),
        }
    }

    tracing::info!("reopen after the failed installs");
    let Opened {
        log,
        machine,
        storage,
    } = b;
    drop((log, machine));
    wait_closed(&storage);
    match StateMachine::open(storage_open(dir_b.path())) {
        Ok(mut machine) => {
            if machine.applied_state().await.expect("applied") != applied_b {
                breaches.push("the reopened machine's applied state moved".into());
            }
            if visible(&machine.reader()) != state_b {
                breaches.push("the reopened machine's state changed".into());
            }
        }
        Err(error) => breaches.push(format!(
            "the node cannot open after a failed snapshot install: {error}"
        )),
    }
    assert!(breaches.is_empty(), "{breaches:#?}");
}

/// The layout of a snapshot's data (mirrors the private `state_machine::SnapshotData`), to make
/// snapshots that decode but carry a damaged state.
#[derive(serde::Serialize, serde::Deserialize)]
struct SnapshotPairs {
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
    checksum: [u8; 32],
}

#[tokio::test]
async fn a_snapshot_with_a_damaged_state_is_rejected_without_installing_it() {
    // Goal: a snapshot that decodes but whose state is damaged (an undecodable account, or
    // accounts that break conservation) is an error, not a panic, and nothing of it reaches the
    // state tree, before or after a restart. Method: rewrite alice's account in a real snapshot,
    // install it into a machine that applied 1..=2 (in a task, to catch a panic), then reopen
    // that machine and compare with its state before; every breach is collected.
    let mut breaches = Vec::new();
    type Damage = fn(&mut Vec<u8>);
    // The first two keep a valid checksum (the state checks must catch them); the last is a
    // flipped bit the checksum must catch.
    let variants: [(&str, Damage); 3] = [
        ("undecodable account", |value| {
            *value = b"\x01\xff\xff".to_vec()
        }),
        ("money created", |value| {
            let mut alice: Account = crate::codec::decode(value).expect("decode alice");
            alice.credits += 1_000;
            *value = crate::codec::encode(&alice).expect("encode alice");
        }),
        ("flipped bit, checksum not updated", |value| {
            let last = value.len() - 1;
            value[last] ^= 1;
        }),
    ];
    for (what, damage) in variants {
        let dir_a = tempfile::tempdir().expect("temp dir");
        let dir_b = tempfile::tempdir().expect("temp dir");
        let (meta, data, b, applied_b, state_b) =
            snapshot_and_receiver(dir_a.path(), dir_b.path()).await;
        let mut snapshot: SnapshotPairs = crate::codec::decode(&data).expect("decode snapshot");
        let alice = super::reader::account_key("alice");
        let (_, value) = snapshot
            .pairs
            .iter_mut()
            .find(|(key, _)| *key == alice)
            .expect("alice in the snapshot");
        damage(value);
        if !what.starts_with("flipped") {
            snapshot.checksum = super::state_machine::pairs_checksum(&snapshot.pairs);
        }
        let bytes = crate::codec::encode(&snapshot).expect("encode snapshot");

        tracing::info!(what, "install a snapshot with a damaged state");
        let Opened {
            log,
            mut machine,
            storage,
        } = b;
        let outcome = tokio::spawn(async move {
            install(&mut machine, &meta, bytes)
                .await
                .map_err(|e| e.to_string())
        })
        .await;
        match outcome {
            Ok(Err(_)) => {}
            Ok(Ok(())) => breaches.push(format!("{what}: installed without an error")),
            Err(panic) => breaches.push(format!("{what}: install panicked: {panic}")),
        }
        drop(log);
        wait_closed(&storage);
        match StateMachine::open(storage_open(dir_b.path())) {
            Ok(mut machine) => {
                if machine.applied_state().await.expect("applied") != applied_b {
                    breaches.push(format!(
                        "{what}: after reopen, applied moved to the snapshot's"
                    ));
                }
                let reader = machine.reader();
                let unchanged = reader.accounts().is_ok() && visible(&reader) == state_b;
                if !unchanged {
                    breaches.push(format!(
                        "{what}: after reopen, the damaged state is in the tree"
                    ));
                }
            }
            Err(error) => breaches.push(format!("{what}: cannot open afterwards: {error}")),
        }
    }
    assert!(breaches.is_empty(), "{breaches:#?}");
}

#[tokio::test]
async fn a_snapshot_holds_the_state_of_its_index_while_applies_go_on() {
    // Goal: the snapshot copy runs while the state machine keeps applying, yet holds exactly the
    // state at the index it names: no later transfer, no later balance, no later seq. Method:
    // take a builder after `ledger_entries`, apply more entries (new transfers, changed balances,
    // a new account, a new seq), then build; install it into a fresh machine and compare with a
    // machine that applied only `ledger_entries`. Then check the freeze ended: a second snapshot
    // of the live machine holds the later entries.
    let dir_a = tempfile::tempdir().expect("temp dir");
    let dir_b = tempfile::tempdir().expect("temp dir");
    let dir_c = tempfile::tempdir().expect("temp dir");
    let mut a = opened(dir_a.path());
    a.machine.apply(ledger_entries()).await.expect("apply");
    let mut builder = a.machine.get_snapshot_builder().await;
    a.machine
        .apply([
            normal(
                1,
                6,
                vec![
                    transfer("t6", "alice", "bob", 7),
                    account("carol", "CNY", false),
                ],
            ),
            normal(1, 7, vec![transfer("t7", "bank", "carol", 30)]),
        ])
        .await
        .expect("apply after the snapshot point");
    let later = visible(&a.machine.reader());
    let snapshot = builder.build_snapshot().await.expect("build snapshot");
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 5)));
    let meta = snapshot.meta.clone();

    let mut b = opened(dir_b.path());
    install(&mut b.machine, &meta, snapshot_bytes(snapshot))
        .await
        .expect("install snapshot");
    let mut c = opened(dir_c.path());
    c.machine.apply(ledger_entries()).await.expect("apply");
    assert_eq!(visible(&b.machine.reader()), visible(&c.machine.reader()));
    assert_ledger_state(&b.machine.reader());
    assert!(b.machine.reader().account("carol").expect("read").is_none());
    assert!(b.machine.reader().transfer("t7").expect("read").is_none());
    // The live machine kept everything.
    assert_eq!(visible(&a.machine.reader()), later);
    assert_eq!(balance(&a.machine.reader(), "carol"), 30);

    let second = a
        .machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("second snapshot");
    assert_eq!(second.meta.last_log_id, Some(log_id(1, 7)));
    let dir_d = tempfile::tempdir().expect("temp dir");
    let mut d = opened(dir_d.path());
    install(&mut d.machine, &second.meta.clone(), snapshot_bytes(second))
        .await
        .expect("install the second snapshot");
    assert_eq!(balance(&d.machine.reader(), "carol"), 30);
    assert_eq!(visible(&d.machine.reader()), later);
}

#[tokio::test]
async fn a_builder_dropped_unbuilt_ends_its_freeze() {
    // Goal: a builder openraft drops without building must not leave the state machine
    // recording old values forever (memory) or block installs. Method: take a builder, drop
    // it, then install a snapshot (which waits for any running copy): it must finish.
    let dir_a = tempfile::tempdir().expect("temp dir");
    let mut a = opened(dir_a.path());
    a.machine.apply(ledger_entries()).await.expect("apply");
    let snapshot = a
        .machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build snapshot");
    drop(a.machine.get_snapshot_builder().await);
    let meta = snapshot.meta.clone();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        install(&mut a.machine, &meta, snapshot_bytes(snapshot)),
    )
    .await
    .expect("install waits for no copy")
    .expect("install snapshot");
    assert_ledger_state(&a.machine.reader());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_copied_during_a_stream_of_applies_is_exact() {
    // Goal: the copy and the applies really overlap (unlike the test above), and the copy is
    // still exactly the state at its index. Method: a state of a few thousand keys; build the
    // snapshot on another task while this one applies entries that change most accounts and
    // add records; compare its bytes with the snapshot of a machine that applied only the
    // prefix (same state, same encoding, same checksum).
    const ACCOUNTS: usize = 1500;
    let prefix = || {
        let mut entries = vec![membership(1, 1)];
        let mut commands = vec![account("bank", "CNY", true)];
        commands.extend((0..ACCOUNTS).map(|i| account(&format!("acct-{i:04}"), "CNY", false)));
        entries.push(normal(1, 2, commands));
        entries.push(normal(
            1,
            3,
            (0..ACCOUNTS)
                .map(|i| transfer(&format!("seed-{i}"), "bank", &format!("acct-{i:04}"), 100))
                .collect(),
        ));
        entries
    };
    let dir_a = tempfile::tempdir().expect("temp dir");
    let dir_c = tempfile::tempdir().expect("temp dir");
    let mut a = opened(dir_a.path());
    a.machine.apply(prefix()).await.expect("apply prefix");
    let mut builder = a.machine.get_snapshot_builder().await;
    let build = tokio::spawn(async move { builder.build_snapshot().await });
    let mut index = 3;
    while !build.is_finished() && index < 400 {
        index += 1;
        let commands = (0..ACCOUNTS / 10)
            .map(|k| {
                let from = (index * 7 + k * 10) % ACCOUNTS;
                let to = (from + 1) % ACCOUNTS;
                transfer(
                    &format!("live-{index}-{k}"),
                    &format!("acct-{from:04}"),
                    &format!("acct-{to:04}"),
                    1,
                )
            })
            .chain([account(&format!("new-{index}"), "CNY", false)])
            .collect();
        a.machine
            .apply([normal(1, index as u64, commands)])
            .await
            .expect("apply during the copy");
    }
    let snapshot = build.await.expect("build task").expect("build snapshot");
    assert!(index > 4, "no apply overlapped the copy");
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 3)));

    let mut c = opened(dir_c.path());
    c.machine.apply(prefix()).await.expect("apply prefix");
    let expected = c
        .machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build the reference snapshot");
    assert!(
        snapshot_bytes(snapshot) == snapshot_bytes(expected),
        "the snapshot differs from the state at its index ({} entries applied during the copy)",
        index - 3
    );
}

#[tokio::test]
async fn a_flipped_byte_in_a_snapshot_file_is_found_before_sending_and_at_open() {
    // Goal: bit rot in a persisted snapshot file (its meta or its data) is never sent to another
    // node nor opened as this node's snapshot; the error names the file. Method: build a
    // snapshot, flip one byte at a time (header, meta, middle, last byte), ask the running
    // machine for its current snapshot (what a send reads), reopen; then restore the byte.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut a = opened(dir.path());
    a.machine.apply(ledger_entries()).await.expect("apply");
    a.machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build snapshot");
    let file = std::fs::read_dir(dir.path().join("snapshot"))
        .expect("snapshot dir")
        .map(|entry| entry.expect("entry").path())
        .find(|path| path.extension().is_some_and(|e| e == "bin"))
        .expect("a snapshot file");
    let name = file
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let good = std::fs::read(&file).expect("read snapshot");
    for at in [3, 45, 60, good.len() / 2, good.len() - 1] {
        let mut bad = good.clone();
        bad[at] ^= 0x10;
        std::fs::write(&file, &bad).expect("write damaged snapshot");
        let sent = a.machine.get_current_snapshot().await;
        let error = sent.err().unwrap_or_else(|| panic!("byte {at}: sent"));
        assert!(error.to_string().contains(&name), "byte {at}: {error}");
        let Opened {
            log,
            machine,
            storage,
        } = a;
        drop((log, machine));
        wait_closed(&storage);
        let storage = storage_open(dir.path());
        let error = StateMachine::open(Arc::clone(&storage))
            .err()
            .unwrap_or_else(|| panic!("byte {at}: opened"));
        assert!(error.to_string().contains(&name), "byte {at}: {error}");
        assert!(error.to_string().contains("corrupt"), "byte {at}: {error}");
        let weak = Arc::downgrade(&storage);
        drop(storage);
        wait_closed(&weak);
        std::fs::write(&file, &good).expect("restore the snapshot");
        a = opened(dir.path());
    }
    let mut a = a.reopen(dir.path());
    let current = a.machine.get_current_snapshot().await.expect("intact");
    assert!(current.is_some());
}

#[test]
fn a_data_dir_of_the_old_single_database_layout_is_refused_untouched() {
    // Goal: a data dir written by a raftpay that kept log and state in one database (`sled/`)
    // is not silently opened as an empty node (which would rejoin with no log and no vote).
    // Method: make a `sled/` directory, open, expect a clear error and no new files.
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("sled")).expect("mkdir");
    let error = Storage::open(dir.path())
        .err()
        .expect("the old layout must be refused");
    assert!(error.to_string().contains("raftpay backup"), "{error}");
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("sled")]);
}

#[test]
fn a_damaged_state_database_is_refused_at_open_naming_it() {
    // Goal: sled's own refusals and panics on damaged files become one error naming the state
    // database, not a crash. Method: flip a byte of sled's `conf` (checksummed by sled), open;
    // then feed `caught` a panic as sled 0.34 raises on some damaged `db` files.
    let dir = tempfile::tempdir().expect("temp dir");
    let opened = opened(dir.path());
    let storage = opened.storage.clone();
    drop(opened);
    wait_closed(&storage);
    let conf = dir.path().join("state").join("conf");
    let mut bytes = std::fs::read(&conf).expect("read conf");
    bytes[30] ^= 0x04;
    std::fs::write(&conf, bytes).expect("write conf");
    let error = Storage::open(dir.path()).err().expect("refused");
    let state_dir = dir.path().join("state").display().to_string();
    assert!(error.to_string().contains(&state_dir), "{error}");
    assert!(error.to_string().contains("rebuild this node"), "{error}");

    let panicked = super::caught::<()>(Path::new("/d/state"), "open", || {
        panic!("tried to serialize Uninitialized")
    })
    .expect_err("a panic is an error");
    assert!(
        panicked.to_string().contains("/d/state") && panicked.to_string().contains("Uninitialized"),
        "{panicked}"
    );
}
