//! The one place errors become HTTP answers: every error of the contract, its status and its
//! stable `code`. Bodies never carry internals; each error is logged once, here.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use raftpay_api::{codes, headers};
use raftpay_raft::ledger::{Rejection, RejectionCode};
use serde_json::json;

/// How long a client should wait before retrying a `503`: `Retry-After` (whole seconds, the
/// standard header) and the finer `retry-after-ms` that raftpay clients prefer.
pub const RETRY_AFTER_SECONDS: u64 = 1;
pub const RETRY_AFTER_MILLIS: u64 = 100;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("account {0} does not exist")]
    AccountNotFound(String),
    #[error("transfer {0} does not exist")]
    TransferNotFound(String),
    #[error("no such route")]
    NotFound,
    #[error("node {0} is not a member")]
    NodeNotFound(u64),
    #[error("{0}")]
    IdConflict(String),
    #[error("request body is over {0} bytes")]
    PayloadTooLarge(usize),
    /// A ledger rejection, decided and recorded under the transfer id.
    #[error("{}", .0.message)]
    Rejected(Rejection),
    /// No leader, no quorum, or no answer in time. For a write the outcome is unknown: retry
    /// with the same id.
    #[error("{0}")]
    Unavailable(String),
    /// Storage failed on this node; an operator must look.
    #[error("internal error")]
    Internal(String),
    /// The leader's disk is under its free-space reserve: nothing was proposed. Not retried
    /// by the client at once; an operator must free space.
    #[error("{0}")]
    InsufficientStorage(String),
}

impl ApiError {
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, codes::INVALID_REQUEST),
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, codes::UNAUTHORIZED),
            ApiError::AccountNotFound(_) => (StatusCode::NOT_FOUND, codes::ACCOUNT_NOT_FOUND),
            ApiError::TransferNotFound(_) => (StatusCode::NOT_FOUND, codes::TRANSFER_NOT_FOUND),
            ApiError::NotFound | ApiError::NodeNotFound(_) => {
                (StatusCode::NOT_FOUND, codes::NOT_FOUND)
            }
            ApiError::IdConflict(_) => (StatusCode::CONFLICT, codes::ID_CONFLICT),
            ApiError::PayloadTooLarge(_) => {
                (StatusCode::PAYLOAD_TOO_LARGE, codes::PAYLOAD_TOO_LARGE)
            }
            ApiError::Rejected(rejection) => {
                (rejection_status(rejection.code), rejection.code.as_str())
            }
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, codes::UNAVAILABLE),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL),
            ApiError::InsufficientStorage(_) => (
                StatusCode::INSUFFICIENT_STORAGE,
                codes::INSUFFICIENT_STORAGE,
            ),
        }
    }

    /// The contract's body: `{"error": {"code": ..., "message": ...}}`.
    pub fn body(&self) -> serde_json::Value {
        let (_, code) = self.status_and_code();
        json!({"error": {"code": code, "message": self.to_string()}})
    }
}

pub fn rejection_status(code: RejectionCode) -> StatusCode {
    match code {
        RejectionCode::InsufficientFunds
        | RejectionCode::CurrencyMismatch
        | RejectionCode::Overflow => StatusCode::UNPROCESSABLE_ENTITY,
        RejectionCode::AccountNotFound => StatusCode::NOT_FOUND,
        RejectionCode::LinkedFailed => StatusCode::FAILED_DEPENDENCY,
        RejectionCode::InvalidRequest => StatusCode::BAD_REQUEST,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        match &self {
            ApiError::Internal(detail) => tracing::error!(code, %detail, "request failed"),
            ApiError::Unavailable(detail) => tracing::warn!(code, %detail, "request unavailable"),
            ApiError::InsufficientStorage(detail) => {
                tracing::warn!(code, %detail, "write refused: disk under its reserve");
            }
            _ => tracing::debug!(code, message = %self, "request refused"),
        }
        let mut response = (status, axum::Json(self.body())).into_response();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            // The body was refused unread, so the server drops the connection after answering;
            // saying so keeps a client from sending its next request on that dead connection.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
            response.headers_mut().insert(
                headers::RETRY_AFTER_MS,
                HeaderValue::from(RETRY_AFTER_MILLIS),
            );
        }
        response
    }
}

impl From<raftpay_raft::store::ReadError> for ApiError {
    fn from(error: raftpay_raft::store::ReadError) -> Self {
        ApiError::Internal(error.to_string())
    }
}
