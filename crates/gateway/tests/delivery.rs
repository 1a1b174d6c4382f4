//! The writer and the connection's clocks: batched frames, the slow-consumer close (4009),
//! heartbeats (silent peers closed with 1001), token expiry (4001) and the rate limits.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

async fn api_publish(node: &Node, room: &str, data: serde_json::Value) -> reqwest::Response {
    api()
        .post(node.http(&format!("/api/rooms/{room}/publish")))
        .bearer_auth(API_KEY)
        .json(&json!({"event": "tick", "data": data}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn waiting_messages_go_out_as_one_frame() {
    let node = Node::start(&[
        ("SWITCHYARD_BATCH_DELAY_MS", "100"),
        ("SWITCHYARD_BATCH_MAX", "16"),
        ("SWITCHYARD_RATE_BURST", "200"),
    ])
    .await;
    let mut sender = node.connect("s").await;
    let mut viewer = node.connect("v").await;
    join(&mut sender, "b").await;
    join(&mut viewer, "b").await;
    viewer.recv_timeout(QUIET).await.ok(); // presence:join of the sender, if any
    let frames_before = viewer.frames;
    let batch: Vec<_> = (0..100)
        .map(|i| json!({"type": "message", "roomId": "b", "tempId": i, "text": "x"}))
        .collect();
    sender.send(json!(batch)).await.unwrap();
    for seq in 1..=100 {
        let m = viewer.recv_type("new-message", SOON).await.unwrap();
        assert_eq!(m["seq"], seq);
    }
    let frames = viewer.frames - frames_before;
    assert!(
        viewer.batch_frames > 0,
        "messages waiting together are sent as an array"
    );
    assert!(
        (7..=20).contains(&frames),
        "100 messages, at most 16 per frame: {frames} frames"
    );
    node.stop().await;
}

#[tokio::test]
async fn a_slow_consumer_is_closed_with_4009_and_others_are_not() {
    let node = Node::start(&[("SWITCHYARD_QUEUE_MAX", "8")]).await;
    let mut slow = node.connect("slow").await;
    let mut fast = node.connect("fast").await;
    join(&mut slow, "firehose").await;
    join(&mut fast, "firehose").await;
    let payload = "z".repeat(15_000);
    // The slow client reads nothing while ~15 MB are published: the kernel's buffers fill, then
    // its queue of 8. The fast client keeps reading.
    let reader = tokio::spawn(async move {
        let mut seqs = 0;
        while seqs < 1000 {
            let m = fast
                .recv_type("event", SOON)
                .await
                .expect("the fast client keeps receiving");
            seqs = m["seq"].as_u64().unwrap();
        }
    });
    for _ in 0..1000 {
        assert_eq!(
            api_publish(&node, "firehose", json!(payload))
                .await
                .status(),
            200
        );
    }
    reader.await.unwrap();
    let (code, reason) = slow.closed(Duration::from_secs(30)).await.unwrap();
    assert_eq!(code, 4009, "{reason}");
    node.stop().await;
}

#[tokio::test]
async fn silent_peers_are_closed_after_two_heartbeats() {
    let node = Node::start(&[("SWITCHYARD_HEARTBEAT_MS", "200")]).await;
    let mut alive = node.connect("alive").await;
    let mut silent = node.connect("silent").await;
    // The live client reads (and so answers pings) for 5 intervals and stays connected.
    assert_eq!(
        alive.recv_timeout(Duration::from_secs(1)).await,
        Err(switchyard_client::RecvError::Timeout)
    );
    alive.send(json!({"type": "ping", "ref": 1})).await.unwrap();
    alive.recv_type("pong", SOON).await.unwrap();
    // The silent one has not read, so has answered no ping: it was closed with 1001.
    let (code, reason) = silent.closed(SOON).await.unwrap();
    assert_eq!(code, 1001);
    assert!(reason.contains("heartbeat"), "{reason}");
    node.stop().await;
}

#[tokio::test]
async fn token_expiry_closes_with_4001() {
    let node = Node::start(&[]).await;
    let mut c = node
        .connect_with(token("brief", json!({"exp": now_s() + 2})))
        .await;
    let started = std::time::Instant::now();
    let (code, _) = c.closed(Duration::from_secs(6)).await.unwrap();
    assert_eq!(code, 4001);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed at expiry, not before"
    );
    node.stop().await;
}

#[tokio::test]
async fn durable_messages_are_rate_limited_and_flooding_closes_1008() {
    let node = Node::start(&[]).await; // 10/s, burst 20
    let mut c = node.connect("flood").await;
    join(&mut c, "r").await;
    let batch: Vec<_> = (0..30)
        .map(|i| json!({"type": "message", "roomId": "r", "tempId": i, "text": "x"}))
        .collect();
    c.send(json!(batch)).await.unwrap();
    let (mut ok, mut limited) = (0, 0);
    while ok + limited < 30 {
        let ack = c.recv_type("ack", SOON).await.unwrap();
        if ack["success"] == true {
            ok += 1;
        } else {
            assert_eq!(ack["error"]["code"], "rate_limited");
            assert!(ack["error"]["retryAfterMs"].as_u64().unwrap() >= 1);
            limited += 1;
        }
    }
    assert!((20..=22).contains(&ok), "the burst goes through: {ok}");
    // Keep going past the limit: the connection is closed as abusive.
    for _ in 0..2 {
        let batch: Vec<_> = (100..200)
            .map(|i| json!({"type": "message", "roomId": "r", "tempId": i, "text": "x"}))
            .collect();
        if c.send(json!(batch)).await.is_err() {
            break;
        }
    }
    let (code, _) = c.closed(SOON).await.unwrap();
    assert_eq!(code, 1008);
    let text = get_text(&node.http("/metrics")).await;
    assert!(text.contains("switchyard_rate_limited_total"), "{text}");
    node.stop().await;
}
