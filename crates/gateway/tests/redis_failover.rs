//! Failures on a real Redis: a node killed with SIGKILL (its members leave everyone's presence
//! within the TTL), and Redis itself killed and restarted mid-traffic (no false acks, local
//! volatile events keep flowing, the cluster recovers by itself).

mod common;

use common::process::NodeProcess;
use common::redis::Redis;
use common::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_without_a_word_leaves_presence_within_the_ttl() {
    let redis = Redis::start();
    let url = redis.url();
    let env = [
        ("SWITCHYARD_BROKER", url.as_str()),
        ("SWITCHYARD_PRESENCE_TTL_S", "3"),
    ];
    let mut doomed = NodeProcess::spawn(&[env[0], env[1], ("SWITCHYARD_NODE_ID", "doomed")]);
    let survivor = Node::start(&[env[0], env[1], ("SWITCHYARD_NODE_ID", "survivor")]).await;
    wait_ready(&doomed.http("/readyz")).await;
    survivor.wait_ready().await;

    let mut carol = connect_to(&doomed.ws_url(), "carol").await;
    join(&mut carol, "room").await;
    let mut dave = survivor.connect("dave").await;
    let joined = join(&mut dave, "room").await;
    assert_eq!(joined["members"].as_array().unwrap().len(), 2, "{joined}");

    doomed.kill9();
    let killed = Instant::now();
    let left = dave
        .recv_type("presence:leave", Duration::from_secs(10))
        .await
        .unwrap();
    let took = killed.elapsed();
    eprintln!("presence:leave {took:?} after kill -9 (presence TTL 3 s)");
    assert_eq!(left["userId"], "carol");
    assert!(
        took <= Duration::from_secs(3) + Duration::from_secs(2),
        "presence:leave came {took:?} after the kill (TTL 3 s)"
    );
    let members: Value = api_get(&survivor.http("/api/rooms/room/presence")).await;
    assert_eq!(members["members"].as_array().unwrap().len(), 1, "{members}");
    drop(carol);
    survivor.stop().await;
}

/// Where the outage stands, as the writer sees it when it sends a message.
const UP: u8 = 0;
const DOWN: u8 = 1;
const RESTARTED: u8 = 2;

