//! The Raft log's write-ahead log: segment files of checksummed records, and a small metadata
//! file (vote, purge marker, state checkpoint), with explicit `fsync` of files *and* of the
//! directory. It replaces sled for the log because sled 0.34 does not make what it flushed
//! recoverable after a power cut (measured: nearly every acknowledged transfer gone; its `conf`,
//! its snapshot files and the blob files of large frames are never synced).
//!
//! Layout of `<data_dir>/wal/`:
//! - `<first index, 20 digits>.seg`: records `[len u32][index u64][crc32 of payload u32]
//!   [crc32 of the 16 bytes before u32][payload: codec(Entry)]`, little-endian, indexes
//!   contiguous within and across segments. A new segment starts once the active one holds
//!   [`SEGMENT_BYTES_TARGET`].
//! - `meta`: codec([`WalMeta`]) followed by its crc32; replaced whole: written to `meta.tmp`,
//!   fsynced, renamed over `meta`, directory fsynced.
//!
//! Durability: [`Wal::append`] only writes; [`Wal::sync`] fdatasyncs every segment written since
//! the last sync and, when a segment was created or removed, the directory. An append is
//! acknowledged only after a sync that began after its write (the caller's flusher does that).
//! Truncation removes a suffix durably before it returns; a purge makes the marker durable
//! first, then deletes whole segments below it (a segment resurrected by a crash is ignored and
//! deleted at the next open).
//!
//! Recovery ([`Wal::open`]) reads every record and checks its checksums and index. A torn record
//! at the very end of the last segment (a write cut short) is cut off: it was never synced, so
//! never acknowledged. Anything else that fails a check is corruption: the open fails with an
//! error naming the file and the offset, and the node refuses to start.
//!
//! After the first I/O error the log refuses every further write and sync (no retry of a failed
//! fsync: the kernel may have dropped the dirty pages it could not write).
//!
//! This module must never report a sync that did not reach the disk, and never return entries
//! that fail their checksum.
//!
//! Over 800 lines on purpose: every reader and writer of the segment format lives here, so the on-disk format has one owner (the tests are in `wal/tests.rs`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::typ::{Entry, LogId, Vote};

/// A new segment is started once the active one holds this many bytes.
pub const SEGMENT_BYTES_TARGET: u64 = 64 * 1024 * 1024;
/// No record may claim more payload than this (the largest entry is a proposal of
/// `PROPOSAL_COMMANDS_MAX` transfers, a few MiB).
pub const RECORD_BYTES_MAX: u32 = 256 * 1024 * 1024;
const HEADER_BYTES: usize = 20;
const SEGMENT_SUFFIX: &str = ".seg";
const META_FILE: &str = "meta";
const META_TMP_FILE: &str = "meta.tmp";

#[cfg(all(feature = "unsafe-skip-fsync", not(debug_assertions)))]
compile_error!(
    "unsafe-skip-fsync is a negative control for the power-loss test: it never belongs in a \
     release build (build it with the `negative-control` profile, which keeps debug assertions)"
);

/// What the log keeps besides its entries. Every field only moves forward.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalMeta {
    pub vote: Option<Vote>,
    /// Entries up to here are gone (compacted into a snapshot).
    pub last_purged: Option<LogId>,
    /// The state database was fsynced with everything applied up to here: after a restart it
    /// must hold at least that much, or it lost synced data (see `StateMachine::open`).
    pub state_durable: Option<LogId>,
}

/// Why the log cannot be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: corrupt at byte {offset}: {reason}; this node's log cannot be trusted (rebuild the node from its peers, see the README)")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("log entry {index} appended where {expected} was expected")]
    OutOfOrder { index: u64, expected: u64 },
    #[error("the log failed earlier and refuses writes: {0}")]
    Failed(String),
    #[error("encode: {0}")]
    Encode(String),
}

