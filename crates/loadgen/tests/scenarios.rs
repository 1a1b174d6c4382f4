//! Each scenario of the load generator, run briefly against a real node (in this process, on
//! port 0): the run completes, and what it reports holds up (everything delivered once, the
//! numbers present). `reconnect-storm` kills a node process: it is exercised by `scripts/bench`.

use serde_json::Value;
use std::process::Command;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "loadgen-test-secret-0123456789";

struct Node {
    url: String,
    stop: CancellationToken,
}

async fn node() -> Node {
    let config = switchyard_gateway::Config::from_env([
        ("SWITCHYARD_LISTEN", "127.0.0.1:0"),
        ("SWITCHYARD_JWT_SECRET", SECRET),
        ("SWITCHYARD_RATE_PER_SEC", "10000"),
        ("SWITCHYARD_RATE_BURST", "10000"),
        ("SWITCHYARD_HANDSHAKE_PER_SEC", "10000"),
        ("SWITCHYARD_HANDSHAKE_BURST", "10000"),
        ("SWITCHYARD_DRAIN_MS", "100"),
    ])
    .expect("valid config");
    let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let shutdown = stop.clone();
    tokio::spawn(async move { switchyard_gateway::run(listener, config, shutdown).await });
    Node { url, stop }
}

/// Runs the load generator to completion (bounded by its own flags) and reads its result.
async fn loadgen(args: &[&str]) -> Value {
    let dir = std::env::temp_dir().join(format!("loadgen-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!("{}.json", args[0]));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard-loadgen"));
    cmd.args(args).arg("--out").arg(&out);
    let status = tokio::task::spawn_blocking(move || cmd.status())
        .await
        .unwrap()
        .expect("loadgen runs");
    assert!(status.success(), "loadgen {args:?} failed: {status}");
    serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_and_accounts_for_every_message() {
    let node = node().await;
    let pid = std::process::id().to_string();
    let common = ["--urls", &node.url, "--secret", SECRET, "--pids", &pid];
    let short = ["--duration", "2", "--warmup", "0.5", "--drain", "10"];

    let args = [
        &["fanout", "--members", "50", "--rate", "100"][..],
        &common,
        &short,
    ]
    .concat();
    let fanout = loadgen(&args).await;
    assert_eq!(fanout["lost"], 0, "{fanout}");
    assert_eq!(fanout["duplicates"], 0, "{fanout}");
    assert!(
        fanout["deliveries"].as_u64().unwrap() >= 50 * 100,
        "{fanout}"
    );
    assert_eq!(fanout["deliveries"], fanout["deliveries_expected"]);
    assert!(fanout["latency"]["p99_ms"].as_f64().unwrap() > 0.0);
    assert!(fanout["cpu"]["server_us_per_delivery"].as_f64().is_some());
    assert!(!fanout["seconds"].as_array().unwrap().is_empty());

    let args = [
        &[
            "chat",
            "--rooms",
            "5",
            "--members",
            "4",
            "--publishers",
            "4",
            "--rate",
            "40",
        ][..],
        &common,
        &short,
    ]
    .concat();
    let chat = loadgen(&args).await;
    assert_eq!(
        (chat["lost"].as_u64(), chat["duplicates"].as_u64()),
        (Some(0), Some(0)),
        "{chat}"
    );
    assert_eq!(chat["ack_failures"], 0, "{chat}");
    assert!(chat["ack_latency"]["count"].as_u64().unwrap() > 0, "{chat}");

    let args = [
        &["cursors", "--rooms", "2", "--members", "3", "--rate", "100"][..],
        &common,
        &short,
    ]
    .concat();
    let cursors = loadgen(&args).await;
    assert!(cursors["deliveries"].as_u64().unwrap() > 0, "{cursors}");

    let args = [
        &[
            "presence-churn",
            "--rooms",
            "2",
            "--watchers",
            "3",
            "--churners",
            "2",
            "--duration",
            "2",
        ][..],
        &common,
    ]
    .concat();
    let churn = loadgen(&args).await;
    assert!(churn["join_leave_cycles"].as_u64().unwrap() > 0, "{churn}");
    assert_eq!(churn["errors"], 0, "{churn}");
    assert!(
        churn["presence_events"].as_u64().unwrap()
            >= churn["presence_events_expected_min"].as_u64().unwrap(),
        "every join and leave reached every watcher: {churn}"
    );

    let args = [
        &["idle", "--connections", "200", "--hold", "0.5"][..],
        &common,
    ]
    .concat();
    let idle = loadgen(&args).await;
    assert!(idle["bytes_per_connection"].as_f64().is_some(), "{idle}");

    // The comparison table and the chart of a run.
    let dir = std::env::temp_dir().join(format!("loadgen-test-{}", std::process::id()));
    let table = Command::new(env!("CARGO_BIN_EXE_switchyard-loadgen"))
        .arg("compare")
        .arg(dir.join("fanout.json"))
        .arg(dir.join("chat.json"))
        .output()
        .unwrap();
    assert!(table.status.success());
    assert!(String::from_utf8_lossy(&table.stdout).contains("| deliveries/s"));
    node.stop.cancel();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn refuses_what_is_not_on_this_machine_or_out_of_bounds() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_switchyard-loadgen"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["fanout", "--urls", "ws://10.1.2.3:8080"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only targets this machine"));
    let out = run(&["fanout", "--members", "60000"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("at most 50000 connections"));
    let out = run(&["fanout", "--duration", "4000"]);
    assert!(!out.status.success());
    let out = run(&["fanout", "--bogus", "1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown flag --bogus"));
}
