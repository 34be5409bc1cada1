//! The chaos checker: given the recorded history and the final state fetched from every node
//! after healing, decide whether the store kept its promises. Pure: no I/O, no clock, no
//! randomness; the runner gathers everything first and hands it over.
//!
//! What it checks (each failure is a `Violation` of its own kind):
//! - every acknowledged transfer is posted, with the seq, accounts and amount the client saw;
//! - no id is posted twice; a definite rejection is never posted later; nothing is posted that
//!   no client sent;
//! - seqs are unique and gap-free, `1..=seq_last` on every node;
//! - real time: if A was acknowledged before B was invoked, then seq(A) < seq(B);
//! - every linearizable read of an account's balance equals its balance after some prefix of the
//!   seq order that the read's invoke/complete window allows;
//! - per node: conservation per currency, no non-overdraft balance below zero, and balances that
//!   equal a replay of the posted transfers in seq order;
//! - all replicas agree: the same state hash at the same applied index, the same transfers and
//!   the same accounts;
//! - liveness after healing and non-vacuity (enough acknowledged transfers and faults).
//!
//! Must never: read anything but its input, or accept a history it cannot interpret (an answer
//! the contract does not allow is a violation, not something to skip).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::history::{History, Op, OpRequest, Outcome};

/// Rejection codes a transfer may legitimately get in this workload.
const REJECTION_CODES_EXPECTED: [&str; 3] = ["insufficient_funds", "currency_mismatch", "overflow"];
/// Example messages kept per violation kind; the rest are only counted.
const EXAMPLES_PER_KIND_MAX: usize = 20;

/// An account as one node reports it (`GET /v1/accounts/{id}?consistency=local`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAccount {
    pub id: String,
    pub currency: String,
    pub allow_overdraft: bool,
    pub debits: u64,
    pub credits: u64,
    pub balance: i64,
}

/// A posted transfer as one node reports it (from the accounts' histories).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PostedTransfer {
    pub seq: u64,
    pub id: String,
    pub from: String,
    pub to: String,
    pub amount: u64,
}

/// The final state of one node after healing, as the runner fetched it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    pub node: u64,
    pub state_hash_index: u64,
    pub state_hash: String,
    pub seq_last: u64,
    pub accounts: Vec<NodeAccount>,
    pub transfers: Vec<PostedTransfer>,
}

/// Facts the runner measured that are not in the history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observations {
    /// From healing to the first acknowledged write of the liveness probe; `None`: never.
    pub liveness_ms: Option<f64>,
    /// Things that went wrong during the run (a node that exited on its own, no leader in time,
    /// a node whose state could not be fetched).
    pub problems: Vec<String>,
}

/// The thresholds of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bounds {
    pub acked_min: usize,
    pub faults_min: usize,
    pub liveness_max_ms: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    /// An acknowledged transfer is not posted.
    LostAck,
    /// An acknowledged transfer is posted under another seq than the client saw.
    SeqMismatch,
    /// A posted transfer's accounts or amount differ from what its client sent.
    ContentMismatch,
    /// One id posted at more than one seq.
    DoubleApply,
    /// An id that got a definite rejection was posted.
    FlippedRejection,
    /// An answer the contract does not allow here (unknown account, id conflict, ...).
    UnexpectedAnswer,
    /// A posted transfer that no client sent.
    UnsentTransfer,
    /// Two transfers under one seq.
    SeqDuplicate,
    /// A seq missing from `1..=seq_last`, or one beyond it.
    SeqGap,
    /// A transfer invoked after another was acknowledged got a smaller seq.
    RealTimeOrder,
    /// A linearizable read that matches no prefix its window allows.
    StaleRead,
    /// The balances of one currency do not sum to zero.
    Conservation,
    /// A non-overdraft account below zero.
    NegativeBalance,
    /// A node's balances differ from a replay of its posted transfers.
    BalanceMismatch,
    /// Replicas disagree (state hash, applied index, transfers or accounts).
    ReplicaDivergence,
    /// Writes did not resume within the bound after healing.
    Liveness,
    /// Too few acknowledged transfers or faults for the run to prove anything.
    NonVacuity,
    /// Something the runner saw go wrong (a node crashed on its own, no leader in time).
    RunProblem,
}

