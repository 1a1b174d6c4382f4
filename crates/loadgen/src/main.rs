//! `switchyard-loadgen`: load scenarios against Switchyard nodes on this machine.
//!
//! Scenario `idle`: opens N connections that join nothing and only answer heartbeats, and
//! reports the node's resident memory per connection (RSS after minus RSS before, divided by
//! N), read from `/proc/PID/status`. Targets loopback addresses only.

use anyhow::{bail, Context, Result};
use serde_json::json;
use std::time::{Duration, Instant};
use switchyard_client::{Client, ConnectError, ConnectOptions};

struct IdleArgs {
    url: String,
    connections: usize,
    pid: u32,
    secret: Option<String>,
    hold: Duration,
}

const USAGE: &str = "usage: switchyard-loadgen idle --pid PID [--connections N (1000)] [--url ws://127.0.0.1:8080/ws] \
                     [--secret HS256_SECRET (else tokens come from /dev/token)] [--hold-secs S (5)]";
/// Connections opened before the baseline is read, so allocator warm-up is not counted.
const WARMUP_CONNECTIONS: usize = 100;
/// Most connections one run may open (the open-file limit is the real bound).
const MAX_CONNECTIONS: usize = 100_000;

fn parse_idle(mut args: impl Iterator<Item = String>) -> Result<IdleArgs> {
    let mut a = IdleArgs {
        url: "ws://127.0.0.1:8080/ws".into(),
        connections: 1000,
        pid: 0,
        secret: None,
        hold: Duration::from_secs(5),
    };
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--url" => a.url = value,
            "--connections" => a.connections = value.parse().context("--connections")?,
            "--pid" => a.pid = value.parse().context("--pid")?,
            "--secret" => a.secret = Some(value),
            "--hold-secs" => a.hold = Duration::from_secs(value.parse().context("--hold-secs")?),
            _ => bail!("unknown flag {flag}\n{USAGE}"),
        }
    }
    if a.pid == 0 {
        bail!("--pid is required\n{USAGE}");
    }
    if a.connections == 0 || a.connections > MAX_CONNECTIONS {
        bail!("--connections must be 1 to {MAX_CONNECTIONS}");
    }
    let host = a
        .url
        .trim_start_matches("ws://")
        .split(['/', ':'])
        .next()
        .unwrap_or("");
    if !(host.starts_with("127.") || host == "localhost" || host == "[::1]") {
        bail!("--url must point at this machine (127.0.0.0/8, localhost or [::1])");
    }
    Ok(a)
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

async fn token(args: &IdleArgs, http: &reqwest::Client, user: &str) -> Result<String> {
    if let Some(secret) = &args.secret {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
            + 3600;
        let claims = json!({"sub": user, "exp": exp});
        return Ok(jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )?);
    }
    let base = args.url.replacen("ws://", "http://", 1).replace("/ws", "");
    let res: serde_json::Value = http
        .get(format!("{base}/dev/token?user={user}"))
        .send()
        .await?
        .json()
        .await?;
    res["token"]
        .as_str()
        .map(str::to_owned)
        .context("no token in /dev/token's answer")
}

/// Opens one connection, waiting out 429s; the connection then reads (answering pings) until the run ends.
async fn open(
    args: &IdleArgs,
    http: &reqwest::Client,
    i: usize,
) -> Result<tokio::task::JoinHandle<()>> {
    let t = token(args, http, &format!("idle-{i}")).await?;
    loop {
        let opts = ConnectOptions {
            token: Some(t.clone()),
            ..Default::default()
        };
        match Client::connect(&args.url, opts).await {
            Ok(mut c) => {
                c.recv_timeout(Duration::from_secs(10))
                    .await
                    .map_err(|e| anyhow::anyhow!("no welcome: {e}"))?;
                return Ok(tokio::spawn(async move { while c.recv().await.is_ok() {} }));
            }
            Err(ConnectError::Refused {
                status: 429,
                retry_after,
                ..
            }) => {
                let secs: u64 = retry_after.and_then(|r| r.parse().ok()).unwrap_or(1);
                tokio::time::sleep(Duration::from_secs(secs)).await;
            }
            Err(e) => bail!("connection {i}: {e}"),
        }
    }
}

async fn idle(args: IdleArgs) -> Result<()> {
    let http = reqwest::Client::new();
    let mut held = Vec::with_capacity(args.connections + WARMUP_CONNECTIONS);
    for i in 0..WARMUP_CONNECTIONS {
        held.push(open(&args, &http, i).await?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib(args.pid)?;
    let started = Instant::now();
    for i in WARMUP_CONNECTIONS..WARMUP_CONNECTIONS + args.connections {
        held.push(open(&args, &http, i).await?);
        if (i + 1) % 1000 == 0 {
            eprintln!("  {} connections open", i + 1 - WARMUP_CONNECTIONS);
        }
    }
    let opened_in = started.elapsed();
    tokio::time::sleep(args.hold).await;
    let after = rss_kib(args.pid)?;
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / args.connections as f64;
    let result = json!({
        "scenario": "idle",
        "connections": args.connections,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "bytes_per_connection": per.round(),
        "open_seconds": opened_in.as_secs_f64(),
    });
    println!("{result}");
    eprintln!(
        "idle: {} connections, {:.0} bytes ({:.2} KiB) of node RSS per connection",
        args.connections,
        per,
        per / 1024.0
    );
    for task in held {
        task.abort();
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("idle") => idle(parse_idle(args)?).await,
        _ => bail!("{USAGE}"),
    }
}
