//! Frames: JSON and MessagePack both ways, batches both ways, every limit with its error or
//! close code, and malformed input answered with `bad_request` on a connection that stays open.

mod common;

use common::*;
use serde_json::{json, Value};
use switchyard_client::{ConnectOptions, WsMessage};

/// A client whose server frames are MessagePack (`switchyard.v1.msgpack`).
async fn connect_msgpack(node: &Node, sub: &str) -> switchyard_client::Client {
    node.connect_opts(ConnectOptions {
        token: Some(token(sub, json!({}))),
        subprotocols: Some("switchyard.v1.msgpack".into()),
        ..Default::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn msgpack_both_ways_and_mixed() {
    let node = Node::start(&[]).await;
    let mut packed = connect_msgpack(&node, "mp").await;
    let welcome = packed.recv_timeout(SOON).await.unwrap();
    assert_eq!(
        welcome["type"], "welcome",
        "decoded from a binary MessagePack frame"
    );
    let mut plain = node.connect("js").await;
    join(&mut packed, "mixed").await;
    join(&mut plain, "mixed").await;
    say(&mut packed, "mixed", "p1", "from msgpack").await;
    assert_eq!(
        plain.recv_type("new-message", SOON).await.unwrap()["text"],
        "from msgpack"
    );
    say(&mut plain, "mixed", "j1", "from json").await;
    let m = packed
        .recv_until(|v| v["type"] == "new-message" && v["userId"] == "js", SOON)
        .await
        .unwrap();
    assert_eq!(
        (m["text"].as_str(), m["seq"].as_u64()),
        (Some("from json"), Some(2))
    );
    // A msgpack connection may send JSON text frames too.
    packed
        .send_raw(WsMessage::text(r#"{"type":"ping","ref":"t"}"#))
        .await
        .unwrap();
    assert_eq!(packed.recv_type("pong", SOON).await.unwrap()["ref"], "t");
    // And a JSON connection may send MessagePack.
    let bin = rmp_serde::to_vec_named(&json!({"type": "ping", "ref": "b"})).unwrap();
    plain.send_raw(WsMessage::binary(bin)).await.unwrap();
    assert_eq!(plain.recv_type("pong", SOON).await.unwrap()["ref"], "b");
    node.stop().await;
}

/// Floats in `data` reach JSON and MessagePack clients bit for bit, on either broker (through
/// Redis a durable message travels as JSON text and is read back for MessagePack clients).
#[tokio::test]
async fn floats_in_data_arrive_exactly_as_sent() {
    let node = Node::start(&[]).await;
    let mut packed = connect_msgpack(&node, "mp").await;
    let mut plain = node.connect("js").await;
    join(&mut packed, "floats").await;
    join(&mut plain, "floats").await;
    // The first is read back one bit off by serde_json without its `float_roundtrip` feature.
    let sent = [
        1.7590189128792283e154,
        0.1,
        5e-324,
        -2.2250738585072014e-308,
    ];
    plain
        .send(
            json!({"type": "message", "roomId": "floats", "tempId": "f", "text": "x",
            "data": {"floats": sent}}),
        )
        .await
        .unwrap();
    for client in [&mut plain, &mut packed] {
        let m = client.recv_type("new-message", SOON).await.unwrap();
        let got: Vec<u64> = m["data"]["floats"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_f64().unwrap().to_bits())
            .collect();
        assert_eq!(got, sent.map(f64::to_bits), "{m}");
    }
    node.stop().await;
}

#[tokio::test]
async fn client_batches_are_processed_in_order() {
    let node = Node::start(&[]).await;
    let mut c = node.connect("b").await;
    c.send(json!([
        {"type": "join-room", "roomId": "x", "ref": 1},
        {"type": "message", "roomId": "x", "tempId": "a", "text": "one", "ref": 2},
        {"type": "bogus", "ref": 3},
        {"type": "ping", "ref": 4}
    ]))
    .await
    .unwrap();
    let mut refs = Vec::new();
    while refs.len() < 4 {
        let v = c.recv_timeout(SOON).await.unwrap();
        if let Some(r) = v["ref"].as_i64() {
            refs.push((
                r,
                v["type"].as_str().unwrap().to_owned(),
                v["code"].as_str().map(str::to_owned),
            ));
        }
    }
    assert_eq!(refs[0], (1, "room-joined".into(), None));
    assert_eq!(refs[1], (2, "ack".into(), None));
    assert_eq!(refs[2], (3, "error".into(), Some("unknown_type".into())));
    assert_eq!(refs[3], (4, "pong".into(), None));
    node.stop().await;
}

#[tokio::test]
async fn limits_and_malformed_input() {
    let node = Node::start(&[]).await;
    let mut c = node.connect("l").await;
    join(&mut c, "r").await;
    let code_of = |v: &Value| {
        v["code"]
            .as_str()
            .or(v["error"]["code"].as_str())
            .map(str::to_owned)
    };

    let cases: Vec<(WsMessage, &str)> = vec![
        (WsMessage::text("{not json"), "bad_request"),
        (WsMessage::text("[]"), "bad_request"),
        (WsMessage::text("42"), "bad_request"),
        (
            WsMessage::text(r#"{"type":"join-room","roomId":"has space"}"#),
            "bad_request",
        ),
        (
            WsMessage::text(r#"{"type":"join-room","roomId":""}"#),
            "bad_request",
        ),
        (
            WsMessage::text(format!(
                r#"{{"type":"join-room","roomId":"{}"}}"#,
                "a".repeat(129)
            )),
            "bad_request",
        ),
        (
            WsMessage::text(r#"{"type":"message","roomId":"r","tempId":"e","text":""}"#),
            "bad_request",
        ),
        (
            WsMessage::text(format!(
                r#"{{"type":"message","roomId":"r","tempId":"big","text":"{}"}}"#,
                "x".repeat(4001)
            )),
            "too_large",
        ),
        (
            WsMessage::text(format!(
                r#"{{"type":"message","roomId":"r","tempId":"d","text":"x","data":"{}"}}"#,
                "y".repeat(17 * 1024)
            )),
            "too_large",
        ),
        (
            WsMessage::text(r#"{"type":"message","roomId":"r","text":"no temp id"}"#),
            "bad_request",
        ),
        (
            WsMessage::text(
                r#"{"type":"ping","ref":"x234567890123456789012345678901234567890123456789012345678901234567890"}"#,
            ),
            "bad_request",
        ),
        (WsMessage::text(r#"{"type":42}"#), "bad_request"),
        (WsMessage::text(r#"{"type":"teleport"}"#), "unknown_type"),
        (WsMessage::binary(vec![0xc1, 0xff, 0x00]), "bad_request"),
        (
            WsMessage::text(format!("[{}]", vec![r#"{"type":"ping"}"#; 101].join(","))),
            "too_large",
        ),
    ];
    for (frame, expected) in cases {
        let shown = format!("{frame:?}").chars().take(80).collect::<String>();
        c.send_raw(frame).await.unwrap();
        let v = c
            .recv_until(|v| v["type"] == "error" || v["type"] == "ack", SOON)
            .await
            .unwrap();
        assert_eq!(code_of(&v).as_deref(), Some(expected), "{shown}: {v}");
        if v["type"] == "ack" {
            assert_eq!(v["success"], false);
        }
    }
    // A batch over the limit was not processed at all (no 101 pongs), and the connection is fine.
    c.send(json!({"type": "ping", "ref": "alive"}))
        .await
        .unwrap();
    let pong = c.recv_type("pong", SOON).await.unwrap();
    assert_eq!(pong["ref"], "alive");
    assert_eq!(c.buffered(), 0, "nothing else was queued");
    // 100 messages in a batch is within the limit.
    let batch: Vec<Value> = (0..100)
        .map(|i| json!({"type": "ping", "ref": i}))
        .collect();
    c.send(json!(batch)).await.unwrap();
    c.recv_until(|v| v["ref"] == 99, SOON).await.unwrap();
    node.stop().await;
}

#[tokio::test]
async fn oversized_frame_closes_with_1009() {
    let node = Node::start(&[("SWITCHYARD_MAX_FRAME_BYTES", "4096")]).await;
    let mut c = node.connect("big").await;
    let text = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(5000));
    c.send_raw(WsMessage::text(text)).await.unwrap();
    let (code, _) = c.closed(SOON).await.unwrap();
    assert_eq!(code, 1009);
    node.stop().await;
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let node = Node::start(&[]).await;
    // Speak the WebSocket protocol by hand: tungstenite will not send invalid UTF-8 as text.
    let mut tcp = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {}\r\n\r\n",
        node.addr,
        token("utf", json!({}))
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let payload = [0xffu8, 0xfe, 0xfd];
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    tcp.write_all(&frame).await.unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let found = tokio::time::timeout(SOON, async {
        loop {
            let n = tcp.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return false;
            }
            received.extend_from_slice(&buf[..n]);
            // A close frame from the server: 0x88, length, then the 2-byte code.
            if let Some(i) = received.windows(2).position(|w| w[0] == 0x88 && w[1] >= 2) {
                if received.len() >= i + 4 {
                    return u16::from_be_bytes([received[i + 2], received[i + 3]]) == 1007;
                }
            }
        }
    })
    .await
    .unwrap();
    assert!(found, "expected a close frame with 1007");
    node.stop().await;
}

/// A close from the client is answered with a close frame (RFC 6455, 5.5.1), not a dropped
/// TCP connection.
#[tokio::test]
async fn a_client_close_is_answered() {
    let node = Node::start(&[]).await;
    let mut c = node.connect("closer").await;
    join(&mut c, "r").await;
    assert_eq!(c.close(1000).await, Some(1000));
    let c = node.connect("closer-2").await;
    assert_eq!(c.close(4000).await, Some(4000), "the code is echoed");
    node.stop().await;
}

/// A raw WebSocket client that sees frames, not messages: the fragments a message is sent in.
struct RawClient {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    async fn connect(node: &Node, sub: &str) -> RawClient {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = node.ws_url().trim_start_matches("ws://").to_owned();
        let addr = addr.split('/').next().unwrap().to_owned();
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let request = format!(
            "GET /ws?token={} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            token(sub, json!({}))
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(SOON, stream.read(&mut chunk))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "the RFC 6455 accept key: {head}"
        );
        buf.drain(..head_end);
        RawClient { stream, buf }
    }

    /// Sends one masked text frame.
    async fn send(&mut self, message: Value) {
        use tokio::io::AsyncWriteExt;
        let payload = message.to_string().into_bytes();
        assert!(payload.len() < 126);
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        let mut frame = vec![0x81, 0x80 | payload.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).await.unwrap();
    }

    /// The next frame: (fin, opcode, payload).
    async fn frame(&mut self) -> (bool, u8, Vec<u8>) {
        use tokio::io::AsyncReadExt;
        loop {
            if self.buf.len() >= 2 {
                let (fin, opcode) = (self.buf[0] & 0x80 != 0, self.buf[0] & 0x0f);
                let (len, at) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => (
                        u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.buf.len() >= at + len {
                    let payload = self.buf[at..at + len].to_vec();
                    self.buf.drain(..at + len);
                    return (fin, opcode, payload);
                }
            }
            let mut chunk = [0u8; 16384];
            let n = tokio::time::timeout(SOON, self.stream.read(&mut chunk))
                .await
                .expect("a frame within the deadline")
                .unwrap();
            assert!(n > 0, "closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// A message larger than `FRAGMENT_BYTES` goes out in fragments of at most that size (so the
/// connection's write buffer stays small), and clients of both encodings receive it whole.
#[tokio::test]
async fn large_messages_go_out_in_fragments_and_arrive_whole() {
    use switchyard_gateway::connection::FRAGMENT_BYTES;
    let node = Node::start(&[]).await;
    let mut raw = RawClient::connect(&node, "raw").await;
    let (fin, opcode, welcome) = raw.frame().await;
    assert!(fin && opcode == 1, "welcome is one text frame");
    assert!(String::from_utf8_lossy(&welcome).contains("welcome"));
    raw.send(json!({"type": "join-room", "roomId": "big"}))
        .await;
    let mut packed = connect_msgpack(&node, "mp").await;
    let mut plain = node.connect("js").await;
    join(&mut packed, "big").await;
    join(&mut plain, "big").await;

    let data = json!({ "blob": "x".repeat(15_000) });
    plain
        .send(json!({"type": "message", "roomId": "big", "tempId": "b1", "text": "large", "data": data}))
        .await
        .unwrap();
    let ack = plain.recv_type("ack", SOON).await.unwrap();
    assert_eq!(ack["success"], true, "{ack}");
    for client in [&mut plain, &mut packed] {
        let m = client.recv_type("new-message", SOON).await.unwrap();
        assert_eq!((&m["text"], &m["data"]), (&json!("large"), &data));
    }

    // The raw client sees the fragments: a text frame without FIN, continuations, the last
    // with FIN; none over the bound; together the whole message.
    let (mut fin, mut opcode, mut payload) = raw.frame().await;
    while fin {
        (fin, opcode, payload) = raw.frame().await; // room-joined, presence: single frames
    }
    assert_eq!(opcode, 1, "the first fragment carries the text opcode");
    let mut message = payload;
    let mut fragments = 1;
    while !fin {
        (fin, opcode, payload) = raw.frame().await;
        assert_eq!(opcode, 0, "then continuation frames");
        assert!(payload.len() <= FRAGMENT_BYTES);
        message.extend(payload);
        fragments += 1;
    }
    assert!(fragments >= 2);
    let m: Value = serde_json::from_slice(&message).unwrap();
    let m = if m.is_array() { m[0].clone() } else { m };
    assert_eq!((&m["type"], &m["data"]), (&json!("new-message"), &data));
    node.stop().await;
}