impl ViolationKind {
    pub fn name(self) -> &'static str {
        match self {
            ViolationKind::LostAck => "lost_ack",
            ViolationKind::SeqMismatch => "seq_mismatch",
            ViolationKind::ContentMismatch => "content_mismatch",
            ViolationKind::DoubleApply => "double_apply",
            ViolationKind::FlippedRejection => "flipped_rejection",
            ViolationKind::UnexpectedAnswer => "unexpected_answer",
            ViolationKind::UnsentTransfer => "unsent_transfer",
            ViolationKind::SeqDuplicate => "seq_duplicate",
            ViolationKind::SeqGap => "seq_gap",
            ViolationKind::RealTimeOrder => "real_time_order",
            ViolationKind::StaleRead => "stale_read",
            ViolationKind::Conservation => "conservation",
            ViolationKind::NegativeBalance => "negative_balance",
            ViolationKind::BalanceMismatch => "balance_mismatch",
            ViolationKind::ReplicaDivergence => "replica_divergence",
            ViolationKind::Liveness => "liveness",
            ViolationKind::NonVacuity => "non_vacuity",
            ViolationKind::RunProblem => "run_problem",
        }
    }
}

/// The checker's findings: how many violations of each kind, and the first few messages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Findings {
    pub counts: BTreeMap<ViolationKind, u64>,
    pub examples: Vec<(ViolationKind, String)>,
}

impl Findings {
    fn add(&mut self, kind: ViolationKind, message: String) {
        let count = self.counts.entry(kind).or_insert(0);
        *count += 1;
        if *count <= EXAMPLES_PER_KIND_MAX as u64 {
            self.examples.push((kind, message));
        }
    }

    /// Total number of violations.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    pub fn count(&self, kind: ViolationKind) -> u64 {
        self.counts.get(&kind).copied().unwrap_or(0)
    }

    pub fn is_clean(&self) -> bool {
        self.counts.is_empty()
    }
}

/// Everything the checker looks at.
#[derive(Debug, Clone, Copy)]
pub struct CheckInput<'a> {
    pub history: &'a History,
    pub nodes: &'a [NodeState],
    pub observed: &'a Observations,
    pub bounds: &'a Bounds,
}

/// Runs every check; an empty `Findings` means the run passed.
pub fn check(input: CheckInput<'_>) -> Findings {
    let mut findings = Findings::default();
    for problem in &input.observed.problems {
        findings.add(ViolationKind::RunProblem, problem.clone());
    }
    vacuity_check(input, &mut findings);
    liveness_check(input, &mut findings);
    // The reference is the replica that applied the most (the lowest id among equals): when a
    // replica fell behind or diverged, the others are compared with the most advanced one.
    let reference = input
        .nodes
        .iter()
        .max_by_key(|node| (node.state_hash_index, std::cmp::Reverse(node.node)));
    let Some(reference) = reference else {
        findings.add(
            ViolationKind::RunProblem,
            "no node's final state could be fetched".to_owned(),
        );
        return findings;
    };
    for node in input.nodes {
        node_check(node, &mut findings);
    }
    for node in input
        .nodes
        .iter()
        .filter(|node| node.node != reference.node)
    {
        replicas_compare(reference, node, &mut findings);
    }
    let posted = posted_by_id(reference);
    history_check(input.history, reference, &posted, &mut findings);
    let timeline = Timeline::new(input.history, &posted);
    real_time_check(&timeline, &mut findings);
    reads_check(input.history, reference, &timeline, &mut findings);
    findings
}

fn vacuity_check(input: CheckInput<'_>, findings: &mut Findings) {
    let acked = input
        .history
        .ops
        .iter()
        .filter(|op| matches!(op.outcome, Outcome::Ok { .. }))
        .count();
    if acked < input.bounds.acked_min {
        findings.add(
            ViolationKind::NonVacuity,
            format!(
                "only {acked} acknowledged transfers (at least {} required)",
                input.bounds.acked_min
            ),
        );
    }
    let faults = input.history.faults.len();
    if faults < input.bounds.faults_min {
        findings.add(
            ViolationKind::NonVacuity,
            format!(
                "only {faults} faults injected (at least {} required)",
                input.bounds.faults_min
            ),
        );
    }
}

