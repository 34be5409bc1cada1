//! The client against canned servers: addresses, paths and bodies of the contract, the
//! definite/indefinite rule, failover, retry hints, the observer.
use super::*;
use std::sync::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[test]
fn node_addresses_are_normalised() {
    assert_eq!(
        node_base_url("127.0.0.1:7001").unwrap(),
        "http://127.0.0.1:7001"
    );
    assert_eq!(
        node_base_url(" http://localhost:7002/ ").unwrap(),
        "http://localhost:7002"
    );
    for bad in [
        "",
        "https://127.0.0.1:7001",
        "http://h:1/prefix",
        "http://h:1/?x=1",
        "http://u:p@h:1",
        "a b:1",
    ] {
        assert!(
            matches!(node_base_url(bad), Err(ClientError::Config(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn paths_follow_the_contract() {
    let request = ApiRequest::get_account("alice", Consistency::Linearizable);
    assert_eq!(request.method, Method::Get);
    assert_eq!(request.path, "/v1/accounts/alice?consistency=linearizable");
    assert_eq!(
        ApiRequest::get_transfer("t-1.a:b_c", Consistency::Local).path,
        "/v1/transfers/t-1.a:b_c?consistency=local"
    );
    assert_eq!(
        ApiRequest::history("bob", Some(10), Some(17), Consistency::Local).path,
        "/v1/accounts/bob/transfers?consistency=local&limit=10&after=17"
    );
    assert_eq!(
        ApiRequest::history("bob", None, None, Consistency::Linearizable).path,
        "/v1/accounts/bob/transfers?consistency=linearizable"
    );
    assert_eq!(ApiRequest::remove_node(4).method, Method::Delete);
    assert_eq!(ApiRequest::remove_node(4).path, "/v1/cluster/nodes/4");
}

#[test]
fn odd_ids_cannot_escape_their_path_segment() {
    assert_eq!(
        ApiRequest::get_account("a/b?c d", Consistency::Local).path,
        "/v1/accounts/a%2Fb%3Fc%20d?consistency=local"
    );
}

#[test]
fn request_bodies_match_the_contract() {
    let transfer = NewTransfer {
        id: "t-1".into(),
        from: "bank".into(),
        to: "alice".into(),
        amount: 250,
        memo: None,
    };
    let request = ApiRequest::transfer(&transfer);
    assert_eq!(
        request.body.as_deref(),
        Some(r#"{"id":"t-1","from":"bank","to":"alice","amount":250}"#)
    );
    let batch = ApiRequest::batch(std::slice::from_ref(&transfer), true);
    assert_eq!(batch.path, "/v1/transfers/batch");
    let body: serde_json::Value = serde_json::from_str(batch.body.as_deref().unwrap()).unwrap();
    assert_eq!(body["atomic"], true);
    assert_eq!(body["transfers"][0]["amount"], 250);
    assert_eq!(
        ApiRequest::set_voters(&[1, 2]).body.as_deref(),
        Some(r#"{"ids":[1,2]}"#)
    );
    assert_eq!(
        ApiRequest::add_learner(4, "127.0.0.1:7004").body.as_deref(),
        Some(r#"{"id":4,"http_addr":"127.0.0.1:7004"}"#)
    );
}

#[test]
fn standard_error_bodies_decode_to_api_errors() {
    let reply = Reply {
        status: 422,
        body: r#"{"error":{"code":"insufficient_funds","message":"alice has 0"}}"#.into(),
        bytes: Vec::new(),
    };
    assert_eq!(
        reply.decode::<Transfer>(),
        Err(ClientError::Api {
            status: 422,
            code: "insufficient_funds".into(),
            message: "alice has 0".into(),
        })
    );
}

#[test]
fn non_standard_error_bodies_keep_status_and_text() {
    let reply = Reply {
        status: 405,
        body: String::new(),
        bytes: Vec::new(),
    };
    assert_eq!(
        reply.api_error(),
        ClientError::Api {
            status: 405,
            code: "http_405".into(),
            message: "Method Not Allowed".into(),
        }
    );
    let reply = Reply {
        status: 415,
        body: "Expected JSON".into(),
        bytes: Vec::new(),
    };
    assert!(
        matches!(reply.api_error(), ClientError::Api { message, .. } if message == "Expected JSON")
    );
}

#[test]
fn malformed_success_bodies_are_decode_errors() {
    let reply = Reply {
        status: 200,
        body: r#"{"id":"a"}"#.into(),
        bytes: Vec::new(),
    };
    assert!(matches!(
        reply.decode::<Account>(),
        Err(ClientError::Decode(_))
    ));
}

#[test]
fn cluster_status_tolerates_extra_fields_and_null_indexes() {
    let body = r#"{"node_id":1,"leader_id":null,"term":5,"last_log_index":null,
        "last_applied":3,"state_hash":"abc","members":[
        {"id":1,"http_addr":"127.0.0.1:7001","role":"voter","lag":0}]}"#;
    let reply = Reply {
        status: 200,
        body: body.into(),
        bytes: Vec::new(),
    };
    let status: ClusterStatus = reply.decode().unwrap();
    assert_eq!(status.leader_id, None);
    assert_eq!(status.last_log_index, 0);
    assert_eq!(status.last_applied, 3);
    assert_eq!(status.members[0].role, "voter");
}

#[test]
fn retry_after_is_whole_seconds_and_capped() {
    let mut headers = HeaderMap::new();
    assert_eq!(retry_after(&headers), None);
    headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    assert_eq!(retry_after(&headers), Some(Duration::from_secs(1)));
    headers.insert(RETRY_AFTER, HeaderValue::from_static("3600"));
    assert_eq!(retry_after(&headers), Some(RETRY_AFTER_MAX));
    headers.insert(
        RETRY_AFTER,
        HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
    );
    assert_eq!(retry_after(&headers), None);
}

// ---- retry loop against canned HTTP servers ----

/// What a canned server saw: request line, headers (lower-cased), body.
#[derive(Debug, Clone)]
struct Seen {
    request_line: String,
    headers: String,
    body: String,
}

/// A canned response; `None` means accept the connection and never answer.
type Canned = Option<Vec<u8>>;

fn canned(status: u16, extra_headers: &str, body: &str) -> Canned {
    Some(format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{extra_headers}\r\n{body}",
        body.len()
    ).into_bytes())
}

fn canned_binary(body: &[u8]) -> Canned {
    let mut response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(body);
    Some(response)
}

/// Serves `responses` in order, one per connection, and records each request.
async fn canned_server(responses: Vec<Canned>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen_server = Arc::clone(&seen);
    // Runs until the test's runtime shuts down; each connection is handled inline.
    tokio::spawn(async move {
        for response in responses {
            let (mut stream, _) = listener.accept().await.unwrap();
            let request = read_request(&mut stream).await;
            seen_server.lock().unwrap().push(request);
            match response {
                Some(bytes) => stream.write_all(&bytes).await.unwrap(),
                // Hold the connection open, silent, until the client gives up.
                None => tokio::time::sleep(Duration::from_secs(30)).await,
            }
        }
    });
    (address, seen)
}

async fn read_request(stream: &mut TcpStream) -> Seen {
    let mut buffer = Vec::new();
    let mut chunk = [0_u8; 4096];
    let header_end = loop {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "client closed before the request ended");
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(at) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).to_lowercase();
    let content_length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |value| value.trim().parse().unwrap());
    while buffer.len() < header_end + content_length {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "client closed before the body ended");
        buffer.extend_from_slice(&chunk[..n]);
    }
    let original_head = String::from_utf8_lossy(&buffer[..header_end]).into_owned();
    Seen {
        request_line: original_head.lines().next().unwrap_or_default().to_owned(),
        headers: head,
        body: String::from_utf8_lossy(&buffer[header_end..]).into_owned(),
    }
}

/// An address that refuses connections: bound, then closed.
async fn refusing_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().to_string()
}

fn new_transfer() -> NewTransfer {
    NewTransfer {
        id: "t-1".into(),
        from: "bank".into(),
        to: "alice".into(),
        amount: 250,
        memo: Some("top-up".into()),
    }
}

const TRANSFER_BODY: &str = r#"{"id":"t-1","from":"bank","to":"alice","amount":250,"currency":"CNY","memo":"top-up","seq":1}"#;
const UNAVAILABLE_BODY: &str = r#"{"error":{"code":"unavailable","message":"no leader"}}"#;

/// Goal: a write survives a dead node and a 503 by re-sending the identical request to the
/// next node. Method: node A refuses connections; node B answers 503, then 201.
#[tokio::test]
async fn fails_over_past_refused_and_503_to_the_definite_answer() {
    let refused = refusing_address().await;
    let (server, seen) = canned_server(vec![
        canned(503, "retry-after: 0\r\n", UNAVAILABLE_BODY),
        canned(201, "", TRANSFER_BODY),
    ])
    .await;
    let client = Client::new(&[refused, server], Some("s3cret"))
        .unwrap()
        .with_request_timeout(Duration::from_secs(2))
        .with_retry_deadline(Duration::from_secs(5));

    let (transfer, created) = client.transfer(&new_transfer()).await.unwrap();

    assert!(created);
    assert_eq!(transfer.seq, 1);
    assert_eq!(transfer.memo.as_deref(), Some("top-up"));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].request_line, "POST /v1/transfers HTTP/1.1");
    assert_eq!(
        seen[0].body, seen[1].body,
        "a retry must re-send the same bytes"
    );
    assert!(seen[0].headers.contains("authorization: bearer s3cret"));
    assert!(seen[0].headers.contains("content-type: application/json"));
}

/// Goal: `deliver` reports which node answered after how many attempts, and the observer
/// sees every attempt with its status or its reason. Method: node A refuses connections;
/// node B answers 503, then 201; the first node tried is A.
#[tokio::test]
async fn deliver_and_the_observer_see_every_attempt() {
    let refused = refusing_address().await;
    let (server, _seen) = canned_server(vec![
        canned(503, "retry-after: 0\r\n", UNAVAILABLE_BODY),
        canned(201, "", TRANSFER_BODY),
    ])
    .await;
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let observed = Arc::clone(&attempts);
    let client = Client::new(&[refused, server], None)
        .unwrap()
        .with_observer(move |attempted| {
            observed.lock().unwrap().push((
                attempted.node_index,
                attempted.attempt,
                attempted.status,
                attempted.definite,
                attempted.reason.is_some(),
            ));
        });
    let delivery = Delivery {
        node_first: 0,
        attempt_timeout: Duration::from_secs(2),
        deadline: Instant::now() + Duration::from_secs(5),
    };
    let delivered = client
        .deliver(&ApiRequest::transfer(&new_transfer()), delivery)
        .await
        .unwrap();
    assert_eq!(delivered.reply.status, 201);
    assert_eq!((delivered.node_index, delivered.attempts), (1, 4));
    assert_eq!(
        *attempts.lock().unwrap(),
        vec![
            (0, 0, None, false, true),
            (1, 1, Some(503), false, true),
            (0, 2, None, false, true),
            (1, 3, Some(201), true, false),
        ]
    );
}

/// Goal: a binary download (a backup) goes through the same retry loop and comes back byte for
/// byte; an error answer stays text; a body over the limit is refused. Method: node A refuses
/// connections, node B answers 503 and then a body that is not UTF-8.
#[tokio::test]
async fn a_download_fails_over_and_keeps_the_bytes() {
    let body: Vec<u8> = (0..=255_u8).rev().cycle().take(10_000).collect();
    assert!(String::from_utf8(body.clone()).is_err());
    let refused = refusing_address().await;
    let (server, seen) = canned_server(vec![
        canned(503, "retry-after: 0\r\n", UNAVAILABLE_BODY),
        canned_binary(&body),
        canned(
            401,
            "",
            r#"{"error":{"code":"unauthorized","message":"token"}}"#,
        ),
        canned_binary(&body),
    ])
    .await;
    let client = Client::new(&[refused, server], None).unwrap();
    let delivery = || Delivery {
        node_first: 0,
        attempt_timeout: Duration::from_secs(2),
        deadline: Instant::now() + Duration::from_secs(5),
    };
    let delivered = client
        .download(&ApiRequest::backup(), delivery(), 1 << 20)
        .await
        .unwrap();
    assert_eq!(delivered.reply.status, 200);
    assert_eq!(delivered.reply.bytes, body, "the bytes as sent");
    assert_eq!(delivered.node_index, 1);
    assert_eq!(
        seen.lock().unwrap()[1].request_line,
        "GET /v1/backup HTTP/1.1"
    );

    let refusal = client
        .download(&ApiRequest::backup(), delivery(), 1 << 20)
        .await
        .unwrap();
    assert_eq!(refusal.reply.status, 401);
    assert!(refusal.reply.bytes.is_empty());
    assert!(
        matches!(refusal.reply.api_error(), ClientError::Api { code, .. } if code == "unauthorized")
    );

    let too_large = client
        .download(&ApiRequest::backup(), delivery(), body.len() - 1)
        .await
        .expect_err("over the limit");
    assert!(
        matches!(&too_large.error, ClientError::Decode(message) if message.contains("exceeds")),
        "{:?}",
        too_large.error
    );
}

/// Goal: `deliver` gives up at its deadline with the attempts made and the last reason.
/// Method: one node that refuses connections, a 300 ms deadline.
#[tokio::test]
async fn deliver_reports_the_attempts_when_no_node_answers() {
    let refused = refusing_address().await;
    let client = Client::new(&[refused], None).unwrap();
    let delivery = Delivery {
        node_first: 0,
        attempt_timeout: Duration::from_millis(200),
        deadline: Instant::now() + Duration::from_millis(300),
    };
    let undelivered = client
        .deliver(&ApiRequest::cluster_status(), delivery)
        .await
        .unwrap_err();
    assert!(undelivered.attempts >= 1);
    assert_eq!(undelivered.node_index, 0);
    assert!(
        matches!(&undelivered.error, ClientError::Unavailable { last } if last.contains("connect")),
        "{:?}",
        undelivered.error
    );
}

/// Goal: a definite 4xx is returned at once. Method: node A answers 422; node B, which
/// would accept, must never be asked.
#[tokio::test]
async fn a_422_is_returned_at_once_without_retry() {
    let rejection = r#"{"error":{"code":"insufficient_funds","message":"bank is short"}}"#;
    let (first, seen_first) = canned_server(vec![canned(422, "", rejection)]).await;
    let (second, seen_second) = canned_server(vec![canned(201, "", TRANSFER_BODY)]).await;
    let client = Client::new(&[first, second], None).unwrap();

    let error = client.transfer(&new_transfer()).await.unwrap_err();

    assert_eq!(
        error,
        ClientError::Api {
            status: 422,
            code: "insufficient_funds".into(),
            message: "bank is short".into(),
        }
    );
    assert_eq!(seen_first.lock().unwrap().len(), 1);
    assert_eq!(seen_second.lock().unwrap().len(), 0);
}

/// Goal: a node that accepts but never answers costs one request timeout, then the next
/// node is tried; the node that answered is preferred for the next call.
#[tokio::test]
async fn a_silent_node_times_out_and_the_next_one_answers() {
    let account = r#"{"id":"alice","currency":"CNY","allow_overdraft":false,"debits":0,"credits":250,"balance":250}"#;
    let (silent, _) = canned_server(vec![None]).await;
    let (server, seen) =
        canned_server(vec![canned(200, "", account), canned(200, "", account)]).await;
    let client = Client::new(&[silent, server], None)
        .unwrap()
        .with_request_timeout(Duration::from_millis(200))
        .with_retry_deadline(Duration::from_secs(5));

    let first = client
        .get_account("alice", Consistency::Local)
        .await
        .unwrap();
    let started = Instant::now();
    let second = client
        .get_account("alice", Consistency::Local)
        .await
        .unwrap();

    assert_eq!(first, second);
    assert_eq!(first.balance, 250);
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "went back to the silent node"
    );
    assert_eq!(
        seen.lock().unwrap()[0].request_line,
        "GET /v1/accounts/alice?consistency=local HTTP/1.1"
    );
}