#[derive(Default)]
struct Outcome {
    /// (serverId, phase when the message was sent) of every successful ack.
    succeeded: Vec<(String, u8)>,
    unavailable: usize,
    succeeded_after_restart: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_with_persistence_loses_no_acked_message() {
    // appendfsync always: Redis writes a script's effects to disk before it answers.
    let redis = Redis::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    restart_mid_traffic(redis, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_resets_rooms_and_recovers() {
    restart_mid_traffic(Redis::start(), false).await;
}

/// Kills Redis while a writer on node A publishes steadily and a reader on node B reads, then
/// restarts it. No false acks: a message sent while Redis is down is never acked with success,
/// and every success the reader should have (all of them when Redis keeps its data; those
/// after the restart when it comes back empty) reaches it.
async fn restart_mid_traffic(mut redis: Redis, persistent: bool) {
    let url = redis.url();
    let node = |id: &'static str| {
        let url = url.clone();
        async move {
            Node::start(&[
                ("SWITCHYARD_BROKER", url.as_str()),
                ("SWITCHYARD_NODE_ID", id),
                ("SWITCHYARD_RATE_PER_SEC", "1000"),
                ("SWITCHYARD_RATE_BURST", "1000"),
            ])
            .await
        }
    };
    let a = node("a").await;
    let b = node("b").await;
    a.wait_ready().await;
    b.wait_ready().await;

    let mut writer = a.connect("writer").await;
    join(&mut writer, "ops").await;
    let mut typist = a.connect("typist").await;
    join(&mut typist, "ops").await;
    let mut watcher = a.connect("watcher").await;
    join(&mut watcher, "ops").await;
    let mut reader = b.connect("reader").await;
    join(&mut reader, "ops").await;

    // The reader, on the other node, records every message id and every room-reset.
    let received = Arc::new(Mutex::new((HashSet::<String>::new(), 0usize)));
    let stop_reading = tokio_util::sync::CancellationToken::new();
    let reading = {
        let received = received.clone();
        let stop = stop_reading.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => return,
                    v = reader.recv_timeout(Duration::from_secs(30)) => v,
                };
                let Ok(v) = next else { return };
                let mut r = received.lock().unwrap();
                match v["type"].as_str() {
                    Some("new-message") => {
                        r.0.insert(v["id"].as_str().unwrap().to_owned());
                    }
                    Some("room-reset") => r.1 += 1,
                    _ => {}
                }
            }
        })
    };

    // The writer publishes steadily and records every ack with the phase it was sent in.
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let phase = Arc::new(AtomicU8::new(UP));
    let stop_writing = tokio_util::sync::CancellationToken::new();
    let writing = {
        let outcome = outcome.clone();
        let phase = phase.clone();
        let stop = stop_writing.clone();
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.is_cancelled() {
                i += 1;
                let sent_in = phase.load(Ordering::SeqCst);
                let ack = say(&mut writer, "ops", &format!("m{i}"), "steady").await;
                {
                    let mut o = outcome.lock().unwrap();
                    if ack["success"] == true {
                        assert_ne!(sent_in, DOWN, "a false ack while Redis was down: {ack}");
                        let id = ack["serverId"].as_str().unwrap().to_owned();
                        o.succeeded.push((id, sent_in));
                        if sent_in == RESTARTED {
                            o.succeeded_after_restart += 1;
                        }
                    } else {
                        assert_eq!(ack["error"]["code"], "unavailable", "{ack}");
                        o.unavailable += 1;
                    }
                }
                // A steady pace, not a wait for an event.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let wait_for =
        |what: &'static str, limit: Duration, done: Box<dyn Fn(&Outcome) -> bool + Send>| {
            let outcome = outcome.clone();
            async move {
                let deadline = Instant::now() + limit;
                while !done(&outcome.lock().unwrap()) {
                    assert!(Instant::now() < deadline, "timed out waiting for {what}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
    wait_for(
        "acks before the outage",
        SOON,
        Box::new(|o| o.succeeded.len() >= 10),
    )
    .await;

    redis.kill();
    phase.store(DOWN, Ordering::SeqCst);
    wait_status(&a.http("/readyz"), 503, Duration::from_secs(10)).await;
    wait_status(&b.http("/readyz"), 503, Duration::from_secs(10)).await;
    wait_for(
        "refusals during the outage",
        SOON,
        Box::new(|o| o.unavailable >= 5),
    )
    .await;
    // Local volatile events still reach local subscribers.
    typist
        .send(json!({"type": "typing:start", "roomId": "ops"}))
        .await
        .unwrap();
    let typing = watcher.recv_type("typing:start", SOON).await.unwrap();
    assert_eq!(typing["userId"], "typist");
    // A user who connects during the outage gets user-targeted events once Redis is back.
    let mut late = b.connect("late").await;

    redis.restart();
    let back = Instant::now();
    phase.store(RESTARTED, Ordering::SeqCst);
    wait_for(
        "publishes to succeed again",
        Duration::from_secs(15),
        Box::new(|o| o.succeeded_after_restart >= 1),
    )
    .await;
    let recovery = back.elapsed();
    wait_ready(&a.http("/readyz")).await;
    wait_ready(&b.http("/readyz")).await;
    assert!(
        recovery <= Duration::from_secs(15),
        "recovered in {recovery:?}"
    );
    eprintln!("recovery after the Redis restart (persistent: {persistent}): {recovery:?}");
    let status = api_post(
        &a.http("/api/users/late/publish"),
        Some(json!({"event": "welcome-back", "data": null})),
    )
    .await
    .0;
    assert_eq!(status, 202);
    let event = late.recv_type("event", SOON).await.unwrap();
    assert_eq!(event["event"], "welcome-back");
    wait_for(
        "acks after the outage",
        SOON,
        Box::new(|o| o.succeeded_after_restart >= 10),
    )
    .await;
    stop_writing.cancel();
    writing.await.unwrap();

    // Every success the reader should have reaches it. A Redis that restarts empty has lost
    // what it held, messages acked just before the kill included: there, only the messages
    // sent after the restart are owed.
    let owed: Vec<String> = outcome
        .lock()
        .unwrap()
        .succeeded
        .iter()
        .filter(|(_, sent_in)| persistent || *sent_in == RESTARTED)
        .map(|(id, _)| id.clone())
        .collect();
    let deadline = Instant::now() + SOON;
    loop {
        let missing: Vec<String> = {
            let r = received.lock().unwrap();
            owed.iter()
                .filter(|id| !r.0.contains(*id))
                .cloned()
                .collect()
        };
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "acked but never delivered: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resets = received.lock().unwrap().1;
    if persistent {
        assert_eq!(resets, 0, "Redis kept the room: same epoch, no reset");
    } else {
        assert!(
            resets >= 1,
            "the reader was told the room's history was reset"
        );
    }
    stop_reading.cancel();
    let _ = reading.await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_canary_when_redis_stops_answering() {
    let redis = Redis::start();
    let url = redis.url();
    let node = Node::start(&[("SWITCHYARD_BROKER", &url)]).await;
    node.wait_ready().await;
    let mut alice = node.connect("alice").await;
    join(&mut alice, "r").await;

    // Redis keeps its connections open but answers nothing: only timeouts and the canary can
    // tell. Nothing is acked meanwhile, and readyz turns 503.
    let paused = Instant::now();
    redis.cli(&["client", "pause", "10000", "all"]);
    let ack = say(&mut alice, "r", "during", "paused").await;
    assert_eq!(
        (ack["success"].as_bool(), ack["error"]["code"].as_str()),
        (Some(false), Some("unavailable")),
        "{ack}"
    );
    wait_status(&node.http("/readyz"), 503, Duration::from_secs(10)).await;
    let noticed = paused.elapsed();
    assert!(
        noticed < Duration::from_secs(10),
        "503 only after the pause"
    );
    wait_status(&node.http("/readyz"), 200, Duration::from_secs(20)).await;
    eprintln!(
        "readyz 503 {noticed:?} after Redis stopped answering; 200 again {:?} after",
        paused.elapsed()
    );
    let ack = say(&mut alice, "r", "after", "unpaused").await;
    assert_eq!(ack["success"], true, "{ack}");
    node.stop().await;
}
