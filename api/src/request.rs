//! One API request as a value: method, path and the encoded body. Re-sending the same value is
//! what makes a client's retries safe.

use serde::Serialize;

use crate::types::{Consistency, NewBatch, NewLearner, NewTransfer, Voters};
use crate::NewAccount;

/// The HTTP methods the contract uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }
}

/// One API request, independent of the node it is sent to. Build it with the constructors so the
/// path and body match the contract; re-sending the same value is what makes retries safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    pub method: Method,
    /// Path and query, starting with `/`.
    pub path: String,
    /// JSON body, already encoded, so every retry sends identical bytes.
    pub body: Option<String>,
}

impl ApiRequest {
    /// `POST /v1/accounts`.
    pub fn create_account(account: &NewAccount) -> Self {
        Self::post("/v1/accounts".to_owned(), account)
    }

    /// `GET /v1/accounts/{id}`.
    pub fn get_account(id: &str, consistency: Consistency) -> Self {
        let path = format!(
            "/v1/accounts/{}?consistency={}",
            path_segment(id),
            consistency.as_str()
        );
        Self::get(path)
    }

    /// `POST /v1/transfers`.
    pub fn transfer(transfer: &NewTransfer) -> Self {
        Self::post("/v1/transfers".to_owned(), transfer)
    }

    /// `GET /v1/transfers/{id}`.
    pub fn get_transfer(id: &str, consistency: Consistency) -> Self {
        let path = format!(
            "/v1/transfers/{}?consistency={}",
            path_segment(id),
            consistency.as_str()
        );
        Self::get(path)
    }

    /// `GET /v1/accounts/{account}/transfers`.
    pub fn history(
        account: &str,
        limit: Option<u32>,
        after: Option<u64>,
        consistency: Consistency,
    ) -> Self {
        let mut path = format!(
            "/v1/accounts/{}/transfers?consistency={}",
            path_segment(account),
            consistency.as_str()
        );
        if let Some(limit) = limit {
            path.push_str(&format!("&limit={limit}"));
        }
        if let Some(after) = after {
            path.push_str(&format!("&after={after}"));
        }
        Self::get(path)
    }

    /// `POST /v1/transfers/batch`.
    pub fn batch(transfers: &[NewTransfer], atomic: bool) -> Self {
        let body = NewBatch {
            transfers: transfers.iter().collect::<Vec<_>>(),
            atomic,
        };
        Self::post("/v1/transfers/batch".to_owned(), &body)
    }

    /// `GET /v1/cluster`.
    pub fn cluster_status() -> Self {
        Self::get("/v1/cluster".to_owned())
    }

    /// `GET /v1/backup`: a binary answer (see `raftpay-client`'s `Client::download`).
    pub fn backup() -> Self {
        Self::get("/v1/backup".to_owned())
    }

    /// `POST /v1/cluster/learners`.
    pub fn add_learner(id: u64, http_addr: &str) -> Self {
        let body = NewLearner {
            id,
            http_addr: http_addr.to_owned(),
        };
        Self::post("/v1/cluster/learners".to_owned(), &body)
    }

    /// `POST /v1/cluster/voters`.
    pub fn set_voters(ids: &[u64]) -> Self {
        let body = Voters { ids: ids.to_vec() };
        Self::post("/v1/cluster/voters".to_owned(), &body)
    }

    /// `DELETE /v1/cluster/nodes/{id}`.
    pub fn remove_node(id: u64) -> Self {
        let path = format!("/v1/cluster/nodes/{id}");
        Self {
            method: Method::Delete,
            path,
            body: None,
        }
    }

    fn get(path: String) -> Self {
        Self {
            method: Method::Get,
            path,
            body: None,
        }
    }

    fn post<T: Serialize>(path: String, body: &T) -> Self {
        Self {
            method: Method::Post,
            path,
            body: Some(json_encode(body)),
        }
    }
}

/// Encodes a request body. Cannot fail: serde_json only errors on maps with non-string keys or
/// on a `Serialize` impl that returns an error, and the request types here are plain derived
/// structs of strings, integers, booleans and `serde_json::Value`s.
pub fn json_encode<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("request bodies are plain derived structs")
}

/// Percent-encodes a path segment so that an odd id cannot reach a different route. The id
/// alphabet of the contract (`[A-Za-z0-9._:-]`) passes through unchanged.
fn path_segment(segment: &str) -> String {
    let mut encoded = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b':' | b'-' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}
