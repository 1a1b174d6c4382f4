//! Messages and events: ack and per-room seq, fan-out to every subscriber (the sender's own
//! connections included), idempotent tempIds, the publish claim, typing and cursors.

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn message_ack_seq_and_fan_out() {
    let node = Node::start(&[]).await;
    let mut alice = node.connect("alice").await;
    let mut alice_tab2 = node.connect("alice").await;
    let mut bob = node.connect("bob").await;
    for c in [&mut alice, &mut alice_tab2, &mut bob] {
        join(c, "chat").await;
    }
    alice
        .send(json!({"type": "message", "roomId": "chat", "tempId": "t-1", "text": "hi <b>bob</b>", "data": {"k": [1, 2]}, "userId": "mallory", "ref": "m"}))
        .await
        .unwrap();
    alice.recv_type("presence:join", SOON).await.unwrap(); // bob (alice_tab2 is alice: no join)
    let ack = alice.recv_timeout(SOON).await.unwrap();
    assert_eq!(
        ack["type"], "ack",
        "the sender gets its ack before its own new-message"
    );
    assert_eq!(ack["success"], true);
    assert_eq!(
        (
            ack["tempId"].as_str(),
            ack["seq"].as_u64(),
            ack["ref"].as_str()
        ),
        (Some("t-1"), Some(1), Some("m"))
    );
    let server_id = ack["serverId"].as_str().unwrap().to_owned();
    assert!(ack["ts"].as_u64().unwrap() > 1_600_000_000_000);

    for c in [&mut alice, &mut alice_tab2, &mut bob] {
        let m = c.recv_type("new-message", SOON).await.unwrap();
        assert_eq!(m["roomId"], "chat");
        assert_eq!(m["id"], server_id.as_str());
        assert_eq!(m["seq"], 1);
        assert_eq!(
            m["userId"], "alice",
            "identity is the token's, not the client's"
        );
        assert_eq!(m["name"], "alice name");
        assert_eq!(m["text"], "hi <b>bob</b>");
        assert_eq!(m["data"], json!({"k": [1, 2]}));
        assert_eq!(m["tempId"], "t-1");
        assert_eq!(m["ts"], ack["ts"]);
    }
    let ack = say(&mut bob, "chat", "b-1", "yo").await;
    assert_eq!(ack["seq"], 2);
    let ack = say(&mut alice, "other-room", "x", "no").await;
    assert_eq!(
        (ack["success"].as_bool(), ack["error"]["code"].as_str()),
        (Some(false), Some("not_joined"))
    );
    node.stop().await;
}

#[tokio::test]
async fn same_temp_id_is_not_delivered_twice() {
    let node = Node::start(&[]).await;
    let mut a = node.connect("a").await;
    let mut b = node.connect("b").await;
    join(&mut a, "r").await;
    join(&mut b, "r").await;
    let first = say(&mut a, "r", "dup", "once").await;
    let retry = say(&mut a, "r", "dup", "once").await;
    assert_eq!(first["serverId"], retry["serverId"]);
    assert_eq!(first["seq"], retry["seq"]);
    assert_eq!(retry["success"], true);
    b.recv_type("new-message", SOON).await.unwrap();
    assert_quiet(&mut b, |v| v["type"] == "new-message").await;
    // Another user's identical tempId is another message; so is the same tempId in another room.
    assert_eq!(say(&mut b, "r", "dup", "mine").await["seq"], 2);
    join(&mut a, "r2").await;
    assert_eq!(say(&mut a, "r2", "dup", "there").await["seq"], 1);
    // message and publish share one tempId space.
    a.send(json!({"type": "publish", "roomId": "r", "tempId": "dup", "event": "e", "data": 1}))
        .await
        .unwrap();
    let ack = a.recv_type("ack", SOON).await.unwrap();
    assert_eq!(ack["serverId"], first["serverId"]);
    node.stop().await;
}

#[tokio::test]
async fn publish_needs_the_claim() {
    let node = Node::start(&[]).await;
    let mut allowed = node
        .connect_with(token("pub", json!({"publish": true})))
        .await;
    let mut denied = node
        .connect_with(token("nopub", json!({"publish": false})))
        .await;
    join(&mut allowed, "board").await;
    join(&mut denied, "board").await;
    allowed
        .send(json!({"type": "publish", "roomId": "board", "tempId": 9, "event": "task-updated", "data": {"id": 3}}))
        .await
        .unwrap();
    let ack = allowed.recv_type("ack", SOON).await.unwrap();
    assert_eq!(
        (
            ack["success"].as_bool(),
            ack["tempId"].as_i64(),
            ack["seq"].as_u64()
        ),
        (Some(true), Some(9), Some(1))
    );
    let ev = denied.recv_type("event", SOON).await.unwrap();
    assert_eq!(ev["event"], "task-updated");
    assert_eq!(ev["data"], json!({"id": 3}));
    assert_eq!(
        (
            ev["seq"].as_u64(),
            ev["userId"].as_str(),
            ev["roomId"].as_str()
        ),
        (Some(1), Some("pub"), Some("board"))
    );

    denied.send(json!({"type": "publish", "roomId": "board", "tempId": "n", "event": "x", "data": null})).await.unwrap();
    let ack = denied.recv_type("ack", SOON).await.unwrap();
    assert_eq!(
        (ack["success"].as_bool(), ack["error"]["code"].as_str()),
        (Some(false), Some("forbidden"))
    );
    node.stop().await;
}

