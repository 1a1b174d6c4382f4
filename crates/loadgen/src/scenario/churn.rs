//! `presence-churn`: members that join and leave their rooms over and over, while the others
//! watch. Measures the join round trip (join-room to room-joined) and counts the presence
//! events the watchers receive against the joins and leaves that happened.

use anyhow::{bail, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::{connect_all, Common};
use crate::stats::{Percentiles, Recorder};
use crate::wire::{wait_reply, Dialect, Received};

#[derive(Default)]
struct Counts {
    cycles: AtomicU64,
    presence_events: AtomicU64,
}

pub(crate) async fn run(
    common: &Common,
    rooms: usize,
    watchers: usize,
    churners: usize,
    duration: Duration,
) -> Result<serde_json::Value> {
    if common.dialect != Dialect::Switchyard {
        bail!("presence-churn: Switchyard only (the baseline has no presence)");
    }
    let mut users = Vec::new();
    for r in 0..rooms {
        for w in 0..watchers {
            users.push((format!("watch-{r}-{w}"), format!("churn-{r}")));
        }
    }
    let watching = connect_all(common, &users, true).await?;
    let mut churn_users = Vec::new();
    for r in 0..rooms {
        for c in 0..churners {
            churn_users.push((format!("churn-{r}-{c}"), format!("churn-{r}")));
        }
    }
    let churning = connect_all(common, &churn_users, false).await?;
    eprintln!(
        "presence-churn: {} watchers, {} churners over {rooms} rooms",
        watching.len(),
        churning.len()
    );
    let counts = Arc::new(Counts::default());
    let recorder = Arc::new(Recorder::default());
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    for opened in watching {
        let (counts, stop) = (counts.clone(), stop.clone());
        let mut ws = opened.ws;
        tasks.push(tokio::spawn(async move {
            let mut got = Received::default();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    frame = ws.next() => match frame {
                        Some(Ok(Message::Text(t))) => {
                            got.replies.clear();
                            Dialect::Switchyard.parse(&t, &mut got);
                            let n = got.replies.iter().filter(|r| r.kind.starts_with("presence:")).count();
                            counts.presence_events.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        Some(Ok(_)) => {}
                        _ => break,
                    }
                }
            }
        }));
    }
    let started = Instant::now();
    for (i, opened) in churning.into_iter().enumerate() {
        let (counts, recorder, stop) = (counts.clone(), recorder.clone(), stop.clone());
        let room = churn_users[i].1.clone();
        let mut ws = opened.ws;
        tasks.push(tokio::spawn(async move {
            while !stop.is_cancelled() {
                let t = Instant::now();
                if ws
                    .send(Message::text(Dialect::Switchyard.join(&room, None)))
                    .await
                    .is_err()
                    || wait_reply(Dialect::Switchyard, &mut ws, "room-joined")
                        .await
                        .is_err()
                {
                    recorder.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                recorder.slot(i).acked(t.elapsed().as_micros() as u64);
                if ws
                    .send(Message::text(Dialect::Switchyard.leave(&room)))
                    .await
                    .is_err()
                    || wait_reply(Dialect::Switchyard, &mut ws, "room-left")
                        .await
                        .is_err()
                {
                    recorder.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                counts.cycles.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(duration).await;
    // Let the last presence events arrive.
    let cycles_at_stop = counts.cycles.load(Ordering::Relaxed);
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for task in tasks {
        task.abort();
    }
    recorder.tick();
    let (_, _, joins) = recorder.totals();
    let cycles = counts.cycles.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    Ok(json!({
        "scenario": "presence-churn",
        "dialect": common.dialect,
        "rooms": rooms,
        "watchers_per_room": watchers,
        "churners_per_room": churners,
        "duration_s": elapsed,
        "join_leave_cycles": cycles,
        "cycles_per_sec": (cycles_at_stop as f64 / duration.as_secs_f64()).round(),
        // Each cycle is one join and one leave, seen by every watcher of its room.
        "presence_events_expected_min": cycles_at_stop * 2 * watchers as u64,
        "presence_events": counts.presence_events.load(Ordering::Relaxed),
        "join_latency": Percentiles { ..joins },
        "errors": recorder.errors.load(Ordering::Relaxed),
    }))
}
