//! The client subcommands of the `raftpay` binary (`account`, `transfer`, `transfer-status`,
//! `history`, `cluster`): their clap definitions and the runner that turns them into API calls
//! through [`raftpay_client::Client`] and prints the outcome.
//!
//! Owns: argument parsing and validation at the user's edge (amounts are whole minor units),
//! human and `--json` output, and exit codes: 0 success, 1 a definite API error, 3 no definite
//! answer (for a write the outcome is then unknown and the message says how to learn it).
//! Must never: retry on its own (the client does), or invent a new id for a request the user may
//! be re-sending.
//!
//! Over 800 lines: about a quarter is its tests (argument parsing, output, exit codes), kept next to the parsers they pin down.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;

use serde::de::DeserializeOwned;

use raftpay_client::{
    Account, ApiRequest, Client, ClientError, ClusterStatus, Consistency, NewAccount, NewTransfer,
    Reply, Transfer, TransferPage,
};

/// Exit code for a definite error answer from the server.
pub const EXIT_API_ERROR: u8 = 1;
/// Exit code when no node gave a definite answer before the retry deadline.
pub const EXIT_UNAVAILABLE: u8 = 3;
/// Largest amount the contract accepts (2^63 - 1 minor units).
use raftpay_api::rules::AMOUNT_MAX;
/// `history --all` stops after this many pages, so a misbehaving server cannot loop it forever.
const HISTORY_PAGES_MAX: usize = 100_000;

/// Options shared by every client subcommand. They are `global`, so they may be given before or
/// after the subcommand.
#[derive(Clone, clap::Args)]
pub struct ClientOpts {
    /// Node addresses (host:port or http://host:port), comma-separated; any node will do.
    #[arg(
        long,
        env = "RAFTPAY_NODE",
        default_value = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003",
        value_delimiter = ',',
        global = true
    )]
    pub node: Vec<String>,
    /// Bearer token, when the cluster has auth enabled.
    #[arg(long, env = "RAFTPAY_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print the server's JSON answer, one line per answer, instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Read consistency for account, transfer-status and history reads.
    #[arg(long, value_enum, default_value_t = ConsistencyArg::Linearizable, global = true)]
    pub consistency: ConsistencyArg,
}

/// Written by hand so the token never reaches a log line.
impl std::fmt::Debug for ClientOpts {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ClientOpts")
            .field("node", &self.node)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("json", &self.json)
            .field("consistency", &self.consistency)
            .finish()
    }
}

/// `--consistency` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ConsistencyArg {
    /// Reflects every write acknowledged before the read started.
    Linearizable,
    /// Served by the contacted node without asking the leader; may be stale.
    Local,
}

impl From<ConsistencyArg> for Consistency {
    fn from(value: ConsistencyArg) -> Self {
        match value {
            ConsistencyArg::Linearizable => Consistency::Linearizable,
            ConsistencyArg::Local => Consistency::Local,
        }
    }
}

/// The client subcommands; flatten them into the binary's top-level subcommand enum.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum ClientCommand {
    /// Create or show an account.
    Account {
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// Move money between two accounts of the same currency.
    Transfer(TransferArgs),
    /// Show a transfer by id: the committed transfer, or its recorded rejection.
    TransferStatus {
        /// Transfer id.
        id: String,
    },
    /// List an account's transfers in commit order.
    History(HistoryArgs),
    /// Inspect or change the cluster membership.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

/// `account` subcommands.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum AccountCommand {
    /// Create an account (re-running with the same fields is harmless).
    Create {
        /// Account id: 1-64 characters of [A-Za-z0-9._:-].
        id: String,
        /// Three upper-case letters, e.g. CNY.
        #[arg(long, value_parser = parse_currency)]
        currency: String,
        /// Let the balance go negative (a bank/treasury account through which money enters).
        #[arg(long)]
        allow_overdraft: bool,
    },
    /// Show an account's balance and totals.
    Get {
        /// Account id.
        id: String,
    },
}

/// `transfer <FROM> <TO> <AMOUNT>`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct TransferArgs {
    /// Account the money leaves.
    pub from: String,
    /// Account the money arrives in.
    pub to: String,
    /// Whole minor units (cents, fen): 250 means 2.50.
    #[arg(value_parser = parse_amount, allow_hyphen_values = true)]
    pub amount: u64,
    /// Transfer id; default a fresh random one, printed so the command can be re-sent safely.
    #[arg(long)]
    pub id: Option<String>,
    /// Free text, at most 256 bytes.
    #[arg(long)]
    pub memo: Option<String>,
}

