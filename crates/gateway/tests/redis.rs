//! Several nodes on one real Redis (each test starts its own `redis-server` on a free port):
//! messages, presence, typing, the HTTP API and user-targeted events cross nodes; a client
//! resumes on another node; a pub/sub connection cut by Redis loses nothing.

mod common;

use common::redis::Redis;
use common::*;
use serde_json::{json, Value};
use switchyard_client::Client;

const FAST: [(&str, &str); 2] = [
    ("SWITCHYARD_RATE_PER_SEC", "1000"),
    ("SWITCHYARD_RATE_BURST", "1000"),
];

/// Two in-process nodes on `redis`, ready.
async fn two_nodes(redis: &Redis, extra: &[(&str, &str)]) -> (Node, Node) {
    let url = redis.url();
    let mut nodes = Vec::new();
    for id in ["node-a", "node-b"] {
        let mut env = vec![
            ("SWITCHYARD_BROKER", url.as_str()),
            ("SWITCHYARD_NODE_ID", id),
        ];
        env.extend_from_slice(&FAST);
        env.extend_from_slice(extra);
        let node = Node::start(&env).await;
        node.wait_ready().await;
        nodes.push(node);
    }
    let b = nodes.pop().unwrap();
    (nodes.pop().unwrap(), b)
}

