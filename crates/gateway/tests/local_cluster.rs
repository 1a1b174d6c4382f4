//! `deploy/local-cluster.sh` as an operator runs it: Redis, 3 nodes, HAProxy and Prometheus on
//! loopback (free ports). Clients go through HAProxy; Prometheus scrapes every node; every alert
//! expression of `deploy/prometheus/alerts.yml` and every query of the Grafana dashboard runs
//! without error against the real Prometheus, the main panels have data; and the script stops
//! everything it started.

mod common;

use common::process::BIN;
use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starting four servers and waiting for Prometheus's first scrapes takes a while.
const UP: Duration = Duration::from_secs(60);

/// Three consecutive free ports for the nodes (base + 1..3).
fn free_node_base() -> u16 {
    loop {
        let base = free_port();
        if base < 60_000 && (1..=3).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
}

/// Sends SIGTERM to the script when dropped (a failed assertion included).
struct StopOnDrop(u32);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

async fn prometheus(port: u16, query: &str) -> Value {
    api()
        .get(format!(
            "http://127.0.0.1:{port}/api/v1/query?{}",
            serde_urlencoded::to_string([("query", query)]).unwrap()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_cluster_serves_through_haproxy_and_prometheus_scrapes_it() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let (lb, prom, redis, base) = (free_port(), free_port(), free_port(), free_node_base());
    let mut script = Command::new("bash")
        .arg(format!("{root}/deploy/local-cluster.sh"))
        .env("SWITCHYARD_BIN", BIN)
        .env("LB_PORT", lb.to_string())
        .env("PROMETHEUS_PORT", prom.to_string())
        .env("REDIS_PORT", redis.to_string())
        .env("NODE_PORT_BASE", base.to_string())
        .env("SWITCHYARD_JWT_SECRET", SECRET)
        .env("SWITCHYARD_API_KEYS", API_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash runs");
    let stdout = script.stdout.take().unwrap();
    // Whatever happens below, the cluster does not outlive the test.
    let _guard = StopOnDrop(script.id());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let started = Instant::now();
    let mut printed = Vec::new();
    while !printed
        .iter()
        .any(|l: &String| l.trim_start().starts_with("logs"))
    {
        match rx.recv_timeout(UP.saturating_sub(started.elapsed())) {
            Ok(line) => printed.push(line),
            Err(_) => {
                let _ = script.kill();
                let err = script.stderr.take().map(|mut e| {
                    let mut s = String::new();
                    std::io::Read::read_to_string(&mut e, &mut s).ok();
                    s
                });
                panic!("the cluster did not come up: {printed:?} {err:?}");
            }
        }
    }
    // It says where everything is.
    for line in ["http://127.0.0.1", "Prometheus", "Redis", "API key"] {
        assert!(printed.iter().any(|l| l.contains(line)), "{printed:?}");
    }

    // Clients through HAProxy: two connections (least-connections spreads them over nodes) see
    // each other's messages.
    let ws = format!("ws://127.0.0.1:{lb}/ws");
    let mut alice = connect_to(&ws, "alice").await;
    let mut bob = connect_to(&ws, "bob").await;
    join(&mut alice, "ops").await;
    join(&mut bob, "ops").await;
    say(&mut alice, "ops", "t1", "through the balancer").await;
    assert_eq!(bob.recv_type("new-message", SOON).await.unwrap()["seq"], 1);
    let (status, _) = api_post(
        &format!("http://127.0.0.1:{lb}/api/rooms/ops/publish"),
        Some(json!({"event": "deploy", "data": 1})),
    )
    .await;
    assert_eq!(status, 200);

    // Prometheus scrapes all three nodes, and the nodes report ready.
    let deadline = Instant::now() + UP;
    loop {
        let up = prometheus(prom, r#"sum(up{job="switchyard"})"#).await;
        let ready = prometheus(prom, "sum(switchyard_ready)").await;
        let value = |v: &Value| {
            v["data"]["result"][0]["value"][1]
                .as_str()
                .map(str::to_owned)
        };
        if value(&up).as_deref() == Some("3") && value(&ready).as_deref() == Some("3") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not scraped: up {up}, ready {ready}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let connections = prometheus(prom, "sum(switchyard_connections)").await;
    assert_eq!(
        connections["data"]["result"][0]["value"][1], "2",
        "{connections}"
    );

    // Every alert expression is a valid query against the real Prometheus.
    let rules = std::fs::read_to_string(format!("{root}/deploy/prometheus/alerts.yml")).unwrap();
    let exprs: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr: "))
        .collect();
    assert!(exprs.len() >= 5, "{exprs:?}");
    for expr in exprs {
        let answer = prometheus(prom, expr).await;
        assert_eq!(answer["status"], "success", "{expr}: {answer}");
    }

    // Every query of the Grafana dashboard runs against the real Prometheus (with Grafana's
    // variables filled in), and the main panels have data.
    let dashboard: Value = serde_json::from_str(include_str!(
        "../../../deploy/grafana/dashboards/switchyard.json"
    ))
    .unwrap();
    // Series that exist on every node from its start.
    let has_data = |expr: &str| {
        [
            "switchyard_connections{",
            "switchyard_ready{",
            "switchyard_outbound_queue_depth{",
            "switchyard_rooms{",
            "switchyard_presence_members{",
        ]
        .iter()
        .any(|series| expr.contains(series))
    };
    let panels = dashboard["panels"].as_array().unwrap();
    let mut queries = 0;
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$node", ".*");
            queries += 1;
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let answer = prometheus(prom, &expr).await;
                assert_eq!(answer["status"], "success", "{title}: {expr}: {answer}");
                let empty = answer["data"]["result"]
                    .as_array()
                    .is_none_or(|r| r.is_empty());
                if !has_data(&expr) || !empty {
                    break;
                }
                assert!(Instant::now() < deadline, "{title}: no data for {expr}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    assert!(queries >= 15, "{queries} dashboard queries");

    // SIGTERM: the script stops everything it started.
    let _ = Command::new("kill")
        .args(["-TERM", &script.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while script.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the script did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for port in [lb, prom, redis, base + 1, base + 2, base + 3] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "port {port} still open after the stop"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
