//! Backups: a node's snapshot (a consistent copy of the ledger at a known applied index) in a
//! self-checking file, and restoring one into the data directory of a node of a NEW cluster.
//!
//! A restored node holds the ledger (accounts, transfers, history, totals, seq, state hash) but
//! no Raft state: no log, no vote, no membership. The new cluster initializes itself as usual and
//! its log starts on top of the restored ledger; every node restored from the same file starts
//! from the same state. Restoring never touches a data directory that already holds data.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec;
use crate::store::reader::{KEY_APPLIED, KEY_MEMBERSHIP};
use crate::store::state_machine::SnapshotData;
use crate::store::Storage;
use crate::typ::{LogId, Snapshot};

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

    /// Seeds `data_dir` (which must not exist or be empty) with this backup's ledger state.
    ///
    /// # Errors
    /// When the directory holds data, or storage fails.
    pub fn restore_into(&self, data_dir: &Path) -> Result<(), BackupError> {
        if data_dir.exists() && std::fs::read_dir(data_dir)?.next().is_some() {
            return Err(BackupError::NotEmpty(data_dir.display().to_string()));
        }
        let verified = SnapshotData::decode_verified(&self.data).map_err(BackupError::Content)?;
        let storage = Storage::open(data_dir)?;
        let mut batch = sled::Batch::default();
        for (key, value) in verified.pairs {
            // Raft state belongs to the source cluster; the new cluster makes its own.
            if key != KEY_APPLIED && key != KEY_MEMBERSHIP {
                batch.insert(key, value);
            }
        }
        storage
            .state
            .apply_batch(batch)
            .map_err(std::io::Error::other)?;
        storage.sync()?;
        Ok(())
    }
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

    #[test]
    fn restore_refuses_a_directory_with_data() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("something"), b"x").unwrap();
        assert!(matches!(
            backup().restore_into(dir.path()),
            Err(BackupError::NotEmpty(_))
        ));
    }
}
