//! Ledger rules, one by one, then random command sequences that must keep every invariant.

use proptest::prelude::*;

use super::*;

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
        memo: None,
    }
}

fn transfer(id: &str, from: &str, to: &str, amount: u64) -> Command {
    Command::Transfer(spec(id, from, to, amount))
}

fn one(ledger: &mut MemLedger, command: Command) -> CommandResult {
    ledger.apply(&[command]).remove(0)
}

fn rejection_code(result: &CommandResult) -> Option<RejectionCode> {
    match result {
        CommandResult::Transfer(TransferResult::Rejected(rejection)) => Some(rejection.code),
        _ => None,
    }
}

/// bank (overdraft, CNY), alice and bob (CNY), carol (USD).
fn ledger_with_accounts() -> MemLedger {
    let mut ledger = MemLedger::default();
    ledger.apply(&[
        account("bank", "CNY", true),
        account("alice", "CNY", false),
        account("bob", "CNY", false),
        account("carol", "USD", false),
    ]);
    ledger
}

fn result_is_posted(result: &CommandResult) -> bool {
    matches!(
        result,
        CommandResult::Transfer(TransferResult::Posted { .. })
    )
}

fn balance(ledger: &MemLedger, id: &str) -> i64 {
    ledger.accounts[id].balance()
}

#[test]
fn a_transfer_moves_money_and_takes_the_next_seq() {
    let mut ledger = ledger_with_accounts();
    let result = one(&mut ledger, transfer("t1", "bank", "alice", 250));
    let CommandResult::Transfer(TransferResult::Posted { transfer, created }) = result else {
        panic!("not posted: {result:?}");
    };
    assert!(created);
    assert_eq!(transfer.seq, 1);
    assert_eq!(transfer.currency, "CNY");
    assert_eq!(balance(&ledger, "bank"), -250);
    assert_eq!(balance(&ledger, "alice"), 250);
    assert_eq!(ledger.accounts["alice"].credits, 250);
    assert_eq!(ledger.accounts["bank"].debits, 250);
    let CommandResult::Transfer(TransferResult::Posted { transfer, .. }) =
        one(&mut ledger, transfer_cmd("t2", "alice", "bob", 100))
    else {
        panic!("second transfer not posted");
    };
    assert_eq!(transfer.seq, 2);
    check_accounts(ledger.accounts.values()).unwrap();
}

fn transfer_cmd(id: &str, from: &str, to: &str, amount: u64) -> Command {
    transfer(id, from, to, amount)
}

#[test]
fn a_resent_transfer_is_posted_once() {
    let mut ledger = ledger_with_accounts();
    let first = one(&mut ledger, transfer("t1", "bank", "alice", 250));
    let again = one(&mut ledger, transfer("t1", "bank", "alice", 250));
    let (
        CommandResult::Transfer(TransferResult::Posted {
            transfer: a,
            created: true,
        }),
        CommandResult::Transfer(TransferResult::Posted {
            transfer: b,
            created: false,
        }),
    ) = (&first, &again)
    else {
        panic!("unexpected {first:?} / {again:?}");
    };
    assert_eq!(a, b);
    assert_eq!(balance(&ledger, "alice"), 250);
    assert_eq!(ledger.seq_last, 1);
}

#[test]
fn the_same_id_with_other_content_conflicts_and_changes_nothing() {
    let mut ledger = ledger_with_accounts();
    one(&mut ledger, transfer("t1", "bank", "alice", 250));
    let before = ledger.clone();
    let result = one(&mut ledger, transfer("t1", "bank", "alice", 251));
    assert_eq!(result, CommandResult::Transfer(TransferResult::IdConflict));
    assert_eq!(ledger, before);
}

#[test]
fn rejections_are_decided_once_even_after_funding() {
    let mut ledger = ledger_with_accounts();
    let result = one(&mut ledger, transfer("t1", "alice", "bob", 10));
    assert_eq!(
        rejection_code(&result),
        Some(RejectionCode::InsufficientFunds)
    );
    one(&mut ledger, transfer("fund", "bank", "alice", 100));
    let again = one(&mut ledger, transfer("t1", "alice", "bob", 10));
    assert_eq!(
        again, result,
        "a re-sent rejected id must get the same rejection"
    );
    assert_eq!(balance(&ledger, "bob"), 0);
}

