//! Handlers for accounts and transfers: parse and validate (400s, before anything is proposed),
//! write through the node or forward to the leader, read at the asked consistency, and render
//! the contract's JSON.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use raftpay_api::rules::{HISTORY_PAGE_DEFAULT, HISTORY_PAGE_MAX};
use raftpay_api::{self as api, NewAccount, NewBatch, NewTransfer};
use raftpay_raft::ledger::{
    validate_batch, validate_command, validate_id, Account, AccountSpec, Command, CommandResult,
    Transfer, TransferResult, TransferSpec,
};
use raftpay_raft::node::WriteError;
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;

use super::forward::{self, Forward};
use super::{ApiError, App, RawRequest};

/// `POST /v1/transfers/batch` as the server reads it: the items as JSON values, parsed one by
/// one so that an error names its index.
type BatchCreate = NewBatch<serde_json::Value>;

fn transfer_spec(transfer: NewTransfer) -> TransferSpec {
    TransferSpec {
        id: transfer.id,
        from: transfer.from,
        to: transfer.to,
        amount: transfer.amount,
        memo: transfer.memo,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    consistency: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    consistency: Option<String>,
    limit: Option<String>,
    after: Option<String>,
}

/// The contract's account object.
fn account_json(account: &Account) -> serde_json::Value {
    json!(api::Account {
        id: account.id.clone(),
        currency: account.currency.clone(),
        allow_overdraft: account.allow_overdraft,
        debits: account.debits,
        credits: account.credits,
        balance: account.balance(),
    })
}

/// The contract's transfer object (`memo` only when there is one).
fn transfer_json(transfer: &Transfer) -> serde_json::Value {
    json!(api::Transfer {
        id: transfer.id.clone(),
        from: transfer.from.clone(),
        to: transfer.to.clone(),
        amount: transfer.amount,
        currency: transfer.currency.clone(),
        memo: transfer.memo.clone(),
        seq: transfer.seq,
    })
}

fn created_status(created: bool) -> StatusCode {
    if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

fn conflict(kind: &str, id: &str) -> ApiError {
    ApiError::IdConflict(format!(
        "{kind} id {id} was already used with different content"
    ))
}

/// A write either answered here or forwarded to the leader (whose answer is final).
enum Written {
    Here(CommandResult),
    Forwarded(Response),
}

async fn write(app: &App, request: &RawRequest, command: Command) -> Result<Written, ApiError> {
    let deadline = Instant::now() + app.settings.leader_wait;
    let mut validated = false;
    loop {
        if app.node.is_leader() {
            // `Node::write` validates.
            return match app.node.write(command).await {
                Ok(result) => Ok(Written::Here(result)),
                // Leadership moved while the write was queued; it was not proposed here. One
                // forward, no waiting: the command is gone.
                Err(WriteError::NotLeader { leader }) => {
                    match forward::to_leader(app, request, leader, Instant::now()).await? {
                        Forward::Answered(response) => Ok(Written::Forwarded(response)),
                        Forward::Retry => Err(ApiError::Unavailable(
                            "leadership is changing; retry shortly".into(),
                        )),
                    }
                }
                Err(error) => Err(write_error(error)),
            };
        }
        // Refused here, before the hop, rather than by the leader.
        if !validated {
            validate_command(&command).map_err(|error| ApiError::InvalidRequest(error.0))?;
            validated = true;
        }
        match forward::to_leader(app, request, app.node.leader(), deadline).await? {
            Forward::Answered(response) => return Ok(Written::Forwarded(response)),
            Forward::Retry => {}
        }
    }
}

fn write_error(error: WriteError) -> ApiError {
    match error {
        WriteError::Invalid(error) => ApiError::InvalidRequest(error.0),
        WriteError::Unavailable(detail) => ApiError::Unavailable(format!(
            "{detail}; the outcome is unknown: retry with the same id"
        )),
        WriteError::Overloaded => {
            ApiError::Unavailable("too many writes queued; retry shortly".into())
        }
        WriteError::NotLeader { .. } => {
            ApiError::Unavailable("leadership is changing; retry shortly".into())
        }
        WriteError::InsufficientStorage(low) => ApiError::InsufficientStorage(format!(
            "the leader's disk is under its free-space reserve ({} of {} bytes free); nothing \
             was written",
            low.free_bytes, low.reserve_bytes
        )),
        WriteError::Fault(fault) => ApiError::Unavailable(format!(
            "this node stopped on a {} fault; send the request to another node",
            fault.kind
        )),
    }
}

/// Makes a read at `consistency` possible here: `Ok(None)` to read locally, `Ok(Some(answer))`
/// when the leader answered it.
async fn read_barrier(
    app: &App,
    request: &RawRequest,
    consistency: Option<&str>,
) -> Result<Option<Response>, ApiError> {
    match consistency.unwrap_or("linearizable") {
        "local" => Ok(None),
        "linearizable" => {
            let deadline = Instant::now() + app.settings.leader_wait;
            loop {
                match app.node.linearizable_barrier().await {
                    Ok(()) => return Ok(None),
                    Err(WriteError::NotLeader { leader }) => {
                        match forward::to_leader(app, request, leader, deadline).await? {
                            Forward::Answered(response) => return Ok(Some(response)),
                            Forward::Retry => {}
                        }
                    }
                    Err(error) => return Err(ApiError::Unavailable(error.to_string())),
                }
            }
        }
        other => Err(ApiError::InvalidRequest(format!(
            "consistency must be linearizable or local, not {other}"
        ))),
    }
}

/// What every read by id does first: check the id, then make the read possible here at the
/// asked consistency (`Some(answer)` when the leader answered it instead).
async fn read_prelude(
    app: &App,
    request: &RawRequest,
    what: &str,
    id: &str,
    consistency: Option<&str>,
) -> Result<Option<Response>, ApiError> {
    validate_id(what, id).map_err(|e| ApiError::InvalidRequest(e.0))?;
    read_barrier(app, request, consistency).await
}

fn query<T>(
    query: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|rejection| ApiError::InvalidRequest(format!("query: {}", rejection.body_text())))
}

pub async fn account_create(
    State(app): State<App>,
    request: RawRequest,
) -> Result<Response, ApiError> {
    let body: NewAccount = request.json()?;
    tracing::Span::current().record("account_id", body.id.as_str());
    let spec = AccountSpec {
        id: body.id,
        currency: body.currency,
        allow_overdraft: body.allow_overdraft,
    };
    let id = spec.id.clone();
    match write(&app, &request, Command::CreateAccount(spec)).await? {
        Written::Forwarded(response) => Ok(response),
        Written::Here(CommandResult::Account { account, created }) => {
            tracing::debug!(account_id = %id, created, "account create");
            Ok((created_status(created), Json(account_json(&account))).into_response())
        }
        Written::Here(CommandResult::AccountIdConflict) => Err(conflict("account", &id)),
        Written::Here(CommandResult::AccountInvalid(rejection)) => {
            Err(ApiError::Rejected(rejection))
        }
        Written::Here(other) => Err(ApiError::Internal(format!(
            "account create answered {other:?}"
        ))),
    }
}

pub async fn account_get(
    State(app): State<App>,
    Path(id): Path<String>,
    params: Result<Query<ReadQuery>, axum::extract::rejection::QueryRejection>,
    request: RawRequest,
) -> Result<Response, ApiError> {
    tracing::Span::current().record("account_id", id.as_str());
    let params = query(params)?;
    if let Some(answer) = read_prelude(
        &app,
        &request,
        "account id",
        &id,
        params.consistency.as_deref(),
    )
    .await?
    {
        return Ok(answer);
    }
    let account = app
        .node
        .reader()
        .account(&id)?
        .ok_or(ApiError::AccountNotFound(id))?;
    Ok(Json(account_json(&account)).into_response())
}

fn parse_number<T: std::str::FromStr>(
    name: &str,
    value: Option<&str>,
    default: T,
) -> Result<T, ApiError> {
    match value {
        None => Ok(default),
        Some(text) => text.parse().map_err(|_| {
            ApiError::InvalidRequest(format!("{name} must be a non-negative integer"))
        }),
    }
}

pub async fn account_history(
    State(app): State<App>,
    Path(id): Path<String>,
    params: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
    request: RawRequest,
) -> Result<Response, ApiError> {
    tracing::Span::current().record("account_id", id.as_str());
    let params = query(params)?;
    let limit: usize = parse_number("limit", params.limit.as_deref(), HISTORY_PAGE_DEFAULT)?;
    if limit == 0 || limit > HISTORY_PAGE_MAX {
        return Err(ApiError::InvalidRequest(format!(
            "limit must be 1 to {HISTORY_PAGE_MAX}"
        )));
    }
    let after: u64 = parse_number("after", params.after.as_deref(), 0)?;
    if let Some(answer) = read_prelude(
        &app,
        &request,
        "account id",
        &id,
        params.consistency.as_deref(),
    )
    .await?
    {
        return Ok(answer);
    }
    let reader = app.node.reader();
    if reader.account(&id)?.is_none() {
        return Err(ApiError::AccountNotFound(id));
    }
    let (transfers, more) = reader.history(&id, after, limit)?;
    let mut page = json!({"transfers": transfers.iter().map(transfer_json).collect::<Vec<_>>()});
    if more {
        if let Some(last) = transfers.last() {
            page["next"] = json!(last.seq);
        }
    }
    Ok(Json(page).into_response())
}

fn transfer_result_response(id: &str, result: TransferResult) -> Result<Response, ApiError> {
    match result {
        TransferResult::Posted { transfer, created } => {
            tracing::debug!(transfer_id = %id, seq = transfer.seq, created, "transfer posted");
            Ok((created_status(created), Json(transfer_json(&transfer))).into_response())
        }
        TransferResult::Rejected(rejection) => Err(ApiError::Rejected(rejection)),
        TransferResult::IdConflict => Err(conflict("transfer", id)),
    }
}

pub async fn transfer_create(
    State(app): State<App>,
    request: RawRequest,
) -> Result<Response, ApiError> {
    let spec = transfer_spec(request.json::<NewTransfer>()?);
    tracing::Span::current().record("transfer_id", spec.id.as_str());
    let id = spec.id.clone();
    match write(&app, &request, Command::Transfer(spec)).await? {
        Written::Forwarded(response) => Ok(response),
        Written::Here(CommandResult::Transfer(result)) => transfer_result_response(&id, result),
        Written::Here(other) => Err(ApiError::Internal(format!(
            "transfer create answered {other:?}"
        ))),
    }
}

/// Each item parsed on its own, so an error names its index.
fn batch_parse(body: BatchCreate) -> Result<(Vec<TransferSpec>, bool), ApiError> {
    let mut transfers = Vec::with_capacity(body.transfers.len());
    for (index, item) in body.transfers.into_iter().enumerate() {
        let spec: NewTransfer = serde_json::from_value(item)
            .map_err(|error| ApiError::InvalidRequest(format!("transfers[{index}]: {error}")))?;
        transfers.push(transfer_spec(spec));
    }
    validate_batch(&transfers).map_err(|e| ApiError::InvalidRequest(e.0))?;
    Ok((transfers, body.atomic))
}

fn batch_item_json(result: &TransferResult, id: &str) -> serde_json::Value {
    match result {
        TransferResult::Posted { transfer, created } => {
            json!({"status": created_status(*created).as_u16(), "transfer": transfer_json(transfer)})
        }
        TransferResult::Rejected(rejection) => {
            let error = ApiError::Rejected(rejection.clone());
            let mut item = error.body();
            item["status"] = json!(error.status_and_code().0.as_u16());
            item
        }
        TransferResult::IdConflict => {
            let error = conflict("transfer", id);
            let mut item = error.body();
            item["status"] = json!(error.status_and_code().0.as_u16());
            item
        }
    }
}

pub async fn batch_create(
    State(app): State<App>,
    request: RawRequest,
) -> Result<Response, ApiError> {
    let (transfers, atomic) = batch_parse(request.json()?)?;
    tracing::Span::current().record("transfers", transfers.len());
    let ids: Vec<String> = transfers.iter().map(|t| t.id.clone()).collect();
    match write(&app, &request, Command::Batch { transfers, atomic }).await? {
        Written::Forwarded(response) => Ok(response),
        Written::Here(CommandResult::Batch(results)) => {
            let items: Vec<_> = results
                .iter()
                .zip(&ids)
                .map(|(r, id)| batch_item_json(r, id))
                .collect();
            Ok(Json(json!({"results": items})).into_response())
        }
        Written::Here(other) => Err(ApiError::Internal(format!("batch answered {other:?}"))),
    }
}

pub async fn transfer_get(
    State(app): State<App>,
    Path(id): Path<String>,
    params: Result<Query<ReadQuery>, axum::extract::rejection::QueryRejection>,
    request: RawRequest,
) -> Result<Response, ApiError> {
    tracing::Span::current().record("transfer_id", id.as_str());
    let params = query(params)?;
    if let Some(answer) = read_prelude(
        &app,
        &request,
        "transfer id",
        &id,
        params.consistency.as_deref(),
    )
    .await?
    {
        return Ok(answer);
    }
    let record = app
        .node
        .reader()
        .transfer(&id)?
        .ok_or(ApiError::TransferNotFound(id))?;
    match record.result() {
        Ok(transfer) => Ok(Json(transfer_json(&transfer)).into_response()),
        Err(rejection) => Err(ApiError::Rejected(rejection)),
    }
}