fn liveness_check(input: CheckInput<'_>, findings: &mut Findings) {
    match input.observed.liveness_ms {
        None => findings.add(
            ViolationKind::Liveness,
            "no write was acknowledged after healing".to_owned(),
        ),
        Some(ms) if ms > input.bounds.liveness_max_ms => findings.add(
            ViolationKind::Liveness,
            format!(
                "the first write after healing took {ms:.0} ms (bound {:.0} ms)",
                input.bounds.liveness_max_ms
            ),
        ),
        Some(_) => {}
    }
}

/// One node on its own: balances, conservation, seqs, ids, and a replay of its transfers.
fn node_check(node: &NodeState, findings: &mut Findings) {
    let n = node.node;
    let mut sums: BTreeMap<&str, i128> = BTreeMap::new();
    for account in &node.accounts {
        *sums.entry(&account.currency).or_insert(0) += i128::from(account.balance);
        if !account.allow_overdraft && account.balance < 0 {
            findings.add(
                ViolationKind::NegativeBalance,
                format!(
                    "node {n}: account {} has balance {}",
                    account.id, account.balance
                ),
            );
        }
        if i128::from(account.credits) - i128::from(account.debits) != i128::from(account.balance) {
            findings.add(
                ViolationKind::BalanceMismatch,
                format!(
                    "node {n}: account {}: credits {} - debits {} != balance {}",
                    account.id, account.credits, account.debits, account.balance
                ),
            );
        }
    }
    for (currency, sum) in sums {
        if sum != 0 {
            findings.add(
                ViolationKind::Conservation,
                format!("node {n}: balances in {currency} sum to {sum}, not 0"),
            );
        }
    }
    seqs_check(node, findings);
    replay_check(node, findings);
}

fn seqs_check(node: &NodeState, findings: &mut Findings) {
    let n = node.node;
    let mut by_seq: BTreeMap<u64, &PostedTransfer> = BTreeMap::new();
    let mut seqs_by_id: HashMap<&str, Vec<u64>> = HashMap::new();
    for transfer in &node.transfers {
        if let Some(other) = by_seq.insert(transfer.seq, transfer) {
            findings.add(
                ViolationKind::SeqDuplicate,
                format!(
                    "node {n}: seq {} holds both {} and {}",
                    transfer.seq, other.id, transfer.id
                ),
            );
        }
        seqs_by_id
            .entry(&transfer.id)
            .or_default()
            .push(transfer.seq);
    }
    let mut doubled: Vec<(&str, Vec<u64>)> = seqs_by_id
        .into_iter()
        .filter(|(_, seqs)| seqs.len() > 1)
        .collect();
    doubled.sort();
    for (id, seqs) in doubled {
        findings.add(
            ViolationKind::DoubleApply,
            format!("node {n}: transfer {id} posted at seqs {seqs:?}"),
        );
    }
    let mut missing = Vec::new();
    for seq in 1..=node.seq_last {
        if !by_seq.contains_key(&seq) {
            missing.push(seq);
        }
    }
    if !missing.is_empty() {
        let shown: Vec<u64> = missing.iter().copied().take(10).collect();
        findings.add(
            ViolationKind::SeqGap,
            format!(
                "node {n}: {} seqs of 1..={} missing, first {shown:?}",
                missing.len(),
                node.seq_last
            ),
        );
    }
    for seq in by_seq
        .range(node.seq_last.saturating_add(1)..)
        .map(|(seq, _)| seq)
    {
        findings.add(
            ViolationKind::SeqGap,
            format!("node {n}: seq {seq} beyond seq_last {}", node.seq_last),
        );
    }
}

/// Replays the node's transfers in seq order from zero balances and compares with what it
/// reports; a non-overdraft account going below zero during the replay is flagged too.
fn replay_check(node: &NodeState, findings: &mut Findings) {
    let n = node.node;
    let overdraft: HashMap<&str, bool> = node
        .accounts
        .iter()
        .map(|account| (account.id.as_str(), account.allow_overdraft))
        .collect();
    let mut balances: HashMap<&str, i128> = HashMap::new();
    let mut ordered: Vec<&PostedTransfer> = node.transfers.iter().collect();
    ordered.sort();
    for transfer in ordered {
        for account in [&transfer.from, &transfer.to] {
            if !overdraft.contains_key(account.as_str()) {
                findings.add(
                    ViolationKind::BalanceMismatch,
                    format!(
                        "node {n}: transfer {} names account {account}, which the node does not report",
                        transfer.id
                    ),
                );
            }
        }
        let from = balances.entry(&transfer.from).or_insert(0);
        *from -= i128::from(transfer.amount);
        if *from < 0
            && !overdraft
                .get(transfer.from.as_str())
                .copied()
                .unwrap_or(true)
        {
            findings.add(
                ViolationKind::NegativeBalance,
                format!(
                    "node {n}: replaying seq {} ({}) takes {} to {}",
                    transfer.seq, transfer.id, transfer.from, *from
                ),
            );
        }
        *balances.entry(&transfer.to).or_insert(0) += i128::from(transfer.amount);
    }
    for account in &node.accounts {
        let replayed = balances.get(account.id.as_str()).copied().unwrap_or(0);
        if replayed != i128::from(account.balance) {
            findings.add(
                ViolationKind::BalanceMismatch,
                format!(
                    "node {n}: account {} reports {} but its posted transfers give {replayed}",
                    account.id, account.balance
                ),
            );
        }
    }
}