#[test]
fn every_rejection_code() {
    let mut ledger = ledger_with_accounts();
    let cases = [
        (
            transfer("r1", "alice", "bob", 1),
            RejectionCode::InsufficientFunds,
        ),
        (
            transfer("r2", "bank", "carol", 1),
            RejectionCode::CurrencyMismatch,
        ),
        (
            transfer("r3", "nobody", "bob", 1),
            RejectionCode::AccountNotFound,
        ),
        (
            transfer("r4", "bank", "nobody", 1),
            RejectionCode::AccountNotFound,
        ),
        (
            transfer("r5", "bank", "bank", 1),
            RejectionCode::InvalidRequest,
        ),
    ];
    for (command, code) in cases {
        let before = ledger.accounts.clone();
        let result = one(&mut ledger, command);
        assert_eq!(rejection_code(&result), Some(code), "{result:?}");
        assert_eq!(ledger.accounts, before);
    }
    assert_eq!(ledger.seq_last, 0, "rejections take no seq");
}

#[test]
fn totals_that_would_overflow_are_rejected() {
    let mut ledger = ledger_with_accounts();
    one(&mut ledger, transfer("big", "bank", "alice", AMOUNT_MAX));
    let result = one(&mut ledger, transfer("more", "bank", "bob", 1));
    assert_eq!(rejection_code(&result), Some(RejectionCode::Overflow));
    // alice's credits are at the cap: nothing more can arrive there.
    one(&mut ledger, transfer("fund-bob", "bank", "carol", 1));
    let result = one(&mut ledger, transfer("in", "alice", "bob", 1));
    assert!(result_is_posted(&result), "{result:?}");
    let result = one(&mut ledger, transfer("back", "bob", "alice", 1));
    assert_eq!(rejection_code(&result), Some(RejectionCode::Overflow));
    check_accounts(ledger.accounts.values()).unwrap();
}

#[test]
fn accounts_are_idempotent_and_conflict_on_other_fields() {
    let mut ledger = MemLedger::default();
    let first = one(&mut ledger, account("a", "CNY", false));
    assert!(matches!(
        first,
        CommandResult::Account { created: true, .. }
    ));
    let again = one(&mut ledger, account("a", "CNY", false));
    assert!(matches!(
        again,
        CommandResult::Account { created: false, .. }
    ));
    assert_eq!(
        one(&mut ledger, account("a", "USD", false)),
        CommandResult::AccountIdConflict
    );
    assert_eq!(
        one(&mut ledger, account("a", "CNY", true)),
        CommandResult::AccountIdConflict
    );
    assert_eq!(ledger.accounts.len(), 1);
}

#[test]
fn a_non_atomic_batch_decides_each_item() {
    let mut ledger = ledger_with_accounts();
    let results = ledger.apply(&[Command::Batch {
        transfers: vec![
            spec("b1", "bank", "alice", 5),
            spec("b2", "alice", "bob", 50),
            spec("b3", "alice", "bob", 5),
        ],
        atomic: false,
    }]);
    let CommandResult::Batch(items) = &results[0] else {
        panic!()
    };
    assert!(items[0].is_posted());
    assert!(
        matches!(&items[1], TransferResult::Rejected(r) if r.code == RejectionCode::InsufficientFunds)
    );
    assert!(items[2].is_posted());
    assert_eq!(balance(&ledger, "bob"), 5);
    assert_eq!(ledger.seq_last, 2, "no gap for the rejected item");
}

#[test]
fn an_atomic_batch_posts_all_or_nothing_and_records_linked_failures() {
    let mut ledger = ledger_with_accounts();
    let batch = Command::Batch {
        transfers: vec![
            spec("a1", "bank", "alice", 5),
            spec("a2", "alice", "bob", 50),
            spec("a3", "bank", "bob", 5),
        ],
        atomic: true,
    };
    let before = ledger.accounts.clone();
    let results = ledger.apply(std::slice::from_ref(&batch));
    let CommandResult::Batch(items) = &results[0] else {
        panic!()
    };
    let codes: Vec<_> = items
        .iter()
        .map(|r| match r {
            TransferResult::Rejected(r) => Some(r.code),
            _ => None,
        })
        .collect();
    assert_eq!(
        codes,
        [
            Some(RejectionCode::LinkedFailed),
            Some(RejectionCode::InsufficientFunds),
            Some(RejectionCode::LinkedFailed)
        ]
    );
    assert_eq!(ledger.accounts, before);
    assert_eq!(ledger.seq_last, 0);
    // Re-sending returns the same results; the ids stay decided.
    assert_eq!(ledger.apply(&[batch]), results);
    let again = one(&mut ledger, transfer("a1", "bank", "alice", 5));
    assert_eq!(rejection_code(&again), Some(RejectionCode::LinkedFailed));

    let ok = ledger.apply(&[Command::Batch {
        transfers: vec![
            spec("c1", "bank", "alice", 5),
            spec("c2", "alice", "bob", 5),
        ],
        atomic: true,
    }]);
    let CommandResult::Batch(items) = &ok[0] else {
        panic!()
    };
    assert!(items.iter().all(TransferResult::is_posted));
    assert_eq!(balance(&ledger, "bob"), 5);
    assert_eq!(ledger.seq_last, 2);
}