async fn messages_until_joined(client: &mut Client) -> (Vec<Value>, Value) {
    let mut messages = Vec::new();
    loop {
        let v = client.recv_timeout(SOON).await.unwrap();
        match v["type"].as_str() {
            Some("new-message") => messages.push(v),
            Some("room-joined") => return (messages, v),
            Some("error") => panic!("join refused: {v}"),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_from_one_node_reaches_the_other_with_the_same_seq() {
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis, &[]).await;
    let mut alice = a.connect("alice").await;
    let mut bob = b.connect("bob").await;
    join(&mut alice, "lobby").await;
    join(&mut bob, "lobby").await;

    let ack = say(&mut alice, "lobby", "t1", "hello from A").await;
    assert_eq!(
        (ack["success"].as_bool(), ack["seq"].as_u64()),
        (Some(true), Some(1))
    );
    let at_b = bob.recv_type("new-message", SOON).await.unwrap();
    assert_eq!(at_b["seq"], 1);
    assert_eq!(at_b["id"], ack["serverId"]);
    assert_eq!(
        (at_b["userId"].as_str(), at_b["text"].as_str()),
        (Some("alice"), Some("hello from A"))
    );
    let own = alice.recv_type("new-message", SOON).await.unwrap();
    assert_eq!(
        (own["seq"].as_u64(), own["ts"].clone()),
        (Some(1), at_b["ts"].clone())
    );

    let ack = say(&mut bob, "lobby", "t1", "hi from B").await;
    assert_eq!(
        ack["seq"], 2,
        "one order per room, whichever node publishes"
    );
    assert_eq!(
        alice.recv_type("new-message", SOON).await.unwrap()["seq"],
        2
    );

    // Volatile events cross nodes too, and skip the sender's own connections.
    alice
        .send(json!({"type": "typing:start", "roomId": "lobby"}))
        .await
        .unwrap();
    let typing = bob.recv_type("typing:start", SOON).await.unwrap();
    assert_eq!(typing["userId"], "alice");
    bob.send(json!({"type": "cursor:move", "roomId": "lobby", "x": 1.5, "y": 2}))
        .await
        .unwrap();
    let cursor = alice.recv_type("cursor:move", SOON).await.unwrap();
    assert_eq!(
        (cursor["userId"].as_str(), cursor["x"].as_f64()),
        (Some("bob"), Some(1.5))
    );
    assert_quiet(&mut bob, |v| v["type"] == "cursor:move").await;

    // A retry of the same tempId on the other node gets the first ack, and nothing twice.
    let mut alice_b = b.connect("alice").await;
    join(&mut alice_b, "lobby").await;
    let first = say(&mut alice, "lobby", "same", "once").await;
    let retry = say(&mut alice_b, "lobby", "same", "once").await;
    assert_eq!(
        (retry["serverId"].clone(), retry["seq"].clone()),
        (first["serverId"].clone(), first["seq"].clone())
    );
    let delivered = bob.recv_type("new-message", SOON).await.unwrap();
    assert_eq!(delivered["seq"], first["seq"]);
    assert_quiet(&mut bob, |v| v["type"] == "new-message").await;
    a.stop().await;
    b.stop().await;
}

/// A node writing durable messages in MessagePack (`SWITCHYARD_DURABLE_FORMAT=msgpack`, as nodes
/// built before the JSON format read only that) and one writing JSON share a room: each reads
/// the other's messages, live and from the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_writing_either_durable_format_read_each_other() {
    let redis = Redis::start();
    let url = redis.url();
    let mut nodes = Vec::new();
    for (id, format) in [("node-old", "msgpack"), ("node-new", "json")] {
        let mut env = vec![
            ("SWITCHYARD_BROKER", url.as_str()),
            ("SWITCHYARD_NODE_ID", id),
            ("SWITCHYARD_DURABLE_FORMAT", format),
        ];
        env.extend_from_slice(&FAST);
        let node = Node::start(&env).await;
        node.wait_ready().await;
        nodes.push(node);
    }
    let (old, new) = (&nodes[0], &nodes[1]);
    let mut at_old = old.connect("o").await;
    let mut at_new = new.connect("n").await;
    join(&mut at_old, "mixed").await;
    join(&mut at_new, "mixed").await;
    for (seq, text) in [(1, "packed"), (2, "as json")] {
        let from = if seq == 1 { &mut at_old } else { &mut at_new };
        say(from, "mixed", text, text).await;
        for client in [&mut at_old, &mut at_new] {
            let m = client.recv_type("new-message", SOON).await.unwrap();
            assert_eq!(
                (m["seq"].as_u64(), m["text"].as_str()),
                (Some(seq), Some(text))
            );
        }
    }
    // One entry of each format in the history (a JSON body is written as its text).
    let history = redis.cli(&["XRANGE", "sy:{mixed}:history", "-", "+"]);
    assert_eq!(
        history.matches(r#"{"type":"new-message""#).count(),
        1,
        "{history}"
    );
    for (name, node) in [("old", old), ("new", new)] {
        let mut late = node.connect("late").await;
        late.send(json!({"type": "join-room", "roomId": "mixed", "sinceSeq": 0}))
            .await
            .unwrap();
        let (missed, joined) = messages_until_joined(&mut late).await;
        let seqs: Vec<_> = missed.iter().map(|m| m["seq"].as_u64()).collect();
        assert_eq!(
            seqs,
            [Some(1), Some(2)],
            "a resume on the {name} node replays both"
        );
        assert_eq!(joined["recovered"], true);
    }
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_per_user_across_nodes() {
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis, &[]).await;
    let mut alice = a.connect("alice").await;
    let joined = join(&mut alice, "team").await;
    assert_eq!(joined["members"].as_array().unwrap().len(), 1);

    let mut bob_b = b.connect("bob").await;
    let joined = join(&mut bob_b, "team").await;
    let users = user_ids(&joined["members"]);
    assert_eq!(
        users,
        ["alice", "bob"],
        "members across the cluster, in join order"
    );
    let seen = alice.recv_type("presence:join", SOON).await.unwrap();
    assert_eq!(seen["member"]["userId"], "bob");
    assert_eq!(seen["member"]["name"], "bob name");

    // Bob's second tab, on the other node: still one member, no second join.
    let mut bob_a = a.connect("bob").await;
    join(&mut bob_a, "team").await;
    assert_quiet(&mut alice, |v| v["type"] == "presence:join").await;
    let members: Value = api_get(&b.http("/api/rooms/team/presence")).await;
    assert_eq!(members["members"].as_array().unwrap().len(), 2, "{members}");

    // The first tab leaving is not a leave; the last one is, on every node.
    bob_b
        .send(json!({"type": "leave-room", "roomId": "team"}))
        .await
        .unwrap();
    bob_b.recv_type("room-left", SOON).await.unwrap();
    assert_quiet(&mut alice, |v| v["type"] == "presence:leave").await;
    drop(bob_a);
    let left = alice.recv_type("presence:leave", SOON).await.unwrap();
    assert_eq!(
        (left["roomId"].as_str(), left["userId"].as_str()),
        (Some("team"), Some("bob"))
    );
    alice
        .send(json!({"type": "presence:sync", "roomId": "team"}))
        .await
        .unwrap();
    let sync = alice.recv_type("presence:sync", SOON).await.unwrap();
    assert_eq!(sync["members"].as_array().unwrap().len(), 1, "{sync}");
    a.stop().await;
    b.stop().await;
}

fn user_ids(members: &Value) -> Vec<String> {
    members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["userId"].as_str().unwrap().to_owned())
        .collect()
}

/// A node follows a room's members after its first join there (joins after it do not read the
/// whole list from Redis): changes made on another node show in the members its later joins
/// list, exactly as Redis has them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_joins_list_members_changed_on_other_nodes() {
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis, &[]).await;
    let mut alice = a.connect("alice").await;
    join(&mut alice, "team").await;
    let mut bob = b.connect("bob").await;
    join(&mut bob, "team").await;
    alice.recv_type("presence:join", SOON).await.unwrap();

    let mut carol = a.connect("carol").await;
    let joined = join(&mut carol, "team").await;
    assert_eq!(user_ids(&joined["members"]), ["alice", "bob", "carol"]);
    let cluster: Value = api_get(&b.http("/api/rooms/team/presence")).await;
    assert_eq!(joined["members"], cluster["members"], "as Redis has them");

    bob.send(json!({"type": "leave-room", "roomId": "team"}))
        .await
        .unwrap();
    alice.recv_type("presence:leave", SOON).await.unwrap();
    let mut dave = a.connect("dave").await;
    let joined = join(&mut dave, "team").await;
    assert_eq!(user_ids(&joined["members"]), ["alice", "carol", "dave"]);
    let cluster: Value = api_get(&b.http("/api/rooms/team/presence")).await;
    assert_eq!(joined["members"], cluster["members"]);

    // Bob again, now on node a: a rejoin is listed with its new join time, last.
    let mut bob_again = a.connect("bob").await;
    join(&mut bob_again, "team").await;
    let mut erin = a.connect("erin").await;
    let joined = join(&mut erin, "team").await;
    assert_eq!(
        user_ids(&joined["members"]),
        ["alice", "carol", "dave", "bob", "erin"]
    );
    a.stop().await;
    b.stop().await;
}

