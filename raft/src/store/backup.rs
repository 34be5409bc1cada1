//! Backups: a node's snapshot (a consistent copy of the ledger at a known applied index) in a
//! self-checking file, and restoring one into the data directory of a node of a NEW cluster.
//!
//! A restored node of the new cluster is left as if it had installed a snapshot at the backup's
//! applied index R: the ledger (accounts, transfers, history, totals, seq, state hash) with
//! `applied` = R (term 0, leader 0: below every term the new cluster will use) and the new
//! cluster's voters as its membership; that state as its current snapshot file; and the log's
//! purge marker at R, so the log starts after R. openraft then has nothing to initialize (a
//! node with a log position is initialized): the voters elect a leader over their equal logs,
//! and a node that joins later is sent the snapshot, not an empty log. Every node restored from
//! the same file starts from the same state.
//!
//! Restoring never touches a data directory that already holds data, and a restore cut short
//! leaves [`RESTORE_MARKER`] behind, which makes the node refuse to start (an empty or partial
//! node must never start as if it were a member of the restored cluster).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use openraft::{BasicNode, CommittedLeaderId, Membership};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec;
use crate::store::reader::{KEY_APPLIED, KEY_MEMBERSHIP};
use crate::store::state_machine::{SnapshotData, StateMachine};
use crate::store::Storage;
use crate::typ::{LogId, NodeId, Snapshot, SnapshotMeta, StoredMembership};

/// Present in a data directory while a restore writes it; removed (durably) as its last step.
/// `Storage::open` refuses a data directory that holds it.
pub const RESTORE_MARKER: &str = "RESTORE-INCOMPLETE";

/// Marks a backup file (and its layout version).
const BACKUP_MAGIC: &[u8; 12] = b"raftpay-bak1";

/// What a backup file holds, after its magic bytes and before its checksum.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Backup {
    /// The applied log id the state is at, on the cluster it was taken from.
    pub applied: Option<LogId>,
    /// The source cluster's state hash at that index.
    pub state_hash: String,
    pub seq_last: u64,
    pub accounts: u64,
    /// The snapshot's data (every state key and value, with its own checksum).
    data: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("not a raftpay backup file")]
    NotABackup,
    #[error("backup checksum mismatch: the file is damaged")]
    Checksum,
    #[error("backup content: {0}")]
    Content(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("data directory {0} already holds data; restore only into a new, empty one")]
    NotEmpty(String),
}

impl Backup {
    /// A backup of `snapshot`, with the summary values read from it.
    ///
    /// # Errors
    /// When the snapshot's data does not verify.
    pub fn from_snapshot(snapshot: Snapshot) -> Result<Backup, BackupError> {
        let data = snapshot.snapshot.into_inner();
        let verified = SnapshotData::decode_verified(&data).map_err(BackupError::Content)?;
        let (state_hash, seq_last, accounts) = verified.summary().map_err(BackupError::Content)?;
        Ok(Backup {
            applied: snapshot.meta.last_log_id,
            state_hash,
            seq_last,
            accounts,
            data,
        })
    }

    /// The file's bytes: magic, the encoded backup, then SHA-256 of everything before it.
    ///
    /// # Errors
    /// When encoding fails (never for these types).
    pub fn to_bytes(&self) -> Result<Vec<u8>, BackupError> {
        let mut bytes = BACKUP_MAGIC.to_vec();
        bytes.extend(codec::encode(self).map_err(|e| BackupError::Content(e.to_string()))?);
        let checksum: [u8; 32] = Sha256::digest(&bytes).into();
        bytes.extend(checksum);
        Ok(bytes)
    }

