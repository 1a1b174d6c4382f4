//! `reconnect-storm`: clients spread over the nodes, in rooms with a steady stream of messages
//! from a publisher on the last node; after `--after` seconds the node `--kill-pid` is killed
//! (SIGKILL, or SIGTERM with `--signal term` to see a drain). Its clients reconnect to another
//! node and resume with `sinceSeq`. Reports how long until every client had resumed, and
//! whether any client missed or repeated a message (by seq).

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::{connect_all, Common};
use crate::stats::{now_us, Percentiles, Recorder};
use crate::wire::{wait_reply, Dialect, Probe, Received, Ws};

pub(crate) struct Storm {
    pub(crate) clients: usize,
    pub(crate) rooms: usize,
    pub(crate) rate: f64,
    pub(crate) after: Duration,
    pub(crate) duration: Duration,
    pub(crate) kill_pid: u32,
    pub(crate) signal: String,
}

#[derive(Default)]
struct Outcome {
    disconnected: AtomicU64,
    resumed: AtomicU64,
    gaps: AtomicU64,
    /// The part of `gaps` seen by clients that had not been disconnected.
    gaps_live: AtomicU64,
    duplicates: AtomicU64,
    not_recovered: AtomicU64,
    /// Each client's last seq per room at the end.
    last: Mutex<Vec<(usize, u64)>>,
}

pub(crate) async fn run(common: &Common, storm: Storm) -> Result<serde_json::Value> {
    if common.dialect != Dialect::Switchyard {
        bail!("reconnect-storm: Switchyard only (the baseline has no resume)");
    }
    if common.urls.len() < 2 {
        bail!("reconnect-storm: give at least two nodes (--urls), the first is killed");
    }
    let users: Vec<(String, String)> = (0..storm.clients)
        .map(|i| (format!("storm-{i}"), format!("storm-{}", i % storm.rooms)))
        .collect();
    let opened = connect_all(common, &users, true).await?;
    eprintln!("reconnect-storm: {} clients joined", opened.len());
    let recorder = Arc::new(Recorder::default());
    let outcome = Arc::new(Outcome::default());
    let stop = CancellationToken::new();
    let killed_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let mut tasks = Vec::new();
    for (i, opened) in opened.into_iter().enumerate() {
        let joined = opened.joined.context("joined")?;
        let client = StormClient {
            index: i,
            room: i % storm.rooms,
            node: opened.node,
            seq: joined.seq.unwrap_or(0),
            epoch: joined.epoch.unwrap_or_default(),
            recorder: recorder.clone(),
            outcome: outcome.clone(),
            killed_at: killed_at.clone(),
            stop: stop.clone(),
            resumed: false,
        };
        let common_urls = common.urls.clone();
        let tokens = common.tokens_for(&users[i].0, &common_urls).await?;
        tasks.push(tokio::spawn(client.run(opened.ws, common_urls, tokens)));
    }
    // Publishers: one per room, on the last node (it survives).
    let survivor = common.urls.len() - 1;
    let stop_publishing = CancellationToken::new();
    let mut publishers = Vec::new();
    for room in 0..storm.rooms {
        let mut ws = common.open(survivor, &format!("storm-pub-{room}")).await?;
        let room_id = format!("storm-{room}");
        ws.send(Message::text(Dialect::Switchyard.join(&room_id, None)))
            .await?;
        wait_reply(Dialect::Switchyard, &mut ws, "room-joined").await?;
        let rate = storm.rate / storm.rooms as f64;
        let stop = stop_publishing.clone();
        publishers.push(tokio::spawn(publish(ws, room_id, rate, stop)));
    }
    let progress_stop = CancellationToken::new();
    let progress = tokio::spawn(crate::stats::progress(
        recorder.clone(),
        "reconnect-storm".into(),
        progress_stop.clone(),
    ));
    tokio::time::sleep(storm.after).await;
    eprintln!("reconnect-storm: kill -{} {}", storm.signal, storm.kill_pid);
    *killed_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    let status = std::process::Command::new("kill")
        .arg(format!("-{}", storm.signal.to_uppercase()))
        .arg(storm.kill_pid.to_string())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -{} {} failed", storm.signal, storm.kill_pid);
    }
    tokio::time::sleep(storm.duration.saturating_sub(storm.after)).await;
    stop_publishing.cancel();
    let mut final_seq = vec![0u64; storm.rooms];
    for (room, p) in publishers.into_iter().enumerate() {
        final_seq[room] = p.await.unwrap_or(0);
    }
    // Wait (bounded) for every client to reach its room's last seq.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let behind = behind(&outcome, &final_seq, storm.clients);
        if behind == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    progress_stop.cancel();
    let _ = progress.await;
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    let (_, latency, resume) = recorder.totals();
    let behind = behind(&outcome, &final_seq, storm.clients);
    Ok(json!({
        "scenario": "reconnect-storm",
        "dialect": common.dialect,
        "clients": storm.clients,
        "rooms": storm.rooms,
        "rate": storm.rate,
        "signal": storm.signal,
        "disconnected": outcome.disconnected.load(Ordering::Relaxed),
        "resumed": outcome.resumed.load(Ordering::Relaxed),
        // Time from the kill until each disconnected client had its room-joined again.
        "resume_after_kill": Percentiles { ..resume },
        "not_recovered": outcome.not_recovered.load(Ordering::Relaxed),
        "gaps": outcome.gaps.load(Ordering::Relaxed),
        "gaps_on_undisturbed_clients": outcome.gaps_live.load(Ordering::Relaxed),
        "duplicates": outcome.duplicates.load(Ordering::Relaxed),
        "clients_behind_at_end": behind,
        "delivery_latency": latency,
        "errors": recorder.errors.load(Ordering::Relaxed),
    }))
}