/// `history <ACCOUNT>`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct HistoryArgs {
    /// Account id.
    pub account: String,
    /// Page size.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
    /// Start after this commit sequence number.
    #[arg(long)]
    pub after: Option<u64>,
    /// Follow `next` until the last page.
    #[arg(long)]
    pub all: bool,
}

/// `cluster` subcommands.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum ClusterCommand {
    /// Ask every --node for its view and print a table.
    Status,
    /// Add a node as a learner.
    Add {
        /// New node's id.
        id: u64,
        /// New node's HTTP address, host:port.
        http_addr: String,
    },
    /// Make members voters: the voter set becomes the current voters plus these.
    Promote {
        /// Member ids to promote.
        #[arg(required = true)]
        ids: Vec<u64>,
    },
    /// Remove a node from the membership.
    Remove {
        /// Node id.
        id: u64,
    },
}

fn parse_amount(text: &str) -> Result<u64, String> {
    let hint = "amounts are whole minor units (cents, fen): write 250 for 2.50";
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(format!("{text:?} is not a positive whole number; {hint}"));
    }
    let amount: u64 = text
        .parse()
        .map_err(|_| format!("{text} is larger than the maximum {AMOUNT_MAX}"))?;
    if amount == 0 || amount > AMOUNT_MAX {
        return Err(format!("amount must be between 1 and {AMOUNT_MAX}; {hint}"));
    }
    Ok(amount)
}

fn parse_currency(text: &str) -> Result<String, String> {
    raftpay_api::rules::currency_check(text)
        .map(|()| text.to_owned())
        .map_err(|error| format!("{text:?}: {error}"))
}

/// Runs one client subcommand and prints its outcome.
///
/// Exit codes: 0 success, 1 a definite error answer (printed as `error: <code>: <message>` on
/// stderr), 3 no definite answer before the retry deadline.
///
/// # Errors
/// Bad `--node`/`--token` values, and answers the client cannot decode.
pub async fn run(opts: ClientOpts, command: ClientCommand) -> anyhow::Result<ExitCode> {
    let client = Client::new(&opts.node, opts.token.as_deref())?;
    let output = Output {
        json: opts.json,
        consistency: opts.consistency.into(),
    };
    let outcome = match command {
        ClientCommand::Account { command } => account(&client, output, command).await,
        ClientCommand::Transfer(args) => transfer(&client, output, args).await,
        ClientCommand::TransferStatus { id } => transfer_status(&client, output, &id).await,
        ClientCommand::History(args) => history(&client, output, args).await,
        ClientCommand::Cluster { command } => cluster(&client, output, command).await,
    };
    match outcome {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(error) => exit_for(error),
    }
}

/// Maps a client error to the exit code, printing it; errors that are bugs or bad setup are
/// returned to `main`.
fn exit_for(error: ClientError) -> anyhow::Result<ExitCode> {
    match error {
        ClientError::Api { code, message, .. } => {
            eprintln!("error: {code}: {message}");
            Ok(ExitCode::from(EXIT_API_ERROR))
        }
        ClientError::Unavailable { .. } => {
            eprintln!("error: unavailable: {error}");
            Ok(ExitCode::from(EXIT_UNAVAILABLE))
        }
        ClientError::Decode(_) | ClientError::Config(_) => Err(error.into()),
    }
}

/// How answers are shown.
#[derive(Debug, Clone, Copy)]
struct Output {
    json: bool,
    consistency: Consistency,
}

impl Output {
    /// Prints the answer's JSON in `--json` mode (errors too, so scripts can read the code),
    /// then decodes it.
    fn answer<T: DeserializeOwned>(self, reply: &Reply) -> Result<T, ClientError> {
        if self.json {
            println!("{}", json_one_line(&reply.body));
        }
        reply.decode()
    }

    fn text(self) -> bool {
        !self.json
    }
}

