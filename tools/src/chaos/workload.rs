//! The chaos workload: concurrent clients that send transfers (unique ids, random accounts and
//! amounts, so some are rejected for insufficient funds or a currency mismatch) and
//! linearizable balance reads to random nodes, and record every operation in the history.
//!
//! The retry rule is the client library's: an attempt that times out, fails to connect or gets a
//! 503 (any 5xx) says nothing about the outcome, so the client re-sends THE SAME request, same
//! id, to another node, until a definite answer (2xx/4xx) or the operation's deadline; then the
//! outcome is recorded as unknown.
//!
//! Must never: reuse a transfer id, change a request between retries, or record an answer it did
//! not get (an undecodable 2xx is `Unknown`, not `Ok`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::cluster::Api;
use super::history::{AccountSpec, Op, OpRequest, Outcome, PROBE_CLIENT};
use raftpay_client::{
    ApiErrorBody, ApiRequest, BatchItem, BatchResult, Consistency, NewAccount, NewTransfer,
    Transfer,
};

/// Timeout of one attempt against one node. Healthy answers take milliseconds; a paused or
/// cut-off node never answers, and this bounds how long a client waits on it before it re-sends
/// the same request to another node (so it shows in the unavailability after such faults).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one operation may retry before its outcome is recorded as unknown.
pub const OP_DEADLINE: Duration = Duration::from_secs(20);
/// Currencies of the workload; each has a treasury (overdraft allowed) and its own accounts.
pub const CURRENCIES: [&str; 2] = ["CNY", "USD"];

/// The shared clock and the recorded operations.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Op>>,
}

impl Recorder {
    pub fn new(start: Instant) -> Recorder {
        Recorder {
            start,
            ops: Mutex::new(Vec::new()),
        }
    }

    /// Milliseconds since the run started.
    pub fn now_ms(&self) -> f64 {
        self.ms_at(Instant::now())
    }

    pub fn ms_at(&self, instant: Instant) -> f64 {
        instant.saturating_duration_since(self.start).as_secs_f64() * 1000.0
    }

    pub fn push(&self, op: Op) {
        self.ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(op);
    }

    /// A copy of the operations recorded so far.
    pub fn ops(&self) -> Vec<Op> {
        self.ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `(id, seq)` of the last `n` transfers acknowledged before `before_ms`.
    pub fn acked_before(&self, before_ms: f64, n: usize) -> Vec<(String, u64)> {
        let ops = self.ops.lock().unwrap_or_else(PoisonError::into_inner);
        let mut acked: Vec<(f64, String, u64)> = ops
            .iter()
            .filter(|op| op.complete_ms < before_ms)
            .filter_map(|op| match (&op.request, &op.outcome) {
                (OpRequest::Transfer { id, .. }, Outcome::Ok { seq }) => {
                    Some((op.complete_ms, id.clone(), *seq))
                }
                _ => None,
            })
            .collect();
        acked.sort_by(|a, b| a.0.total_cmp(&b.0));
        acked
            .into_iter()
            .rev()
            .take(n)
            .map(|(_, id, seq)| (id, seq))
            .collect()
    }
}

/// The accounts of a run: per currency a treasury `treasury-<CUR>` and `per_currency`
/// non-overdraft accounts `acct-<CUR>-<i>`.
pub fn accounts(per_currency: usize) -> Vec<AccountSpec> {
    let mut accounts = Vec::new();
    for currency in CURRENCIES {
        accounts.push(AccountSpec {
            id: format!("treasury-{currency}"),
            currency: currency.to_owned(),
            allow_overdraft: true,
        });
        for i in 0..per_currency {
            accounts.push(AccountSpec {
                id: format!("acct-{currency}-{i}"),
                currency: currency.to_owned(),
                allow_overdraft: false,
            });
        }
    }
    accounts
}

/// Creates every account (retrying each until a definite answer).
///
/// # Errors
/// When an account is not created (201) or found identical (200) before `OP_DEADLINE`.
pub async fn accounts_create(api: &Api, accounts: &[AccountSpec]) -> anyhow::Result<()> {
    for (i, account) in accounts.iter().enumerate() {
        let request = ApiRequest::create_account(&NewAccount {
            id: account.id.clone(),
            currency: account.currency.clone(),
            allow_overdraft: account.allow_overdraft,
        });
        let answer = api
            .until_definite(&request, i, ATTEMPT_TIMEOUT, Instant::now() + OP_DEADLINE)
            .await
            .map_err(|none| anyhow::anyhow!("create account {}: {}", account.id, none.last))?;
        if !answer.reply.is_success() {
            anyhow::bail!(
                "create account {}: HTTP {} {}",
                account.id,
                answer.reply.status,
                answer.reply.body
            );
        }
    }
    tracing::info!(n_accounts = accounts.len(), "accounts created");
    Ok(())
}

/// The shape of the load.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    pub clients: u32,
    pub seed: u64,
    pub accounts: Vec<AccountSpec>,
    /// Fraction of operations that are reads.
    pub read_fraction: f64,
    /// Fraction of the other operations that are batches (`POST /v1/transfers/batch`).
    pub batch_fraction: f64,
    /// Most transfers in one batch (half the batches are small, 2–64; half large, up to this).
    pub batch_max: usize,
}

