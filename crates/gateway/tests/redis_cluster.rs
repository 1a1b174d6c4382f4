//! Two nodes on a 3-master Redis Cluster started by the test (`redis-server --cluster-enabled
//! yes` x3, `redis-cli --cluster create`): rooms spread over every shard keep their order,
//! presence and history; user-targeted events cross nodes through sharded pub/sub.

mod common;

use common::redis::RedisCluster;
use common::*;
use serde_json::{json, Value};

/// Rooms whose hash slots fall on each of the three masters (two each; `CLUSTER KEYSLOT`).
const ROOMS: [&str; 6] = ["room-0", "room-1", "room-2", "room-3", "room-4", "room-5"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_spread_over_every_shard_work_across_nodes() {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let a = Node::start(&[("SWITCHYARD_BROKER", &url), ("SWITCHYARD_NODE_ID", "a")]).await;
    let b = Node::start(&[("SWITCHYARD_BROKER", &url), ("SWITCHYARD_NODE_ID", "b")]).await;
    a.wait_ready().await;
    b.wait_ready().await;

    let mut alice = a.connect("alice").await;
    let mut bob = b.connect("bob").await;
    for room in ROOMS {
        join(&mut alice, room).await;
        join(&mut bob, room).await;
        let seen = alice.recv_type("presence:join", SOON).await.unwrap();
        assert_eq!(
            (seen["roomId"].as_str(), seen["member"]["userId"].as_str()),
            (Some(room), Some("bob"))
        );
    }
    for (i, room) in ROOMS.iter().enumerate() {
        for n in 1..=2u64 {
            let ack = say(
                &mut alice,
                room,
                &format!("{room}-{n}"),
                &format!("{i}/{n}"),
            )
            .await;
            assert_eq!(
                (ack["success"].as_bool(), ack["seq"].as_u64()),
                (Some(true), Some(n)),
                "{ack}"
            );
            let got = bob.recv_type("new-message", SOON).await.unwrap();
            assert_eq!(
                (got["roomId"].as_str(), got["seq"].as_u64()),
                (Some(*room), Some(n))
            );
        }
    }
    // Every master holds some of the rooms' keys: the rooms really are spread.
    for node in &cluster.nodes {
        let keys: u64 = node.cli(&["dbsize"]).trim().parse().unwrap();
        assert!(keys > 0, "master {} holds no room", node.addr());
    }

    let history: Value = api_get(&b.http("/api/rooms/room-4/history?sinceSeq=0")).await;
    assert_eq!(
        history["messages"].as_array().unwrap().len(),
        2,
        "{history}"
    );
    assert_eq!(history["seq"], 2);

    let status = api_post(
        &a.http("/api/users/bob/publish"),
        Some(json!({"event": "ping", "data": 1})),
    )
    .await
    .0;
    assert_eq!(status, 202);
    assert_eq!(bob.recv_type("event", SOON).await.unwrap()["event"], "ping");

    bob.send(json!({"type": "leave-room", "roomId": "room-1"}))
        .await
        .unwrap();
    let left = alice.recv_type("presence:leave", SOON).await.unwrap();
    assert_eq!(
        (left["roomId"].as_str(), left["userId"].as_str()),
        (Some("room-1"), Some("bob"))
    );
    a.stop().await;
    b.stop().await;
}