#[tokio::test]
async fn typing_is_relayed_and_stops_by_itself() {
    let node = Node::start(&[]).await;
    let mut a = node.connect("a").await;
    let mut b = node.connect("b").await;
    join(&mut a, "r").await;
    join(&mut b, "r").await;

    a.send(json!({"type": "typing:start", "roomId": "r"}))
        .await
        .unwrap();
    let started = Instant::now();
    let t = b.recv_type("typing:start", SOON).await.unwrap();
    assert_eq!(
        (t["roomId"].as_str(), t["userId"].as_str()),
        (Some("r"), Some("a"))
    );
    assert_quiet(&mut a, |v| v["type"] == "typing:start").await;
    let stop = b
        .recv_type("typing:stop", Duration::from_secs(8))
        .await
        .unwrap();
    assert_eq!(stop["userId"], "a");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(4500) && waited < Duration::from_secs(7),
        "auto-stop after {waited:?}"
    );

    // Explicit stop, and a stop on leave and on disconnect.
    a.send(json!({"type": "typing:start", "roomId": "r"}))
        .await
        .unwrap();
    b.recv_type("typing:start", SOON).await.unwrap();
    a.send(json!({"type": "typing:stop", "roomId": "r"}))
        .await
        .unwrap();
    b.recv_type("typing:stop", SOON).await.unwrap();
    a.send(json!({"type": "typing:start", "roomId": "r"}))
        .await
        .unwrap();
    b.recv_type("typing:start", SOON).await.unwrap();
    a.send(json!({"type": "leave-room", "roomId": "r"}))
        .await
        .unwrap();
    b.recv_type("typing:stop", SOON).await.unwrap();
    join(&mut a, "r").await;
    a.send(json!({"type": "typing:start", "roomId": "r"}))
        .await
        .unwrap();
    b.recv_type("typing:start", SOON).await.unwrap();
    drop(a);
    b.recv_type("typing:stop", SOON).await.unwrap();
    node.stop().await;
}

#[tokio::test]
async fn cursors_carry_a_stable_colour_and_leave() {
    let node = Node::start(&[]).await;
    let mut a = node.connect("a").await;
    let mut a2 = node.connect("a").await;
    let mut b = node.connect("b").await;
    for c in [&mut a, &mut a2, &mut b] {
        join(c, "canvas").await;
    }
    a.send(json!({"type": "cursor:move", "roomId": "canvas", "x": 0.25, "y": 10}))
        .await
        .unwrap();
    let m = b.recv_type("cursor:move", SOON).await.unwrap();
    assert_eq!(
        (m["x"].as_f64(), m["y"].as_f64(), m["userId"].as_str()),
        (Some(0.25), Some(10.0), Some("a"))
    );
    let color = m["color"].as_str().unwrap().to_owned();
    assert!(color.starts_with('#'));
    assert_quiet(&mut a2, |v| v["type"] == "cursor:move").await; // not to the sender's own connections
    a2.send(json!({"type": "cursor:move", "roomId": "canvas", "x": 1, "y": 1}))
        .await
        .unwrap();
    assert_eq!(
        b.recv_type("cursor:move", SOON).await.unwrap()["color"],
        color.as_str(),
        "stable per user"
    );

    a.send(json!({"type": "cursor:move", "roomId": "canvas", "x": "1", "y": 1, "ref": 1}))
        .await
        .unwrap();
    assert_eq!(
        a.recv_type("error", SOON).await.unwrap()["code"],
        "bad_request"
    );
    a.send(json!({"type": "cursor:leave", "roomId": "canvas"}))
        .await
        .unwrap();
    assert_eq!(
        b.recv_type("cursor:leave", SOON).await.unwrap()["userId"],
        "a"
    );
    // Disconnecting with a cursor shown sends cursor:leave for it.
    b.send(json!({"type": "cursor:move", "roomId": "canvas", "x": 2, "y": 2}))
        .await
        .unwrap();
    a.recv_type("cursor:move", SOON).await.unwrap();
    drop(b);
    assert_eq!(
        a.recv_type("cursor:leave", SOON).await.unwrap()["userId"],
        "b"
    );
    node.stop().await;
}

#[tokio::test]
async fn cursor_moves_are_conflated_for_a_busy_reader() {
    let node = Node::start(&[
        ("SWITCHYARD_VOLATILE_RATE_PER_SEC", "100000"),
        ("SWITCHYARD_VOLATILE_RATE_BURST", "100000"),
    ])
    .await;
    let mut mover = node.connect("mover").await;
    let mut viewer = node.connect("viewer").await;
    join(&mut mover, "c").await;
    join(&mut viewer, "c").await;
    // The viewer does not read while 2,000 moves arrive: only the newest waits in its queue.
    let moves: Vec<_> = (0..2000)
        .map(|i| json!({"type": "cursor:move", "roomId": "c", "x": i, "y": 0}))
        .collect();
    for chunk in moves.chunks(100) {
        mover.send(json!(chunk)).await.unwrap();
    }
    mover
        .send(json!({"type": "ping", "ref": "done"}))
        .await
        .unwrap();
    mover
        .recv_until(|v| v["ref"] == "done", SOON)
        .await
        .unwrap();
    let mut seen = Vec::new();
    loop {
        let m = viewer.recv_type("cursor:move", SOON).await.unwrap();
        seen.push(m["x"].as_f64().unwrap());
        if m["x"] == 1999.0 {
            break;
        }
    }
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "positions only move forward"
    );
    assert!(
        seen.len() < 2000,
        "conflated: {} of 2000 moves delivered",
        seen.len()
    );
    node.stop().await;
}