/// Goal: when no node answers, the call ends near its deadline with `Unavailable`.
#[tokio::test]
async fn the_retry_deadline_bounds_a_dead_cluster() {
    let client = Client::new(&[refusing_address().await, refusing_address().await], None)
        .unwrap()
        .with_retry_deadline(Duration::from_millis(300));
    let started = Instant::now();

    let error = client.cluster_status(None).await.unwrap_err();

    assert!(
        matches!(error, ClientError::Unavailable { .. }),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// Goal: asking one named node makes one attempt, with no failover and no retry.
#[tokio::test]
async fn a_named_node_gets_exactly_one_attempt() {
    let (server, seen) = canned_server(vec![
        canned(503, "", UNAVAILABLE_BODY),
        canned(503, "", UNAVAILABLE_BODY),
    ])
    .await;
    let client = Client::new(&[refusing_address().await], None).unwrap();

    let error = client.cluster_status(Some(&server)).await.unwrap_err();

    assert!(
        matches!(&error, ClientError::Unavailable { last } if last.contains("unavailable")),
        "{error:?}"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
}

/// Goal: `raw` returns 4xx answers as data, and non-JSON bodies as a JSON string.
#[tokio::test]
async fn raw_returns_status_and_json() {
    let (server, _) = canned_server(vec![
        canned(
            404,
            "",
            r#"{"error":{"code":"not_found","message":"no route"}}"#,
        ),
        canned(200, "", "raft_term 5\n"),
    ])
    .await;
    let client = Client::new(&[server], None).unwrap();

    let (status, body) = client.raw(Method::Get, "/nope", None).await.unwrap();
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, body) = client.raw(Method::Get, "/metrics", None).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, serde_json::Value::String("raft_term 5\n".into()));
}
