//! Resume with `sinceSeq`: missed messages first, in order, then the reply, then live, with
//! nothing skipped or repeated; `recovered: false` when the gap is too old or the epoch differs.

mod common;

use common::*;
use serde_json::{json, Value};
use switchyard_client::Client;

async fn publish_n(c: &mut Client, room: &str, from: usize, n: usize) {
    for i in from..from + n {
        say(c, room, &format!("t{i}"), &format!("m{i}")).await;
    }
}

#[tokio::test]
async fn resume_replays_then_replies_then_live() {
    let node = Node::start(&[
        ("SWITCHYARD_RATE_PER_SEC", "1000"),
        ("SWITCHYARD_RATE_BURST", "1000"),
    ])
    .await;
    let mut writer = node.connect("writer").await;
    let joined = join(&mut writer, "r").await;
    let epoch = joined["epoch"].as_str().unwrap().to_owned();
    publish_n(&mut writer, "r", 1, 5).await;

    let mut reader = node.connect("reader").await;
    reader.send(json!({"type": "join-room", "roomId": "r", "sinceSeq": 2, "epoch": epoch, "ref": "resume"})).await.unwrap();
    let mut seqs = Vec::new();
    let reply = loop {
        let v = reader.recv_timeout(SOON).await.unwrap();
        match v["type"].as_str() {
            Some("new-message") => seqs.push(v["seq"].as_u64().unwrap()),
            Some("room-joined") => break v,
            _ => {}
        }
    };
    assert_eq!(seqs, [3, 4, 5], "missed messages first, in order");
    assert_eq!(
        (
            reply["seq"].as_u64(),
            reply["recovered"].as_bool(),
            reply["ref"].as_str()
        ),
        (Some(5), Some(true), Some("resume"))
    );
    publish_n(&mut writer, "r", 6, 1).await;
    let live = reader.recv_type("new-message", SOON).await.unwrap();
    assert_eq!(live["seq"], 6);

    // Subscribe resumes the same way; sinceSeq equal to the newest seq replays nothing.
    let mut spectator = node.connect("spectator").await;
    spectator
        .send(json!({"type": "subscribe", "roomId": "r", "sinceSeq": 6}))
        .await
        .unwrap();
    let sub = spectator.recv_timeout(SOON).await.unwrap();
    assert_eq!(
        (
            sub["type"].as_str(),
            sub["seq"].as_u64(),
            sub["recovered"].as_bool()
        ),
        (Some("subscribed"), Some(6), Some(true))
    );
    // A join without sinceSeq says nothing about recovery.
    let mut fresh = node.connect("fresh").await;
    let plain = join(&mut fresh, "r").await;
    assert!(plain.get("recovered").is_none());
    assert_eq!(plain["seq"], 6);
    node.stop().await;
}

#[tokio::test]
async fn no_gap_or_repeat_while_others_publish_during_the_resume() {
    let node = Node::start(&[
        ("SWITCHYARD_RATE_PER_SEC", "10000"),
        ("SWITCHYARD_RATE_BURST", "10000"),
    ])
    .await;
    let mut writer = node.connect("writer").await;
    let epoch = join(&mut writer, "busy").await["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    publish_n(&mut writer, "busy", 1, 20).await;

    // A second writer keeps publishing while the reader resumes.
    let addr = node.ws_url();
    let background = tokio::spawn(async move {
        let opts = switchyard_client::ConnectOptions {
            token: Some(token("bg", json!({}))),
            ..Default::default()
        };
        let mut bg = Client::connect(&addr, opts).await.unwrap();
        join(&mut bg, "busy").await;
        for i in 0..200 {
            bg.send(json!({"type": "message", "roomId": "busy", "tempId": format!("bg{i}"), "text": "x"})).await.unwrap();
        }
        bg.recv_until(|v| v["type"] == "ack" && v["tempId"] == "bg199", SOON)
            .await
            .unwrap();
    });
    let mut reader = node.connect("reader").await;
    reader
        .send(json!({"type": "join-room", "roomId": "busy", "sinceSeq": 10, "epoch": epoch}))
        .await
        .unwrap();
    background.await.unwrap();
    let mut seqs = Vec::new();
    let mut reply_at = None;
    while seqs.last() != Some(&220) {
        let v = reader.recv_timeout(SOON).await.unwrap();
        match v["type"].as_str() {
            Some("new-message") => seqs.push(v["seq"].as_u64().unwrap()),
            Some("room-joined") => reply_at = Some((seqs.len(), v["seq"].as_u64().unwrap())),
            _ => {}
        }
    }
    assert_eq!(
        seqs,
        (11..=220).collect::<Vec<_>>(),
        "every seq once, in order"
    );
    let (at, seq) = reply_at.expect("room-joined");
    assert_eq!(
        seqs[at - 1],
        seq,
        "the reply comes right after the message with its seq"
    );
    node.stop().await;
}

#[tokio::test]
async fn too_old_or_other_epoch_is_not_recovered() {
    let node = Node::start(&[
        ("SWITCHYARD_HISTORY_SIZE", "5"),
        ("SWITCHYARD_RATE_BURST", "100"),
    ])
    .await;
    let mut writer = node.connect("w").await;
    let epoch = join(&mut writer, "small").await["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    publish_n(&mut writer, "small", 1, 10).await;

    for (since, epoch, recovered) in [
        (2, Value::from(epoch.clone()), false), // seqs 3..5 fell out of a 5-message history
        (5, Value::from(epoch.clone()), true),  // 6..10 are all there
        (5, Value::from("another-epoch"), false), // history from another life of the room
        (50, Value::Null, false),               // a seq from the future: the history was lost
    ] {
        let mut c = node.connect("r").await;
        c.send(json!({"type": "join-room", "roomId": "small", "sinceSeq": since, "epoch": epoch}))
            .await
            .unwrap();
        let mut replayed = 0;
        let reply = loop {
            let v = c.recv_timeout(SOON).await.unwrap();
            if v["type"] == "new-message" {
                replayed += 1;
            }
            if v["type"] == "room-joined" {
                break v;
            }
        };
        assert_eq!(reply["recovered"], recovered, "since {since}");
        assert_eq!(reply["seq"], 10);
        assert_eq!(
            replayed,
            if recovered { 10 - since } else { 0 },
            "since {since}"
        );
    }
    node.stop().await;
}
