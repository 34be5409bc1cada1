//! The free-space reserve of a data dir: a leader refuses new writes while the file system that
//! holds its data dir has less free space than the reserve, so a disk filling up ends in clear
//! refusals (`507`) rather than in a failed log append (a storage fault that stops the node).
//! The reserve also leaves room for what must still be written after the refusals start: the
//! entries already in flight, snapshots, and the state checkpoint of a clean shutdown.
//!
//! The free space is read with `statvfs` (through `fs2`) at most once per [`CHECK_INTERVAL`];
//! between reads the last answer is used, so a write costs two atomic loads.
//!
//! It must never refuse a write on an old answer for longer than [`CHECK_INTERVAL`], and never
//! stop the node: a failed `statvfs` lets writes through (the log's own errors still stop it).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long one free-space reading is used.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Why a write was refused: the data dir's file system is under the reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "{free_bytes} bytes free on the data dir's file system, under the reserve of {reserve_bytes}"
)]
pub struct ReserveLow {
    pub free_bytes: u64,
    pub reserve_bytes: u64,
}

/// The reserve of one data dir. Shared by every writer; lock-free.
pub struct DiskReserve {
    dir: PathBuf,
    reserve_bytes: u64,
    /// Origin of `checked_at_ms`.
    started: Instant,
    /// When the last reading was taken, in ms since `started` plus one (0: never).
    checked_at_ms: AtomicU64,
    /// The last reading (`u64::MAX` when it failed: unknown counts as enough).
    free_bytes: AtomicU64,
}

impl DiskReserve {
    /// A reserve of `reserve_bytes` on the file system of `dir` (0 turns the check off).
    pub fn new(dir: &Path, reserve_bytes: u64) -> DiskReserve {
        DiskReserve {
            dir: dir.to_path_buf(),
            reserve_bytes,
            started: Instant::now(),
            checked_at_ms: AtomicU64::new(0),
            free_bytes: AtomicU64::new(u64::MAX),
        }
    }

    pub fn reserve_bytes(&self) -> u64 {
        self.reserve_bytes
    }

    /// Free bytes on the data dir's file system, read at most [`CHECK_INTERVAL`] ago
    /// (`u64::MAX` when the reading failed).
    pub fn free_bytes(&self) -> u64 {
        let now_ms = u64::try_from(self.started.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let checked_at_ms = self.checked_at_ms.load(Ordering::Acquire);
        let interval_ms = u64::try_from(CHECK_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        if checked_at_ms != 0 && now_ms.saturating_sub(checked_at_ms) < interval_ms {
            return self.free_bytes.load(Ordering::Acquire);
        }
        // Several writers may read at once after the interval; each reading is as good.
        let free = match fs2::available_space(&self.dir) {
            Ok(free) => free,
            Err(error) => {
                tracing::warn!(dir = %self.dir.display(), %error,
                    "cannot read the free space of the data dir; writes are not held back");
                u64::MAX
            }
        };
        self.free_bytes.store(free, Ordering::Release);
        self.checked_at_ms.store(now_ms, Ordering::Release);
        free
    }

    /// `Err` while the free space is under the reserve.
    ///
    /// # Errors
    /// [`ReserveLow`] with the reading.
    pub fn check(&self) -> Result<(), ReserveLow> {
        if self.reserve_bytes == 0 {
            return Ok(());
        }
        let free_bytes = self.free_bytes();
        if free_bytes < self.reserve_bytes {
            return Err(ReserveLow {
                free_bytes,
                reserve_bytes: self.reserve_bytes,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_larger_than_the_disk_refuses_and_a_small_one_does_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        let free = fs2::available_space(dir.path()).expect("statvfs");
        let huge = DiskReserve::new(dir.path(), u64::MAX);
        let low = huge.check().expect_err("no disk has u64::MAX bytes free");
        assert_eq!(low.reserve_bytes, u64::MAX);
        assert!(low.free_bytes <= free.saturating_mul(2), "{low:?}");
        let small = DiskReserve::new(dir.path(), 1);
        assert_eq!(small.check(), Ok(()));
        let off = DiskReserve::new(dir.path(), 0);
        assert_eq!(off.check(), Ok(()));
    }

    #[test]
    fn the_reading_is_cached_for_the_interval() {
        // A reserve over a directory that disappears: the cached reading stays in use until
        // the interval passes, then the failed reading lets writes through.
        let dir = tempfile::tempdir().expect("temp dir");
        let gone = dir.path().join("gone");
        std::fs::create_dir(&gone).expect("mkdir");
        let reserve = DiskReserve::new(&gone, u64::MAX);
        assert!(reserve.check().is_err(), "read while the dir exists");
        std::fs::remove_dir(&gone).expect("rmdir");
        assert!(
            reserve.check().is_err(),
            "within the interval: the cached reading"
        );
        std::thread::sleep(CHECK_INTERVAL + Duration::from_millis(20));
        assert_eq!(
            reserve.check(),
            Ok(()),
            "a failed reading must not hold writes back"
        );
        assert_eq!(reserve.free_bytes(), u64::MAX);
    }
}