async fn account(
    client: &Client,
    output: Output,
    command: AccountCommand,
) -> Result<(), ClientError> {
    match command {
        AccountCommand::Create {
            id,
            currency,
            allow_overdraft,
        } => {
            let new_account = NewAccount {
                id,
                currency,
                allow_overdraft,
            };
            let reply = client
                .send(&ApiRequest::create_account(&new_account))
                .await?;
            let account: Account = output.answer(&reply)?;
            if output.text() {
                let verb = if reply.status == 201 {
                    "created account"
                } else {
                    "account already exists:"
                };
                println!(
                    "{verb} {} ({}) balance {}",
                    account.id, account.currency, account.balance
                );
            }
        }
        AccountCommand::Get { id } => {
            let request = ApiRequest::get_account(&id, output.consistency);
            let account: Account = output.answer(&client.send(&request).await?)?;
            if output.text() {
                println!("{}", account_line(&account));
            }
        }
    }
    Ok(())
}

fn account_line(account: &Account) -> String {
    let overdraft = if account.allow_overdraft {
        ", overdraft allowed"
    } else {
        ""
    };
    format!(
        "account {} ({}): balance {} (credits {}, debits {}){overdraft}",
        account.id, account.currency, account.balance, account.credits, account.debits
    )
}

async fn transfer(client: &Client, output: Output, args: TransferArgs) -> Result<(), ClientError> {
    let id = match args.id {
        Some(id) => id,
        None => {
            let id = format!("t-{:016x}", rand::random::<u64>());
            eprintln!("transfer id {id} (to re-send this transfer safely, add --id {id})");
            id
        }
    };
    let new_transfer = NewTransfer {
        id,
        from: args.from,
        to: args.to,
        amount: args.amount,
        memo: args.memo,
    };
    let reply = client
        .send(&ApiRequest::transfer(&new_transfer))
        .await
        .inspect_err(|error| transfer_error_hint(&new_transfer.id, error))?;
    let transfer: Transfer = output
        .answer(&reply)
        .inspect_err(|error| transfer_error_hint(&new_transfer.id, error))?;
    if output.text() {
        let how = if reply.status == 201 {
            "created"
        } else {
            "already recorded"
        };
        println!("{} ({how})", transfer_line(&transfer));
    }
    Ok(())
}

/// Tells the user what a failed transfer means for its id: unknown outcome (re-send the same
/// id) or a recorded rejection (a new id is needed to try again).
fn transfer_error_hint(id: &str, error: &ClientError) {
    match error {
        ClientError::Unavailable { .. } => eprintln!(
            "the outcome of transfer {id} is unknown; re-send the same command with --id {id} to learn it"
        ),
        ClientError::Api { status, code, .. } if *status == 422 || code == "account_not_found" => eprintln!(
            "transfer {id} is recorded as rejected; to try again, use a new id"
        ),
        _ => {}
    }
}

fn transfer_line(transfer: &Transfer) -> String {
    let memo = transfer
        .memo
        .as_deref()
        .map(|memo| format!(", memo {memo:?}"))
        .unwrap_or_default();
    format!(
        "transfer {}: {} -> {} {} {}, seq {}{memo}",
        transfer.id, transfer.from, transfer.to, transfer.amount, transfer.currency, transfer.seq
    )
}

async fn transfer_status(client: &Client, output: Output, id: &str) -> Result<(), ClientError> {
    let request = ApiRequest::get_transfer(id, output.consistency);
    let transfer: Transfer = output.answer(&client.send(&request).await?)?;
    if output.text() {
        println!("{}", transfer_line(&transfer));
    }
    Ok(())
}

async fn history(client: &Client, output: Output, args: HistoryArgs) -> Result<(), ClientError> {
    let mut after = args.after;
    for _ in 0..HISTORY_PAGES_MAX {
        let request = ApiRequest::history(&args.account, args.limit, after, output.consistency);
        let page: TransferPage = output.answer(&client.send(&request).await?)?;
        if output.text() {
            for transfer in &page.transfers {
                println!("{}", transfer_line(transfer));
            }
        }
        let Some(next) = page.next else {
            return Ok(());
        };
        if !args.all {
            if output.text() {
                println!("more: --after {next}");
            }
            return Ok(());
        }
        if after.is_some_and(|after| next <= after) {
            return Err(ClientError::Decode(format!(
                "history page cursor did not advance (after {after:?}, next {next})"
            )));
        }
        after = Some(next);
    }
    Err(ClientError::Decode(format!(
        "history did not end within {HISTORY_PAGES_MAX} pages"
    )))
}

