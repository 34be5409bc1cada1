//! The workload: the plan every client task shares, and each task's generator of transfers
//! (ids, amounts, which accounts may pay) with the expectation the read-back is checked against.

use std::collections::HashMap;
use std::sync::Arc;

use raftpay_client::NewTransfer;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Largest amount of one generated transfer, in minor units: small, so no total nears overflow.
pub(super) const TRANSFER_AMOUNT_MAX: u64 = 100;

// ---------------------------------------------------------------------------------------------
// The workload.

/// What every client task shares and never changes.
pub(super) struct Plan {
    pub(super) prefix: String,
    pub(super) treasury: String,
    pub(super) accounts: Vec<String>,
    pub(super) batch: Option<usize>,
    pub(super) mix_percent: u8,
    pub(super) clients: u32,
    pub(super) seed: u64,
}

/// Where a transfer's money goes, so an answer can be booked without parsing ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Route {
    /// `None`: from the treasury.
    pub(super) from: Option<u32>,
    pub(super) to: u32,
    pub(super) amount: u64,
}

/// What the bench itself knows was acknowledged: the expectation the read-back is checked
/// against.
#[derive(Debug, Default)]
pub(super) struct Expected {
    /// Sum of acknowledged treasury → account amounts.
    pub(super) treasury_debits: u128,
    /// Net change of each account (by index) from acknowledged transfers.
    pub(super) balances: HashMap<u32, i128>,
    pub(super) transfers: u64,
}

impl Expected {
    pub(super) fn post(&mut self, route: Route) {
        let amount = i128::from(route.amount);
        match route.from {
            None => self.treasury_debits += u128::from(route.amount),
            Some(from) => *self.balances.entry(from).or_default() -= amount,
        }
        *self.balances.entry(route.to).or_default() += amount;
        self.transfers += 1;
    }

    pub(super) fn absorb(&mut self, other: Expected) {
        self.treasury_debits += other.treasury_debits;
        self.transfers += other.transfers;
        for (account, change) in other.balances {
            *self.balances.entry(account).or_default() += change;
        }
    }
}

/// One client task's generator of transfers. Account `i` belongs to client `i % clients`: only
/// its owner pays from it, and only out of money the owner saw arrive (`spendable`, a lower
/// bound of the balance), so no transfer can be refused for insufficient funds.
pub(super) struct Source {
    pub(super) plan: Arc<Plan>,
    pub(super) client_index: u32,
    pub(super) rng: StdRng,
    pub(super) n_created: u64,
    /// The accounts this client owns, and what it may still spend from each.
    pub(super) owned: Vec<u32>,
    pub(super) spendable: Vec<u64>,
}

