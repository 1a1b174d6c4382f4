//! The `switchyard` binary as an operator runs it: start-up errors that name the setting,
//! `--help`, SIGTERM drain (readyz 503, new upgrades 503, 1001 to every client, exit 0), and
//! logs that never contain a token.

mod common;

use common::process::{NodeProcess, BIN};
use common::*;
use serde_json::json;
use std::process::Command;
use std::time::Duration;
use switchyard_client::{ConnectError, ConnectOptions};

#[test]
fn configuration_mistakes_stop_start_up_naming_the_setting() {
    let run = |env: &[(&str, &str)]| {
        let mut cmd = Command::new(BIN);
        cmd.env_clear();
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&[("SWITCHYARD_QUEUE_MAX", "lots")]);
    assert_eq!(code, Some(2));
    assert!(err.contains("SWITCHYARD_QUEUE_MAX"), "{err}");
    let (code, err) = run(&[("SWITCHYARD_LISTEN", "0.0.0.0:0")]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("SWITCHYARD_JWT_SECRET") && err.contains("loopback"),
        "{err}"
    );
    let (code, err) = run(&[("SWITCHYARD_LISTEN", "0.0.0.0:0"), ("SWITCHYARD_DEV", "1")]);
    assert_eq!(code, Some(2));
    assert!(err.contains("SWITCHYARD_DEV"), "{err}");
    let (code, err) = run(&[("SWITCHYARD_JWT_PUBLIC_KEY_FILE", "/nonexistent/key.pem")]);
    assert_eq!(code, Some(2));
    assert!(err.contains("SWITCHYARD_JWT_PUBLIC_KEY_FILE"), "{err}");

    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for name in [
        "SWITCHYARD_LISTEN",
        "--listen",
        "SWITCHYARD_QUEUE_MAX",
        "--config",
    ] {
        assert!(help.contains(name), "--help lacks {name}");
    }
    let out = Command::new(BIN).args(["--queue-max"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero() {
    let mut p = NodeProcess::spawn(&[("SWITCHYARD_DRAIN_MS", "1500")]);
    let url = format!("ws://{}/ws", p.addr);
    let http = |path: &str| format!("http://{}{}", p.addr, path);
    let connect = |sub: String| {
        let url = url.clone();
        async move {
            let opts = ConnectOptions {
                token: Some(token(&sub, json!({}))),
                ..Default::default()
            };
            switchyard_client::Client::connect(&url, opts).await
        }
    };
    let mut clients = Vec::new();
    for i in 0..4 {
        let mut c = connect(format!("u{i}")).await.unwrap();
        c.recv_type("welcome", SOON).await.unwrap();
        join(&mut c, "r").await;
        clients.push(c);
    }
    assert_eq!(
        api().get(http("/readyz")).send().await.unwrap().status(),
        200
    );
    p.terminate();

    // While draining: readyz 503, health still 200, new upgrades refused with 503.
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let status = api().get(http("/readyz")).send().await.unwrap().status();
        if status == 503 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "readyz never went 503"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        api().get(http("/healthz")).send().await.unwrap().status(),
        200
    );
    match connect("late".into()).await {
        Err(ConnectError::Refused { status, .. }) => assert_eq!(status, 503),
        Err(e) => panic!("expected 503, got {e}"),
        Ok(_) => panic!("an upgrade was accepted while draining"),
    }
    for c in &mut clients {
        let (code, _) = c.closed(Duration::from_secs(5)).await.unwrap();
        assert_eq!(code, 1001);
    }
    drop(clients);
    let code = tokio::task::block_in_place(|| p.wait_exit(Duration::from_secs(10)));
    assert_eq!(code, Some(0), "exit 0 after the drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_reach_the_logs() {
    let mut p = NodeProcess::spawn(&[("RUST_LOG", "debug")]);
    let url = format!("ws://{}/ws", p.addr);
    let good = token("logged", json!({}));
    let expired = token("logged", json!({"exp": now_s() - 3600}));
    let forged = format!("{}x", &good[..good.len() - 1]);
    for (t, in_query) in [
        (&good, false),
        (&good, true),
        (&expired, true),
        (&forged, false),
    ] {
        let opts = ConnectOptions {
            token: Some(t.clone()),
            token_in_query: in_query,
            ..Default::default()
        };
        if let Ok(mut c) = switchyard_client::Client::connect(&url, opts).await {
            c.recv_type("welcome", SOON).await.unwrap();
            c.close(1000).await;
        }
    }
    p.terminate();
    assert_eq!(
        tokio::task::block_in_place(|| p.wait_exit(Duration::from_secs(15))),
        Some(0)
    );
    let log = p.log.lock().unwrap().clone();
    assert!(
        log.contains("handshake refused"),
        "the refusals are logged (without the token)"
    );
    for t in [&good, &expired, &forged] {
        let signature = t.rsplit('.').next().unwrap();
        assert!(!log.contains(signature), "a token reached the logs");
    }
    assert!(!log.contains(SECRET));
}
