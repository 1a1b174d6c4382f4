//! The no-loss run: 3 node processes on one Redis, 30 clients in one room, 10 of them
//! publishing 50 messages each. One node is killed with SIGKILL mid-stream; its clients resume on
//! the others with `sinceSeq` and resend their unacked message with the same `tempId`. Every
//! client ends with the same complete, ordered list: 500 messages, seq 1 to 500, each once.

mod common;

use common::process::NodeProcess;
use common::redis::Redis;
use common::*;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_client::Client;

const NODES: usize = 3;
const CLIENTS: usize = 30;
const PUBLISHERS: usize = 10;
const PER_PUBLISHER: usize = 50;
const TOTAL: usize = PUBLISHERS * PER_PUBLISHER;
/// Acks (over all publishers) after which a node is killed.
const KILL_AFTER: usize = 150;
const ROOM: &str = "no-loss";
/// A frame from a live connection comes within this long (the run is short).
const STALL: Duration = Duration::from_secs(10);
const RUN_LIMIT: Duration = Duration::from_secs(90);

/// What one client saw: seq -> (userId, tempId).
struct Seen {
    messages: BTreeMap<u64, (String, String)>,
    duplicates: usize,
    reconnects: usize,
    /// What happened to this client, for the failure message.
    trail: Vec<String>,
    resent: usize,
}

impl Seen {
    /// The newest seq up to which nothing is missing: where a resume starts.
    fn contiguous(&self) -> u64 {
        let mut seq = 0;
        while self.messages.contains_key(&(seq + 1)) {
            seq += 1;
        }
        seq
    }
}

