//! The two systems the load generator speaks to: Switchyard's JSON protocol and Socket.IO 4
//! (Engine.IO v4 over a WebSocket, as `load-tests/socketio-baseline` serves it). Only what a
//! run measures is parsed: the probe a publisher put in each message (publisher, number, send
//! time), acks, and the few replies a scenario waits for.

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a handshake or a reply a scenario waits for may take.
pub(crate) const REPLY_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Dialect {
    Switchyard,
    SocketIo,
}

impl std::fmt::Display for Dialect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dialect::Switchyard => "switchyard",
            Dialect::SocketIo => "socket-io",
        })
    }
}

impl std::str::FromStr for Dialect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "switchyard" => Ok(Dialect::Switchyard),
            "socketio" | "socket.io" => Ok(Dialect::SocketIo),
            _ => Err("expected switchyard or socketio".into()),
        }
    }
}

/// What a publisher puts in each message: who sent it, its number, when (µs since the epoch).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub(crate) struct Probe {
    pub(crate) p: u32,
    pub(crate) n: u64,
    pub(crate) t: u64,
}

/// What a received frame holds, as far as a run cares.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Received {
    /// Durable messages (or cursor moves) with their probe, and their room seq if any.
    pub(crate) probes: Vec<(Probe, Option<u64>)>,
    /// Acks: (tempId or ack id, success).
    pub(crate) acks: Vec<(u64, bool)>,
    /// Replies by type (`room-joined`, `room-left`, `pong`, ...), with their `seq` and `epoch`.
    pub(crate) replies: Vec<Reply>,
    /// Engine.IO ping, to be answered with a pong.
    pub(crate) ping: bool,
    /// Frames that did not parse (counted, never reset by the scenario's clears).
    pub(crate) unparsed: u64,
}

#[derive(Debug, Default, PartialEq, Clone)]
pub(crate) struct Reply {
    pub(crate) kind: String,
    pub(crate) seq: Option<u64>,
    pub(crate) epoch: Option<String>,
    pub(crate) code: Option<String>,
    pub(crate) recovered: Option<bool>,
}

#[derive(Deserialize)]
struct SyMessage<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default)]
    data: Option<Probe>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default, rename = "tempId")]
    temp_id: Option<u64>,
    #[serde(default)]
    success: Option<bool>,
    #[serde(default)]
    epoch: Option<&'a str>,
    #[serde(default)]
    x: Option<f64>,
    #[serde(default)]
    y: Option<f64>,
    #[serde(default)]
    code: Option<&'a str>,
    #[serde(default)]
    recovered: Option<bool>,
}

impl Dialect {
    /// The WebSocket URL of a node, given its base (`ws://host:port`) or full URL.
    pub(crate) fn url(self, base: &str) -> String {
        let base = base.trim_end_matches('/');
        match self {
            Dialect::Switchyard if base.ends_with("/ws") => base.to_owned(),
            Dialect::Switchyard => format!("{base}/ws"),
            Dialect::SocketIo if base.contains("/socket.io") => base.to_owned(),
            Dialect::SocketIo => format!("{base}/socket.io/?EIO=4&transport=websocket"),
        }
    }

