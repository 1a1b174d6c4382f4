//! Hostile input against a live node: every frame gets its defined error (or close code), the
//! connection that sent it stays usable, other users in the room are unaffected, and identity
//! always comes from the token.

mod common;

use common::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The error code of an `error` frame or a refused `ack`.
fn code_of(v: &Value) -> Option<&str> {
    v["code"].as_str().or(v["error"]["code"].as_str())
}

/// A deterministic xorshift generator: the "random" frames are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn msgpack(value: &Value) -> Vec<u8> {
    rmp_serde::to_vec_named(value).unwrap()
}

#[tokio::test]
async fn hostile_frames_get_their_error_and_hurt_no_one() {
    let node = Node::start(&[]).await;
    let mut attacker = node.connect("mallory").await;
    let mut bystander = node.connect("alice").await;
    join(&mut attacker, "r").await;
    join(&mut bystander, "r").await;

    // A map with NaN and an infinite number, which only MessagePack can carry.
    let mut nan_cursor = vec![0x84];
    for (k, v) in [("type", "cursor:move"), ("roomId", "r")] {
        nan_cursor.extend(msgpack(&json!(k)));
        nan_cursor.extend(msgpack(&json!(v)));
    }
    nan_cursor.extend(msgpack(&json!("x")));
    nan_cursor.push(0xcb);
    nan_cursor.extend(f64::NAN.to_be_bytes());
    nan_cursor.extend(msgpack(&json!("y")));
    nan_cursor.push(0xcb);
    nan_cursor.extend(f64::INFINITY.to_be_bytes());

    let deep_json = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let mut deep_msgpack = vec![0x91; 60_000];
    deep_msgpack.push(0xc0);
    let ten_thousand = format!("[{}]", vec!["{}"; 10_000].join(","));

    let cases: Vec<(&str, WsMessage, &str)> = vec![
        (
            "deeply nested JSON",
            WsMessage::text(deep_json),
            "bad_request",
        ),
        (
            "deeply nested MessagePack",
            WsMessage::binary(deep_msgpack),
            "bad_request",
        ),
        (
            "a number too big for any type",
            WsMessage::text(r#"{"type":"ping","ref":123456789012345678901234567890}"#),
            "bad_request",
        ),
        (
            "an exponent that overflows",
            WsMessage::text(r#"{"type":"cursor:move","roomId":"r","x":1e400,"y":0}"#),
            "bad_request",
        ),
        (
            "NaN and infinity in a cursor",
            WsMessage::binary(nan_cursor),
            "bad_request",
        ),
        (
            "a string cursor",
            WsMessage::text(r#"{"type":"cursor:move","roomId":"r","x":"1","y":0}"#),
            "bad_request",
        ),
        (
            "a number as roomId",
            WsMessage::text(r#"{"type":"join-room","roomId":5}"#),
            "bad_request",
        ),
        (
            "an object as text",
            WsMessage::text(r#"{"type":"message","roomId":"r","tempId":"o","text":{"a":1}}"#),
            "bad_request",
        ),
        (
            "a null type",
            WsMessage::text(r#"{"type":null}"#),
            "bad_request",
        ),
        (
            "no type",
            WsMessage::text(r#"{"roomId":"r"}"#),
            "bad_request",
        ),
        (
            "an unknown type",
            WsMessage::text(r#"{"type":"__proto__"}"#),
            "unknown_type",
        ),
        ("an empty batch", WsMessage::text("[]"), "bad_request"),
        (
            "10,000 messages in one frame",
            WsMessage::text(ten_thousand),
            "too_large",
        ),
        (
            "MessagePack binary data",
            WsMessage::binary(vec![0xc4, 0x03, 1, 2, 3]),
            "bad_request",
        ),
        (
            "a MessagePack map with an integer key",
            WsMessage::binary(vec![0x81, 0x01, 0x02]),
            "bad_request",
        ),
        (
            "a reserved room",
            WsMessage::text(r#"{"type":"join-room","roomId":"user:alice"}"#),
            "forbidden",
        ),
        (
            "publishing to a room it is not in",
            WsMessage::text(r#"{"type":"message","roomId":"elsewhere","tempId":"n","text":"x"}"#),
            "not_joined",
        ),
    ];
    let total = cases.len();
    for (what, frame, expected) in cases {
        attacker.send_raw(frame).await.unwrap();
        let v = attacker
            .recv_until(|v| v["type"] == "error" || v["type"] == "ack", SOON)
            .await
            .unwrap_or_else(|e| panic!("{what}: no answer ({e:?})"));
        assert_eq!(code_of(&v), Some(expected), "{what}: {v}");
    }

    // Random bytes, as binary and as text frames: each gets an error, nothing else happens.
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    for i in 0..200 {
        let len = 1 + (rng.next() % 512) as usize;
        let bytes = rng.bytes(len);
        let frame = if i % 2 == 0 {
            WsMessage::binary(bytes)
        } else {
            WsMessage::text(String::from_utf8_lossy(&bytes).into_owned())
        };
        attacker.send_raw(frame).await.unwrap();
        let v = attacker.recv_type("error", SOON).await.unwrap();
        assert!(
            matches!(
                code_of(&v),
                Some("bad_request" | "unknown_type" | "too_large")
            ),
            "random frame {i}: {v}"
        );
        if i % 50 == 49 {
            // A valid message now and then: invalid ones are only abuse a hundred in a row.
            attacker.send(json!({"type": "ping"})).await.unwrap();
            attacker.recv_type("pong", SOON).await.unwrap();
        }
    }

    // Identity is the token's: a userId in the message is ignored, and HTML is relayed as text.
    let script = "<script>alert(document.cookie)</script><img src=x onerror=alert(1)>";
    attacker
        .send(json!({"type": "message", "roomId": "r", "tempId": "h", "text": script, "userId": "alice", "name": "Alice"}))
        .await
        .unwrap();
    let seen = bystander.recv_type("new-message", SOON).await.unwrap();
    assert_eq!(seen["userId"], "mallory", "the sender is the token's sub");
    assert_eq!(seen["name"], "mallory name", "the name is the token's");
    assert_eq!(seen["text"], script, "text is relayed verbatim, as text");
    attacker
        .send(json!({"type": "typing:start", "roomId": "r", "userId": "alice"}))
        .await
        .unwrap();
    assert_eq!(
        bystander.recv_type("typing:start", SOON).await.unwrap()["userId"],
        "mallory"
    );

    // The attacker's connection still works, and the bystander saw nothing of the garbage.
    attacker
        .send(json!({"type": "ping", "ref": "still-here"}))
        .await
        .unwrap();
    assert_eq!(
        attacker.recv_type("pong", SOON).await.unwrap()["ref"],
        "still-here"
    );
    bystander
        .send(json!({"type": "ping", "ref": "fine"}))
        .await
        .unwrap();
    let pong = bystander
        .recv_until(|v| v["type"] == "pong" || v["type"] == "error", SOON)
        .await
        .unwrap();
    assert_eq!(pong["ref"], "fine", "{pong}");
    eprintln!("hostile frames: {total} crafted cases and 200 random frames answered");
    node.stop().await;
}

#[tokio::test]
async fn a_forbidden_join_leaves_no_trace() {
    let node = Node::start(&[]).await;
    let mut member = node.connect("member").await;
    join(&mut member, "doc:secret").await;
    let limited = token("guest", json!({"rooms": ["doc:public-*"]}));
    let mut guest = node.connect_with(limited).await;
    for kind in ["join-room", "subscribe"] {
        guest
            .send(json!({"type": kind, "roomId": "doc:secret"}))
            .await
            .unwrap();
        let refused = guest.recv_type("error", SOON).await.unwrap();
        assert_eq!(refused["code"], "forbidden", "{refused}");
    }
    // No presence: the member heard no join, and the room's members are unchanged.
    assert_quiet(&mut member, |v| v["type"] == "presence:join").await;
    member
        .send(json!({"type": "presence:sync", "roomId": "doc:secret"}))
        .await
        .unwrap();
    let sync = member.recv_type("presence:sync", SOON).await.unwrap();
    assert_eq!(sync["members"].as_array().unwrap().len(), 1, "{sync}");
    // No subscription: the guest gets nothing of the room.
    say(&mut member, "doc:secret", "s1", "private").await;
    assert_quiet(&mut guest, |v| v["type"] == "new-message").await;
    // The claim's own rooms work.
    join(&mut guest, "doc:public-1").await;
    node.stop().await;
}

#[tokio::test]
async fn a_hundred_invalid_messages_in_a_row_close_with_1008() {
    let node = Node::start(&[]).await;
    let mut c = node.connect("noisy").await;
    for _ in 0..99 {
        c.send_raw(WsMessage::text("{not json")).await.unwrap();
        c.recv_type("error", SOON).await.unwrap();
    }
    // A valid message starts the count again.
    c.send(json!({"type": "ping"})).await.unwrap();
    c.recv_type("pong", SOON).await.unwrap();
    for _ in 0..99 {
        c.send_raw(WsMessage::text(r#"{"type":"teleport"}"#))
            .await
            .unwrap();
    }
    c.send(json!({"type": "ping"})).await.unwrap();
    c.recv_type("pong", SOON).await.unwrap();
    for _ in 0..100 {
        if c.send_raw(WsMessage::binary(vec![0xc1])).await.is_err() {
            break;
        }
    }
    let (code, reason) = c.closed(SOON).await.unwrap();
    assert_eq!(code, 1008, "{reason}");
    node.stop().await;
}
