//! Packaging: a node binds `listen_addr` while it advertises `http_addr` (what containers need),
//! the deployment files in `docs/deploy/` are what `raftpay config init` writes and agree with
//! each other, and the systemd unit passes `systemd-analyze verify` without a warning. (No
//! Docker engine runs on our machines, so the image and the compose file are not built or run
//! here; README.md says so.)

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{TestCluster, Timing};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `addr`'s port on another loopback address: reachable only if the node bound 0.0.0.0.
fn other_loopback(addr: &str) -> String {
    let port = addr.rsplit_once(':').expect("host:port").1;
    format!("http://127.0.0.2:{port}/health")
}

async fn health(http: &reqwest::Client, url: &str) -> Result<u16, String> {
    http.get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map(|response| response.status().as_u16())
        .map_err(|error| format!("{error:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_binds_its_listen_addr_and_advertises_its_http_addr() {
    // Goal: `listen_addr` changes where the node binds and nothing else. Method: one node with
    // listen_addr 0.0.0.0:P and http_addr 127.0.0.1:P answers on 127.0.0.2:P and names
    // 127.0.0.1:P as its address in the membership; the same node without listen_addr (the
    // control) does not answer on 127.0.0.2:P.
    let timing = Timing {
        configure: |config| {
            config.listen_addr = Some(config.http_addr.replace("127.0.0.1", "0.0.0.0"));
        },
        ..Timing::default()
    };
    let cluster = TestCluster::start_with(1, timing).await;
    let addr = cluster.addr(1).to_owned();
    assert_eq!(
        health(&cluster.http, &other_loopback(&addr)).await,
        Ok(200),
        "bound to 0.0.0.0"
    );
    let (status, body) = cluster.get(1, "/v1/cluster").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["members"][0]["http_addr"], addr.as_str(), "{body}");

    let control = TestCluster::start_with(1, Timing::default()).await;
    let refused = health(&control.http, &other_loopback(control.addr(1))).await;
    assert!(
        refused.is_err(),
        "without listen_addr the node binds http_addr only: {refused:?}"
    );
}

#[test]
fn the_deploy_configs_are_written_by_config_init_and_match_the_compose_file() {
    let deploy = Path::new(ROOT).join("docs/deploy");
    let compose = std::fs::read_to_string(deploy.join("compose.yaml")).unwrap();
    let dockerfile = std::fs::read_to_string(deploy.join("Dockerfile")).unwrap();
    assert!(
        dockerfile.contains(r#"CMD ["serve", "--config", "/etc/raftpay/node.toml"]"#),
        "the image's config path"
    );
    for n in 1..=3 {
        let output = Command::new(env!("CARGO_BIN_EXE_raftpay"))
            .args(["config", "init", "--node-id", &n.to_string()])
            .args(["--http-addr", &format!("node{n}:7001")])
            .args([
                "--listen-addr",
                "0.0.0.0:7001",
                "--data-dir",
                "/var/lib/raftpay",
            ])
            .args(["--voter", "1=node1:7001", "--voter", "2=node2:7001"])
            .args(["--voter", "3=node3:7001", "--set", "log.format=json"])
            .output()
            .expect("run raftpay config init");
        assert!(output.status.success(), "{output:?}");
        let shipped = std::fs::read_to_string(deploy.join(format!("node{n}.toml"))).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            shipped,
            "docs/deploy/node{n}.toml is not what `raftpay config init` writes: regenerate it"
        );
        for expected in [
            format!("./node{n}.toml:/etc/raftpay/node.toml:ro"),
            format!("node{n}-data:/var/lib/raftpay"),
            format!("hostname: node{n}"),
            format!(r#"ports: ["700{n}:7001"]"#),
        ] {
            assert!(
                compose.contains(&expected),
                "compose.yaml lacks {expected:?}"
            );
        }
    }
}

#[test]
fn the_systemd_unit_verifies_without_warnings() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "systemd-analyze is missing and CI=true: failing rather than skipping"
        );
        eprintln!("SKIPPED: no systemd-analyze (apt-get install systemd)");
        return;
    };
    assert!(version.status.success());
    // The unit as shipped names /usr/local/bin/raftpay, which a test machine need not have:
    // verify a copy that runs this build's binary instead.
    let unit = std::fs::read_to_string(Path::new(ROOT).join("docs/deploy/raftpay.service"))
        .unwrap()
        .replace("/usr/local/bin/raftpay", env!("CARGO_BIN_EXE_raftpay"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raftpay.service");
    let verify = |text: &str| {
        std::fs::write(&path, text).unwrap();
        let output = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .expect("run systemd-analyze");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned()
                + &String::from_utf8_lossy(&output.stdout),
        )
    };
    let (ok, said) = verify(&unit);
    assert!(ok && said.trim().is_empty(), "systemd-analyze: {said}");
    // The check itself tells a broken unit: an unknown restart rule is reported.
    let (_, said) = verify(&unit.replace("Restart=on-failure", "Restart=sometimes"));
    assert!(
        said.contains("restart specifier"),
        "a broken unit passed: {said:?}"
    );
}