    /// Opens a connection and completes the system's greeting.
    pub(crate) async fn connect(self, base: &str, token: Option<&str>) -> Result<Ws> {
        let mut request = self.url(base).into_client_request()?;
        if let Some(token) = token {
            request.headers_mut().insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {token}"))?,
            );
        }
        let (mut ws, _) =
            // Nagle off: a publisher's small frames must not wait for the peer's delayed ACK.
            tokio::time::timeout(
                REPLY_TIMEOUT,
                tokio_tungstenite::connect_async_with_config(
                    request,
                    Some(switchyard_client::websocket_config()),
                    true,
                ),
            )
                .await
                .context("handshake timed out")??;
        match self {
            Dialect::Switchyard => {
                let first = next_text(&mut ws).await?;
                if !first.contains("\"welcome\"") {
                    bail!("expected welcome, got {first}");
                }
            }
            Dialect::SocketIo => {
                let open = next_text(&mut ws).await?;
                if !open.starts_with('0') {
                    bail!("expected an Engine.IO open packet, got {open}");
                }
                ws.send(Message::text("40")).await?;
                loop {
                    let reply = next_text(&mut ws).await?;
                    if reply.starts_with("40") {
                        break;
                    }
                    if reply.starts_with("44") {
                        bail!("Socket.IO refused the connection: {reply}");
                    }
                }
            }
        }
        Ok(ws)
    }

    pub(crate) fn join(self, room: &str, since: Option<(u64, &str)>) -> String {
        match self {
            Dialect::Switchyard => match since {
                None => serde_json::json!({"type": "join-room", "roomId": room}),
                Some((seq, epoch)) => serde_json::json!({
                    "type": "join-room", "roomId": room, "sinceSeq": seq, "epoch": epoch
                }),
            }
            .to_string(),
            // Ack id 0 is reserved for joins.
            Dialect::SocketIo => format!("420{}", serde_json::json!(["join", room])),
        }
    }

    pub(crate) fn leave(self, room: &str) -> String {
        match self {
            Dialect::Switchyard => {
                serde_json::json!({"type": "leave-room", "roomId": room}).to_string()
            }
            Dialect::SocketIo => format!("42{}", serde_json::json!(["leave", room])),
        }
    }

    /// A durable message carrying `probe`; `id` is its tempId (Switchyard) or ack id (Socket.IO).
    pub(crate) fn message(self, room: &str, id: u64, probe: Probe) -> String {
        match self {
            Dialect::Switchyard => serde_json::json!({
                "type": "message", "roomId": room, "tempId": id, "text": "m", "data": probe
            })
            .to_string(),
            Dialect::SocketIo => format!(
                "42{id}{}",
                serde_json::json!(["message", {"room": room, "tempId": id, "text": "m", "data": probe}])
            ),
        }
    }

    /// A cursor move carrying the probe in its coordinates: x is the send time, y the number.
    pub(crate) fn cursor(self, room: &str, probe: Probe) -> String {
        serde_json::json!({
            "type": "cursor:move", "roomId": room, "x": probe.t as f64, "y": probe.n as f64
        })
        .to_string()
    }

    /// Reads what a text frame holds.
    pub(crate) fn parse(self, text: &str, out: &mut Received) {
        match self {
            Dialect::Switchyard => parse_switchyard(text, out),
            Dialect::SocketIo => parse_socketio(text, out),
        }
    }
}

fn parse_switchyard(text: &str, out: &mut Received) {
    let mut one = |m: SyMessage<'_>| match m.kind {
        "new-message" => {
            if let Some(probe) = m.data {
                out.probes.push((probe, m.seq));
            }
        }
        "cursor:move" => {
            if let (Some(x), Some(y)) = (m.x, m.y) {
                out.probes.push((
                    Probe {
                        p: 0,
                        n: y as u64,
                        t: x as u64,
                    },
                    None,
                ));
            }
        }
        "ack" => {
            if let Some(id) = m.temp_id {
                out.acks.push((id, m.success.unwrap_or(false)));
            }
        }
        "typing:start" | "typing:stop" | "presence:join" | "presence:leave" | "cursor:leave"
        | "room-joined" | "room-left" | "subscribed" | "pong" | "error" | "room-reset" => {
            out.replies.push(Reply {
                kind: m.kind.to_owned(),
                seq: m.seq,
                epoch: m.epoch.map(str::to_owned),
                code: m.code.map(str::to_owned),
                recovered: m.recovered,
            })
        }
        _ => {}
    };
    let parsed = if text.starts_with('[') {
        serde_json::from_str::<Vec<SyMessage<'_>>>(text)
            .map(|batch| batch.into_iter().for_each(&mut one))
    } else {
        serde_json::from_str::<SyMessage<'_>>(text).map(one)
    };
    if parsed.is_err() {
        out.unparsed += 1;
    }
}

#[derive(Deserialize)]
struct SioMessage {
    #[serde(default)]
    data: Option<Probe>,
    #[serde(default)]
    seq: Option<u64>,
}