    /// Reads and verifies a backup file's bytes: magic, checksum, and the snapshot inside.
    ///
    /// # Errors
    /// When any check fails.
    pub fn from_bytes(bytes: &[u8]) -> Result<Backup, BackupError> {
        let body = bytes
            .strip_prefix(BACKUP_MAGIC)
            .ok_or(BackupError::NotABackup)?;
        let split = body.len().checked_sub(32).ok_or(BackupError::Checksum)?;
        let (encoded, checksum) = body.split_at(split);
        let expected: [u8; 32] = Sha256::digest(&bytes[..bytes.len() - 32]).into();
        if checksum != expected {
            return Err(BackupError::Checksum);
        }
        let backup: Backup =
            codec::decode(encoded).map_err(|e| BackupError::Content(e.to_string()))?;
        SnapshotData::decode_verified(&backup.data).map_err(BackupError::Content)?;
        Ok(backup)
    }

    /// Seeds `data_dir` (which must not exist or be empty) with this backup's ledger, as a
    /// node of a new cluster whose initial voters are `voters` (id → HTTP address): the state
    /// and a snapshot at the backup's applied index R, and the log purged up to R.
    ///
    /// # Errors
    /// When the directory holds data, `voters` is empty, or storage fails. A directory left
    /// behind by a failed restore holds [`RESTORE_MARKER`] and is refused at start.
    pub fn restore_into(
        &self,
        data_dir: &Path,
        voters: &BTreeMap<NodeId, String>,
    ) -> Result<(), BackupError> {
        if data_dir.exists() && std::fs::read_dir(data_dir)?.next().is_some() {
            return Err(BackupError::NotEmpty(data_dir.display().to_string()));
        }
        if voters.is_empty() {
            return Err(BackupError::Content(
                "the new cluster needs its initial voters to restore into".into(),
            ));
        }
        let verified = SnapshotData::decode_verified(&self.data).map_err(BackupError::Content)?;
        std::fs::create_dir_all(data_dir)?;
        let marker = data_dir.join(RESTORE_MARKER);
        File::create(&marker)?.sync_all()?;
        dir_sync(data_dir)?;

        let (meta, data) = self.restored_snapshot(verified, voters)?;
        let restored = meta.last_log_id;
        let storage = Arc::new(Storage::open_restoring(data_dir)?);
        let mut machine = StateMachine::open(Arc::clone(&storage))
            .map_err(|e| BackupError::Content(e.to_string()))?;
        // Snapshot file, then the state (synced, recorded as a checkpoint at R)...
        machine
            .restore(&meta, data)
            .map_err(|e| BackupError::Content(e.to_string()))?;
        // ...then the log's purge marker: the log starts after R, and a node that needs
        // anything up to R must be sent the snapshot.
        if let Some(restored) = restored {
            storage
                .wal
                .purge(restored, Some(restored))
                .map_err(std::io::Error::other)?;
        }
        drop(machine);
        storage.sync()?;
        drop(storage);
        std::fs::remove_file(&marker)?;
        dir_sync(data_dir)?;
        Ok(())
    }

    /// The snapshot a restored node starts from: the backup's state with `applied` = R at term
    /// 0 (leader 0, as openraft's own first entry) and the new cluster's voters as membership.
    fn restored_snapshot(
        &self,
        verified: SnapshotData,
        voters: &BTreeMap<NodeId, String>,
    ) -> Result<(SnapshotMeta, SnapshotData), BackupError> {
        let index = self.applied.map_or(0, |applied| applied.index);
        let restored = LogId::new(CommittedLeaderId::new(0, 0), index);
        let voter_ids: BTreeSet<NodeId> = voters.keys().copied().collect();
        let nodes: BTreeMap<NodeId, BasicNode> = voters
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr.clone())))
            .collect();
        let membership =
            StoredMembership::new(Some(restored), Membership::new(vec![voter_ids], nodes));
        let content = |e: codec::CodecError| BackupError::Content(e.to_string());
        // The source cluster's Raft state is replaced by the new cluster's.
        let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = verified
            .pairs
            .into_iter()
            .filter(|(key, _)| key != KEY_APPLIED && key != KEY_MEMBERSHIP)
            .collect();
        let applied = codec::encode(&Some(restored)).map_err(content)?;
        pairs.push((KEY_APPLIED.to_vec(), applied));
        let member = codec::encode(&membership).map_err(content)?;
        pairs.push((KEY_MEMBERSHIP.to_vec(), member));
        pairs.sort();
        let meta = SnapshotMeta {
            last_log_id: Some(restored),
            last_membership: membership,
            snapshot_id: format!("restored-{index}"),
        };
        Ok((meta, SnapshotData::new(pairs)))
    }
}