#[test]
fn an_atomic_batch_keeps_earlier_outcomes() {
    let mut ledger = ledger_with_accounts();
    one(&mut ledger, transfer("x1", "bank", "alice", 5));
    let results = ledger.apply(&[Command::Batch {
        transfers: vec![spec("x1", "bank", "alice", 5), spec("x2", "bank", "bob", 7)],
        atomic: true,
    }]);
    let CommandResult::Batch(items) = &results[0] else {
        panic!()
    };
    assert!(matches!(
        items[0],
        TransferResult::Posted { created: false, .. }
    ));
    assert!(matches!(
        items[1],
        TransferResult::Posted { created: true, .. }
    ));
    assert_eq!(balance(&ledger, "alice"), 5);
}

// ---- property tests ------------------------------------------------------------------------

const ACCOUNTS: [&str; 5] = ["bank", "a", "b", "c", "usd"];

fn arb_command() -> impl Strategy<Value = Command> {
    let id = 0..12u8;
    let account_id = 0..ACCOUNTS.len();
    let amount = prop_oneof![1..200u64, Just(AMOUNT_MAX), Just(AMOUNT_MAX / 2)];
    let arb_spec =
        (id, account_id.clone(), account_id, amount).prop_map(|(id, from, to, amount)| {
            spec(&format!("t{id}"), ACCOUNTS[from], ACCOUNTS[to], amount)
        });
    prop_oneof![
        4 => arb_spec.clone().prop_map(Command::Transfer),
        1 => (prop::collection::vec(arb_spec, 1..6), any::<bool>())
            .prop_map(|(transfers, atomic)| Command::Batch { transfers, atomic }),
        1 => (0..ACCOUNTS.len(), any::<bool>()).prop_map(|(i, overdraft)| {
            let currency = if ACCOUNTS[i] == "usd" { "USD" } else { "CNY" };
            account(ACCOUNTS[i], currency, overdraft)
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_commands_keep_every_invariant(commands in prop::collection::vec(arb_command(), 1..60)) {
        let mut ledger = MemLedger::default();
        ledger.apply(&[account("bank", "CNY", true)]);
        let mut seq_seen = 0;
        for command in &commands {
            let before = ledger.clone();
            let result = one(&mut ledger, command.clone());
            check_accounts(ledger.accounts.values()).map_err(|v| TestCaseError::fail(format!("{v:?}")))?;
            check_totals(ledger.accounts.values(), &ledger.totals).map_err(|v| TestCaseError::fail(format!("{v:?}")))?;
            for (currency, totals) in &ledger.totals {
                prop_assert_eq!(totals.debits, totals.credits, "totals of {}", currency);
            }
            // A decided id never changes.
            for (id, record) in &before.transfers {
                prop_assert_eq!(&ledger.transfers[id], record);
            }
            // Seqs rise one by one, and every posted seq is in the history of both accounts.
            prop_assert!(ledger.seq_last >= seq_seen);
            let posted = ledger.seq_last - before.seq_last;
            prop_assert_eq!(ledger.history.len() - before.history.len(), 2 * usize::try_from(posted).unwrap());
            seq_seen = ledger.seq_last;
            // Re-applying the same command is a no-op with the same outcome.
            let replay_before = ledger.clone();
            let replay = one(&mut ledger, command.clone());
            prop_assert_eq!(&ledger, &replay_before);
            prop_assert_eq!(same_outcome(&result, &replay), true, "{:?} vs {:?}", result, replay);
        }
        let posted: Vec<u64> = ledger.transfers.values().filter_map(|r| match r.outcome {
            TransferOutcome::Posted { seq, .. } => Some(seq),
            TransferOutcome::Rejected(_) => None,
        }).collect();
        let mut sorted = posted.clone();
        sorted.sort_unstable();
        prop_assert_eq!(sorted, (1..=ledger.seq_last).collect::<Vec<_>>(), "seqs are gap-free and unique");
    }
}

/// Equal up to the `created` flag, which a replay turns false.
fn same_outcome(first: &CommandResult, replay: &CommandResult) -> bool {
    fn normalize(result: &TransferResult) -> TransferResult {
        match result {
            TransferResult::Posted { transfer, .. } => TransferResult::Posted {
                transfer: transfer.clone(),
                created: false,
            },
            other => other.clone(),
        }
    }
    match (first, replay) {
        (
            CommandResult::Account { account: a, .. },
            CommandResult::Account {
                account: b,
                created: false,
            },
        ) => a.id == b.id,
        (CommandResult::Transfer(a), CommandResult::Transfer(b)) => {
            // A first-time id conflict stays a conflict; a decision replays as itself.
            normalize(a) == normalize(b)
        }
        (CommandResult::Batch(a), CommandResult::Batch(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| normalize(x) == normalize(y))
        }
        (CommandResult::AccountIdConflict, CommandResult::AccountIdConflict) => true,
        _ => false,
    }
}

fn raw_account(id: &str, allow_overdraft: bool, debits: u64, credits: u64) -> Account {
    Account {
        id: id.into(),
        currency: "CNY".into(),
        allow_overdraft,
        debits,
        credits,
    }
}

#[test]
fn check_accounts_reports_totals_out_of_range_instead_of_panicking() {
    // Goal: accounts no ledger could make (a crafted snapshot) are violations, never a panic or
    // an overflow. Method: one account credited u64::MAX against one debited u64::MAX (their
    // balances do not fit an i64), and one just over AMOUNT_MAX.
    let crafted = [
        raw_account("rich", false, 0, u64::MAX),
        raw_account("poor", true, u64::MAX, 0),
    ];
    let violations = check_accounts(&crafted).expect_err("crafted totals must be refused");
    assert!(
        violations
            .iter()
            .any(|v| matches!(v, InvariantViolation::OutOfRange { id, .. } if id == "rich")),
        "{violations:?}"
    );
    assert!(
        violations
            .iter()
            .any(|v| matches!(v, InvariantViolation::SumOverflow { .. })),
        "{violations:?}"
    );
    let just_over = [
        raw_account("a", true, AMOUNT_MAX + 1, 0),
        raw_account("b", false, 0, AMOUNT_MAX),
    ];
    assert!(check_accounts(&just_over).is_err());
    // At the maximum itself the state is sound.
    let at_max = [
        raw_account("a", true, AMOUNT_MAX, 0),
        raw_account("b", false, 0, AMOUNT_MAX),
    ];
    assert_eq!(check_accounts(&at_max), Ok(()));
}

#[test]
fn check_totals_compares_the_stored_totals_with_the_accounts() {
    // Goal: the stored currency totals must be what the accounts add up to. Method: a real
    // ledger after transfers passes; the same with one stored total changed, a currency stored
    // but without accounts, and crafted totals at the top of the range do not.
    let mut ledger = MemLedger::default();
    ledger.apply(&[
        account("bank", "CNY", true),
        account("alice", "CNY", false),
        account("ed", "EUR", false),
        transfer("t1", "bank", "alice", 250),
        transfer("t2", "alice", "bank", 50),
    ]);
    assert_eq!(
        check_totals(ledger.accounts.values(), &ledger.totals),
        Ok(())
    );

    let mut wrong = ledger.totals.clone();
    wrong.get_mut("CNY").expect("CNY totals").credits += 1;
    let violations = check_totals(ledger.accounts.values(), &wrong).expect_err("changed total");
    assert!(
        matches!(&violations[..], [InvariantViolation::TotalsMismatch { currency, .. }] if currency == "CNY"),
        "{violations:?}"
    );

    let mut extra = ledger.totals.clone();
    extra.insert(
        "USD".into(),
        CurrencyTotals {
            debits: 5,
            credits: 5,
        },
    );
    assert!(check_totals(ledger.accounts.values(), &extra).is_err());

    let crafted = [
        raw_account("a", true, u64::MAX, u64::MAX),
        raw_account("b", true, u64::MAX, u64::MAX),
    ];
    let stored = BTreeMap::from([(
        "CNY".to_string(),
        CurrencyTotals {
            debits: u128::MAX,
            credits: u128::MAX,
        },
    )]);
    assert!(check_totals(&crafted, &stored).is_err());
}
