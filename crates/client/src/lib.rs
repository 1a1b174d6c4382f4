//! A small Rust client for Switchyard: connect (token in a header or the query, a subprotocol,
//! an Origin), send messages as JSON or MessagePack, and receive them one at a time whether the
//! server batched them or not. The tests and the load generator are built on it.

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Read buffer of a client socket. tungstenite's default is 128 KiB, and it zero-fills the free
/// part of the buffer before every read: with a thousand sockets receiving small frames, that
/// memset was most of the load generator's CPU and added tens of milliseconds of latency. A
/// larger frame grows the buffer as it arrives.
pub const READ_BUFFER_BYTES: usize = 8 * 1024;

/// The WebSocket settings of this crate's connections and the load generator's: tungstenite's
/// defaults with a small read buffer ([`READ_BUFFER_BYTES`]).
pub fn websocket_config() -> tungstenite::protocol::WebSocketConfig {
    tungstenite::protocol::WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES)
}

/// How the client connects.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// The JWT, sent as `Authorization: Bearer` unless `token_in_query`.
    pub token: Option<String>,
    pub token_in_query: bool,
    /// `Sec-WebSocket-Protocol` value (a comma-separated list), if any.
    pub subprotocols: Option<String>,
    pub origin: Option<String>,
    /// More request headers (name, value), such as `X-Forwarded-For`.
    pub headers: Vec<(String, String)>,
}

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The server refused the upgrade with an HTTP status (401, 403, 429, ...).
    #[error("HTTP {status}: {body}")]
    Refused {
        status: u16,
        body: Value,
        retry_after: Option<String>,
    },
    #[error("connection failed: {0}")]
    Ws(#[from] tungstenite::Error),
}

/// Why receiving failed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RecvError {
    #[error("closed with {code}: {reason}")]
    Closed { code: u16, reason: String },
    #[error("connection ended without a close frame")]
    Ended,
    #[error("timed out")]
    Timeout,
    #[error("undecodable frame: {0}")]
    Decode(String),
}

/// The encoding of what the client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    MsgPack,
}

pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pending: VecDeque<Value>,
    /// The encoding used by [`send`](Self::send).
    pub send_encoding: Encoding,
    /// The subprotocol the server selected.
    pub protocol: Option<String>,
    /// Frames received, and how many of them were batches (arrays).
    pub frames: usize,
    pub batch_frames: usize,
}

impl Client {
    /// Connects to `url` (`ws://host:port/ws`).
    pub async fn connect(url: &str, options: ConnectOptions) -> Result<Client, ConnectError> {
        let mut url = url.to_owned();
        if let (Some(token), true) = (&options.token, options.token_in_query) {
            url.push_str(if url.contains('?') {
                "&token="
            } else {
                "?token="
            });
            url.push_str(token);
        }
        let mut request = url.into_client_request()?;
        let headers = request.headers_mut();
        if let (Some(token), false) = (&options.token, options.token_in_query) {
            headers.insert("authorization", header(&format!("Bearer {token}")));
        }
        if let Some(p) = &options.subprotocols {
            headers.insert("sec-websocket-protocol", header(p));
        }
        if let Some(o) = &options.origin {
            headers.insert("origin", header(o));
        }
        for (name, value) in &options.headers {
            if let Ok(name) = tungstenite::http::HeaderName::from_bytes(name.as_bytes()) {
                headers.append(name, header(value));
            }
        }
        // Nagle off, as on the server: small frames go out at once.
        let (ws, response) = match tokio_tungstenite::connect_async_with_config(
            request,
            Some(websocket_config()),
            true,
        )
        .await
        {
            Ok(ok) => ok,
            Err(tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = response
                    .body()
                    .as_deref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(Value::Null);
                return Err(ConnectError::Refused {
                    status,
                    body,
                    retry_after,
                });
            }
            Err(e) => return Err(e.into()),
        };
        let protocol = response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let send_encoding = if protocol.as_deref() == Some("switchyard.v1.msgpack") {
            Encoding::MsgPack
        } else {
            Encoding::Json
        };
        Ok(Client {
            ws,
            pending: VecDeque::new(),
            send_encoding,
            protocol,
            frames: 0,
            batch_frames: 0,
        })
    }

    /// Sends one message (or a batch, when `message` is an array) in the send encoding.
    pub async fn send(&mut self, message: Value) -> Result<(), tungstenite::Error> {
        let frame = match self.send_encoding {
            Encoding::Json => Message::text(message.to_string()),
            Encoding::MsgPack => {
                Message::binary(rmp_serde::to_vec_named(&message).unwrap_or_default())
            }
        };
        self.ws.send(frame).await
    }

    /// Sends a raw frame (for tests of malformed input).
    pub async fn send_raw(&mut self, frame: Message) -> Result<(), tungstenite::Error> {
        self.ws.send(frame).await
    }

    /// Receives the next message, unpacking batches; answers pings on the way.
    pub async fn recv(&mut self) -> Result<Value, RecvError> {
        loop {
            if let Some(v) = self.pending.pop_front() {
                return Ok(v);
            }
            let frame = match self.ws.next().await {
                None => return Err(RecvError::Ended),
                Some(Err(_)) => return Err(RecvError::Ended),
                Some(Ok(frame)) => frame,
            };
            let value: Value = match frame {
                Message::Text(t) => serde_json::from_str(t.as_str())
                    .map_err(|e| RecvError::Decode(e.to_string()))?,
                Message::Binary(b) => {
                    rmp_serde::from_slice(&b).map_err(|e| RecvError::Decode(e.to_string()))?
                }
                Message::Close(frame) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    return Err(RecvError::Closed { code, reason });
                }
                _ => continue,
            };
            self.frames += 1;
            match value {
                Value::Array(items) => {
                    self.batch_frames += 1;
                    self.pending.extend(items);
                }
                other => self.pending.push_back(other),
            }
        }
    }

    /// Receives with a deadline.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<Value, RecvError> {
        tokio::time::timeout(timeout, self.recv())
            .await
            .unwrap_or(Err(RecvError::Timeout))
    }

    /// Receives until a message of `kind` (its `type`) arrives, skipping others; with a deadline.
    pub async fn recv_type(&mut self, kind: &str, timeout: Duration) -> Result<Value, RecvError> {
        self.recv_until(|v| v["type"] == kind, timeout).await
    }

    /// Receives until `predicate` holds, skipping other messages; with a deadline.
    pub async fn recv_until(
        &mut self,
        predicate: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Result<Value, RecvError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let v = self.recv_timeout(left).await?;
            if predicate(&v) {
                return Ok(v);
            }
        }
    }

    /// Reads until the server closes; returns the close code and reason.
    pub async fn closed(&mut self, timeout: Duration) -> Result<(u16, String), RecvError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_timeout(left).await {
                Ok(_) => continue,
                Err(RecvError::Closed { code, reason }) => return Ok((code, reason)),
                Err(e) => return Err(e),
            }
        }
    }

    /// Closes with a code (1000 for a normal close) and returns the code of the server's
    /// answering close frame (`None` if the connection ended without one, within 5 s).
    pub async fn close(mut self, code: u16) -> Option<u16> {
        let frame = CloseFrame {
            code: code.into(),
            reason: "".into(),
        };
        self.ws.close(Some(frame)).await.ok()?;
        tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(message)) = self.ws.next().await {
                if let Message::Close(frame) = message {
                    return frame.map(|f| u16::from(f.code));
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    }

    /// The messages already received but not yet returned.
    pub fn buffered(&self) -> usize {
        self.pending.len()
    }
}

fn header(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}