/// Users joining at once on two nodes: each sees every other user exactly once, from the
/// reply's members or one `presence:join` after it, never both (a change the snapshot already
/// holds is not delivered again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_joins_see_each_member_once() {
    const USERS: usize = 12;
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis, &[]).await;
    let mut clients = Vec::new();
    for i in 0..USERS {
        let node = if i % 2 == 0 { &a } else { &b };
        clients.push(node.connect(&format!("u{i}")).await);
    }
    let tasks = clients.into_iter().map(|mut client| {
        tokio::spawn(async move {
            client
                .send(json!({"type": "join-room", "roomId": "crowd"}))
                .await
                .unwrap();
            let joined = client.recv_type("room-joined", SOON).await.unwrap();
            let mut view: std::collections::BTreeSet<String> =
                user_ids(&joined["members"]).into_iter().collect();
            while view.len() < USERS {
                let seen = client.recv_type("presence:join", SOON).await.unwrap();
                let user = seen["member"]["userId"].as_str().unwrap().to_owned();
                assert!(view.insert(user.clone()), "{user} joined twice: {seen}");
            }
            assert_quiet(&mut client, |v| v["type"] == "presence:join").await;
            client
        })
    });
    for task in futures_util::future::join_all(tasks).await {
        task.unwrap();
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_reaches_users_on_any_node() {
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis, &[]).await;
    let mut carol = a.connect("carol").await;
    join(&mut carol, "board").await;

    // A backend publishes through node B; carol on node A gets it with a seq.
    let (status, published) = api_post(
        &b.http("/api/rooms/board/publish"),
        Some(json!({"event": "task-updated", "data": {"id": 7}})),
    )
    .await;
    assert_eq!(status, 200);
    let seq = published["seq"].clone();
    let event = carol.recv_type("event", SOON).await.unwrap();
    assert_eq!(
        (event["event"].as_str(), event["seq"].clone()),
        (Some("task-updated"), seq)
    );
    assert_eq!(event["data"]["id"], 7);

    // History on the other node reads the same stream.
    say(&mut carol, "board", "c1", "after the event").await;
    let history: Value = api_get(&b.http("/api/rooms/board/history?sinceSeq=0")).await;
    let seqs: Vec<u64> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2], "{history}");
    assert_eq!(history["messages"][1]["text"], "after the event");

    // User-targeted event and disconnect, sent through B, reach carol's connection on A.
    let status = api_post(
        &b.http("/api/users/carol/publish"),
        Some(json!({"event": "notify", "data": "hi"})),
    )
    .await
    .0;
    assert_eq!(status, 202);
    let note = carol.recv_type("event", SOON).await.unwrap();
    assert_eq!(
        (note["event"].as_str(), note.get("roomId")),
        (Some("notify"), None)
    );
    let status = api_post(&b.http("/api/users/carol/disconnect"), None)
        .await
        .0;
    assert_eq!(status, 202);
    let (code, _) = carol.closed(SOON).await.unwrap();
    assert_eq!(code, 1008);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_a_drained_node_resumes_on_another() {
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis, &[]).await;
    let mut reader = a.connect("reader").await;
    let joined = join(&mut reader, "feed").await;
    let epoch = joined["epoch"].as_str().unwrap().to_owned();
    let mut writer = b.connect("writer").await;
    join(&mut writer, "feed").await;
    let mut last = 0;
    for i in 1..=3 {
        say(&mut writer, "feed", &format!("w{i}"), "before").await;
        last = reader.recv_type("new-message", SOON).await.unwrap()["seq"]
            .as_u64()
            .unwrap();
    }
    a.stop().await;
    let (code, _) = reader.closed(SOON).await.unwrap();
    assert_eq!(code, 1001, "a draining node says go away");
    for i in 4..=6 {
        say(&mut writer, "feed", &format!("w{i}"), "while away").await;
    }

    let mut resumed = b.connect("reader").await;
    resumed
        .send(json!({"type": "join-room", "roomId": "feed", "sinceSeq": last, "epoch": epoch}))
        .await
        .unwrap();
    let (missed, reply) = messages_until_joined(&mut resumed).await;
    let seqs: Vec<u64> = missed.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [4, 5, 6], "exactly the missed messages, in order");
    assert_eq!(
        (reply["recovered"].as_bool(), reply["seq"].as_u64()),
        (Some(true), Some(6))
    );
    say(&mut writer, "feed", "w7", "live").await;
    assert_eq!(
        resumed.recv_type("new-message", SOON).await.unwrap()["seq"],
        7
    );
    assert_quiet(&mut resumed, |v| v["type"] == "new-message").await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pubsub_connection_cut_by_redis_loses_nothing() {
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis, &[]).await;
    let mut writer = a.connect("writer").await;
    join(&mut writer, "wire").await;
    let mut reader = b.connect("reader").await;
    join(&mut reader, "wire").await;

    let writing = tokio::spawn(async move {
        for i in 1..=200 {
            let ack = say(&mut writer, "wire", &format!("w{i}"), "x").await;
            assert_eq!(ack["success"], true, "{ack}");
        }
        writer
    });
    // Cut every pub/sub connection a few times while messages flow (what Redis does to a
    // subscriber whose output buffer overflows).
    let mut seqs = Vec::new();
    for _ in 0..3 {
        let m = reader.recv_type("new-message", SOON).await.unwrap();
        seqs.push(m["seq"].as_u64().unwrap());
        let killed = redis.cli(&["client", "kill", "type", "pubsub"]);
        assert!(!killed.trim().is_empty());
    }
    let _writer = writing.await.unwrap();
    while seqs.last() != Some(&200) {
        let m = reader
            .recv_type("new-message", std::time::Duration::from_secs(15))
            .await
            .unwrap();
        seqs.push(m["seq"].as_u64().unwrap());
    }
    let expected: Vec<u64> = (1..=200).collect();
    assert_eq!(seqs, expected, "no gap, no repeat");
    a.stop().await;
    b.stop().await;
}

