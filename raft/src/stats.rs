//! Counters the node keeps for its metrics: proposals and their sizes (group commit at work), and
//! the outcomes of applied commands. Plain atomics, updated on the hot path without locks; the
//! service renders them. Counts are this node's own (applied counts are equal on every replica).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::ledger::{CommandResult, RejectionCode, TransferResult};

/// Upper bounds of the proposal-size histogram buckets (commands per log entry).
pub const PROPOSAL_SIZE_BUCKETS: [u64; 14] = [
    1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192,
];

/// Rejection codes in a fixed order, for the per-code counters.
pub const REJECTION_CODES: [RejectionCode; 6] = [
    RejectionCode::InsufficientFunds,
    RejectionCode::CurrencyMismatch,
    RejectionCode::Overflow,
    RejectionCode::AccountNotFound,
    RejectionCode::LinkedFailed,
    RejectionCode::InvalidRequest,
];

#[derive(Debug, Default)]
pub struct Stats {
    pub proposals: AtomicU64,
    pub proposal_commands: AtomicU64,
    /// Cumulative-free bucket counts: `[i]` counts proposals of size `<= BUCKETS[i]` and
    /// `> BUCKETS[i-1]`; the last slot counts larger ones.
    pub proposal_size_buckets: [AtomicU64; PROPOSAL_SIZE_BUCKETS.len() + 1],
    pub transfers_posted: AtomicU64,
    pub transfers_rejected: [AtomicU64; REJECTION_CODES.len()],
    pub id_conflicts: AtomicU64,
    pub accounts_created: AtomicU64,
}

impl Stats {
    pub fn proposal_observe(&self, commands: u64) {
        self.proposals.fetch_add(1, Ordering::Relaxed);
        self.proposal_commands
            .fetch_add(commands, Ordering::Relaxed);
        let bucket = PROPOSAL_SIZE_BUCKETS
            .iter()
            .position(|bound| commands <= *bound)
            .unwrap_or(PROPOSAL_SIZE_BUCKETS.len());
        self.proposal_size_buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    fn transfer_observe(&self, result: &TransferResult) {
        match result {
            TransferResult::Posted { created: true, .. } => {
                self.transfers_posted.fetch_add(1, Ordering::Relaxed);
            }
            TransferResult::Posted { created: false, .. } => {}
            TransferResult::Rejected(rejection) => {
                // Replays of a recorded rejection count too: each is an answer given.
                if let Some(slot) = REJECTION_CODES.iter().position(|c| *c == rejection.code) {
                    self.transfers_rejected[slot].fetch_add(1, Ordering::Relaxed);
                }
            }
            TransferResult::IdConflict => {
                self.id_conflicts.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Counts the outcome of one applied command.
    pub fn result_observe(&self, result: &CommandResult) {
        match result {
            CommandResult::Account { created: true, .. } => {
                self.accounts_created.fetch_add(1, Ordering::Relaxed);
            }
            CommandResult::Account { created: false, .. } | CommandResult::AccountInvalid(_) => {}
            CommandResult::AccountIdConflict => {
                self.id_conflicts.fetch_add(1, Ordering::Relaxed);
            }
            CommandResult::Transfer(result) => self.transfer_observe(result),
            CommandResult::Batch(results) => results.iter().for_each(|r| self.transfer_observe(r)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proposal_sizes_land_in_their_bucket() {
        let stats = Stats::default();
        for size in [1, 2, 3, 8190, 9000] {
            stats.proposal_observe(size);
        }
        let counts: Vec<u64> = stats
            .proposal_size_buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts[0], 1); // 1
        assert_eq!(counts[1], 1); // 2
        assert_eq!(counts[2], 1); // 3 -> <= 4
        assert_eq!(counts[13], 1); // 8190 -> <= 8192
        assert_eq!(counts[14], 1); // 9000 -> larger
        assert_eq!(
            stats.proposal_commands.load(Ordering::Relaxed),
            1 + 2 + 3 + 8190 + 9000
        );
    }
}