/// Connects to the first live node, starting with `preferred`.
async fn connect_any(urls: &[String], preferred: usize, user: &str) -> (Client, usize) {
    let deadline = Instant::now() + STALL;
    loop {
        for k in 0..urls.len() {
            let i = (preferred + k) % urls.len();
            let options = switchyard_client::ConnectOptions {
                token: Some(token(user, json!({}))),
                ..Default::default()
            };
            if let Ok(mut client) = Client::connect(&urls[i], options).await {
                if client.recv_type("welcome", SOON).await.is_ok() {
                    return (client, i);
                }
            }
        }
        assert!(Instant::now() < deadline, "{user}: no node accepts");
        // Back off a little before the next round, as a real client does.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn peer(urls: Arc<Vec<String>>, index: usize, acked: Arc<AtomicUsize>) -> Seen {
    let user = format!("u{index}");
    let to_publish = if index < PUBLISHERS { PER_PUBLISHER } else { 0 };
    let mut seen = Seen {
        messages: BTreeMap::new(),
        duplicates: 0,
        reconnects: 0,
        trail: Vec::new(),
        resent: 0,
    };
    let mut epoch: Option<String> = None;
    let mut next = 1; // the next message number to publish
    let mut unacked: Option<usize> = None;
    let mut node = index % NODES;
    let started = Instant::now();
    'connection: loop {
        assert!(
            started.elapsed() < RUN_LIMIT,
            "{user}: the run took too long"
        );
        let (mut client, at) = connect_any(&urls, node, &user).await;
        node = at;
        // From the start of the room's history, so a late joiner has the whole list too.
        let mut join = json!({"type": "join-room", "roomId": ROOM, "sinceSeq": seen.contiguous()});
        if let Some(epoch) = &epoch {
            join["epoch"] = json!(epoch);
        }
        if client.send(join).await.is_err() {
            continue;
        }
        // Resend what was not acked, with the same tempId; else go on with the next one.
        let publish = |client_next: usize| json!({"type": "message", "roomId": ROOM, "tempId": format!("{user}-{client_next}"), "text": format!("{user} #{client_next}")});
        loop {
            let frame = match client.recv_timeout(STALL).await {
                Ok(frame) => frame,
                Err(e) => {
                    seen.trail
                        .push(format!("lost node {node} ({e:?}) at {}", seen.contiguous()));
                    seen.reconnects += 1;
                    node = (node + 1) % NODES;
                    continue 'connection;
                }
            };
            match frame["type"].as_str() {
                Some("room-joined") => {
                    seen.trail.push(format!(
                        "joined node {node} seq {} recovered {}",
                        frame["seq"], frame["recovered"]
                    ));
                    if epoch.is_some() {
                        assert_eq!(
                            frame["recovered"], true,
                            "{user}: resume not recovered: {frame}"
                        );
                    }
                    epoch = frame["epoch"].as_str().map(str::to_owned);
                    let message = match unacked {
                        Some(n) => {
                            seen.resent += 1;
                            Some(publish(n))
                        }
                        None if next <= to_publish => {
                            unacked = Some(next);
                            Some(publish(next))
                        }
                        None => None,
                    };
                    if let Some(m) = message {
                        if client.send(m).await.is_err() {
                            continue 'connection;
                        }
                    }
                }
                Some("new-message") => {
                    let seq = frame["seq"].as_u64().unwrap();
                    let entry = (
                        frame["userId"].as_str().unwrap().to_owned(),
                        frame["tempId"].as_str().unwrap().to_owned(),
                    );
                    if seen.messages.insert(seq, entry).is_some() {
                        seen.duplicates += 1;
                        seen.trail.push(format!("dup {seq} at node {node}"));
                    }
                }
                Some("ack") if frame["success"] == false => {
                    // Over the rate limit (or the broker busy): wait as told, send it again.
                    let code = frame["error"]["code"].as_str().unwrap_or_default();
                    assert!(
                        ["rate_limited", "unavailable"].contains(&code),
                        "{user}: {frame}"
                    );
                    let wait = frame["error"]["retryAfterMs"].as_u64().unwrap_or(200);
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                    if let Some(n) = unacked {
                        if client.send(publish(n)).await.is_err() {
                            continue 'connection;
                        }
                    }
                }
                Some("ack") => {
                    assert_eq!(
                        frame["tempId"].as_str(),
                        Some(format!("{user}-{}", unacked.unwrap_or(0)).as_str())
                    );
                    acked.fetch_add(1, Ordering::SeqCst);
                    next += 1;
                    unacked = None;
                    if next <= to_publish {
                        unacked = Some(next);
                        if client.send(publish(next)).await.is_err() {
                            continue 'connection;
                        }
                    }
                }
                _ => {}
            }
            if unacked.is_none() && next > to_publish && seen.messages.len() >= TOTAL {
                return seen;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_message_is_lost_when_a_node_dies_mid_stream() {
    let redis = Redis::start();
    let url = redis.url();
    let mut nodes: Vec<NodeProcess> = (0..NODES)
        .map(|i| {
            NodeProcess::spawn(&[
                ("SWITCHYARD_BROKER", &url),
                ("SWITCHYARD_NODE_ID", &format!("node-{i}")),
            ])
        })
        .collect();
    for node in &nodes {
        wait_ready(&node.http("/readyz")).await;
    }
    let urls = Arc::new(nodes.iter().map(NodeProcess::ws_url).collect::<Vec<_>>());
    let acked = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let peers: Vec<_> = (0..CLIENTS)
        .map(|i| tokio::spawn(peer(urls.clone(), i, acked.clone())))
        .collect();

    let deadline = Instant::now() + RUN_LIMIT;
    while acked.load(Ordering::SeqCst) < KILL_AFTER {
        assert!(
            Instant::now() < deadline,
            "publishing stalled before the kill"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    nodes[0].kill9();
    let killed_at = acked.load(Ordering::SeqCst);

    let mut results = Vec::new();
    for p in peers {
        results.push(
            tokio::time::timeout(RUN_LIMIT, p)
                .await
                .expect("every client finishes")
                .unwrap(),
        );
    }
    let elapsed = started.elapsed();

    let reference = &results[0].messages;
    let seqs: Vec<u64> = reference.keys().copied().collect();
    assert_eq!(
        seqs,
        (1..=TOTAL as u64).collect::<Vec<_>>(),
        "seq 1..{TOTAL}, no gap"
    );
    let published: BTreeSet<&(String, String)> = reference.values().collect();
    let expected: BTreeSet<(String, String)> = (0..PUBLISHERS)
        .flat_map(|p| (1..=PER_PUBLISHER).map(move |n| (format!("u{p}"), format!("u{p}-{n}"))))
        .collect();
    assert_eq!(published.len(), TOTAL, "each message once");
    assert!(
        expected.iter().all(|m| published.contains(m)),
        "every message published"
    );
    for (i, r) in results.iter().enumerate() {
        assert_eq!(&r.messages, reference, "client u{i} saw a different list");
        assert_eq!(
            r.duplicates, 0,
            "client u{i} got a seq twice: {:?}",
            r.trail
        );
    }
    let reconnects: usize = results.iter().map(|r| r.reconnects).sum();
    let resent: usize = results.iter().map(|r| r.resent).sum();
    assert!(
        reconnects >= CLIENTS / NODES,
        "the killed node's clients reconnected"
    );
    eprintln!(
        "no-loss run: {CLIENTS} clients, {TOTAL} messages, node-0 killed after {killed_at} acks; \
         {reconnects} reconnects, {resent} resent, every list complete in {elapsed:?}"
    );
}
