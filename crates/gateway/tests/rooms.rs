//! Rooms, presence, spectators, permissions, `ref` echo and `presence:sync`.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn join_presence_and_leave() {
    let node = Node::start(&[]).await;
    let mut alice = node.connect("alice").await;
    let mut bob = node.connect("bob").await;

    let joined = join(&mut alice, "lobby").await;
    assert_eq!(joined["roomId"], "lobby");
    assert_eq!(joined["seq"], 0);
    assert!(joined["epoch"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(joined["members"].as_array().unwrap().len(), 1);
    assert_eq!(joined["members"][0]["userId"], "alice");
    assert_eq!(joined["members"][0]["name"], "alice name");
    assert!(joined["members"][0]["joinedAt"].as_u64().unwrap() > 1_600_000_000_000);

    let joined = join(&mut bob, "lobby").await;
    let ids: Vec<&str> = joined["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["userId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["alice", "bob"]);
    let seen = alice.recv_type("presence:join", SOON).await.unwrap();
    assert_eq!(seen["roomId"], "lobby");
    assert_eq!(seen["member"]["userId"], "bob");
    assert_quiet(&mut bob, |v| v["type"] == "presence:join").await;

    bob.send(json!({"type": "leave-room", "roomId": "lobby", "ref": "l1"}))
        .await
        .unwrap();
    let left = bob.recv_type("room-left", SOON).await.unwrap();
    assert_eq!(
        (left["roomId"].as_str(), left["ref"].as_str()),
        (Some("lobby"), Some("l1"))
    );
    let gone = alice.recv_type("presence:leave", SOON).await.unwrap();
    assert_eq!(
        (gone["roomId"].as_str(), gone["userId"].as_str()),
        (Some("lobby"), Some("bob"))
    );

    bob.send(json!({"type": "leave-room", "roomId": "lobby", "ref": 7}))
        .await
        .unwrap();
    let err = bob.recv_type("error", SOON).await.unwrap();
    assert_eq!(
        (err["code"].as_str(), err["ref"].as_i64()),
        (Some("not_joined"), Some(7))
    );
    node.stop().await;
}

#[tokio::test]
async fn three_tabs_are_one_member() {
    let node = Node::start(&[]).await;
    let mut watcher = node.connect("watcher").await;
    join(&mut watcher, "r").await;
    let mut tabs = Vec::new();
    for _ in 0..3 {
        let mut tab = node.connect("carol").await;
        join(&mut tab, "r").await;
        tabs.push(tab);
    }
    watcher.recv_type("presence:join", SOON).await.unwrap();
    assert_quiet(&mut watcher, |v| v["type"] == "presence:join").await;
    watcher
        .send(json!({"type": "presence:sync", "roomId": "r", "ref": "s"}))
        .await
        .unwrap();
    let sync = watcher.recv_type("presence:sync", SOON).await.unwrap();
    assert_eq!(sync["ref"], "s");
    assert_eq!(sync["members"].as_array().unwrap().len(), 2, "{sync}");

    // Closing two tabs says nothing; the last one (even by disconnecting) makes carol leave.
    let last = tabs.pop().unwrap();
    for tab in tabs {
        tab.close(1000).await;
    }
    assert_quiet(&mut watcher, |v| v["type"] == "presence:leave").await;
    drop(last);
    let gone = watcher.recv_type("presence:leave", SOON).await.unwrap();
    assert_eq!(gone["userId"], "carol");
    node.stop().await;
}

#[tokio::test]
async fn spectators_receive_without_presence() {
    let node = Node::start(&[]).await;
    let mut member = node.connect("m").await;
    let mut spectator = node.connect("s").await;
    join(&mut member, "show").await;
    spectator
        .send(json!({"type": "subscribe", "roomId": "show", "ref": 1}))
        .await
        .unwrap();
    let sub = spectator.recv_type("subscribed", SOON).await.unwrap();
    assert_eq!(
        (
            sub["roomId"].as_str(),
            sub["seq"].as_u64(),
            sub["ref"].as_i64()
        ),
        (Some("show"), Some(0), Some(1))
    );
    assert!(sub.get("members").is_none());
    assert_quiet(&mut member, |v| v["type"] == "presence:join").await;

    say(&mut member, "show", "t1", "hello").await;
    let msg = spectator.recv_type("new-message", SOON).await.unwrap();
    assert_eq!(msg["text"], "hello");
    member
        .send(json!({"type": "typing:start", "roomId": "show"}))
        .await
        .unwrap();
    spectator.recv_type("typing:start", SOON).await.unwrap();

    // A spectator may not talk or type.
    spectator
        .send(json!({"type": "message", "roomId": "show", "tempId": "x", "text": "hi"}))
        .await
        .unwrap();
    let ack = spectator.recv_type("ack", SOON).await.unwrap();
    assert_eq!(
        (ack["success"].as_bool(), ack["error"]["code"].as_str()),
        (Some(false), Some("not_joined"))
    );
    spectator
        .send(json!({"type": "typing:start", "roomId": "show", "ref": "t"}))
        .await
        .unwrap();
    assert_eq!(
        spectator.recv_type("error", SOON).await.unwrap()["code"],
        "not_joined"
    );

    spectator
        .send(json!({"type": "unsubscribe", "roomId": "show"}))
        .await
        .unwrap();
    spectator.recv_type("unsubscribed", SOON).await.unwrap();
    say(&mut member, "show", "t2", "after").await;
    assert_quiet(&mut spectator, |v| v["type"] == "new-message").await;
    spectator
        .send(json!({"type": "unsubscribe", "roomId": "show"}))
        .await
        .unwrap();
    assert_eq!(
        spectator.recv_type("error", SOON).await.unwrap()["code"],
        "not_joined"
    );
    node.stop().await;
}

#[tokio::test]
async fn rooms_claim_and_reserved_rooms() {
    let node = Node::start(&[]).await;
    let mut watcher = node.connect("w").await;
    join(&mut watcher, "secret").await;
    let mut limited = node
        .connect_with(token("lim", json!({"rooms": ["doc:*", "team-42"]})))
        .await;
    join(&mut limited, "doc:1").await;
    join(&mut limited, "team-42").await;
    for room in ["secret", "team-420", "docs:1"] {
        limited
            .send(json!({"type": "join-room", "roomId": room, "ref": room}))
            .await
            .unwrap();
        let err = limited.recv_type("error", SOON).await.unwrap();
        assert_eq!(
            (err["code"].as_str(), err["ref"].as_str()),
            (Some("forbidden"), Some(room))
        );
        limited
            .send(json!({"type": "subscribe", "roomId": room}))
            .await
            .unwrap();
        assert_eq!(
            limited.recv_type("error", SOON).await.unwrap()["code"],
            "forbidden"
        );
    }
    // A forbidden join leaves no trace: no presence, no subscription.
    assert_quiet(&mut watcher, |v| v["type"] == "presence:join").await;
    say(&mut watcher, "secret", "s1", "psst").await;
    assert_quiet(&mut limited, |v| v["type"] == "new-message").await;
    watcher
        .send(json!({"type": "presence:sync", "roomId": "secret"}))
        .await
        .unwrap();
    assert_eq!(
        watcher.recv_type("presence:sync", SOON).await.unwrap()["members"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let mut anyone = node.connect("any").await;
    anyone
        .send(json!({"type": "join-room", "roomId": "user:any"}))
        .await
        .unwrap();
    assert_eq!(
        anyone.recv_type("error", SOON).await.unwrap()["code"],
        "forbidden"
    );
    node.stop().await;
}

#[tokio::test]
async fn rooms_per_connection_limit() {
    let node = Node::start(&[("SWITCHYARD_MAX_ROOMS_PER_CONNECTION", "2")]).await;
    let mut c = node.connect("c").await;
    join(&mut c, "a").await;
    join(&mut c, "b").await;
    join(&mut c, "a").await; // re-joining a room it is in does not count
    c.send(json!({"type": "subscribe", "roomId": "c"}))
        .await
        .unwrap();
    let err = c.recv_type("error", SOON).await.unwrap();
    assert_eq!(err["code"], "forbidden");
    assert!(err["message"].as_str().unwrap().contains("room limit"));
    node.stop().await;
}

#[tokio::test]
async fn joins_take_turns_and_give_them_back() {
    // One join at a time on the node. A turn not given back would hold every later join for
    // 10 s and then refuse it; a join that did not wait would still be answered. So: joins
    // from many connections at once, and from one connection one after another, all answered.
    let node = Node::start(&[("SWITCHYARD_MAX_CONCURRENT_JOINS", "1")]).await;
    let mut clients = Vec::new();
    for i in 0..20 {
        clients.push(node.connect(&format!("u{i}")).await);
    }
    for c in &mut clients {
        c.send(json!({"type": "join-room", "roomId": "busy"}))
            .await
            .unwrap();
    }
    for c in &mut clients {
        let reply = c
            .recv_until(|v| v["type"] == "room-joined" || v["type"] == "error", SOON)
            .await
            .unwrap();
        assert_eq!(reply["type"], "room-joined", "{reply}");
    }
    let c = &mut clients[0];
    for room in ["a", "b", "c"] {
        join(c, room).await;
        c.send(json!({"type": "subscribe", "roomId": format!("s-{room}")}))
            .await
            .unwrap();
        c.recv_type("subscribed", SOON).await.unwrap();
    }
    node.stop().await;
}

#[tokio::test]
async fn ping_and_ref_echo() {
    let node = Node::start(&[]).await;
    let mut c = node.connect("p").await;
    c.send(json!({"type": "ping", "ref": "abc"})).await.unwrap();
    let pong = c.recv_type("pong", SOON).await.unwrap();
    assert_eq!(pong["ref"], "abc");
    assert!(pong["ts"].as_u64().unwrap() > 1_600_000_000_000);
    c.send(json!({"type": "ping", "ref": 42})).await.unwrap();
    assert_eq!(c.recv_type("pong", SOON).await.unwrap()["ref"], 42);
    c.send(json!({"type": "ping"})).await.unwrap();
    assert!(c
        .recv_type("pong", SOON)
        .await
        .unwrap()
        .get("ref")
        .is_none());
    node.stop().await;
}
