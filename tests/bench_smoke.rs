//! The benchmark tool end to end: `raftpay bench` runs in-process against a real 3-node cluster
//! for a few seconds and must acknowledge transfers, count no errors, and find money conserved
//! when it reads every account back; its JSON and SVG reports must be written.

mod common;

use clap::Parser;
use common::TestCluster;
use raftpay_tools::bench::{BenchArgs, Verdict};
use raftpay_tools::cli::ClientOpts;

/// The bench's options as the binary parses them: global client options plus `bench` args.
#[derive(Parser)]
struct BenchCli {
    #[command(flatten)]
    client: ClientOpts,
    #[command(flatten)]
    bench: BenchArgs,
}

fn bench_cli(cluster: &TestCluster, clients: &str, extra: &[&str]) -> BenchCli {
    let nodes = cluster.addrs().join(",");
    let mut argv = vec![
        "bench",
        "--node",
        &nodes,
        "--clients",
        clients,
        "--accounts",
        "40",
        "--warmup",
        "0.5",
        "--duration",
        "3",
    ];
    argv.extend_from_slice(extra);
    BenchCli::try_parse_from(argv).expect("bench arguments parse")
}

/// Goal: single transfers with account-to-account moves mixed in are all acknowledged and add
/// up. Method: 4 clients for 3 s, 30% moves; then check the report and the files it wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_transfers_are_acknowledged_and_money_is_conserved() {
    let cluster = TestCluster::start(3).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let json_path = dir.path().join("run.json");
    let svg_path = dir.path().join("run.svg");
    let json_arg = json_path.to_string_lossy().into_owned();
    let svg_arg = svg_path.to_string_lossy().into_owned();
    let cli = bench_cli(
        &cluster,
        "4",
        &["--mix", "30", "--json-out", &json_arg, "--svg", &svg_arg],
    );

    tracing::info!("running the bench");
    let exit = raftpay_tools::bench::run(cli.client.clone(), cli.bench.clone())
        .await
        .expect("bench runs");
    assert_eq!(exit, std::process::ExitCode::SUCCESS);

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).expect("JSON report written"))
            .expect("JSON report parses");
    tracing::info!(%report, "report");
    assert!(report["transfers_acked"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["errors"]["total"], 0, "{report}");
    assert_eq!(report["conservation"]["verdict"], "ok", "{report}");
    assert_eq!(report["conservation"]["balance_sum"], 0, "{report}");
    assert_eq!(report["conservation"]["accounts_read"], 41, "{report}");
    assert_eq!(report["per_second"].as_array().unwrap().len(), 3);
    assert!(report["latency_request"]["p99_ms"].as_f64().unwrap() > 0.0);
    let svg = std::fs::read_to_string(&svg_path).expect("SVG written");
    assert!(svg.starts_with("<svg") && svg.contains("transfers/s"));
}

/// Goal: the batch path works and books every item. Method: 2 clients sending batches of 50.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_acknowledged_and_money_is_conserved() {
    let cluster = TestCluster::start(3).await;
    let cli = bench_cli(&cluster, "2", &["--batch", "50"]);

    let report = raftpay_tools::bench::execute(&cli.client, &cli.bench)
        .await
        .expect("bench runs");

    assert!(report.transfers_acked > 0, "{report:?}");
    assert_eq!(report.transfers_acked % 50, 0, "whole batches: {report:?}");
    assert_eq!(report.errors.total, 0, "{:?}", report.errors);
    assert_eq!(
        report.conservation.verdict,
        Verdict::Ok,
        "{:?}",
        report.conservation
    );
    assert!(report.conservation.transfers_acknowledged >= report.transfers_acked);
    assert_eq!(report.exit_code(), 0);
}
