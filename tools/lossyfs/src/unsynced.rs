//! The undo record of one regular file since its last fsync: its durable size and the pre-images
//! (durable bytes) of every range inside that size that was overwritten, truncated away or
//! punched since then.
//!
//! Owns only arithmetic on ranges; it never touches a file. The caller reads the bytes of each gap
//! *before* it lets the write through, so a recorded pre-image is always the durable content.
//! Bytes past the durable size need no pre-image: a cut truncates them away.

use std::collections::BTreeMap;

/// What a cut must do to one file: write every pre-image back, then set the durable size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Unsynced {
    /// The file's size as of its last fsync (or when lossyfs first saw it modified).
    pub(crate) durable_size: u64,
    /// Start offset → durable bytes. Ranges never overlap and all lie below `durable_size`.
    preimages: BTreeMap<u64, Vec<u8>>,
    preimage_bytes: u64,
}

impl Unsynced {
    pub(crate) fn new(durable_size: u64) -> Unsynced {
        Unsynced {
            durable_size,
            preimages: BTreeMap::new(),
            preimage_bytes: 0,
        }
    }

    /// Bytes held in pre-images (memory cost of this record).
    pub(crate) fn preimage_bytes(&self) -> u64 {
        self.preimage_bytes
    }

    /// The parts of `[start, end)` inside the durable size that have no pre-image yet, in order.
    /// Exactly these must be read (and then `insert`ed) before the range is modified.
    pub(crate) fn gaps(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let end = end.min(self.durable_size);
        let mut gaps = Vec::new();
        if start >= end {
            return gaps;
        }
        let mut cursor = start;
        // A range that starts before `start` may still cover its beginning.
        if let Some((&range_start, bytes)) = self.preimages.range(..=cursor).next_back() {
            cursor = cursor.max(range_start + bytes.len() as u64);
        }
        if cursor >= end {
            return gaps;
        }
        for (&range_start, bytes) in self.preimages.range(cursor..end) {
            if range_start > cursor {
                gaps.push((cursor, range_start));
            }
            cursor = cursor.max(range_start + bytes.len() as u64);
        }
        if cursor < end {
            gaps.push((cursor, end));
        }
        gaps
    }

    /// Records the durable bytes of a gap returned by `gaps`.
    ///
    /// # Panics
    /// If the range overlaps a recorded one or reaches past the durable size: the caller must
    /// only insert gaps, or a cut would restore the wrong bytes.
    pub(crate) fn insert(&mut self, start: u64, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        let end = start + bytes.len() as u64;
        assert!(end <= self.durable_size, "pre-image past the durable size");
        if let Some((&before_start, before)) = self.preimages.range(..start).next_back() {
            assert!(
                before_start + before.len() as u64 <= start,
                "pre-image overlaps the one before"
            );
        }
        if let Some((&after_start, _)) = self.preimages.range(start..).next() {
            assert!(after_start >= end, "pre-image overlaps the one after");
        }
        self.preimage_bytes += bytes.len() as u64;
        self.preimages.insert(start, bytes);
    }

    /// The pre-images in offset order, for the cut.
    pub(crate) fn preimages(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.preimages
            .iter()
            .map(|(&start, bytes)| (start, bytes.as_slice()))
    }
}

#[cfg(test)]
mod tests {
    use super::Unsynced;
    use proptest::prelude::*;

    #[test]
    fn gaps_skip_covered_ranges_and_stop_at_the_durable_size() {
        let mut record = Unsynced::new(100);
        assert_eq!(record.gaps(10, 20), vec![(10, 20)]);
        record.insert(10, vec![0; 10]);
        assert_eq!(record.gaps(5, 25), vec![(5, 10), (20, 25)]);
        assert_eq!(record.gaps(12, 18), vec![]);
        assert_eq!(record.gaps(90, 200), vec![(90, 100)]);
        assert_eq!(record.gaps(100, 200), vec![]);
        record.insert(30, vec![0; 5]);
        assert_eq!(record.gaps(0, 100), vec![(0, 10), (20, 30), (35, 100)]);
        assert_eq!(record.preimage_bytes(), 15);
    }

    #[test]
    #[should_panic(expected = "overlaps")]
    fn overlapping_insert_is_refused() {
        let mut record = Unsynced::new(100);
        record.insert(10, vec![0; 10]);
        record.insert(15, vec![0; 10]);
    }

    /// Replays random writes on a byte model: after recording each write's gaps (read from the
    /// current content) and applying the write, the pre-images must rebuild the durable content.
    fn replay(durable: &[u8], writes: &[(u64, Vec<u8>)]) -> (Vec<u8>, Unsynced) {
        let mut current = durable.to_vec();
        let mut record = Unsynced::new(durable.len() as u64);
        for (offset, data) in writes {
            let end = offset + data.len() as u64;
            for (gap_start, gap_end) in record.gaps(*offset, end) {
                let bytes = current[gap_start as usize..gap_end as usize].to_vec();
                record.insert(gap_start, bytes);
            }
            if current.len() < end as usize {
                current.resize(end as usize, 0);
            }
            current[*offset as usize..end as usize].copy_from_slice(data);
        }
        (current, record)
    }

    proptest! {
        #[test]
        fn preimages_restore_the_durable_content(
            durable in proptest::collection::vec(any::<u8>(), 0..64),
            writes in proptest::collection::vec(
                (0u64..80, proptest::collection::vec(any::<u8>(), 1..20)), 0..12),
        ) {
            let (mut current, record) = replay(&durable, &writes);
            for (start, bytes) in record.preimages() {
                current[start as usize..start as usize + bytes.len()].copy_from_slice(bytes);
            }
            current.truncate(record.durable_size as usize);
            prop_assert_eq!(current, durable);
        }
    }
}