/// Timeout of one attempt of a batch: thousands of transfers take longer than one.
pub const BATCH_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one batch may retry before its outcome is recorded as unknown.
pub const BATCH_OP_DEADLINE: Duration = Duration::from_secs(40);
/// The API's limit of transfers per batch.
pub const BATCH_ITEMS_MAX: usize = 8190;

/// What a client does next.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Choice {
    One(OpRequest),
    /// Transfers sent together in one non-atomic batch.
    Batch(Vec<OpRequest>),
}

/// Picks the next operation of a client.
struct OpChooser {
    rng: StdRng,
    client: u32,
    n: u64,
    treasuries: Vec<(String, String)>,
    /// Non-overdraft accounts per currency, in `CURRENCIES` order.
    by_currency: Vec<Vec<String>>,
    everyone: Vec<String>,
    read_fraction: f64,
    batch_fraction: f64,
    batch_max: usize,
}

impl OpChooser {
    fn new(config: &WorkloadConfig, client: u32) -> OpChooser {
        let mut treasuries = Vec::new();
        let mut by_currency = Vec::new();
        for currency in CURRENCIES {
            let of_currency = config.accounts.iter().filter(|a| a.currency == currency);
            for account in of_currency.clone().filter(|a| a.allow_overdraft) {
                treasuries.push((currency.to_owned(), account.id.clone()));
            }
            by_currency.push(
                of_currency
                    .filter(|a| !a.allow_overdraft)
                    .map(|a| a.id.clone())
                    .collect(),
            );
        }
        OpChooser {
            rng: StdRng::seed_from_u64(
                config.seed ^ (u64::from(client) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ),
            client,
            n: 0,
            treasuries,
            by_currency,
            everyone: config.accounts.iter().map(|a| a.id.clone()).collect(),
            read_fraction: config.read_fraction,
            batch_fraction: config.batch_fraction.clamp(0.0, 1.0),
            batch_max: config.batch_max.clamp(2, BATCH_ITEMS_MAX),
        }
    }

    /// A read, a transfer, or (with a batch fraction) a batch of transfers.
    fn choose(&mut self) -> Option<Choice> {
        // No extra draw without batches: a seed gives the same operations as before they existed.
        if self.batch_fraction > 0.0 && self.rng.gen_bool(self.batch_fraction) {
            let size = if self.rng.gen_bool(0.5) {
                self.rng.gen_range(2..=64.min(self.batch_max))
            } else {
                self.rng
                    .gen_range((self.batch_max / 8).max(2)..=self.batch_max)
            };
            let mut items = Vec::with_capacity(size);
            for _ in 0..size {
                items.push(self.transfer()?);
            }
            return Some(Choice::Batch(items));
        }
        self.next().map(Choice::One)
    }

    fn pick<'a>(rng: &mut StdRng, items: &'a [String]) -> Option<&'a String> {
        if items.is_empty() {
            return None;
        }
        items.get(rng.gen_range(0..items.len()))
    }

    fn next(&mut self) -> Option<OpRequest> {
        if self.rng.gen_bool(self.read_fraction) {
            let account = Self::pick(&mut self.rng, &self.everyone)?.clone();
            return Some(OpRequest::Read { account });
        }
        self.transfer()
    }

    /// A transfer with a new id.
    fn transfer(&mut self) -> Option<OpRequest> {
        self.n += 1;
        let id = format!("t-{}-{}", self.client, self.n);
        let currency = self.rng.gen_range(0..self.by_currency.len().max(1));
        let accounts = self.by_currency.get(currency)?;
        let roll: f64 = self.rng.gen();
        let (from, to, amount) = if roll < 0.30 {
            // Funding: money enters through the treasury.
            let (_, treasury) = self.treasuries.get(currency)?;
            let to = Self::pick(&mut self.rng, accounts)?;
            (treasury.clone(), to.clone(), self.rng.gen_range(1..=1000))
        } else if roll < 0.32 {
            // Across currencies: always rejected with currency_mismatch.
            let other = self
                .by_currency
                .get((currency + 1) % self.by_currency.len())?;
            let from = Self::pick(&mut self.rng, accounts)?;
            let to = Self::pick(&mut self.rng, other)?;
            (from.clone(), to.clone(), self.rng.gen_range(1..=100))
        } else {
            // Between accounts: some exceed the balance and get insufficient_funds.
            let from = Self::pick(&mut self.rng, accounts)?.clone();
            let mut to = Self::pick(&mut self.rng, accounts)?.clone();
            if to == from {
                let others: Vec<String> =
                    accounts.iter().filter(|a| **a != from).cloned().collect();
                to = Self::pick(&mut self.rng, &others)?.clone();
            }
            (from, to, self.rng.gen_range(1..=500))
        };
        Some(OpRequest::Transfer {
            id,
            from,
            to,
            amount,
        })
    }
}