impl WalError {
    fn io(path: &Path, source: io::Error) -> WalError {
        WalError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// One segment file: the entries `first_index ..first_index + offsets.len()`.
struct Segment {
    first_index: u64,
    path: PathBuf,
    file: Arc<File>,
    /// Byte offset of each entry's record.
    offsets: Vec<u64>,
    /// Bytes of valid records (the file's length).
    bytes: u64,
}

impl Segment {
    fn last_index(&self) -> Option<u64> {
        let count = u64::try_from(self.offsets.len()).ok()?;
        (count > 0).then(|| self.first_index + count - 1)
    }

    fn next_index(&self) -> u64 {
        self.first_index + self.offsets.len() as u64
    }

    /// The byte range of entry `index`'s record.
    fn record_range(&self, index: u64) -> Option<(u64, u64)> {
        let position = usize::try_from(index.checked_sub(self.first_index)?).ok()?;
        let start = *self.offsets.get(position)?;
        let end = self
            .offsets
            .get(position + 1)
            .copied()
            .unwrap_or(self.bytes);
        Some((start, end))
    }
}

struct Inner {
    segments: Vec<Segment>,
    /// Files written since the last sync (deduplicated by path).
    unsynced: Vec<(PathBuf, Arc<File>)>,
    /// A segment was created or removed since the last sync.
    dir_unsynced: bool,
    /// The index the next append must carry.
    next_index: u64,
    /// Set by the first I/O error; every later write or sync fails with it.
    failed: Option<String>,
}

/// The write-ahead log of one node. Shared between the log task, the readers and the flusher.
pub struct Wal {
    dir: PathBuf,
    segment_bytes_target: u64,
    dir_file: File,
    inner: Mutex<Inner>,
    meta: Mutex<WalMeta>,
    /// Held through a whole `sync`: a second caller (the log flusher while a state checkpoint
    /// syncs) must not find the list of unsynced files empty and return while the first
    /// caller's fdatasync of those files is still under way: it would acknowledge entries
    /// that are not yet on the disk.
    sync_gate: Mutex<()>,
    /// Called by `sync` after it has taken the list of files to sync (tests pause it there).
    #[cfg(test)]
    pub(crate) sync_hook: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
}

fn crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

fn segment_path(dir: &Path, first_index: u64) -> PathBuf {
    dir.join(format!("{first_index:020}{SEGMENT_SUFFIX}"))
}

/// `fdatasync`, or nothing in the negative-control build.
fn data_sync(file: &File) -> io::Result<()> {
    if cfg!(feature = "unsafe-skip-fsync") {
        return Ok(());
    }
    file.sync_data()
}

/// `fsync` (data and metadata, or a directory's entries), or nothing in the negative control.
fn full_sync(file: &File) -> io::Result<()> {
    if cfg!(feature = "unsafe-skip-fsync") {
        return Ok(());
    }
    file.sync_all()
}

/// Encodes one record.
fn record_encode(entry: &Entry, out: &mut Vec<u8>) -> Result<(), WalError> {
    let payload = codec::encode(entry).map_err(|e| WalError::Encode(e.to_string()))?;
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&len| len <= RECORD_BYTES_MAX)
        .ok_or_else(|| WalError::Encode(format!("entry of {} bytes", payload.len())))?;
    let mut header = [0u8; HEADER_BYTES];
    header[0..4].copy_from_slice(&len.to_le_bytes());
    header[4..12].copy_from_slice(&entry.log_id.index.to_le_bytes());
    header[12..16].copy_from_slice(&crc(&payload).to_le_bytes());
    let header_crc = crc(&header[0..16]);
    header[16..20].copy_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&payload);
    Ok(())
}