fn parse_socketio(text: &str, out: &mut Received) {
    if text == "2" {
        out.ping = true;
        return;
    }
    if let Some(rest) = text.strip_prefix("42") {
        // An event: ["message", {...}] (no ack id from the server).
        if let Ok((name, m)) = serde_json::from_str::<(&str, SioMessage)>(rest) {
            if name == "message" {
                if let Some(probe) = m.data {
                    out.probes.push((probe, m.seq));
                }
            }
        }
    } else if let Some(rest) = text.strip_prefix("43") {
        // An ack: <id>[...].
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if let Ok(id) = rest[..digits].parse::<u64>() {
            if id == 0 {
                out.replies.push(Reply {
                    kind: "room-joined".into(),
                    ..Reply::default()
                });
            } else {
                // `[{"ok":true,...}]`: a refusal is `{"ok":false,"error":...}`.
                let ok = !rest[digits..].contains("\"ok\":false");
                out.acks.push((id, ok));
            }
        }
    }
}

/// The next text frame (pings answered by tungstenite), within [`REPLY_TIMEOUT`].
pub(crate) async fn next_text(ws: &mut Ws) -> Result<String> {
    loop {
        let frame = tokio::time::timeout(REPLY_TIMEOUT, ws.next())
            .await
            .context("timed out waiting for the server")?
            .context("connection closed")??;
        match frame {
            Message::Text(t) => return Ok(t.as_str().to_owned()),
            Message::Close(c) => bail!("closed: {c:?}"),
            _ => {}
        }
    }
}

/// Reads frames until a reply of `kind` (answering Engine.IO pings); errors on an `error`.
pub(crate) async fn wait_reply(dialect: Dialect, ws: &mut Ws, kind: &str) -> Result<Reply> {
    loop {
        let text = next_text(ws).await?;
        let mut got = Received::default();
        dialect.parse(&text, &mut got);
        if got.ping {
            ws.send(Message::text("3")).await?;
        }
        for reply in got.replies {
            if reply.kind == kind {
                return Ok(reply);
            }
            if reply.kind == "error" {
                bail!("waiting for {kind}: error {:?}", reply.code);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_a_run_measures() {
        let mut r = Received::default();
        Dialect::Switchyard.parse(
            r#"[{"type":"new-message","roomId":"r","id":"x","seq":4,"userId":"u","text":"m","data":{"p":2,"n":9,"t":100},"ts":1,"tempId":9},{"type":"ack","tempId":7,"seq":5,"success":true},{"type":"room-joined","roomId":"r","seq":3,"epoch":"e","members":[]}]"#,
            &mut r,
        );
        assert_eq!(r.probes, vec![(Probe { p: 2, n: 9, t: 100 }, Some(4))]);
        assert_eq!(r.acks, vec![(7, true)]);
        assert_eq!(r.replies[0].kind, "room-joined");
        assert_eq!(r.replies[0].epoch.as_deref(), Some("e"));

        let mut r = Received::default();
        Dialect::SocketIo.parse(
            r#"42["message",{"room":"r","text":"m","data":{"p":1,"n":2,"t":3}}]"#,
            &mut r,
        );
        Dialect::SocketIo.parse("4312[{\"ok\":true}]", &mut r);
        Dialect::SocketIo.parse("4313[{\"ok\":false,\"error\":\"bad_request\"}]", &mut r);
        Dialect::SocketIo.parse("430[]", &mut r);
        Dialect::SocketIo.parse("2", &mut r);
        assert_eq!(r.probes, vec![(Probe { p: 1, n: 2, t: 3 }, None)]);
        assert_eq!(r.acks, vec![(12, true), (13, false)]);
        assert_eq!(r.replies.len(), 1);
        assert!(r.ping);
    }

    #[test]
    fn urls_per_dialect() {
        assert_eq!(
            Dialect::Switchyard.url("ws://127.0.0.1:1"),
            "ws://127.0.0.1:1/ws"
        );
        assert_eq!(
            Dialect::SocketIo.url("ws://127.0.0.1:1/"),
            "ws://127.0.0.1:1/socket.io/?EIO=4&transport=websocket"
        );
    }
}
