//! The checker against hand-made histories: one good run that must pass, and one bad run per
//! kind of failure that must be flagged (lost ack, double apply, stale read, flipped rejection,
//! negative balance, seq gap, real-time order, replica divergence, and more).

use super::*;
use crate::chaos::history::{AccountSpec, FaultEvent, FaultKind};

/// A transfer op: `window` is (invoke, complete) in ms, `route` is (from, to, amount).
fn transfer(window: (f64, f64), id: &str, route: (&str, &str, u64), outcome: Outcome) -> Op {
    let (invoke_ms, complete_ms) = window;
    let (from, to, amount) = route;
    Op {
        client: 0,
        invoke_ms,
        complete_ms,
        node: 1,
        attempts: 1,
        request: OpRequest::Transfer {
            id: id.into(),
            from: from.into(),
            to: to.into(),
            amount,
        },
        outcome,
    }
}

fn read(invoke_ms: f64, complete_ms: f64, account: &str, balance: i64) -> Op {
    Op {
        client: 9,
        invoke_ms,
        complete_ms,
        node: 2,
        attempts: 1,
        request: OpRequest::Read {
            account: account.into(),
        },
        outcome: Outcome::Value { balance },
    }
}

fn account(id: &str, allow_overdraft: bool, debits: u64, credits: u64) -> NodeAccount {
    NodeAccount {
        id: id.into(),
        currency: "CNY".into(),
        allow_overdraft,
        debits,
        credits,
        balance: i64::try_from(i128::from(credits) - i128::from(debits)).unwrap(),
    }
}

fn posted(seq: u64, id: &str, from: &str, to: &str, amount: u64) -> PostedTransfer {
    PostedTransfer {
        seq,
        id: id.into(),
        from: from.into(),
        to: to.into(),
        amount,
    }
}

/// A good run: bank funds a with 100 (seq 1), a pays b 30 (seq 2), a's 500 to b is rejected,
/// a read of a sees 70, an unknown-outcome bank → b 5 was posted at seq 3, and a read of b
/// concurrent with it sees 35.
struct Case {
    history: History,
    nodes: Vec<NodeState>,
    observed: Observations,
    bounds: Bounds,
}

impl Case {
    fn good() -> Case {
        let ops = vec![
            transfer(
                (0.0, 10.0),
                "t1",
                ("bank", "a", 100),
                Outcome::Ok { seq: 1 },
            ),
            transfer((11.0, 20.0), "t2", ("a", "b", 30), Outcome::Ok { seq: 2 }),
            transfer(
                (21.0, 30.0),
                "t3",
                ("a", "b", 500),
                Outcome::Rejected {
                    code: "insufficient_funds".into(),
                },
            ),
            read(31.0, 40.0, "a", 70),
            transfer((41.0, 60.0), "t4", ("bank", "b", 5), Outcome::Unknown),
            read(45.0, 50.0, "b", 35),
            read(46.0, 49.0, "b", 30),
        ];
        let node = |node: u64| NodeState {
            node,
            state_hash_index: 10,
            state_hash: "abc".into(),
            seq_last: 3,
            accounts: vec![
                account("bank", true, 105, 0),
                account("a", false, 30, 100),
                account("b", false, 0, 35),
            ],
            transfers: vec![
                posted(1, "t1", "bank", "a", 100),
                posted(2, "t2", "a", "b", 30),
                posted(3, "t4", "bank", "b", 5),
            ],
        };
        Case {
            history: History {
                seed: 7,
                accounts: vec![
                    AccountSpec {
                        id: "bank".into(),
                        currency: "CNY".into(),
                        allow_overdraft: true,
                    },
                    AccountSpec {
                        id: "a".into(),
                        currency: "CNY".into(),
                        allow_overdraft: false,
                    },
                    AccountSpec {
                        id: "b".into(),
                        currency: "CNY".into(),
                        allow_overdraft: false,
                    },
                ],
                ops,
                faults: vec![FaultEvent {
                    index: 1,
                    kind: FaultKind::KillLeader,
                    nodes: vec![1],
                    inject_ms: 15.0,
                    heal_ms: 25.0,
                    problems: Vec::new(),
                }],
            },
            nodes: vec![node(1), node(2), node(3)],
            observed: Observations {
                liveness_ms: Some(300.0),
                problems: Vec::new(),
            },
            bounds: Bounds {
                acked_min: 2,
                faults_min: 1,
                liveness_max_ms: 10_000.0,
            },
        }
    }

    fn check(&self) -> Findings {
        check(CheckInput {
            history: &self.history,
            nodes: &self.nodes,
            observed: &self.observed,
            bounds: &self.bounds,
        })
    }

    /// Applies `change` to every node.
    fn nodes_edit(&mut self, change: impl Fn(&mut NodeState)) {
        for node in &mut self.nodes {
            change(node);
        }
    }
}

fn assert_flags(case: &Case, kind: ViolationKind) {
    let findings = case.check();
    assert!(
        findings.count(kind) > 0,
        "{kind:?} not flagged; findings: {findings:#?}"
    );
}

#[test]
fn a_good_history_passes() {
    let findings = Case::good().check();
    assert!(findings.is_clean(), "{findings:#?}");
}

#[test]
fn a_lost_acknowledged_transfer_is_flagged() {
    let mut case = Case::good();
    case.history.ops.push(transfer(
        (61.0, 70.0),
        "t5",
        ("bank", "a", 1),
        Outcome::Ok { seq: 4 },
    ));
    assert_flags(&case, ViolationKind::LostAck);
}

