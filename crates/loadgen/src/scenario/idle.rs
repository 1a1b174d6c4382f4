//! `idle`: holds N connections that join nothing and only answer heartbeats, and reports the
//! node's resident memory per connection (RSS after minus RSS before, divided by N).

use anyhow::{bail, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

use super::Common;
use crate::procs::rss_kib;

/// Connections opened before the baseline is read, so allocator warm-up is not counted.
const WARMUP_CONNECTIONS: usize = 100;
/// Connections opened at once.
const CONCURRENCY: usize = 64;

pub(crate) async fn run(
    common: &Common,
    connections: usize,
    hold: Duration,
) -> Result<serde_json::Value> {
    let Some(&pid) = common.watched.servers.first() else {
        bail!("idle: --pids PID (the node whose memory is measured) is required");
    };
    if common.urls.len() != 1 {
        bail!("idle: give one node (--urls) so its memory is what the connections cost");
    }
    let open = |i: usize| async move {
        let ws = common.open(0, &format!("idle-{i}")).await?;
        anyhow::Ok(tokio::spawn(hold_open(ws)))
    };
    let mut held = Vec::with_capacity(connections + WARMUP_CONNECTIONS);
    for i in 0..WARMUP_CONNECTIONS {
        held.push(open(i).await?);
    }
    // Let the node settle (allocator, buffers) before the baseline.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib(pid)?;
    let started = Instant::now();
    let mut next = WARMUP_CONNECTIONS;
    while next < WARMUP_CONNECTIONS + connections {
        let end = (next + CONCURRENCY).min(WARMUP_CONNECTIONS + connections);
        for task in futures_util::future::join_all((next..end).map(open)).await {
            held.push(task?);
        }
        if end / 1000 != next / 1000 {
            eprintln!("  idle: {} connections open", end - WARMUP_CONNECTIONS);
        }
        next = end;
    }
    let opened_in = started.elapsed();
    tokio::time::sleep(hold).await;
    let after = rss_kib(pid)?;
    // A connection the node closed would make the figure a lie: say which and why.
    let ended = held.iter().filter(|task| task.is_finished()).count();
    if let Some(first) = held.iter_mut().find(|task| task.is_finished()) {
        let why = match futures_util::FutureExt::now_or_never(first) {
            Some(Ok(why)) => why,
            _ => "unknown".to_owned(),
        };
        bail!(
            "idle: {ended} of {} connections ended while held (the first: {why})",
            held.len()
        );
    }
    let per = after.saturating_sub(before) as f64 * 1024.0 / connections as f64;
    eprintln!(
        "idle/{}: {connections} connections, {per:.0} bytes ({:.2} KiB) of node RSS per connection",
        common.dialect,
        per / 1024.0
    );
    for task in held {
        task.abort();
    }
    Ok(json!({
        "scenario": "idle",
        "dialect": common.dialect,
        "connections": connections,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "bytes_per_connection": per.round(),
        "open_seconds": opened_in.as_secs_f64(),
    }))
}

/// Reads until the connection ends, answering Engine.IO pings (tungstenite answers WebSocket
/// pings itself), and says how it ended.
async fn hold_open(mut ws: crate::wire::Ws) -> String {
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(frame))) => {
                return match frame {
                    Some(f) => format!("closed by the node: {} {}", u16::from(f.code), f.reason),
                    None => "closed by the node without a code".to_owned(),
                }
            }
            Some(Ok(frame)) => {
                if matches!(&frame, Message::Text(t) if t.as_str() == "2") {
                    if let Err(e) = ws.send(Message::text("3")).await {
                        return format!("answering a ping: {e}");
                    }
                }
            }
            Some(Err(e)) => return format!("read error: {e}"),
            None => return "the stream ended".to_owned(),
        }
    }
}