fn behind(outcome: &Outcome, final_seq: &[u64], clients: usize) -> usize {
    let last = outcome.last.lock().unwrap_or_else(|e| e.into_inner());
    let caught_up = last
        .iter()
        .filter(|(room, seq)| *seq >= final_seq[*room])
        .count();
    clients - caught_up.min(clients)
}

/// Publishes at `rate` until stopped; returns the last acked seq.
async fn publish(mut ws: Ws, room: String, rate: f64, stop: CancellationToken) -> u64 {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.1)));
    // tempIds unique across runs (Switchyard deduplicates them for 5 minutes).
    let mut n = now_us();
    let mut last_seq = 0u64;
    let mut got = Received::default();
    loop {
        tokio::select! {
            _ = tick.tick(), if !stop.is_cancelled() => {
                n += 1;
                let probe = Probe { p: 0, n, t: now_us() };
                if ws.send(Message::text(Dialect::Switchyard.message(&room, n, probe))).await.is_err() {
                    return last_seq;
                }
            }
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(t))) => {
                    got.probes.clear();
                    Dialect::Switchyard.parse(&t, &mut got);
                    for (_, seq) in got.probes.drain(..) {
                        last_seq = last_seq.max(seq.unwrap_or(0));
                    }
                }
                Some(Ok(_)) => {}
                _ => return last_seq,
            },
            // After the stop, wait until the last message sent has come back.
            _ = tokio::time::sleep(Duration::from_millis(500)), if stop.is_cancelled() => return last_seq,
        }
    }
}

struct StormClient {
    index: usize,
    room: usize,
    node: usize,
    seq: u64,
    epoch: String,
    recorder: Arc<Recorder>,
    outcome: Arc<Outcome>,
    killed_at: Arc<Mutex<Option<Instant>>>,
    stop: CancellationToken,
    /// Has been disconnected and resumed at least once.
    resumed: bool,
}

impl StormClient {
    async fn run(mut self, mut ws: Ws, urls: Vec<String>, tokens: Vec<String>) {
        let room_id = format!("storm-{}", self.room);
        let mut got = Received::default();
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => break,
                frame = ws.next() => match frame {
                    Some(Ok(Message::Text(t))) => {
                        got.probes.clear();
                        got.replies.clear();
                        Dialect::Switchyard.parse(&t, &mut got);
                        self.take(&got);
                        self.report();
                    }
                    Some(Ok(_)) => {}
                    _ => {
                        self.outcome.disconnected.fetch_add(1, Ordering::Relaxed);
                        match self.resume(&urls, &tokens, &room_id).await {
                            Some(next) => {
                                ws = next;
                                self.outcome.resumed.fetch_add(1, Ordering::Relaxed);
                                self.resumed = true;
                                if let Some(at) = *self.killed_at.lock().unwrap_or_else(|e| e.into_inner()) {
                                    self.recorder.slot(self.index).acked(at.elapsed().as_micros() as u64);
                                }
                            }
                            None => {
                                self.recorder.errors.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                        }
                    }
                }
            }
        }
        self.report();
    }

    fn report(&self) {
        let mut last = self.outcome.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.len() <= self.index {
            last.resize(self.index + 1, (self.room, 0));
        }
        last[self.index] = (self.room, self.seq);
    }

    fn take(&mut self, got: &Received) {
        let now = now_us();
        let mut slot = None;
        for (probe, seq) in &got.probes {
            let Some(seq) = *seq else { continue };
            if seq <= self.seq {
                self.outcome.duplicates.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if seq > self.seq + 1 {
                self.outcome
                    .gaps
                    .fetch_add(seq - self.seq - 1, Ordering::Relaxed);
                if !self.resumed {
                    self.outcome
                        .gaps_live
                        .fetch_add(seq - self.seq - 1, Ordering::Relaxed);
                }
            }
            self.seq = seq;
            slot.get_or_insert_with(|| self.recorder.slot(self.index))
                .delivered(probe.t, now);
        }
    }

    /// Reconnects to the next node and resumes; replayed messages come before room-joined.
    async fn resume(&mut self, urls: &[String], tokens: &[String], room_id: &str) -> Option<Ws> {
        for attempt in 0..100u32 {
            self.node = (self.node + 1) % urls.len();
            let Ok(mut ws) = Dialect::Switchyard
                .connect(&urls[self.node], Some(&tokens[self.node]))
                .await
            else {
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt.min(20)))).await;
                continue;
            };
            let join = Dialect::Switchyard.join(room_id, Some((self.seq, &self.epoch)));
            if ws.send(Message::text(join)).await.is_err() {
                continue;
            }
            let mut got = Received::default();
            loop {
                let Ok(text) = crate::wire::next_text(&mut ws).await else {
                    break;
                };
                got.probes.clear();
                got.replies.clear();
                Dialect::Switchyard.parse(&text, &mut got);
                self.take(&got);
                if let Some(joined) = got.replies.iter().find(|r| r.kind == "room-joined") {
                    if joined.recovered == Some(false) {
                        self.outcome.not_recovered.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(epoch) = &joined.epoch {
                        self.epoch.clone_from(epoch);
                    }
                    self.seq = self.seq.max(joined.seq.unwrap_or(0));
                    return Some(ws);
                }
            }
        }
        None
    }
}