fn dir_sync(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup() -> Backup {
        let pairs = vec![(
            b"c/CNY".to_vec(),
            codec::encode(&crate::ledger::CurrencyTotals::default()).unwrap(),
        )];
        let data = codec::encode(&SnapshotData::new(pairs)).unwrap();
        Backup {
            applied: None,
            state_hash: "00".into(),
            seq_last: 0,
            accounts: 0,
            data,
        }
    }

    #[test]
    fn a_backup_file_round_trips_and_damage_is_found() {
        let bytes = backup().to_bytes().unwrap();
        let back = Backup::from_bytes(&bytes).unwrap();
        assert_eq!(back.data, backup().data);
        let mut flipped = bytes.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 1;
        assert!(matches!(
            Backup::from_bytes(&flipped),
            Err(BackupError::Checksum)
        ));
        assert!(matches!(
            Backup::from_bytes(b"hello"),
            Err(BackupError::NotABackup)
        ));
        assert!(Backup::from_bytes(&bytes[..bytes.len() - 1]).is_err());
    }

    fn voters() -> BTreeMap<NodeId, String> {
        BTreeMap::from([(1, "127.0.0.1:1".into()), (2, "127.0.0.1:2".into())])
    }

    #[tokio::test]
    async fn a_restored_node_holds_the_state_a_snapshot_and_a_purge_marker_at_the_backup_index() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("node");
        let mut source = backup();
        source.applied = Some(LogId::new(CommittedLeaderId::new(7, 3), 42));
        source.restore_into(&data_dir, &voters()).unwrap();
        assert!(!data_dir.join(RESTORE_MARKER).exists());

        let restored = LogId::new(CommittedLeaderId::new(0, 0), 42);
        let storage = Arc::new(Storage::open(&data_dir).unwrap());
        let meta = storage.wal.meta();
        assert_eq!(meta.last_purged, Some(restored), "the log starts after R");
        assert_eq!(meta.state_durable, Some(restored));
        assert!(storage.wal.is_empty());
        let reader = crate::store::LedgerReader::new(Arc::clone(&storage));
        assert_eq!(reader.summary().unwrap().applied, Some(restored));
        let membership = reader.membership().unwrap().unwrap();
        assert_eq!(membership.log_id(), &Some(restored));
        let ids: Vec<NodeId> = membership.membership().voter_ids().collect();
        assert_eq!(ids, vec![1, 2], "the new cluster's voters");
        let mut machine = StateMachine::open(Arc::clone(&storage)).unwrap();
        let snapshot = openraft::storage::RaftStateMachine::get_current_snapshot(&mut machine)
            .await
            .unwrap()
            .expect("a snapshot to send to new nodes");
        assert_eq!(snapshot.meta.last_log_id, Some(restored));
        assert_eq!(snapshot.meta.last_membership, membership);
        let data = SnapshotData::decode_verified(snapshot.snapshot.get_ref()).unwrap();
        assert!(data.pairs.iter().any(|(key, _)| key == b"c/CNY"));
    }

    #[test]
    fn restore_needs_the_new_clusters_voters() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("node");
        let refused = backup().restore_into(&data_dir, &BTreeMap::new());
        assert!(
            matches!(refused, Err(BackupError::Content(_))),
            "{refused:?}"
        );
        assert!(!data_dir.exists(), "nothing written");
    }

    #[test]
    fn a_data_dir_of_an_unfinished_restore_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(RESTORE_MARKER), b"").unwrap();
        let error = Storage::open(dir.path()).err().expect("refused");
        assert!(error.to_string().contains(RESTORE_MARKER), "{error}");
    }

    #[test]
    fn restore_refuses_a_directory_with_data() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("something"), b"x").unwrap();
        assert!(matches!(
            backup().restore_into(dir.path(), &voters()),
            Err(BackupError::NotEmpty(_))
        ));
    }
}