/// Sends one operation with the retry rule and turns the answer into an `Op`.
pub async fn op_perform(
    api: &Api,
    recorder: &Recorder,
    client: u32,
    request: OpRequest,
    start_node: usize,
) -> Op {
    let api_request = match &request {
        OpRequest::Transfer {
            id,
            from,
            to,
            amount,
        } => ApiRequest::transfer(&NewTransfer {
            id: id.clone(),
            from: from.clone(),
            to: to.clone(),
            amount: *amount,
            memo: None,
        }),
        OpRequest::Read { account } => ApiRequest::get_account(account, Consistency::Linearizable),
    };
    let invoke_ms = recorder.now_ms();
    let result = api
        .until_definite(
            &api_request,
            start_node,
            ATTEMPT_TIMEOUT,
            Instant::now() + OP_DEADLINE,
        )
        .await;
    let complete_ms = recorder.now_ms();
    let (node, attempts, outcome) = match result {
        Ok(answer) => (
            answer.node,
            answer.attempts,
            outcome_of(&request, &answer.reply),
        ),
        Err(none) => {
            tracing::debug!(client, last = %none.last, "operation outcome unknown");
            (none.node, none.attempts, Outcome::Unknown)
        }
    };
    Op {
        client,
        invoke_ms,
        complete_ms,
        node,
        attempts,
        request,
        outcome,
    }
}

fn outcome_of(request: &OpRequest, reply: &raftpay_client::Reply) -> Outcome {
    if !reply.is_success() {
        let code = match serde_json::from_str::<serde_json::Value>(&reply.body) {
            Ok(body) => serde_json::from_value::<ApiErrorBody>(body["error"].clone())
                .map_or_else(|_| format!("http_{}", reply.status), |error| error.code),
            Err(_) => format!("http_{}", reply.status),
        };
        return Outcome::Rejected { code };
    }
    match request {
        OpRequest::Transfer { .. } => match serde_json::from_str::<Transfer>(&reply.body) {
            Ok(transfer) => Outcome::Ok { seq: transfer.seq },
            Err(error) => {
                tracing::warn!(%error, "undecodable transfer answer; outcome recorded as unknown");
                Outcome::Unknown
            }
        },
        OpRequest::Read { .. } => {
            match serde_json::from_str::<raftpay_client::Account>(&reply.body) {
                Ok(account) => Outcome::Value {
                    balance: account.balance,
                },
                Err(error) => {
                    tracing::warn!(%error, "undecodable account answer; read recorded as unknown");
                    Outcome::Unknown
                }
            }
        }
    }
}

