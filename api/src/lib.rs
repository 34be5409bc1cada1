//! raftpay's HTTP contract as Rust: what `docs/api.md` describes, in the one place the server,
//! the client, the CLI, the bench, the chaos suite and the tests take it from.
//!
//! serde only: no HTTP stack, no runtime. The server (`raftpay`) parses requests into and renders
//! answers from these types; `raftpay-client` sends [`ApiRequest`]s and decodes the answers.
#![forbid(unsafe_code)]

pub mod inspect;
pub mod request;
pub mod rules;
pub mod types;

pub use request::{json_encode, ApiRequest, Method};
pub use types::*;

/// Header names of the contract and of raftpay's additions.
pub mod headers {
    /// On answers: the `http_addr` of the leader this node knows of (clients move to it).
    pub const LEADER: &str = "x-raftpay-leader";
    /// On forwarded requests: how many nodes the request has passed (forwarding stops at 2).
    pub const HOPS: &str = "x-raftpay-hops";
    /// On `503` answers, next to `Retry-After` (whole seconds): the finer hint in milliseconds.
    pub const RETRY_AFTER_MS: &str = "retry-after-ms";
    /// On a backup (`GET /v1/backup`): the log index, last sequence number and state hash the
    /// backup holds.
    pub const BACKUP_INDEX: &str = "x-raftpay-backup-index";
    pub const BACKUP_SEQ: &str = "x-raftpay-backup-seq";
    pub const BACKUP_STATE_HASH: &str = "x-raftpay-backup-state-hash";
}

/// The stable `code` of every error answer (`{"error": {"code", "message"}}`), with its status.
pub mod codes {
    /// 400: the request breaks a rule of the contract; nothing changed.
    pub const INVALID_REQUEST: &str = "invalid_request";
    /// 401: a missing or wrong bearer token.
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// 404
    pub const ACCOUNT_NOT_FOUND: &str = "account_not_found";
    /// 404
    pub const TRANSFER_NOT_FOUND: &str = "transfer_not_found";
    /// 404: no such route, or no such cluster member.
    pub const NOT_FOUND: &str = "not_found";
    /// 409: the id was already used with different content.
    pub const ID_CONFLICT: &str = "id_conflict";
    /// 413
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    /// 422: recorded under the transfer id.
    pub const INSUFFICIENT_FUNDS: &str = "insufficient_funds";
    /// 422: recorded under the transfer id.
    pub const CURRENCY_MISMATCH: &str = "currency_mismatch";
    /// 422: a total would pass the largest amount; recorded under the transfer id.
    pub const OVERFLOW: &str = "overflow";
    /// 424: an item of an atomic batch whose other item failed.
    pub const LINKED_FAILED: &str = "linked_failed";
    /// 500: storage failed on this node.
    pub const INTERNAL: &str = "internal";
    /// 503: no leader, no quorum, or no answer in time; for a write the outcome is unknown:
    /// retry with the same id.
    pub const UNAVAILABLE: &str = "unavailable";
    /// 507: the leader's disk is under its free-space reserve; nothing was written.
    pub const INSUFFICIENT_STORAGE: &str = "insufficient_storage";
}