#[test]
fn an_ack_with_another_seq_is_flagged() {
    let mut case = Case::good();
    case.history.ops[1].outcome = Outcome::Ok { seq: 3 };
    assert_flags(&case, ViolationKind::SeqMismatch);
}

#[test]
fn a_double_apply_is_flagged() {
    let mut case = Case::good();
    case.nodes_edit(|node| {
        node.transfers.push(posted(4, "t2", "a", "b", 30));
        node.seq_last = 4;
        node.accounts[1] = account("a", false, 60, 100);
        node.accounts[2] = account("b", false, 0, 65);
    });
    assert_flags(&case, ViolationKind::DoubleApply);
}

#[test]
fn a_stale_read_is_flagged() {
    let mut case = Case::good();
    // t2 (a pays 30) was acknowledged at 20 ms, before this read began at 31 ms.
    case.history.ops[3] = read(31.0, 40.0, "a", 100);
    assert_flags(&case, ViolationKind::StaleRead);
}

#[test]
fn a_read_of_the_future_is_flagged() {
    let mut case = Case::good();
    // t4 was invoked at 41 ms, after this read of b completed at 40 ms: 35 is not yet possible.
    case.history.ops.push(read(32.0, 40.0, "b", 35));
    assert_flags(&case, ViolationKind::StaleRead);
}

#[test]
fn a_flipped_rejection_is_flagged() {
    let mut case = Case::good();
    case.nodes_edit(|node| {
        node.transfers.push(posted(4, "t3", "a", "b", 500));
        node.seq_last = 4;
    });
    assert_flags(&case, ViolationKind::FlippedRejection);
}

#[test]
fn a_negative_balance_is_flagged() {
    let mut case = Case::good();
    case.nodes[1].accounts[1] = account("a", false, 130, 100);
    case.nodes[1].accounts[0] = account("bank", true, 105, 30);
    assert_flags(&case, ViolationKind::NegativeBalance);
}

#[test]
fn money_created_is_flagged() {
    let mut case = Case::good();
    case.nodes[2].accounts[2] = account("b", false, 0, 36);
    assert_flags(&case, ViolationKind::Conservation);
}

#[test]
fn a_seq_gap_is_flagged() {
    let mut case = Case::good();
    case.nodes_edit(|node| node.seq_last = 4);
    assert_flags(&case, ViolationKind::SeqGap);
}

#[test]
fn a_duplicate_seq_is_flagged() {
    let mut case = Case::good();
    case.nodes_edit(|node| node.transfers[2].seq = 2);
    assert_flags(&case, ViolationKind::SeqDuplicate);
}

#[test]
fn a_real_time_order_violation_is_flagged() {
    let mut case = Case::good();
    // t1 was acknowledged (10 ms) before t2 was invoked (11 ms), yet t2 has the smaller seq.
    case.history.ops[0].outcome = Outcome::Ok { seq: 2 };
    case.history.ops[1].outcome = Outcome::Ok { seq: 1 };
    case.nodes_edit(|node| {
        node.transfers[0].seq = 2;
        node.transfers[1].seq = 1;
    });
    assert_flags(&case, ViolationKind::RealTimeOrder);
}

#[test]
fn replica_divergence_is_flagged() {
    let mut case = Case::good();
    case.nodes[2].state_hash = "def".into();
    assert_flags(&case, ViolationKind::ReplicaDivergence);
    let mut case = Case::good();
    case.nodes[1].state_hash_index = 9;
    assert_flags(&case, ViolationKind::ReplicaDivergence);
}

#[test]
fn balances_that_do_not_match_the_posted_transfers_are_flagged() {
    let mut case = Case::good();
    case.nodes_edit(|node| node.transfers[1].amount = 31);
    assert_flags(&case, ViolationKind::BalanceMismatch);
}

#[test]
fn a_transfer_no_client_sent_is_flagged() {
    let mut case = Case::good();
    case.nodes_edit(|node| {
        node.transfers.push(posted(4, "ghost", "bank", "a", 1));
        node.seq_last = 4;
    });
    assert_flags(&case, ViolationKind::UnsentTransfer);
}

#[test]
fn an_unexpected_rejection_code_is_flagged() {
    let mut case = Case::good();
    case.history.ops[2].outcome = Outcome::Rejected {
        code: "account_not_found".into(),
    };
    assert_flags(&case, ViolationKind::UnexpectedAnswer);
}

#[test]
fn no_write_after_healing_is_flagged() {
    let mut case = Case::good();
    case.observed.liveness_ms = None;
    assert_flags(&case, ViolationKind::Liveness);
    case.observed.liveness_ms = Some(20_000.0);
    assert_flags(&case, ViolationKind::Liveness);
}

#[test]
fn a_run_that_did_too_little_fails() {
    let mut case = Case::good();
    case.bounds.acked_min = 3;
    assert_flags(&case, ViolationKind::NonVacuity);
    let mut case = Case::good();
    case.history.faults.clear();
    assert_flags(&case, ViolationKind::NonVacuity);
}

#[test]
fn problems_the_runner_saw_fail_the_run() {
    let mut case = Case::good();
    case.observed
        .problems
        .push("node 2 exited on its own".into());
    assert_flags(&case, ViolationKind::RunProblem);
    let mut case = Case::good();
    case.nodes.clear();
    assert_flags(&case, ViolationKind::RunProblem);
}
