//! Scenarios, and what they share: the targets, opening (and joining) many connections spread
//! over the nodes, and the CPU report.

pub(crate) mod churn;
pub(crate) mod idle;
pub(crate) mod reconnect;
pub(crate) mod rooms;

use anyhow::{Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::auth::Tokens;
use crate::procs::{CpuSample, Watched};
use crate::wire::{wait_reply, Dialect, Reply, Ws};

/// Connections opened at once while setting up.
pub(crate) const CONNECT_CONCURRENCY: usize = 32;
/// Attempts per connection when the node answers 429 (its handshake rate limit) or 503.
const CONNECT_ATTEMPTS: u32 = 60;

/// What every scenario is given.
pub(crate) struct Common {
    pub(crate) dialect: Dialect,
    /// Node base URLs (`ws://127.0.0.1:8080`); connection `i` goes to `urls[i % len]`.
    pub(crate) urls: Vec<String>,
    pub(crate) tokens: Tokens,
    pub(crate) watched: Watched,
}

pub(crate) struct Opened {
    pub(crate) ws: Ws,
    pub(crate) node: usize,
    pub(crate) joined: Option<Reply>,
}

impl Common {
    /// A token for `user` at each node (development-mode nodes each sign with their own key).
    pub(crate) async fn tokens_for(&self, user: &str, urls: &[String]) -> Result<Vec<String>> {
        let mut tokens = Vec::with_capacity(urls.len());
        for url in urls {
            tokens.push(self.tokens.token(url, user).await?);
        }
        Ok(tokens)
    }

    /// Opens one connection for `user` to node `node`, waiting out 429/503 answers.
    pub(crate) async fn open(&self, node: usize, user: &str) -> Result<Ws> {
        let base = &self.urls[node % self.urls.len()];
        let token = match self.dialect {
            Dialect::Switchyard => Some(self.tokens.token(base, user).await?),
            Dialect::SocketIo => None,
        };
        let mut attempt = 0;
        loop {
            match self.dialect.connect(base, token.as_deref()).await {
                Ok(ws) => return Ok(ws),
                Err(e) => {
                    let busy = e.downcast_ref::<tungstenite::Error>().is_some_and(|e| {
                        matches!(e, tungstenite::Error::Http(r) if r.status() == 429 || r.status() == 503)
                    });
                    attempt += 1;
                    if !busy || attempt >= CONNECT_ATTEMPTS {
                        return Err(e).with_context(|| format!("connecting {user} to {base}"));
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}

/// Opens a connection per `(user, room)`, in order, spread over the nodes; joins the room when
/// `join` (waiting for the reply).
pub(crate) async fn connect_all(
    common: &Common,
    users: &[(String, String)],
    join: bool,
) -> Result<Vec<Opened>> {
    let opened = futures_util::stream::iter(users.iter().enumerate())
        .map(|(i, (user, room))| connect_one(common, i, user, room, join))
        .buffered(CONNECT_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    opened.into_iter().collect()
}

/// Opens connection `i` of [`connect_all`] (to node `i % nodes`), joining `room` when `join`.
pub(crate) async fn connect_one(
    common: &Common,
    i: usize,
    user: &str,
    room: &str,
    join: bool,
) -> Result<Opened> {
    let node = i % common.urls.len();
    let mut ws = common.open(node, user).await?;
    let mut joined = None;
    if join {
        ws.send(Message::text(common.dialect.join(room, None)))
            .await?;
        joined = Some(wait_reply(common.dialect, &mut ws, "room-joined").await?);
    }
    Ok(Opened { ws, node, joined })
}

/// CPU used over a window, and per delivery; the servers' memory at its end (a member of a
/// large room holds more than an idle connection: its queue, the frames it was sent).
pub(crate) fn cpu_report(
    start: &CpuSample,
    end: &CpuSample,
    deliveries: u64,
    window_s: f64,
) -> serde_json::Value {
    let servers = end.servers - start.servers;
    let servers_system = end.servers_system - start.servers_system;
    let redis = end.redis - start.redis;
    let loadgen = end.loadgen - start.loadgen;
    let per = |s: f64| {
        if deliveries == 0 {
            serde_json::Value::Null
        } else {
            json!((s * 1e6 / deliveries as f64 * 1000.0).round() / 1000.0)
        }
    };
    json!({
        "servers_s": servers,
        "redis_s": redis,
        "loadgen_s": loadgen,
        "server_us_per_delivery": per(servers),
        "server_system_us_per_delivery": per(servers_system),
        "server_and_redis_us_per_delivery": per(servers + redis),
        "loadgen_us_per_delivery": per(loadgen),
        "loadgen_cores": loadgen / window_s.max(1e-9),
        "servers_cores": servers / window_s.max(1e-9),
        "servers_rss_mib": (end.servers_rss_kib as f64 / 1024.0 * 10.0).round() / 10.0,
    })
}