/// What a segment scan found.
struct Scanned {
    offsets: Vec<u64>,
    /// Bytes of valid records.
    bytes: u64,
    /// Set when the file ends in a torn record (bytes after `bytes`).
    torn_tail: Option<String>,
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// Reads a whole segment and checks every record. A record cut short by the end of the file
/// (or whose header checksum fails with fewer bytes left than it claims) is a torn tail; a
/// checksum failure with the whole record present, or an index out of sequence, is corruption.
fn segment_scan(path: &Path, first_index: u64) -> Result<Scanned, WalError> {
    let bytes = fs::read(path).map_err(|e| WalError::io(path, e))?;
    let corrupt = |offset: usize, reason: String| WalError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    let mut offsets = Vec::new();
    let mut at = 0usize;
    let mut torn_tail = None;
    while at < bytes.len() {
        let left = bytes.len() - at;
        if left < HEADER_BYTES {
            torn_tail = Some(format!("{left} bytes, less than a record header"));
            break;
        }
        let header = &bytes[at..at + HEADER_BYTES];
        let len = u32_at(header, 0);
        let header_ok = crc(&header[0..16]) == u32_at(header, 16);
        let record_end = at as u64 + HEADER_BYTES as u64 + u64::from(len);
        if !header_ok {
            // Its length cannot be trusted. A write cut short leaves nothing valid after it;
            // damage in the middle of the log does.
            if valid_record_after(&bytes, at + 1) {
                return Err(corrupt(at, "record header checksum mismatch".into()));
            }
            torn_tail = Some(format!(
                "header checksum fails and no valid record follows ({left} bytes)"
            ));
            break;
        }
        if record_end > bytes.len() as u64 {
            torn_tail = Some(format!("record of {len} bytes cut short"));
            break;
        }
        let expected = first_index + offsets.len() as u64;
        let index = u64_at(header, 4);
        if index != expected {
            return Err(corrupt(
                at,
                format!("record holds index {index}, expected {expected}"),
            ));
        }
        let payload = &bytes[at + HEADER_BYTES..at + HEADER_BYTES + len as usize];
        if crc(payload) != u32_at(header, 12) {
            if record_end == bytes.len() as u64 {
                torn_tail = Some("payload checksum fails in the last record".into());
                break;
            }
            return Err(corrupt(
                at,
                format!("entry {index}: payload checksum mismatch"),
            ));
        }
        offsets.push(at as u64);
        at += HEADER_BYTES + len as usize;
    }
    Ok(Scanned {
        offsets,
        bytes: at as u64,
        torn_tail,
    })
}

/// True when a whole, valid record starts anywhere at or after `from`.
fn valid_record_after(bytes: &[u8], from: usize) -> bool {
    (from..bytes.len().saturating_sub(HEADER_BYTES - 1)).any(|at| {
        let header = &bytes[at..at + HEADER_BYTES];
        if crc(&header[0..16]) != u32_at(header, 16) {
            return false;
        }
        let len = u32_at(header, 0) as usize;
        let end = at + HEADER_BYTES + len;
        end <= bytes.len() && crc(&bytes[at + HEADER_BYTES..end]) == u32_at(header, 12)
    })
}

fn segment_first_index(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

fn meta_decode(path: &Path, bytes: &[u8]) -> Result<WalMeta, WalError> {
    let corrupt = |reason: String| WalError::Corrupt {
        path: path.to_path_buf(),
        offset: 0,
        reason,
    };
    if bytes.len() < 4 {
        return Err(corrupt(format!("{} bytes", bytes.len())));
    }
    let (body, trailer) = bytes.split_at(bytes.len() - 4);
    if crc(body) != u32_at(trailer, 0) {
        return Err(corrupt("checksum mismatch".into()));
    }
    codec::decode(body).map_err(|e| corrupt(e.to_string()))
}

impl Wal {
    /// Opens (or creates) the log in `dir`, checking every record.
    ///
    /// # Errors
    /// On an I/O error, on corruption (a checksum or index that fails anywhere but in a torn
    /// last record), or on a gap between segments.
    pub fn open(dir: &Path) -> Result<Wal, WalError> {
        Self::open_with(dir, SEGMENT_BYTES_TARGET)
    }

    /// [`Wal::open`] with another segment size (tests use small ones to roll often).
    ///
    /// # Errors
    /// As [`Wal::open`].
    pub fn open_with(dir: &Path, segment_bytes_target: u64) -> Result<Wal, WalError> {
        fs::create_dir_all(dir).map_err(|e| WalError::io(dir, e))?;
        let dir_file = File::open(dir).map_err(|e| WalError::io(dir, e))?;
        // A `meta.tmp` is a replacement that never completed; `meta` is intact.
        let tmp = dir.join(META_TMP_FILE);
        if tmp.exists() {
            fs::remove_file(&tmp).map_err(|e| WalError::io(&tmp, e))?;
        }
        let meta_path = dir.join(META_FILE);
        let meta = match fs::read(&meta_path) {
            Ok(bytes) => meta_decode(&meta_path, &bytes)?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => WalMeta::default(),
            Err(error) => return Err(WalError::io(&meta_path, error)),
        };
        let segments = Self::segments_load(dir, &meta)?;
        let next_index = match segments.last() {
            Some(segment) => segment.next_index(),
            None => meta.last_purged.map_or(0, |id| id.index + 1),
        };
        let wal = Wal {
            dir: dir.to_path_buf(),
            segment_bytes_target,
            dir_file,
            inner: Mutex::new(Inner {
                segments,
                unsynced: Vec::new(),
                dir_unsynced: false,
                next_index,
                failed: None,
            }),
            meta: Mutex::new(meta),
            sync_gate: Mutex::new(()),
            #[cfg(test)]
            sync_hook: Mutex::new(None),
        };
        // Whatever recovery cut or removed is made durable before anything new is written.
        full_sync(&wal.dir_file).map_err(|e| WalError::io(dir, e))?;
        Ok(wal)
    }

    fn segments_load(dir: &Path, meta: &WalMeta) -> Result<Vec<Segment>, WalError> {
        let mut found = Vec::new();
        for item in fs::read_dir(dir).map_err(|e| WalError::io(dir, e))? {
            let item = item.map_err(|e| WalError::io(dir, e))?;
            let name = item.file_name();
            if let Some(first_index) = name.to_str().and_then(segment_first_index) {
                found.push((first_index, item.path()));
            }
        }
        found.sort();
        let purged_next = meta.last_purged.map_or(0, |id| id.index + 1);
        let mut segments: Vec<Segment> = Vec::new();
        let count = found.len();
        for (position, (first_index, path)) in found.into_iter().enumerate() {
            let last = position + 1 == count;
            let scanned = segment_scan(&path, first_index)?;
            if let Some(reason) = &scanned.torn_tail {
                if !last {
                    return Err(WalError::Corrupt {
                        path,
                        offset: scanned.bytes,
                        reason: format!("{reason}, and a later segment follows"),
                    });
                }
                tracing::warn!(path = %path.display(), valid_bytes = scanned.bytes, reason = %reason,
                    "cutting off a torn record at the end of the log (never synced, never acknowledged)");
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| WalError::io(&path, e))?;
            if scanned.torn_tail.is_some() {
                file.set_len(scanned.bytes)
                    .map_err(|e| WalError::io(&path, e))?;
                full_sync(&file).map_err(|e| WalError::io(&path, e))?;
            }
            let segment = Segment {
                first_index,
                path,
                file: Arc::new(file),
                offsets: scanned.offsets,
                bytes: scanned.bytes,
            };
            // Wholly purged (a delete a crash undid), or empty (created, never written): gone.
            if segment.next_index() <= purged_next || segment.offsets.is_empty() {
                fs::remove_file(&segment.path).map_err(|e| WalError::io(&segment.path, e))?;
                continue;
            }
            if let Some(previous) = segments.last() {
                if previous.next_index() != segment.first_index {
                    return Err(WalError::Corrupt {
                        path: segment.path,
                        offset: 0,
                        reason: format!(
                            "starts at index {}, but the segment before ends at {}",
                            segment.first_index,
                            previous.next_index() - 1
                        ),
                    });
                }
            } else if segment.first_index > purged_next {
                return Err(WalError::Corrupt {
                    path: segment.path,
                    offset: 0,
                    reason: format!(
                        "the log starts at index {} but only entries below {purged_next} were purged",
                        segment.first_index
                    ),
                });
            }
            segments.push(segment);
        }
        Ok(segments)
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Every mutation leaves `Inner` consistent before it can fail (or marks `failed`).
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn meta_lock(&self) -> MutexGuard<'_, WalMeta> {
        self.meta.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn meta(&self) -> WalMeta {
        self.meta_lock().clone()
    }

    /// The id of the last entry in the log (not counting the purge marker).
    ///
    /// # Errors
    /// When that entry cannot be read.
    pub fn last_log_id(&self) -> Result<Option<LogId>, WalError> {
        let last = self.inner().next_index.checked_sub(1);
        let Some(last) = last else { return Ok(None) };
        Ok(self.read(last, last + 1)?.pop().map(|entry| entry.log_id))
    }

    /// True when the log holds no entry at all.
    pub fn is_empty(&self) -> bool {
        self.inner().segments.is_empty()
    }

    /// Writes `entries` (contiguous, starting at the next index) to the active segment. Not
    /// durable until [`Wal::sync`].
    ///
    /// # Errors
    /// On an index out of sequence or an I/O error (after which the log refuses writes).
    pub fn append(&self, entries: impl IntoIterator<Item = Entry>) -> Result<(), WalError> {
        let mut inner = self.inner();
        if let Some(failure) = &inner.failed {
            return Err(WalError::Failed(failure.clone()));
        }
        let mut buffer = Vec::new();
        let mut lengths = Vec::new();
        let first = inner.next_index;
        for (expected, entry) in (first..).zip(entries) {
            if entry.log_id.index != expected {
                return Err(WalError::OutOfOrder {
                    index: entry.log_id.index,
                    expected,
                });
            }
            let before = buffer.len();
            record_encode(&entry, &mut buffer)?;
            lengths.push((buffer.len() - before) as u64);
        }
        if lengths.is_empty() {
            return Ok(());
        }
        let result = self.append_locked(&mut inner, first, &buffer, &lengths);
        if let Err(error) = &result {
            inner.failed = Some(error.to_string());
        }
        result
    }

    fn append_locked(
        &self,
        inner: &mut Inner,
        first: u64,
        buffer: &[u8],
        lengths: &[u64],
    ) -> Result<(), WalError> {
        let roll = inner
            .segments
            .last()
            .is_none_or(|segment| segment.bytes >= self.segment_bytes_target);
        if roll {
            let path = segment_path(&self.dir, first);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| WalError::io(&path, e))?;
            inner.segments.push(Segment {
                first_index: first,
                path,
                file: Arc::new(file),
                offsets: Vec::new(),
                bytes: 0,
            });
            inner.dir_unsynced = true;
        }
        let segment = inner
            .segments
            .last_mut()
            .expect("a segment exists: created above when there was none");
        segment
            .file
            .write_all_at(buffer, segment.bytes)
            .map_err(|e| WalError::io(&segment.path, e))?;
        // Point of no return: the bytes are in the file; the index follows.
        let mut offset = segment.bytes;
        for length in lengths {
            segment.offsets.push(offset);
            offset += length;
        }
        segment.bytes = offset;
        let (path, file) = (segment.path.clone(), Arc::clone(&segment.file));
        if !inner.unsynced.iter().any(|(p, _)| *p == path) {
            inner.unsynced.push((path, file));
        }
        inner.next_index = first + lengths.len() as u64;
        Ok(())
    }

    /// Makes every append and removal before this call durable: fdatasync of each segment
    /// written since the last sync, then of the directory if segments came or went.
    ///
    /// # Errors
    /// On an I/O error; the log then refuses every further write and sync.
    pub fn sync(&self) -> Result<(), WalError> {
        let _gate = self
            .sync_gate
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (unsynced, dir_unsynced) = {
            let mut inner = self.inner();
            if let Some(failure) = &inner.failed {
                return Err(WalError::Failed(failure.clone()));
            }
            let dir_unsynced = std::mem::take(&mut inner.dir_unsynced);
            (std::mem::take(&mut inner.unsynced), dir_unsynced)
        };
        #[cfg(test)]
        {
            // Not called under the hook's lock: a paused sync must not hold up another one.
            let hook = self
                .sync_hook
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Some(hook) = hook {
                hook();
            }
        }
        let result = (|| -> Result<(), WalError> {
            for (path, file) in &unsynced {
                data_sync(file).map_err(|e| WalError::io(path, e))?;
            }
            if dir_unsynced {
                full_sync(&self.dir_file).map_err(|e| WalError::io(&self.dir, e))?;
            }
            Ok(())
        })();
        if let Err(error) = &result {
            self.inner().failed = Some(error.to_string());
        }
        result
    }

    /// Reads the entries `start..end` that the log holds (purged and missing ones are left
    /// out), checking each record's checksum.
    ///
    /// # Errors
    /// On an I/O error or a record that fails its checks.
    pub fn read(&self, start: u64, end: u64) -> Result<Vec<Entry>, WalError> {
        // Entries at or below the purge marker may still sit in the first segment: not ours.
        let purged_next = self.meta_lock().last_purged.map_or(0, |id| id.index + 1);
        let start = start.max(purged_next);
        let inner = self.inner();
        let mut entries = Vec::new();
        let mut record = Vec::new();
        for segment in &inner.segments {
            let Some(last) = segment.last_index() else {
                continue;
            };
            if last < start || segment.first_index >= end {
                continue;
            }
            for index in start.max(segment.first_index)..end.min(last + 1) {
                let (record_start, record_end) = segment
                    .record_range(index)
                    .expect("indexes between the segment's first and last are in it");
                record.resize(
                    usize::try_from(record_end - record_start).unwrap_or(usize::MAX),
                    0,
                );
                segment
                    .file
                    .read_exact_at(&mut record, record_start)
                    .map_err(|e| WalError::io(&segment.path, e))?;
                entries.push(Self::record_decode(
                    &segment.path,
                    record_start,
                    index,
                    &record,
                )?);
            }
        }
        Ok(entries)
    }

    fn record_decode(
        path: &Path,
        offset: u64,
        index: u64,
        record: &[u8],
    ) -> Result<Entry, WalError> {
        let corrupt = |reason: String| WalError::Corrupt {
            path: path.to_path_buf(),
            offset,
            reason,
        };
        if record.len() < HEADER_BYTES {
            return Err(corrupt("record shorter than its header".into()));
        }
        let (header, payload) = record.split_at(HEADER_BYTES);
        if crc(&header[0..16]) != u32_at(header, 16) || crc(payload) != u32_at(header, 12) {
            return Err(corrupt(format!("entry {index}: checksum mismatch on read")));
        }
        let entry: Entry = codec::decode(payload).map_err(|e| corrupt(e.to_string()))?;
        if entry.log_id.index != index {
            return Err(corrupt(format!(
                "holds entry {}, expected {index}",
                entry.log_id.index
            )));
        }
        Ok(entry)
    }

    /// Removes every entry from `index` on, durably (files cut, later segments deleted, then
    /// synced with the directory) before it returns.
    ///
    /// # Errors
    /// On an I/O error (after which the log refuses writes).
    pub fn truncate(&self, index: u64) -> Result<(), WalError> {
        {
            let mut inner = self.inner();
            if let Some(failure) = &inner.failed {
                return Err(WalError::Failed(failure.clone()));
            }
            let result = Self::truncate_locked(&mut inner, index);
            if let Err(error) = &result {
                inner.failed = Some(error.to_string());
                return result;
            }
        }
        self.sync()
    }

    fn truncate_locked(inner: &mut Inner, index: u64) -> Result<(), WalError> {
        while let Some(segment) = inner.segments.last_mut() {
            if segment.next_index() <= index {
                break;
            }
            if segment.first_index >= index {
                fs::remove_file(&segment.path).map_err(|e| WalError::io(&segment.path, e))?;
                let path = segment.path.clone();
                inner.segments.pop();
                inner.unsynced.retain(|(p, _)| *p != path);
                inner.dir_unsynced = true;
                continue;
            }
            let (cut, _) = segment
                .record_range(index)
                .expect("index is inside this segment");
            segment
                .file
                .set_len(cut)
                .map_err(|e| WalError::io(&segment.path, e))?;
            let keep = usize::try_from(index - segment.first_index).unwrap_or(usize::MAX);
            segment.offsets.truncate(keep);
            segment.bytes = cut;
            // The new length must be durable: fsync (not fdatasync) below via `unsynced`, and
            // `set_len` followed by fdatasync does persist the size on Linux (it is needed to
            // read the data back); an explicit full sync here keeps that independent of it.
            full_sync(&segment.file).map_err(|e| WalError::io(&segment.path, e))?;
            break;
        }
        inner.next_index = inner
            .segments
            .last()
            .map_or(index.min(inner.next_index), Segment::next_index);
        Ok(())
    }

    /// Records `log_id` as purged (durably), then deletes the segments wholly at or below it.
    ///
    /// # Errors
    /// On an I/O error.
    pub fn purge(&self, log_id: LogId, state_durable: Option<LogId>) -> Result<(), WalError> {
        self.meta_update(|meta| {
            meta.last_purged = meta.last_purged.max(Some(log_id));
            meta.state_durable = meta.state_durable.max(state_durable);
        })?;
        let mut inner = self.inner();
        while let Some(segment) = inner.segments.first() {
            let wholly_purged = segment
                .last_index()
                .is_some_and(|last| last <= log_id.index);
            if !wholly_purged {
                break;
            }
            // Not synced: a segment a crash brings back is below the marker and removed at open.
            fs::remove_file(&segment.path).map_err(|e| WalError::io(&segment.path, e))?;
            let path = segment.path.clone();
            inner.segments.remove(0);
            inner.unsynced.retain(|(p, _)| *p != path);
        }
        if inner.segments.is_empty() {
            inner.next_index = inner.next_index.max(log_id.index + 1);
        }
        Ok(())
    }

    /// Saves the vote durably before it returns.
    ///
    /// # Errors
    /// On an I/O error.
    pub fn vote_save(&self, vote: &Vote) -> Result<(), WalError> {
        self.meta_update(|meta| meta.vote = Some(*vote))
    }

    /// Records, durably, that the state database holds everything applied up to `log_id`.
    ///
    /// # Errors
    /// On an I/O error.
    pub fn state_durable_save(&self, log_id: Option<LogId>) -> Result<(), WalError> {
        self.meta_update(|meta| meta.state_durable = meta.state_durable.max(log_id))
    }

    /// Replaces `meta` durably: a temp file, fsynced, renamed over it, directory fsynced. The
    /// in-memory copy changes only once that is done.
    /// Changes the meta file: read, change and write under one lock, so that concurrent
    /// updates (a vote from the Raft core, a checkpoint from the state machine or the
    /// background checkpoint) never write back each other's old fields. Writes nothing when
    /// the change changes nothing.
    fn meta_update(&self, change: impl FnOnce(&mut WalMeta)) -> Result<(), WalError> {
        let mut current = self.meta_lock();
        let mut meta = current.clone();
        change(&mut meta);
        if meta == *current {
            return Ok(());
        }
        self.meta_write_locked(&mut current, &meta)
    }

    fn meta_write_locked(&self, current: &mut WalMeta, meta: &WalMeta) -> Result<(), WalError> {
        if let Some(failure) = &self.inner().failed {
            return Err(WalError::Failed(failure.clone()));
        }
        let mut bytes = codec::encode(meta).map_err(|e| WalError::Encode(e.to_string()))?;
        let checksum = crc(&bytes);
        bytes.extend_from_slice(&checksum.to_le_bytes());
        let tmp = self.dir.join(META_TMP_FILE);
        let path = self.dir.join(META_FILE);
        let result = (|| {
            let mut file = File::create(&tmp).map_err(|e| WalError::io(&tmp, e))?;
            file.write_all(&bytes).map_err(|e| WalError::io(&tmp, e))?;
            full_sync(&file).map_err(|e| WalError::io(&tmp, e))?;
            fs::rename(&tmp, &path).map_err(|e| WalError::io(&path, e))?;
            full_sync(&self.dir_file).map_err(|e| WalError::io(&self.dir, e))
        })();
        match result {
            Ok(()) => {
                *current = meta.clone();
                Ok(())
            }
            Err(error) => {
                self.inner().failed = Some(error.to_string());
                Err(error)
            }
        }
    }

    /// Bytes the segments and the metadata occupy.
    pub fn size_on_disk(&self) -> u64 {
        self.inner().segments.iter().map(|s| s.bytes).sum::<u64>() + 64
    }
}

#[cfg(test)]
mod tests;