fn replicas_compare(reference: &NodeState, node: &NodeState, findings: &mut Findings) {
    let (r, n) = (reference.node, node.node);
    if reference.state_hash_index != node.state_hash_index {
        findings.add(
            ViolationKind::ReplicaDivergence,
            format!(
                "nodes {r} and {n} did not converge: applied index {} vs {}",
                reference.state_hash_index, node.state_hash_index
            ),
        );
    } else if reference.state_hash != node.state_hash {
        findings.add(
            ViolationKind::ReplicaDivergence,
            format!(
                "nodes {r} and {n} differ at index {}: state hash {} vs {}",
                node.state_hash_index, reference.state_hash, node.state_hash
            ),
        );
    }
    if reference.seq_last != node.seq_last {
        findings.add(
            ViolationKind::ReplicaDivergence,
            format!(
                "nodes {r} and {n}: seq_last {} vs {}",
                reference.seq_last, node.seq_last
            ),
        );
    }
    let mine: BTreeSet<&PostedTransfer> = reference.transfers.iter().collect();
    let theirs: BTreeSet<&PostedTransfer> = node.transfers.iter().collect();
    let only_reference: Vec<&str> = mine
        .difference(&theirs)
        .map(|t| t.id.as_str())
        .take(5)
        .collect();
    let only_node: Vec<&str> = theirs
        .difference(&mine)
        .map(|t| t.id.as_str())
        .take(5)
        .collect();
    if !only_reference.is_empty() || !only_node.is_empty() {
        findings.add(
            ViolationKind::ReplicaDivergence,
            format!(
                "nodes {r} and {n} posted different transfers: only on {r}: {only_reference:?}, only on {n}: {only_node:?}"
            ),
        );
    }
    let mine: BTreeSet<(&str, i64, u64, u64)> = reference
        .accounts
        .iter()
        .map(|a| (a.id.as_str(), a.balance, a.debits, a.credits))
        .collect();
    let theirs: BTreeSet<(&str, i64, u64, u64)> = node
        .accounts
        .iter()
        .map(|a| (a.id.as_str(), a.balance, a.debits, a.credits))
        .collect();
    if mine != theirs {
        let differing: Vec<&str> = mine
            .symmetric_difference(&theirs)
            .map(|a| a.0)
            .take(5)
            .collect();
        findings.add(
            ViolationKind::ReplicaDivergence,
            format!("nodes {r} and {n} report different accounts: {differing:?}"),
        );
    }
}

fn posted_by_id(node: &NodeState) -> HashMap<&str, &PostedTransfer> {
    // On a double apply the lowest seq wins here; the double apply itself is flagged elsewhere.
    let mut posted: HashMap<&str, &PostedTransfer> = HashMap::new();
    for transfer in &node.transfers {
        let entry = posted.entry(transfer.id.as_str()).or_insert(transfer);
        if transfer.seq < entry.seq {
            *entry = transfer;
        }
    }
    posted
}