async fn cluster(
    client: &Client,
    output: Output,
    command: ClusterCommand,
) -> Result<(), ClientError> {
    let (request, done) = match command {
        ClusterCommand::Status => return cluster_status(client, output).await,
        ClusterCommand::Add { id, http_addr } => (
            ApiRequest::add_learner(id, &http_addr),
            format!("added node {id} ({http_addr}) as a learner"),
        ),
        ClusterCommand::Promote { ids } => {
            let voters = voters_with(client, &ids).await?;
            (
                ApiRequest::set_voters(&voters),
                format!("voters now: {voters:?}"),
            )
        }
        ClusterCommand::Remove { id } => (
            ApiRequest::remove_node(id),
            format!("removed node {id} from the membership"),
        ),
    };
    let _: serde_json::Value = output.answer(&json_or_null(client.send(&request).await?))?;
    if output.text() {
        println!("{done}");
    }
    Ok(())
}

/// An empty 2xx body counts as `null`, so a membership change answered with 204 decodes.
fn json_or_null(reply: Reply) -> Reply {
    if reply.is_success() && reply.body.trim().is_empty() {
        return Reply {
            status: reply.status,
            body: "null".to_owned(),
            bytes: Vec::new(),
        };
    }
    reply
}

/// The current voters plus `ids`, sorted. The voters are read from the leader itself: a
/// follower's view may lag a membership change, and setting voters from a stale list could
/// demote a node that was just promoted.
async fn voters_with(client: &Client, ids: &[u64]) -> Result<Vec<u64>, ClientError> {
    let status = membership_from_leader(client).await?;
    let mut voters: BTreeSet<u64> = status
        .members
        .iter()
        .filter(|member| member.role == "voter")
        .map(|member| member.id)
        .collect();
    voters.extend(ids);
    Ok(voters.into_iter().collect())
}

async fn membership_from_leader(client: &Client) -> Result<ClusterStatus, ClientError> {
    let status = client.cluster_status(None).await?;
    if status.leader_id == Some(status.node_id) {
        return Ok(status);
    }
    let unavailable = |last: String| ClientError::Unavailable { last };
    let leader_id = status
        .leader_id
        .ok_or_else(|| unavailable(format!("node {} knows no leader", status.node_id)))?;
    let leader = status
        .members
        .iter()
        .find(|member| member.id == leader_id)
        .ok_or_else(|| unavailable(format!("leader {leader_id} is not among the members")))?;
    let leader_status = client.cluster_status(Some(&leader.http_addr)).await?;
    if leader_status.leader_id != Some(leader_status.node_id) {
        return Err(unavailable(format!(
            "leadership moved while reading the membership from {}; try again",
            leader.http_addr
        )));
    }
    Ok(leader_status)
}

/// One node's answer to `cluster status`, or why it gave none.
type NodeStatus = Result<Reply, ClientError>;

/// Asks every `--node` at once (one attempt each, so a dead node costs one timeout), then every
/// member those answers name that is not among them (a node added later), and prints a row per
/// node with its replication progress as the leader reports it. Fails only when no node
/// answered.
async fn cluster_status(client: &Client, output: Output) -> Result<(), ClientError> {
    let mut answers = statuses_fetch(client, client.nodes()).await;
    let unlisted = members_unlisted(&answers);
    answers.extend(statuses_fetch(client, &unlisted).await);
    let progress = progress_of_leader(&answers);
    if output.text() {
        println!("{}", status_header());
    }
    let mut last_error = None;
    let mut n_answered = 0_usize;
    for (node, answer) in answers {
        match answer.and_then(|reply| status_row(output, &node, &reply, &progress)) {
            Ok(()) => n_answered += 1,
            Err(error) => {
                let reason = match &error {
                    ClientError::Unavailable { last } => {
                        last.trim_start_matches(&format!("{node}: ")).to_owned()
                    }
                    other => other.to_string(),
                };
                if output.text() {
                    println!("{:<24} unreachable ({reason})", strip_scheme(&node));
                } else {
                    eprintln!("{}: {reason}", strip_scheme(&node));
                }
                last_error = Some(error);
            }
        }
    }
    match last_error {
        Some(error) if n_answered == 0 => Err(error),
        _ => Ok(()),
    }
}

