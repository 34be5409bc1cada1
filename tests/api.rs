//! The HTTP contract of `docs/api.md`, request by request, against a real three-node cluster:
//! every request is sent to every node (followers forward to the leader), and every error code is
//! provoked and checked to change nothing.

mod common;

use common::{account_body, transfer_body, TestCluster};
use reqwest::Method;
use serde_json::{json, Value};

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no code>")
}

async fn balances(cluster: &TestCluster, node: u64, ids: &[&str]) -> Vec<i64> {
    let mut out = Vec::new();
    for id in ids {
        let (status, body) = cluster.get(node, &format!("/v1/accounts/{id}")).await;
        assert_eq!(status, 200, "{body}");
        out.push(body["balance"].as_i64().expect("balance"));
    }
    out
}

async fn setup_accounts(cluster: &TestCluster) {
    for (id, currency, overdraft) in [
        ("bank", "CNY", true),
        ("alice", "CNY", false),
        ("bob", "CNY", false),
        ("usd-bank", "USD", true),
        ("carol", "USD", false),
    ] {
        let (status, body) = cluster
            .post(1, "/v1/accounts", account_body(id, currency, overdraft))
            .await;
        assert_eq!(status, 201, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_and_transfers_work_from_every_node() {
    // Goal: each write and read of the contract answers the same from every node. Method: send
    // each to nodes 1, 2 and 3 in turn and compare with the documented shapes.
    let cluster = TestCluster::start(3).await;
    setup_accounts(&cluster).await;

    // Account create is idempotent on every node; the account reads the same everywhere.
    for node in 1..=3 {
        let (status, body) = cluster
            .post(node, "/v1/accounts", account_body("alice", "CNY", false))
            .await;
        assert_eq!(status, 200, "node {node}: {body}");
        assert_eq!(
            body,
            json!({"id":"alice","currency":"CNY","allow_overdraft":false,"debits":0,"credits":0,"balance":0})
        );
    }
    let (status, body) = cluster
        .post(2, "/v1/accounts", json!({"id": "dave", "currency": "CNY"}))
        .await;
    assert_eq!(
        (status, body["allow_overdraft"].clone()),
        (201, json!(false)),
        "allow_overdraft defaults to false"
    );

    // A transfer to each node in turn; seqs rise 1, 2, 3.
    for node in 1..=3u64 {
        let id = format!("t-{node}");
        let (status, body) = cluster
            .post(
                node,
                "/v1/transfers",
                json!({"id": id, "from": "bank", "to": "alice", "amount": 100, "memo": "top-up"}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(
            body,
            json!({"id": id, "from":"bank","to":"alice","amount":100,"currency":"CNY","memo":"top-up","seq": node})
        );
    }
    // Re-sending to other nodes returns the original with 200 and changes nothing.
    for node in 1..=3u64 {
        let (status, body) = cluster.post(node, "/v1/transfers", json!({"id": "t-1", "from": "bank", "to": "alice", "amount": 100, "memo": "top-up"})).await;
        assert_eq!((status, body["seq"].clone()), (200, json!(1)), "{body}");
    }
    for node in 1..=3 {
        assert_eq!(
            balances(&cluster, node, &["bank", "alice"]).await,
            [-300, 300]
        );
        let (status, body) = cluster.get(node, "/v1/transfers/t-2").await;
        assert_eq!((status, body["seq"].clone()), (200, json!(2)));
        let (status, body) = cluster
            .get(node, "/v1/accounts/alice?consistency=local")
            .await;
        assert_eq!(status, 200, "{body}");
    }
    // A transfer without memo has no memo field.
    let (status, body) = cluster
        .post(
            3,
            "/v1/transfers",
            transfer_body("t-plain", "alice", "bob", 50),
        )
        .await;
    assert_eq!(status, 201);
    assert!(body.get("memo").is_none(), "{body}");

    // History: commit order, pages with `next`, absent on the last page.
    let (status, page) = cluster.get(2, "/v1/accounts/alice/transfers?limit=2").await;
    assert_eq!(status, 200, "{page}");
    let seqs: Vec<u64> = page["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2]);
    assert_eq!(page["next"], json!(2));
    let (_, page) = cluster
        .get(3, "/v1/accounts/alice/transfers?limit=2&after=2")
        .await;
    let seqs: Vec<u64> = page["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [3, 4]);
    assert!(page.get("next").is_none(), "last page has no next: {page}");
    let (_, page) = cluster.get(1, "/v1/accounts/bob/transfers").await;
    assert_eq!(page["transfers"][0]["id"], json!("t-plain"));

    // Linearizable read on a follower right after a write on another follower sees it.
    let leader = cluster.leader_wait(std::time::Duration::from_secs(5)).await;
    let followers: Vec<u64> = (1..=3).filter(|n| *n != leader).collect();
    for i in 0..10 {
        let id = format!("lin-{i}");
        let (status, _) = cluster
            .post(
                followers[0],
                "/v1/transfers",
                transfer_body(&id, "bank", "bob", 1),
            )
            .await;
        assert_eq!(status, 201);
        let (status, body) = cluster
            .get(followers[1], &format!("/v1/transfers/{id}"))
            .await;
        assert_eq!(
            status, 200,
            "linearizable read on a follower missed {id}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_code_is_returned_and_changes_nothing() {
    // Goal: each documented error is reachable, carries its code, and leaves balances and seqs
    // untouched. Method: provoke each one (on a rotating node), then compare the state.
    let cluster = TestCluster::start(3).await;
    setup_accounts(&cluster).await;
    let (status, _) = cluster
        .post(
            1,
            "/v1/transfers",
            transfer_body("fund", "bank", "alice", 100),
        )
        .await;
    assert_eq!(status, 201);
    let before = balances(&cluster, 1, &["bank", "alice", "bob", "usd-bank", "carol"]).await;

    let bad_requests: Vec<(&str, Value)> = vec![
        (
            "/v1/transfers",
            json!({"id": "x", "from": "bank", "to": "alice"}),
        ),
        (
            "/v1/transfers",
            json!({"id": "x", "from": "bank", "to": "alice", "amount": 1, "extra": true}),
        ),
        (
            "/v1/transfers",
            json!({"id": "x", "from": "bank", "to": "alice", "amount": 0}),
        ),
        (
            "/v1/transfers",
            json!({"id": "x", "from": "bank", "to": "alice", "amount": -5}),
        ),
        (
            "/v1/transfers",
            json!({"id": "x", "from": "bank", "to": "alice", "amount": 1.5}),
        ),
        (
            "/v1/transfers",
            json!({"id": "x", "from": "bank", "to": "alice", "amount": "10"}),
        ),
        (
            "/v1/transfers",
            json!({"id": "x", "from": "bank", "to": "alice", "amount": 9_223_372_036_854_775_808u64}),
        ),
        (
            "/v1/transfers",
            json!({"id": "x", "from": "alice", "to": "alice", "amount": 1}),
        ),
        (
            "/v1/transfers",
            json!({"id": "bad id", "from": "bank", "to": "alice", "amount": 1}),
        ),
        (
            "/v1/transfers",
            json!({"id": "x".repeat(65), "from": "bank", "to": "alice", "amount": 1}),
        ),
        (
            "/v1/transfers",
            json!({"id": "x", "from": "bank", "to": "alice", "amount": 1, "memo": "m".repeat(257)}),
        ),
        ("/v1/accounts", json!({"id": "e1", "currency": "cny"})),
        ("/v1/accounts", json!({"id": "e1", "currency": "CNYY"})),
        ("/v1/accounts", json!({"id": "e1"})),
        ("/v1/accounts", json!({"id": "", "currency": "CNY"})),
        ("/v1/transfers/batch", json!({"transfers": []})),
        (
            "/v1/transfers/batch",
            json!({"transfers": [{"id": "b1", "from": "bank", "to": "alice", "amount": 1}, {"id": "b2", "from": "bank", "to": "alice", "amount": 0}]}),
        ),
    ];
    for (index, (path, body)) in bad_requests.iter().enumerate() {
        let node = (index as u64 % 3) + 1;
        let (status, answer) = cluster.post(node, path, body.clone()).await;
        assert_eq!(
            (status, code(&answer)),
            (400, "invalid_request"),
            "{path} {body} -> {answer}"
        );
        assert!(answer["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // The malformed batch item is named by its index, and nothing of the batch was recorded.
    let (_, answer) = cluster
        .post(2, "/v1/transfers/batch", bad_requests[16].1.clone())
        .await;
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("transfers[1]"),
        "{answer}"
    );
    let (status, _) = cluster.get(3, "/v1/transfers/b1").await;
    assert_eq!(status, 404, "a refused batch records nothing");
    // Not JSON at all.
    let response = cluster
        .http
        .post(format!("http://{}/v1/transfers", cluster.addr(1)))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    // 413: a body over the 1 MiB default.
    let huge = json!({"id": "big", "from": "bank", "to": "alice", "amount": 1, "memo": "m".repeat(2 * 1024 * 1024)});
    for node in 1..=3 {
        let (status, answer) = cluster.post(node, "/v1/transfers", huge.clone()).await;
        assert_eq!(
            (status, code(&answer)),
            (413, "payload_too_large"),
            "node {node}"
        );
    }
    // ...and says the connection closes: the body was left unread, so the server drops it, and
    // a client must not send its next request there.
    let response = cluster
        .http
        .post(format!("http://{}/v1/transfers", cluster.addr(2)))
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );

    // 404s.
    let (status, answer) = cluster.get(2, "/v1/accounts/nobody").await;
    assert_eq!((status, code(&answer)), (404, "account_not_found"));
    let (status, answer) = cluster.get(3, "/v1/accounts/nobody/transfers").await;
    assert_eq!((status, code(&answer)), (404, "account_not_found"));
    let (status, answer) = cluster.get(1, "/v1/transfers/never-seen").await;
    assert_eq!((status, code(&answer)), (404, "transfer_not_found"));
    let (status, answer) = cluster.get(1, "/v2/nothing").await;
    assert_eq!((status, code(&answer)), (404, "not_found"));
    let (status, answer) = cluster
        .call(2, Method::DELETE, "/v1/accounts/alice", None)
        .await;
    assert_eq!((status, code(&answer)), (404, "not_found"));
    let (status, answer) = cluster
        .post(
            2,
            "/v1/transfers",
            transfer_body("to-nobody", "bank", "nobody", 5),
        )
        .await;
    assert_eq!(
        (status, code(&answer)),
        (404, "account_not_found"),
        "unknown account is a recorded rejection"
    );

    // 409: same id, other content (transfers and accounts).
    let (status, answer) = cluster
        .post(
            3,
            "/v1/transfers",
            transfer_body("fund", "bank", "alice", 101),
        )
        .await;
    assert_eq!((status, code(&answer)), (409, "id_conflict"));
    let (status, answer) = cluster
        .post(2, "/v1/accounts", account_body("alice", "USD", false))
        .await;
    assert_eq!((status, code(&answer)), (409, "id_conflict"));

    // 422s, recorded: the same answer again even after funding.
    let (status, answer) = cluster
        .post(1, "/v1/transfers", transfer_body("poor", "bob", "alice", 5))
        .await;
    assert_eq!((status, code(&answer)), (422, "insufficient_funds"));
    let (status, answer) = cluster
        .post(2, "/v1/transfers", transfer_body("fx", "bank", "carol", 5))
        .await;
    assert_eq!((status, code(&answer)), (422, "currency_mismatch"));
    let (status, answer) = cluster
        .post(
            3,
            "/v1/transfers",
            transfer_body("huge", "bank", "alice", 9_223_372_036_854_775_807),
        )
        .await;
    assert_eq!((status, code(&answer)), (422, "overflow"));
    // Funding bob, then re-sending `poor`: still rejected (decided once).
    let (status, _) = cluster
        .post(
            1,
            "/v1/transfers",
            transfer_body("fund-bob", "bank", "bob", 50),
        )
        .await;
    assert_eq!(status, 201);
    for node in 1..=3 {
        let (status, answer) = cluster
            .post(
                node,
                "/v1/transfers",
                transfer_body("poor", "bob", "alice", 5),
            )
            .await;
        assert_eq!(
            (status, code(&answer)),
            (422, "insufficient_funds"),
            "node {node}"
        );
        let (status, answer) = cluster.get(node, "/v1/transfers/poor").await;
        assert_eq!(
            (status, code(&answer)),
            (422, "insufficient_funds"),
            "GET of a rejected id returns its error"
        );
        let (status, answer) = cluster.get(node, "/v1/transfers/to-nobody").await;
        assert_eq!((status, code(&answer)), (404, "account_not_found"));
    }
    // A bad consistency value and bad paging.
    let (status, answer) = cluster
        .get(1, "/v1/accounts/alice?consistency=eventual")
        .await;
    assert_eq!((status, code(&answer)), (400, "invalid_request"));
    let (status, answer) = cluster.get(1, "/v1/accounts/alice/transfers?limit=0").await;
    assert_eq!((status, code(&answer)), (400, "invalid_request"));
    let (status, answer) = cluster
        .get(1, "/v1/accounts/alice/transfers?after=-1")
        .await;
    assert_eq!((status, code(&answer)), (400, "invalid_request"));

    let after = balances(&cluster, 3, &["bank", "alice", "bob", "usd-bank", "carol"]).await;
    assert_eq!(
        after,
        vec![
            before[0] - 50,
            before[1],
            before[2] + 50,
            before[3],
            before[4]
        ],
        "only fund-bob moved money"
    );
    let (_, status) = cluster.get(1, "/v1/cluster").await;
    assert_eq!(status["seq_last"], json!(2), "rejections take no seq");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_decided_per_item_or_atomically() {
    // Goal: the batch endpoint's per-item results, atomic all-or-nothing, linked_failed and
    // replays. Method: send batches to followers and the leader and read each id back.
    let cluster = TestCluster::start(3).await;
    setup_accounts(&cluster).await;
    let batch = json!({"transfers": [
        {"id": "b1", "from": "bank", "to": "alice", "amount": 10},
        {"id": "b2", "from": "bob", "to": "alice", "amount": 10},
        {"id": "b3", "from": "bank", "to": "carol", "amount": 10},
        {"id": "b4", "from": "alice", "to": "bob", "amount": 10}
    ]});
    let (status, answer) = cluster.post(2, "/v1/transfers/batch", batch.clone()).await;
    assert_eq!(status, 200, "{answer}");
    let statuses: Vec<u64> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [201, 422, 422, 201]);
    assert_eq!(
        answer["results"][1]["error"]["code"],
        json!("insufficient_funds")
    );
    assert_eq!(
        answer["results"][2]["error"]["code"],
        json!("currency_mismatch")
    );
    assert_eq!(answer["results"][3]["transfer"]["seq"], json!(2));
    // Re-sent: the same outcomes (posted ones as 200).
    let (_, again) = cluster.post(3, "/v1/transfers/batch", batch).await;
    let statuses: Vec<u64> = again["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [200, 422, 422, 200]);

    // Atomic with a failing item: nothing posts; the failure is reported, the rest linked_failed.
    let atomic = json!({"atomic": true, "transfers": [
        {"id": "a1", "from": "bank", "to": "bob", "amount": 5},
        {"id": "a2", "from": "alice", "to": "bob", "amount": 1000},
        {"id": "a3", "from": "bank", "to": "alice", "amount": 5}
    ]});
    let before = balances(&cluster, 1, &["bank", "alice", "bob"]).await;
    let (status, answer) = cluster.post(1, "/v1/transfers/batch", atomic.clone()).await;
    assert_eq!(status, 200);
    let statuses: Vec<u64> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [424, 422, 424], "{answer}");
    assert_eq!(
        answer["results"][0]["error"]["code"],
        json!("linked_failed")
    );
    assert_eq!(
        balances(&cluster, 2, &["bank", "alice", "bob"]).await,
        before
    );
    let (status, answer) = cluster.get(3, "/v1/transfers/a1").await;
    assert_eq!((status, code(&answer)), (424, "linked_failed"));
    let (_, again) = cluster.post(2, "/v1/transfers/batch", atomic).await;
    let statuses: Vec<u64> = again["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [424, 422, 424]);

    // Atomic that succeeds: every item posts with consecutive seqs.
    let ok = json!({"atomic": true, "transfers": [
        {"id": "c1", "from": "bank", "to": "bob", "amount": 5},
        {"id": "c2", "from": "bob", "to": "alice", "amount": 5}
    ]});
    let (_, answer) = cluster.post(3, "/v1/transfers/batch", ok).await;
    let seqs: Vec<u64> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["transfer"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [3, 4], "{answer}");

    // The 8190 limit.
    let items: Vec<Value> = (0..8191)
        .map(|i| json!({"id": format!("m{i}"), "from": "bank", "to": "alice", "amount": 1}))
        .collect();
    let (status, answer) = cluster
        .post(1, "/v1/transfers/batch", json!({"transfers": items}))
        .await;
    assert_eq!((status, code(&answer)), (400, "invalid_request"));
    let items: Vec<Value> = (0..8190)
        .map(|i| json!({"id": format!("m{i}"), "from": "bank", "to": "alice", "amount": 1}))
        .collect();
    let (status, answer) = cluster
        .post(2, "/v1/transfers/batch", json!({"transfers": items}))
        .await;
    assert_eq!(status, 200, "{}", code(&answer));
    assert_eq!(answer["results"].as_array().unwrap().len(), 8190);
    // b1 in, b4 out, c2 in, and one from each of the 8190 batch items.
    let (b1, b4, c2, items) = (10, 10, 5, 8190);
    let alice_expected = b1 - b4 + c2 + items;
    assert_eq!(balances(&cluster, 3, &["alice"]).await[0], alice_expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_health_ready_and_auth() {
    // Goal: the operations routes answer on every node, and an API token guards `/v1/`.
    // Method: query each; then start a cluster with a token and a secret and try without them.
    // (`/metrics` is checked on every node, idle and under load, in `tests/metrics.rs`.)
    let cluster = TestCluster::start(3).await;
    for node in 1..=3 {
        let (status, body) = cluster.get(node, "/v1/cluster").await;
        assert_eq!(status, 200);
        assert_eq!(body["node_id"], json!(node));
        assert!(body["leader_id"].as_u64().is_some());
        assert_eq!(body["members"].as_array().unwrap().len(), 3);
        assert!(body["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["role"] == json!("voter")));
        for key in ["term", "last_log_index", "last_applied"] {
            assert!(body[key].as_u64().is_some(), "{key} in {body}");
        }
        assert_eq!(cluster.get(node, "/health").await.0, 200);
        let ready = common::eventually(std::time::Duration::from_secs(10), "ready", || async {
            (cluster.get(node, "/ready").await.0 == 200).then_some(())
        });
        ready.await;
    }
    drop(cluster);

    let timing = common::Timing {
        api_token: Some("s3cret".into()),
        ..Default::default()
    };
    let secured = TestCluster::start_with(3, timing).await;
    let anonymous = secured
        .http
        .post(format!("http://{}/v1/accounts", secured.addr(1)))
        .json(&account_body("a", "CNY", false))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let answer: Value = anonymous.json().await.unwrap();
    assert_eq!(code(&answer), "unauthorized");
    let response = secured
        .http
        .post(format!("http://{}/v1/accounts", secured.addr(2)))
        .bearer_auth("s3cret")
        .json(&account_body("a", "CNY", false))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        201,
        "the token is forwarded with the request"
    );
    let wrong = secured
        .http
        .get(format!("http://{}/v1/accounts/a", secured.addr(3)))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        secured.get(1, "/health").await.0,
        200,
        "health needs no token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_name_the_leader_and_the_client_moves_there() {
    // Goal: every `/v1/` answer names the leader (`x-raftpay-leader`), so a client can skip the
    // forwarding hop; raftpay's client moves there unless told to stay. Method: ask a follower,
    // read the header; then send a transfer through clients that start at the follower, with
    // and without following, and see where each would send its next request.
    let cluster = TestCluster::start(3).await;
    setup_accounts(&cluster).await;
    let leader = cluster
        .leader_wait(std::time::Duration::from_secs(10))
        .await;
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    for path in ["/v1/accounts/alice", "/v1/cluster"] {
        let response = cluster
            .http
            .get(format!("http://{}{path}", cluster.addr(follower)))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response
                .headers()
                .get("x-raftpay-leader")
                .and_then(|v| v.to_str().ok()),
            Some(cluster.addr(leader)),
            "{path} from node {follower}"
        );
    }
    // Not on routes outside `/v1/`.
    let health = cluster
        .http
        .get(format!("http://{}/health", cluster.addr(follower)))
        .send()
        .await
        .unwrap();
    assert!(health.headers().get("x-raftpay-leader").is_none());

    let nodes = [cluster.addr(follower), cluster.addr(leader)];
    let following = raftpay_client::Client::new(&nodes, None).expect("client");
    let staying = following.with_node_first(0).with_follow_leader(false);
    assert_eq!(following.node_preferred(), format!("http://{}", nodes[0]));
    for (client, id) in [(&following, "follows"), (&staying, "stays")] {
        client
            .transfer(&raftpay_client::NewTransfer {
                id: id.into(),
                from: "bank".into(),
                to: "alice".into(),
                amount: 1,
                memo: None,
            })
            .await
            .expect("transfer");
    }
    assert_eq!(following.node_preferred(), format!("http://{}", nodes[1]));
    assert_eq!(staying.node_preferred(), format!("http://{}", nodes[0]));
}