/// Sends one batch with the retry rule and turns the answer into one `Op` per transfer (all with
/// the batch's invoke and complete instants).
pub async fn batch_perform(
    api: &Api,
    recorder: &Recorder,
    client: u32,
    items: Vec<OpRequest>,
    start_node: usize,
) -> Vec<Op> {
    let transfers: Vec<NewTransfer> = items
        .iter()
        .filter_map(|item| match item {
            OpRequest::Transfer {
                id,
                from,
                to,
                amount,
            } => Some(NewTransfer {
                id: id.clone(),
                from: from.clone(),
                to: to.clone(),
                amount: *amount,
                memo: None,
            }),
            OpRequest::Read { .. } => None,
        })
        .collect();
    let request = ApiRequest::batch(&transfers, false);
    let invoke_ms = recorder.now_ms();
    let result = api
        .until_definite(
            &request,
            start_node,
            BATCH_ATTEMPT_TIMEOUT,
            Instant::now() + BATCH_OP_DEADLINE,
        )
        .await;
    let complete_ms = recorder.now_ms();
    let (node, attempts, outcomes): (u64, u32, Vec<Outcome>) = match result {
        Ok(answer) if answer.reply.is_success() => {
            let outcomes = match answer.reply.decode::<BatchResult>() {
                Ok(batch) if batch.results.len() == items.len() => {
                    batch.results.iter().map(batch_item_outcome).collect()
                }
                Ok(batch) => {
                    tracing::warn!(
                        client,
                        sent = items.len(),
                        answered = batch.results.len(),
                        "batch answer of the wrong length; outcomes recorded as unknown"
                    );
                    vec![Outcome::Unknown; items.len()]
                }
                Err(error) => {
                    tracing::warn!(client, %error, "undecodable batch answer; outcomes recorded as unknown");
                    vec![Outcome::Unknown; items.len()]
                }
            };
            (answer.node, answer.attempts, outcomes)
        }
        // Refused whole (4xx): every item carries the refusal.
        Ok(answer) => {
            let outcome = outcome_of(&items[0], &answer.reply);
            (answer.node, answer.attempts, vec![outcome; items.len()])
        }
        Err(none) => {
            tracing::debug!(client, last = %none.last, "batch outcome unknown");
            (
                none.node,
                none.attempts,
                vec![Outcome::Unknown; items.len()],
            )
        }
    };
    items
        .into_iter()
        .zip(outcomes)
        .map(|(request, outcome)| Op {
            client,
            invoke_ms,
            complete_ms,
            node,
            attempts,
            request,
            outcome,
        })
        .collect()
}

fn batch_item_outcome(item: &BatchItem) -> Outcome {
    match (&item.transfer, &item.error) {
        (Some(transfer), _) if item.status == 200 || item.status == 201 => {
            Outcome::Ok { seq: transfer.seq }
        }
        (_, Some(error)) => Outcome::Rejected {
            code: error.code.clone(),
        },
        _ => Outcome::Rejected {
            code: format!("http_{}", item.status),
        },
    }
}

/// Starts the clients; each runs until `stop` turns true, finishing the operation in hand.
pub fn start(
    config: &WorkloadConfig,
    api: &Api,
    recorder: &Arc<Recorder>,
    stop: &watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    (0..config.clients)
        .map(|client| {
            let mut chooser = OpChooser::new(config, client);
            let api = api.clone();
            let recorder = Arc::clone(recorder);
            let stop = stop.clone();
            // Each client: one operation at a time until the stop signal; the runner awaits it.
            tokio::spawn(async move {
                let n_nodes = api.node_ids().len().max(1);
                while !*stop.borrow() {
                    let Some(choice) = chooser.choose() else {
                        tracing::error!(client, "no accounts to choose from");
                        return;
                    };
                    let start_node = chooser.rng.gen_range(0..n_nodes);
                    match choice {
                        Choice::One(request) => {
                            let op = op_perform(&api, &recorder, client, request, start_node).await;
                            recorder.push(op);
                        }
                        Choice::Batch(items) => {
                            for op in
                                batch_perform(&api, &recorder, client, items, start_node).await
                            {
                                recorder.push(op);
                            }
                        }
                    }
                }
            })
        })
        .collect()
}

/// After healing: sends `n` small funding transfers one by one and returns how long after
/// `heal_ms` the first was acknowledged (`None` if none was).
pub async fn liveness_probe(
    api: &Api,
    recorder: &Recorder,
    accounts: &[AccountSpec],
    heal_ms: f64,
    n: u32,
) -> Option<f64> {
    let treasury = accounts.iter().find(|a| a.allow_overdraft)?;
    let to = accounts
        .iter()
        .find(|a| !a.allow_overdraft && a.currency == treasury.currency)?;
    let mut first_ack: Option<f64> = None;
    for i in 0..n {
        let request = OpRequest::Transfer {
            id: format!("probe-{i}"),
            from: treasury.id.clone(),
            to: to.id.clone(),
            amount: 1,
        };
        let op = op_perform(api, recorder, PROBE_CLIENT, request, i as usize).await;
        if matches!(op.outcome, Outcome::Ok { .. }) && first_ack.is_none() {
            first_ack = Some(op.complete_ms - heal_ms);
        }
        recorder.push(op);
    }
    first_ack
}