/// `GET /v1/cluster` from each of `nodes` at once, one attempt each, answers in `nodes` order.
async fn statuses_fetch(client: &Client, nodes: &[String]) -> Vec<(String, NodeStatus)> {
    // One task per node; each ends after a single attempt bounded by the request timeout, and
    // all are awaited below, so none outlives this function.
    let tasks: Vec<_> = nodes
        .iter()
        .map(|node| {
            let client = client.clone();
            let node = node.clone();
            tokio::spawn(async move { client.send_to(&node, &ApiRequest::cluster_status()).await })
        })
        .collect();
    let mut answers: Vec<(String, NodeStatus)> = Vec::with_capacity(tasks.len());
    for (node, task) in nodes.iter().zip(tasks) {
        let answer = task.await.unwrap_or_else(|error| {
            Err(ClientError::Unavailable {
                last: format!("status task failed: {error}"),
            })
        });
        answers.push((node.clone(), answer));
    }
    answers
}

/// Decodes the answers that are cluster statuses; others are skipped.
fn statuses_decoded(answers: &[(String, NodeStatus)]) -> Vec<ClusterStatus> {
    answers
        .iter()
        .filter_map(|(_, answer)| answer.as_ref().ok()?.decode::<ClusterStatus>().ok())
        .collect()
}

/// Addresses of members that some answer names but that were neither asked (by address) nor
/// answered (by id); the leader's view first, as it is the newest.
fn members_unlisted(answers: &[(String, NodeStatus)]) -> Vec<String> {
    let mut statuses = statuses_decoded(answers);
    statuses.sort_by_key(|status| status.leader_id != Some(status.node_id));
    let asked: BTreeSet<&str> = answers.iter().map(|(node, _)| strip_scheme(node)).collect();
    let answered: BTreeSet<u64> = statuses.iter().map(|status| status.node_id).collect();
    let mut seen = BTreeSet::new();
    let mut unlisted = Vec::new();
    for member in statuses.iter().flat_map(|status| &status.members) {
        if answered.contains(&member.id)
            || asked.contains(member.http_addr.as_str())
            || !seen.insert(member.id)
        {
            continue;
        }
        unlisted.push(member.http_addr.clone());
    }
    unlisted
}