/// Each operation against the reference node's posted transfers.
fn history_check(
    history: &History,
    reference: &NodeState,
    posted: &HashMap<&str, &PostedTransfer>,
    findings: &mut Findings,
) {
    let r = reference.node;
    let mut sent: BTreeSet<&str> = BTreeSet::new();
    for op in &history.ops {
        match (&op.request, &op.outcome) {
            (OpRequest::Transfer { id, .. }, outcome) => {
                sent.insert(id);
                transfer_op_check(op, outcome, posted.get(id.as_str()).copied(), r, findings);
            }
            (OpRequest::Read { account }, Outcome::Rejected { code }) => findings.add(
                ViolationKind::UnexpectedAnswer,
                format!(
                    "read of {account} at {:.0} ms answered {code}",
                    op.invoke_ms
                ),
            ),
            (OpRequest::Read { account }, Outcome::Ok { .. }) => findings.add(
                ViolationKind::UnexpectedAnswer,
                format!("read of {account} recorded as a transfer outcome"),
            ),
            (OpRequest::Read { .. }, Outcome::Value { .. } | Outcome::Unknown) => {}
        }
    }
    let mut unsent: Vec<&&PostedTransfer> = posted
        .iter()
        .filter(|(id, _)| !sent.contains(**id))
        .map(|(_, transfer)| transfer)
        .collect();
    unsent.sort();
    for transfer in unsent {
        findings.add(
            ViolationKind::UnsentTransfer,
            format!(
                "node {r}: transfer {} (seq {}) was posted but no client sent it",
                transfer.id, transfer.seq
            ),
        );
    }
}

fn transfer_op_check(
    op: &Op,
    outcome: &Outcome,
    posted: Option<&PostedTransfer>,
    r: u64,
    findings: &mut Findings,
) {
    let OpRequest::Transfer {
        id,
        from,
        to,
        amount,
    } = &op.request
    else {
        return;
    };
    if let Some(posted) = posted {
        if (&posted.from, &posted.to, posted.amount) != (from, to, *amount) {
            findings.add(
                ViolationKind::ContentMismatch,
                format!(
                    "node {r}: transfer {id} posted as {} -> {} {} but sent as {from} -> {to} {amount}",
                    posted.from, posted.to, posted.amount
                ),
            );
        }
    }
    match (outcome, posted) {
        (Outcome::Ok { seq }, None) => findings.add(
            ViolationKind::LostAck,
            format!(
                "node {r}: transfer {id} was acknowledged with seq {seq} at {:.0} ms but is not posted",
                op.complete_ms
            ),
        ),
        (Outcome::Ok { seq }, Some(posted)) if posted.seq != *seq => findings.add(
            ViolationKind::SeqMismatch,
            format!(
                "node {r}: transfer {id} was acknowledged with seq {seq} but is posted at seq {}",
                posted.seq
            ),
        ),
        (Outcome::Rejected { code }, posted) => {
            if !REJECTION_CODES_EXPECTED.contains(&code.as_str()) {
                findings.add(
                    ViolationKind::UnexpectedAnswer,
                    format!("transfer {id} was answered {code}"),
                );
            }
            if let Some(posted) = posted {
                findings.add(
                    ViolationKind::FlippedRejection,
                    format!(
                        "node {r}: transfer {id} was rejected ({code}) at {:.0} ms but is posted at seq {}",
                        op.complete_ms, posted.seq
                    ),
                );
            }
        }
        (Outcome::Value { .. }, _) => findings.add(
            ViolationKind::UnexpectedAnswer,
            format!("transfer {id} recorded with a read's outcome"),
        ),
        (Outcome::Ok { .. } | Outcome::Unknown, _) => {}
    }
}

/// Posted transfers placed in real time: when each was invoked and, if acknowledged, when it
/// completed, with the seq the reference node posted it at.
struct Timeline {
    /// `(complete_ms, seq)` of acknowledged, posted transfers, by completion time.
    by_complete: Vec<(f64, u64, usize)>,
    /// Running maximum of `by_complete`'s seqs: `(seq, index into ops)`.
    complete_seq_max: Vec<(u64, usize)>,
    /// `(invoke_ms, seq, op index)` of every posted transfer with a known op, by invoke time.
    by_invoke: Vec<(f64, u64, usize)>,
    /// Minimum seq of `by_invoke[i..]`.
    invoke_seq_min_suffix: Vec<u64>,
}