/// Joins `room` with `sinceSeq` (and the epoch) and returns the replayed seqs and the reply.
async fn resume(client: &mut Client, room: &str, since: u64, epoch: &str) -> (Vec<u64>, Value) {
    client
        .send(json!({"type": "join-room", "roomId": room, "sinceSeq": since, "epoch": epoch}))
        .await
        .unwrap();
    let (missed, reply) = messages_until_joined(client).await;
    let seqs = missed.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    (seqs, reply)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_stream_is_bounded_by_count_and_age() {
    let redis = Redis::start();
    let (a, b) = two_nodes(
        &redis,
        &[
            ("SWITCHYARD_HISTORY_SIZE", "3"),
            ("SWITCHYARD_HISTORY_TTL_S", "1"),
        ],
    )
    .await;
    let mut writer = a.connect("writer").await;
    let epoch = join(&mut writer, "short").await["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 1..=5 {
        say(&mut writer, "short", &format!("s{i}"), "x").await;
    }
    assert_eq!(redis.cli(&["xlen", "sy:{short}:history"]).trim(), "3");

    let mut reader = b.connect("reader").await;
    let (seqs, reply) = resume(&mut reader, "short", 2, &epoch).await;
    assert_eq!(
        (seqs, reply["recovered"].as_bool()),
        (vec![3, 4, 5], Some(true))
    );
    let mut reader = b.connect("reader").await;
    let (seqs, reply) = resume(&mut reader, "short", 1, &epoch).await;
    assert_eq!(
        (seqs.len(), reply["recovered"].as_bool()),
        (0, Some(false)),
        "seq 2 fell out of a 3-message history"
    );
    let (seqs, reply) = resume(&mut reader, "short", 4, "another-epoch").await;
    assert_eq!((seqs.len(), reply["recovered"].as_bool()), (0, Some(false)));

    // Past the history TTL (1 s) nothing is served, whatever the stream still holds.
    let deadline = std::time::Instant::now() + SOON;
    loop {
        let mut late = b.connect("late").await;
        let (seqs, reply) = resume(&mut late, "short", 4, &epoch).await;
        if reply["recovered"] == false {
            assert!(seqs.is_empty());
            assert_eq!(reply["seq"], 5, "the position outlives the history");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "history never aged out"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_protected_redis() {
    let redis = Redis::start_with(&["--requirepass", "s3cret"]);
    let good = format!("redis://:s3cret@{}", redis.addr());
    let node = Node::start(&[("SWITCHYARD_BROKER", &good)]).await;
    node.wait_ready().await;
    let mut alice = node.connect("alice").await;
    join(&mut alice, "private").await;
    assert_eq!(say(&mut alice, "private", "t", "hi").await["success"], true);
    node.stop().await;

    // A wrong password: the node runs but is not ready, and says nothing is published.
    let bad = format!("redis://:wrong@{}", redis.addr());
    let node = Node::start(&[("SWITCHYARD_BROKER", &bad)]).await;
    let mut bob = node.connect("bob").await;
    bob.send(json!({"type": "join-room", "roomId": "private"}))
        .await
        .unwrap();
    let refused = bob.recv_type("error", SOON).await.unwrap();
    assert_eq!(refused["code"], "unavailable", "{refused}");
    wait_status(&node.http("/readyz"), 503, SOON).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_room_keeps_its_seq_without_messages() {
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis, &[("SWITCHYARD_PRESENCE_TTL_S", "2")]).await;
    let mut quiet = a.connect("quiet").await;
    join(&mut quiet, "idle").await;
    say(&mut quiet, "idle", "q1", "once").await;
    // Shorten the room's meta; the heartbeat of the node serving it puts the TTL back.
    redis.cli(&["expire", "sy:{idle}:meta", "100"]);
    let deadline = std::time::Instant::now() + SOON;
    loop {
        let ttl: i64 = redis
            .cli(&["ttl", "sy:{idle}:meta"])
            .trim()
            .parse()
            .unwrap();
        if ttl > 100 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "meta TTL stayed {ttl}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    a.stop().await;
    b.stop().await;
}

/// A sink that takes 50 ms to hand each durable message on (it sleeps on the broker's delivery
/// path, which a real sink must never do), then notes its seq.
#[derive(Default)]
struct SlowSink {
    delivered: std::sync::Mutex<Vec<u64>>,
}

impl switchyard_broker::EventSink for SlowSink {
    fn room_event(&self, _room_id: &str, event: &switchyard_broker::RoomEvent) {
        if let Some((seq, _)) = &event.durable {
            std::thread::sleep(std::time::Duration::from_millis(50));
            self.delivered.lock().unwrap().push(*seq);
        }
    }

    fn user_event(&self, _user_id: &str, _event: &switchyard_broker::UserEvent) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_locally_waits_until_the_node_has_handed_the_message_on() {
    use std::time::{Duration, Instant};
    use switchyard_broker::{Broker, DurableBody, DurableDraft, RedisBroker, RedisConfig};

    let redis = Redis::start();
    let sink = std::sync::Arc::new(SlowSink::default());
    let broker = RedisBroker::new(
        RedisConfig {
            server: switchyard_broker::RedisServer::Standalone(redis.url()),
            node_id: "echo-test".into(),
            history_size: 100,
            history_ttl: Duration::from_secs(60),
            presence_ttl: Duration::from_secs(30),
            durable_format: Default::default(),
        },
        sink.clone(),
    )
    .unwrap();
    let deadline = Instant::now() + READY;
    while !broker.is_ready() {
        assert!(Instant::now() < deadline, "the broker never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    broker.subscribe_room("echo").await.unwrap();
    let draft = DurableDraft {
        user_id: Some("u".into()),
        name: None,
        temp_id: None,
        body: DurableBody::Message {
            text: "hi".into(),
            data: None,
        },
    };
    let published = broker.publish_durable("echo", draft).await.unwrap();
    broker.delivered_locally("echo", published.seq, SOON).await;
    // The sink notes a message 50 ms after it arrives: a wait that returned with Redis's
    // reply, not with the delivery, finds nothing here.
    assert_eq!(*sink.delivered.lock().unwrap(), vec![published.seq]);

    // A message that never comes: the wait ends at its bound.
    let started = Instant::now();
    broker
        .delivered_locally("echo", published.seq + 1, Duration::from_millis(100))
        .await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(100) && waited < SOON,
        "waited {waited:?} for a message that never comes, with a bound of 100 ms"
    );

    // The room stops being served while a wait is on: the wait ends then, not at its bound.
    let started = Instant::now();
    tokio::join!(
        broker.delivered_locally("echo", published.seq + 1, SOON),
        async {
            // Gives the wait time to begin; begun later, it finds the room gone at once.
            tokio::time::sleep(Duration::from_millis(50)).await;
            broker.unsubscribe_room("echo").await;
        }
    );
    let waited = started.elapsed();
    assert!(
        waited < SOON / 2,
        "the wait went on for {waited:?} after its room stopped being served"
    );
    broker.close().await;
}