/// Each member's replication progress (`matched_index`, `lag_entries`) as the leader reports
/// it; empty when no leader answered.
fn progress_of_leader(answers: &[(String, NodeStatus)]) -> BTreeMap<u64, (u64, u64)> {
    statuses_decoded(answers)
        .into_iter()
        .find(|status| status.leader_id == Some(status.node_id))
        .map(|leader| {
            leader
                .members
                .iter()
                .filter_map(|member| {
                    Some((member.id, (member.matched_index?, member.lag_entries?)))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn status_header() -> String {
    format!(
        "{:<24} {:>4} {:<9} {:>6} {:>14} {:>12} {:>6} {:>12} {:>8}",
        "node", "id", "role", "term", "last_log_index", "last_applied", "leader", "matched", "lag"
    )
}

fn status_row(
    output: Output,
    node: &str,
    reply: &Reply,
    progress: &BTreeMap<u64, (u64, u64)>,
) -> Result<(), ClientError> {
    let status: ClusterStatus = output.answer(reply)?;
    if output.text() {
        let leader = status
            .leader_id
            .map_or_else(|| "none".to_owned(), |id| id.to_string());
        let (matched, lag) = progress.get(&status.node_id).map_or_else(
            || ("-".to_owned(), "-".to_owned()),
            |(matched, lag)| (matched.to_string(), lag.to_string()),
        );
        println!(
            "{:<24} {:>4} {:<9} {:>6} {:>14} {:>12} {:>6} {:>12} {:>8}",
            strip_scheme(node),
            status.node_id,
            node_role(&status),
            status.term,
            status.last_log_index,
            status.last_applied,
            leader,
            matched,
            lag
        );
    }
    Ok(())
}

/// `leader`, `follower` (a voter that does not lead), `learner`, or `-` when the node is not
/// in its own membership list.
fn node_role(status: &ClusterStatus) -> &'static str {
    if status.leader_id == Some(status.node_id) {
        return "leader";
    }
    match status
        .members
        .iter()
        .find(|member| member.id == status.node_id)
    {
        Some(member) if member.role == "voter" => "follower",
        Some(member) if member.role == "learner" => "learner",
        _ => "-",
    }
}

fn strip_scheme(node: &str) -> &str {
    node.strip_prefix("http://").unwrap_or(node)
}

/// The body on one line with its key order kept: whitespace outside JSON strings is dropped.
/// (Re-encoding through `serde_json::Value` would sort the keys.)
fn json_one_line(body: &str) -> String {
    let mut line = String::with_capacity(body.len());
    let mut in_string = false;
    let mut escaped = false;
    for character in body.trim().chars() {
        if in_string {
            line.push(character);
            match (escaped, character) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if character == '"' {
            in_string = true;
            line.push(character);
        } else if !character.is_whitespace() {
            line.push(character);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The binary's shape in miniature: global client options and the client subcommands.
    #[derive(Debug, clap::Parser)]
    struct TestCli {
        #[command(flatten)]
        opts: ClientOpts,
        #[command(subcommand)]
        command: ClientCommand,
    }

    fn parse(args: &[&str]) -> Result<TestCli, clap::Error> {
        TestCli::try_parse_from(std::iter::once("raftpay").chain(args.iter().copied()))
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        TestCli::command().debug_assert();
    }

    #[test]
    fn transfer_parses_positionals_and_options() {
        let cli = parse(&[
            "transfer", "bank", "alice", "250", "--id", "t-1", "--memo", "hi",
        ])
        .unwrap();
        assert_eq!(
            cli.command,
            ClientCommand::Transfer(TransferArgs {
                from: "bank".into(),
                to: "alice".into(),
                amount: 250,
                id: Some("t-1".into()),
                memo: Some("hi".into()),
            })
        );
    }

    #[test]
    fn amounts_must_be_whole_positive_minor_units() {
        for bad in ["2.50", "-5", "0", "1e3", "abc", "", "9223372036854775808"] {
            let error = parse(&["transfer", "a", "b", bad]).unwrap_err();
            assert_eq!(
                error.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{bad:?}"
            );
        }
        let error = parse(&["transfer", "a", "b", "2.50"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("whole minor units"), "{error}");
        let cli = parse(&["transfer", "a", "b", "9223372036854775807"]).unwrap();
        assert!(matches!(cli.command, ClientCommand::Transfer(args) if args.amount == AMOUNT_MAX));
    }

    #[test]
    fn transfer_needs_three_positionals() {
        let error = parse(&["transfer", "a", "b"]).unwrap_err();
        assert_eq!(
            error.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn account_create_needs_a_valid_currency() {
        let cli = parse(&[
            "account",
            "create",
            "bank",
            "--currency",
            "CNY",
            "--allow-overdraft",
        ])
        .unwrap();
        assert_eq!(
            cli.command,
            ClientCommand::Account {
                command: AccountCommand::Create {
                    id: "bank".into(),
                    currency: "CNY".into(),
                    allow_overdraft: true,
                }
            }
        );
        let missing = parse(&["account", "create", "bank"]).unwrap_err();
        assert_eq!(
            missing.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        let bad = parse(&["account", "create", "bank", "--currency", "cny"]).unwrap_err();
        assert_eq!(bad.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn global_options_go_before_or_after_the_subcommand() {
        let cli = parse(&[
            "--node",
            "127.0.0.1:7001,127.0.0.1:7002",
            "account",
            "get",
            "alice",
            "--json",
            "--consistency",
            "local",
        ])
        .unwrap();
        assert_eq!(cli.opts.node, ["127.0.0.1:7001", "127.0.0.1:7002"]);
        assert!(cli.opts.json);
        assert_eq!(cli.opts.consistency, ConsistencyArg::Local);
        let bad = parse(&["account", "get", "alice", "--consistency", "eventual"]).unwrap_err();
        assert_eq!(bad.kind(), clap::error::ErrorKind::InvalidValue);
    }

    #[test]
    fn defaults_are_the_local_cluster_and_linearizable() {
        if std::env::var_os("RAFTPAY_NODE").is_some() {
            return; // the environment overrides the default under test
        }
        let cli = parse(&["transfer-status", "t-1"]).unwrap();
        assert_eq!(cli.opts.node.len(), 3);
        assert_eq!(cli.opts.consistency, ConsistencyArg::Linearizable);
        assert!(!cli.opts.json);
        assert_eq!(
            cli.command,
            ClientCommand::TransferStatus { id: "t-1".into() }
        );
    }

    #[test]
    fn history_options() {
        let cli = parse(&[
            "history", "alice", "--limit", "10", "--after", "17", "--all",
        ])
        .unwrap();
        assert_eq!(
            cli.command,
            ClientCommand::History(HistoryArgs {
                account: "alice".into(),
                limit: Some(10),
                after: Some(17),
                all: true,
            })
        );
        let zero = parse(&["history", "alice", "--limit", "0"]).unwrap_err();
        assert_eq!(zero.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn cluster_subcommands() {
        assert_eq!(
            parse(&["cluster", "status"]).unwrap().command,
            ClientCommand::Cluster {
                command: ClusterCommand::Status
            }
        );
        assert_eq!(
            parse(&["cluster", "add", "4", "127.0.0.1:7004"])
                .unwrap()
                .command,
            ClientCommand::Cluster {
                command: ClusterCommand::Add {
                    id: 4,
                    http_addr: "127.0.0.1:7004".into()
                }
            }
        );
        assert_eq!(
            parse(&["cluster", "promote", "4", "5"]).unwrap().command,
            ClientCommand::Cluster {
                command: ClusterCommand::Promote { ids: vec![4, 5] }
            }
        );
        let none = parse(&["cluster", "promote"]).unwrap_err();
        assert_eq!(none.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let bad = parse(&["cluster", "remove", "four"]).unwrap_err();
        assert_eq!(bad.kind(), clap::error::ErrorKind::ValueValidation);
        let unknown = parse(&["cluster", "explode"]).unwrap_err();
        assert_eq!(unknown.kind(), clap::error::ErrorKind::InvalidSubcommand);
    }

    #[test]
    fn json_one_line_keeps_order_and_string_contents() {
        let body = "{\n  \"z\": 1,\n  \"a\": \"x y \\\" }\"\n}\n";
        assert_eq!(json_one_line(body), r#"{"z":1,"a":"x y \" }"}"#);
    }

    #[test]
    fn cluster_status_finds_added_members_and_the_leaders_progress() {
        // Goal: `cluster status` shows members that are not among --node, with the progress
        // the leader reports. Method: two canned answers, the leader's naming node 4.
        let answer = |body: &str| -> NodeStatus {
            Ok(Reply {
                status: 200,
                body: body.to_owned(),
                bytes: Vec::new(),
            })
        };
        let leader = r#"{"node_id":1,"leader_id":1,"term":2,"last_log_index":50,"last_applied":50,
            "members":[
            {"id":1,"http_addr":"127.0.0.1:7001","role":"voter","matched_index":50,"lag_entries":0},
            {"id":2,"http_addr":"127.0.0.1:7002","role":"voter","matched_index":49,"lag_entries":1},
            {"id":4,"http_addr":"127.0.0.1:7004","role":"learner","matched_index":7,"lag_entries":43}]}"#;
        let follower = r#"{"node_id":2,"leader_id":1,"term":2,"last_log_index":49,"last_applied":49,
            "members":[{"id":1,"http_addr":"127.0.0.1:7001","role":"voter","matched_index":null},
            {"id":2,"http_addr":"127.0.0.1:7002","role":"voter"}]}"#;
        let answers = vec![
            ("http://localhost:7001".to_owned(), answer(leader)),
            ("http://127.0.0.1:7002".to_owned(), answer(follower)),
            (
                "http://127.0.0.1:7003".to_owned(),
                Err(ClientError::Unavailable {
                    last: "refused".into(),
                }),
            ),
        ];
        // Node 1 answered under another name and node 2 was asked: only node 4 is new.
        assert_eq!(members_unlisted(&answers), ["127.0.0.1:7004"]);
        let progress = progress_of_leader(&answers);
        assert_eq!(progress.get(&4), Some(&(7, 43)));
        assert_eq!(progress.get(&2), Some(&(49, 1)));
        assert_eq!(progress_of_leader(&answers[1..]), BTreeMap::new());
    }

    #[test]
    fn node_roles_come_from_the_nodes_own_view() {
        let mut status = ClusterStatus {
            node_id: 2,
            leader_id: Some(1),
            term: 3,
            last_log_index: 9,
            last_applied: 9,
            members: vec![raftpay_client::Member {
                id: 2,
                http_addr: "127.0.0.1:7002".into(),
                role: "voter".into(),
                matched_index: None,
                lag_entries: None,
            }],
            ..ClusterStatus::default()
        };
        assert_eq!(node_role(&status), "follower");
        status.members[0].role = "learner".into();
        assert_eq!(node_role(&status), "learner");
        status.leader_id = Some(2);
        assert_eq!(node_role(&status), "leader");
        status.leader_id = None;
        status.members.clear();
        assert_eq!(node_role(&status), "-");
    }
}