impl Source {
    pub(super) fn new(plan: Arc<Plan>, client_index: u32) -> Self {
        let n_accounts = u32::try_from(plan.accounts.len()).unwrap_or(u32::MAX);
        let owned: Vec<u32> = (client_index..n_accounts)
            .step_by(usize::try_from(plan.clients).unwrap_or(1).max(1))
            .collect();
        let spendable = vec![0; owned.len()];
        let rng = StdRng::seed_from_u64(
            plan.seed ^ u64::from(client_index).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        Self {
            plan,
            client_index,
            rng,
            n_created: 0,
            owned,
            spendable,
        }
    }

    pub(super) fn account_random(&mut self) -> u32 {
        let n = u32::try_from(self.plan.accounts.len()).unwrap_or(u32::MAX);
        self.rng.gen_range(0..n)
    }

    /// The slot in `owned` of an account this client owns.
    pub(super) fn slot(&self, account: u32) -> Option<usize> {
        if account % self.plan.clients != self.client_index {
            return None;
        }
        usize::try_from(account / self.plan.clients).ok()
    }

    /// The next transfer, with a fresh id.
    pub(super) fn next(&mut self) -> (NewTransfer, Route) {
        self.n_created += 1;
        let amount = self.rng.gen_range(1..=TRANSFER_AMOUNT_MAX);
        let route = self.route_choose(amount);
        let name = |index: Option<u32>| match index {
            None => self.plan.treasury.clone(),
            Some(index) => self.plan.accounts[index as usize].clone(),
        };
        let transfer = NewTransfer {
            id: format!(
                "{}-{}-{}",
                self.plan.prefix, self.client_index, self.n_created
            ),
            from: name(route.from),
            to: name(Some(route.to)),
            amount,
            memo: None,
        };
        (transfer, route)
    }

    pub(super) fn route_choose(&mut self, amount: u64) -> Route {
        let mix = self.plan.mix_percent > 0;
        if mix && self.rng.gen_range(0..100) < self.plan.mix_percent {
            if let Some(route) = self.route_between_accounts(amount) {
                return route;
            }
        }
        // From the treasury. With a mix, fund this client's own accounts so it can pay later.
        let to = match self.owned.len() {
            n if mix && n > 0 => self.owned[self.rng.gen_range(0..n)],
            _ => self.account_random(),
        };
        Route {
            from: None,
            to,
            amount,
        }
    }

    /// An owned account with at least `amount` known funds pays a random other account; the
    /// amount is reserved until the answer.
    pub(super) fn route_between_accounts(&mut self, amount: u64) -> Option<Route> {
        let n = self.owned.len();
        if n == 0 || self.plan.accounts.len() < 2 {
            return None;
        }
        let offset = self.rng.gen_range(0..n);
        let slot = (0..n)
            .map(|i| (offset + i) % n)
            .find(|&slot| self.spendable[slot] >= amount)?;
        let from = self.owned[slot];
        let mut to = self.account_random();
        if to == from {
            to = (to + 1) % u32::try_from(self.plan.accounts.len()).unwrap_or(u32::MAX);
        }
        self.spendable[slot] -= amount;
        Some(Route {
            from: Some(from),
            to,
            amount,
        })
    }

    /// The transfer was acknowledged: money that arrived in an owned account may be spent.
    pub(super) fn acked(&mut self, route: Route) {
        if let Some(slot) = self.slot(route.to) {
            self.spendable[slot] += route.amount;
        }
    }

    /// The transfer was definitely not posted: its reservation is free again.
    pub(super) fn refused(&mut self, route: Route) {
        if let Some(slot) = route.from.and_then(|from| self.slot(from)) {
            self.spendable[slot] += route.amount;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(accounts: u32, clients: u32, mix_percent: u8) -> Arc<Plan> {
        Arc::new(Plan {
            prefix: "bx".into(),
            treasury: "bx-treasury".into(),
            accounts: (0..accounts).map(|i| format!("bx-a{i}")).collect(),
            batch: None,
            mix_percent,
            clients,
            seed: 7,
        })
    }

    /// Goal: with a mix, an account only ever pays out of money its owner saw arrive, so no
    /// generated transfer can overdraw. Method: simulate acknowledging everything and track the
    /// real balances.
    #[test]
    fn generated_transfers_never_overdraw_an_account() {
        let plan = plan(10, 3, 60);
        let mut sources: Vec<Source> = (0..3).map(|i| Source::new(Arc::clone(&plan), i)).collect();
        let mut balances = [0_i128; 10];
        let mut moves = 0;
        for round in 0..3000 {
            let source = &mut sources[round % 3];
            let (transfer, route) = source.next();
            assert!(transfer.amount >= 1 && transfer.amount <= TRANSFER_AMOUNT_MAX);
            assert_eq!(transfer.to, plan.accounts[route.to as usize]);
            if let Some(from) = route.from {
                moves += 1;
                assert_eq!(transfer.from, plan.accounts[from as usize]);
                assert_ne!(from, route.to);
                balances[from as usize] -= i128::from(route.amount);
                assert!(balances[from as usize] >= 0, "overdrew account {from}");
            } else {
                assert_eq!(transfer.from, "bx-treasury");
            }
            balances[route.to as usize] += i128::from(route.amount);
            source.acked(route);
        }
        assert!(moves > 500, "the mix produced only {moves} moves");
    }

    #[test]
    fn transfer_ids_are_unique_and_within_the_contract() {
        let plan = plan(5, 2, 0);
        let mut first = Source::new(Arc::clone(&plan), 0);
        let mut second = Source::new(Arc::clone(&plan), 1);
        let mut ids = std::collections::BTreeSet::new();
        for _ in 0..100 {
            for source in [&mut first, &mut second] {
                let (transfer, route) = source.next();
                assert!(route.from.is_none(), "no mix: treasury only");
                assert!(transfer.id.len() <= 64);
                assert!(ids.insert(transfer.id));
            }
        }
    }

    #[test]
    fn a_refused_move_frees_its_reservation() {
        let plan = plan(1, 1, 100);
        let mut source = Source::new(plan, 0);
        source.acked(Route {
            from: None,
            to: 0,
            amount: 50,
        });
        // Only one account: nothing to move to, so everything comes from the treasury.
        let (_, route) = source.next();
        assert!(route.from.is_none());
        let plan = self::plan(2, 1, 100);
        let mut source = Source::new(plan, 0);
        source.spendable = vec![100, 0];
        let (_, route) = source.next();
        assert_eq!(route.from, Some(0));
        assert_eq!(source.spendable[0], 100 - route.amount);
        source.refused(route);
        assert_eq!(source.spendable[0], 100);
    }

    #[test]
    fn expected_balances_follow_acknowledged_routes() {
        let mut expected = Expected::default();
        expected.post(Route {
            from: None,
            to: 1,
            amount: 10,
        });
        expected.post(Route {
            from: Some(1),
            to: 2,
            amount: 4,
        });
        let mut other = Expected::default();
        other.post(Route {
            from: None,
            to: 2,
            amount: 1,
        });
        expected.absorb(other);
        assert_eq!(expected.treasury_debits, 11);
        assert_eq!(expected.transfers, 3);
        assert_eq!(expected.balances[&1], 6);
        assert_eq!(expected.balances[&2], 5);
    }
}