impl Timeline {
    fn new(history: &History, posted: &HashMap<&str, &PostedTransfer>) -> Timeline {
        let mut by_complete = Vec::new();
        let mut by_invoke = Vec::new();
        for (index, op) in history.ops.iter().enumerate() {
            let Some(posted) = op.transfer_id().and_then(|id| posted.get(id)) else {
                continue;
            };
            by_invoke.push((op.invoke_ms, posted.seq, index));
            if matches!(op.outcome, Outcome::Ok { .. }) {
                by_complete.push((op.complete_ms, posted.seq, index));
            }
        }
        by_complete.sort_by(|a, b| a.0.total_cmp(&b.0));
        by_invoke.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut complete_seq_max = Vec::with_capacity(by_complete.len());
        let mut best = (0, usize::MAX);
        for &(_, seq, index) in &by_complete {
            if seq > best.0 {
                best = (seq, index);
            }
            complete_seq_max.push(best);
        }
        let mut invoke_seq_min_suffix = vec![u64::MAX; by_invoke.len() + 1];
        for i in (0..by_invoke.len()).rev() {
            invoke_seq_min_suffix[i] = invoke_seq_min_suffix[i + 1].min(by_invoke[i].1);
        }
        Timeline {
            by_complete,
            complete_seq_max,
            by_invoke,
            invoke_seq_min_suffix,
        }
    }

    /// The largest seq acknowledged strictly before `ms`, and the op that had it.
    fn acked_before(&self, ms: f64) -> Option<(u64, usize)> {
        let n = self.by_complete.partition_point(|entry| entry.0 < ms);
        n.checked_sub(1).map(|last| self.complete_seq_max[last])
    }

    /// The smallest seq of a transfer invoked strictly after `ms` (`u64::MAX` if none).
    fn invoked_after(&self, ms: f64) -> u64 {
        let n = self.by_invoke.partition_point(|entry| entry.0 <= ms);
        self.invoke_seq_min_suffix[n]
    }
}

fn real_time_check(timeline: &Timeline, findings: &mut Findings) {
    for &(invoke_ms, seq, _) in &timeline.by_invoke {
        if let Some((seq_before, _)) = timeline.acked_before(invoke_ms) {
            if seq_before >= seq {
                findings.add(
                    ViolationKind::RealTimeOrder,
                    format!(
                        "a transfer invoked at {invoke_ms:.1} ms got seq {seq}, but seq {seq_before} was acknowledged before it was invoked"
                    ),
                );
            }
        }
    }
}

/// Each account's balance after each posted transfer that touched it, by seq.
fn balance_steps(reference: &NodeState) -> HashMap<&str, Vec<(u64, i128)>> {
    let mut ordered: Vec<&PostedTransfer> = reference.transfers.iter().collect();
    ordered.sort();
    let mut balances: HashMap<&str, i128> = HashMap::new();
    let mut steps: HashMap<&str, Vec<(u64, i128)>> = HashMap::new();
    for transfer in ordered {
        let from = balances.entry(&transfer.from).or_insert(0);
        *from -= i128::from(transfer.amount);
        let from = *from;
        steps
            .entry(&transfer.from)
            .or_default()
            .push((transfer.seq, from));
        let to = balances.entry(&transfer.to).or_insert(0);
        *to += i128::from(transfer.amount);
        let to = *to;
        steps
            .entry(&transfer.to)
            .or_default()
            .push((transfer.seq, to));
    }
    steps
}

fn reads_check(
    history: &History,
    reference: &NodeState,
    timeline: &Timeline,
    findings: &mut Findings,
) {
    let steps = balance_steps(reference);
    let empty = Vec::new();
    for op in &history.ops {
        let (OpRequest::Read { account }, Outcome::Value { balance }) = (&op.request, &op.outcome)
        else {
            continue;
        };
        let lo = timeline
            .acked_before(op.invoke_ms)
            .map_or(0, |(seq, _)| seq);
        let hi = timeline
            .invoked_after(op.complete_ms)
            .saturating_sub(1)
            .min(reference.seq_last);
        let account_steps = steps.get(account.as_str()).unwrap_or(&empty);
        let start = account_steps.partition_point(|(seq, _)| *seq <= lo);
        let balance_at_lo = start.checked_sub(1).map_or(0, |i| account_steps[i].1);
        let mut allowed = std::iter::once(balance_at_lo).chain(
            account_steps[start..]
                .iter()
                .take_while(|(seq, _)| *seq <= hi)
                .map(|(_, balance)| *balance),
        );
        if lo > hi || !allowed.any(|candidate| candidate == i128::from(*balance)) {
            findings.add(
                ViolationKind::StaleRead,
                format!(
                    "read of {account} on node {} in [{:.1}, {:.1}] ms returned {balance}, which is its balance after no prefix in seq {lo}..={hi}",
                    op.node, op.invoke_ms, op.complete_ms
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests;
