//! The room scenarios: `fanout` (few rooms, many members, a few publishers), `chat` (many small
//! rooms where every member talks) and `cursors` (high-frequency cursor moves). Every member
//! joins its room, the first `publishers` members of each room send at the given total rate,
//! and every member counts what it receives: latency from the send time in the payload,
//! duplicates and losses by each publisher's message numbers.

use anyhow::{bail, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::{connect_all, Common, Opened};
use crate::stats::{now_us, Recorder};
use crate::wire::{Dialect, Probe, Received, Ws};

/// Messages a publisher may have sent without an ack before it stops sending (a bound on the
/// table of send times; reaching it means the system is far behind).
const MAX_IN_FLIGHT: usize = 50_000;
/// The drain ends when nothing more arrived for this long.
const STALLED: Duration = Duration::from_secs(2);

/// How often publishers send what their rate allows: every message at low rates, in small
/// bursts at high ones (a wake-up per publisher per tick is the load generator's cost).
fn send_tick(rate: f64) -> Duration {
    Duration::from_secs_f64((1.0 / rate.max(1e-3)).clamp(0.005, 0.1))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Fanout,
    Chat,
    Cursors,
}

pub(crate) struct RoomLoad {
    pub(crate) shape: Shape,
    pub(crate) rooms: usize,
    /// Members per room (publishers included).
    pub(crate) members: usize,
    /// Publishing members per room.
    pub(crate) publishers: usize,
    /// Messages per second, all publishers together.
    pub(crate) rate: f64,
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
    /// How long to wait after the last send for what is still on its way.
    pub(crate) drain: Duration,
}

#[derive(Default)]
struct Tally {
    unique: AtomicU64,
    duplicates: AtomicU64,
    /// Acks received, success or not.
    acks: AtomicU64,
    /// Acked (successfully published) messages per room.
    published: Vec<AtomicU64>,
    /// Publishers that saw the end of sending: every message they sent is in `sent` (the
    /// drain must not judge a publisher's last tick half counted).
    publishers_stopped: AtomicU64,
}

pub(crate) async fn run(common: &Common, load: RoomLoad) -> Result<serde_json::Value> {
    if load.shape == Shape::Cursors && common.dialect == Dialect::SocketIo {
        bail!("cursors: the Socket.IO baseline has no cursor events");
    }
    if load.publishers == 0 || load.publishers > load.members {
        bail!("--publishers must be 1 to --members");
    }
    let label = format!("{:?}/{:?}", load.shape, common.dialect).to_lowercase();
    eprintln!(
        "{label}: {} rooms x {} members ({} publishing), {} msg/s for {:?} over {} node(s)",
        load.rooms,
        load.members,
        load.publishers,
        load.rate,
        load.duration,
        common.urls.len()
    );
    let mut users = Vec::new();
    for r in 0..load.rooms {
        for m in 0..load.members {
            users.push((format!("lg-{r}-{m}"), format!("room-{r}")));
        }
    }
    let opened = connect_all(common, &users, true).await?;
    eprintln!("{label}: {} connections joined", opened.len());

    let recorder = Arc::new(Recorder::default());
    let tally = Arc::new(Tally {
        published: (0..load.rooms).map(|_| AtomicU64::new(0)).collect(),
        ..Tally::default()
    });
    let stop_sending = CancellationToken::new();
    let stop = CancellationToken::new();
    let run_base = now_us();
    let per_publisher = load.rate / (load.rooms * load.publishers) as f64;
    let mut tasks = Vec::with_capacity(opened.len());
    for (i, Opened { ws, .. }) in opened.into_iter().enumerate() {
        let (room, member) = (i / load.members, i % load.members);
        let member = Member {
            index: i,
            room,
            room_id: format!("room-{room}"),
            publisher: (member < load.publishers)
                .then_some((room * load.publishers + member) as u32),
            rate: per_publisher,
            run_base,
            shape: load.shape,
            dialect: common.dialect,
            recorder: recorder.clone(),
            tally: tally.clone(),
            stop_sending: stop_sending.clone(),
            stop: stop.clone(),
        };
        tasks.push(tokio::spawn(member.run(ws)));
    }

    let ticker_stop = CancellationToken::new();
    let ticker = tokio::spawn(crate::stats::progress(
        recorder.clone(),
        label.clone(),
        ticker_stop.clone(),
    ));
    let started = Instant::now();
    recorder.measure(false);
    tokio::time::sleep(load.warmup).await;
    recorder.measure(true);
    let cpu_start = common.watched.sample();
    let unique_start = tally.unique.load(Ordering::Relaxed);
    let window = Instant::now();
    tokio::time::sleep(load.duration.saturating_sub(load.warmup)).await;
    let cpu_end = common.watched.sample();
    let unique_end = tally.unique.load(Ordering::Relaxed);
    let window = window.elapsed().as_secs_f64();
    stop_sending.cancel();

    // Drain: wait for everything acked to arrive everywhere, or the drain time.
    let expected = |t: &Tally| -> u64 {
        let receivers = match load.shape {
            Shape::Cursors => (load.members - 1) as u64,
            _ => load.members as u64,
        };
        t.published
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .sum::<u64>()
            * receivers
    };
    // A system that fell behind keeps delivering for a while: wait as long as deliveries
    // progress (up to --drain), so `lost` counts what never came, not what came late.
    let publishers = (load.rooms * load.publishers) as u64;
    let settled = |t: &Tally| {
        t.publishers_stopped.load(Ordering::Acquire) >= publishers
            && t.acks.load(Ordering::Relaxed) >= recorder.sent.load(Ordering::Relaxed)
            && t.unique.load(Ordering::Relaxed) >= expected(t)
    };
    let drain_started = Instant::now();
    let drain_until = drain_started + load.drain;
    let mut progress = (tally.unique.load(Ordering::Relaxed), Instant::now());
    while load.shape != Shape::Cursors && !settled(&tally) && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = tally.unique.load(Ordering::Relaxed);
        if now != progress.0 {
            progress = (now, Instant::now());
        } else if progress.1.elapsed() > STALLED {
            break;
        }
    }
    let drained_s = drain_started.elapsed().as_secs_f64();
    ticker_stop.cancel();
    let _ = ticker.await;
    recorder.tick();
    stop.cancel();
    for task in tasks {
        let _ = task.await;
    }

    let sent = recorder.sent.load(Ordering::Relaxed);
    let published: u64 = tally
        .published
        .iter()
        .map(|p| p.load(Ordering::Relaxed))
        .sum();
    let unique = tally.unique.load(Ordering::Relaxed);
    let expected = expected(&tally);
    let (_, latency, ack) = recorder.totals();
    let window_deliveries = unique_end - unique_start;
    let cpu = super::cpu_report(&cpu_start, &cpu_end, window_deliveries, window);
    let lost = expected.saturating_sub(unique);
    Ok(json!({
        "scenario": format!("{:?}", load.shape).to_lowercase(),
        "dialect": common.dialect,
        "nodes": common.urls.len(),
        "rooms": load.rooms,
        "members_per_room": load.members,
        "publishers_per_room": load.publishers,
        "offered_rate": load.rate,
        "duration_s": started.elapsed().as_secs_f64(),
        "window_s": window,
        "sent": sent,
        "published": published,
        "ack_failures": recorder.ack_failures.load(Ordering::Relaxed),
        "errors": recorder.errors.load(Ordering::Relaxed),
        "deliveries_expected": expected,
        "deliveries": unique,
        "duplicates": tally.duplicates.load(Ordering::Relaxed),
        "drain_s": drained_s,
        "lost": if load.shape == Shape::Cursors { serde_json::Value::Null } else { lost.into() },
        "deliveries_per_sec": (window_deliveries as f64 / window).round(),
        "latency": latency,
        "ack_latency": ack,
        "cpu": cpu,
        "seconds": recorder.seconds(),
    }))
}

struct Member {
    index: usize,
    room: usize,
    room_id: String,
    publisher: Option<u32>,
    /// Added to message numbers to make tempIds unique across runs.
    run_base: u64,
    rate: f64,
    shape: Shape,
    dialect: Dialect,
    recorder: Arc<Recorder>,
    tally: Arc<Tally>,
    stop_sending: CancellationToken,
    stop: CancellationToken,
}

impl Member {
    /// The tempId (Switchyard) or ack id (Socket.IO) of message `n`. Switchyard deduplicates
    /// a tempId for 5 minutes, so each run's start time (µs) is added: runs do not collide.
    fn message_id(&self, n: u64) -> u64 {
        match self.dialect {
            Dialect::Switchyard => self.run_base + n,
            Dialect::SocketIo => n,
        }
    }

    async fn run(self, mut ws: Ws) {
        // Publishers spread over the tick (golden-ratio phases), not all at once; and, below
        // one message per tick, over the ticks too: each starts with a different fraction of a
        // message in credit, so a thousand publishers at 1 msg/s do not all send on the same
        // tenth tick (that made bursts of hundreds of messages once a second).
        let period = send_tick(self.rate);
        let spread = (self.index as f64 * 0.618_034).fract();
        let phase = period.mul_f64(spread);
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_tick = Instant::now();
        let mut credit = spread;
        let mut n = 0u64;
        let mut in_flight: HashMap<u64, u64> = HashMap::new();
        let mut last_seen: HashMap<u32, u64> = HashMap::new();
        let mut received = Received::default();
        let sending = self.publisher.is_some();
        let mut stopped = false;
        loop {
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => break,
                frame = ws.next() => {
                    let text = match frame {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                            if !self.stop.is_cancelled() {
                                self.recorder.errors.fetch_add(1, Ordering::Relaxed);
                            }
                            break;
                        }
                        Some(Ok(_)) => continue,
                    };
                    received.probes.clear();
                    received.acks.clear();
                    received.replies.clear();
                    received.ping = false;
                    self.dialect.parse(&text, &mut received);
                    if received.ping && ws.send(Message::text("3")).await.is_err() {
                        break;
                    }
                    self.record(&received, &mut last_seen, &mut in_flight);
                }
                // After any tick in progress (a select runs one branch at a time): what this
                // publisher sent is counted before the drain may see it as stopped.
                _ = self.stop_sending.cancelled(), if sending && !stopped => {
                    stopped = true;
                    self.tally.publishers_stopped.fetch_add(1, Ordering::Release);
                }
                _ = tick.tick(), if sending && !self.stop_sending.is_cancelled() => {
                    let now = Instant::now();
                    credit = (credit + self.rate * (now - last_tick).as_secs_f64()).min(self.rate.max(1.0));
                    last_tick = now;
                    let mut batch = 0;
                    while credit >= 1.0 && in_flight.len() < MAX_IN_FLIGHT {
                        credit -= 1.0;
                        n += 1;
                        let t = now_us();
                        let probe = Probe { p: self.publisher.unwrap_or(0), n, t };
                        let frame = match self.shape {
                            Shape::Cursors => self.dialect.cursor(&self.room_id, probe),
                            _ => {
                                let id = self.message_id(n);
                                in_flight.insert(id, t);
                                self.dialect.message(&self.room_id, id, probe)
                            }
                        };
                        if ws.feed(Message::text(frame)).await.is_err() {
                            break;
                        }
                        batch += 1;
                    }
                    if batch > 0 {
                        self.recorder.sent.fetch_add(batch, Ordering::Relaxed);
                        if self.shape == Shape::Cursors {
                            self.tally.published[self.room].fetch_add(batch, Ordering::Relaxed);
                        }
                        if ws.flush().await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
        if sending && !stopped {
            // Ended early (its connection broke): it sends no more either.
            self.tally
                .publishers_stopped
                .fetch_add(1, Ordering::Release);
        }
        let _ = ws.close(None).await;
    }

    fn record(
        &self,
        got: &Received,
        last_seen: &mut HashMap<u32, u64>,
        in_flight: &mut HashMap<u64, u64>,
    ) {
        if got.probes.is_empty() && got.acks.is_empty() {
            return;
        }
        let now = now_us();
        let mut slot = self.recorder.slot(self.index);
        let mut unique = 0;
        let mut duplicates = 0;
        for (probe, seq) in &got.probes {
            let last = last_seen.entry(probe.p).or_insert(0);
            if probe.n <= *last && self.shape != Shape::Cursors {
                duplicates += 1;
                if self.tally.duplicates.load(Ordering::Relaxed) < 5 {
                    eprintln!(
                        "  duplicate at member {}: publisher {} message {} (seq {:?}) after {}",
                        self.index, probe.p, probe.n, seq, last
                    );
                }
                continue;
            }
            *last = probe.n;
            unique += 1;
            slot.delivered(probe.t, now);
        }
        for (id, ok) in &got.acks {
            if let Some(sent) = in_flight.remove(id) {
                slot.acked(now.saturating_sub(sent));
            }
            if *ok {
                self.tally.published[self.room].fetch_add(1, Ordering::Relaxed);
            } else {
                self.recorder.ack_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        drop(slot);
        if !got.acks.is_empty() {
            self.tally
                .acks
                .fetch_add(got.acks.len() as u64, Ordering::Relaxed);
        }
        self.tally.unique.fetch_add(unique, Ordering::Relaxed);
        if duplicates > 0 {
            self.tally
                .duplicates
                .fetch_add(duplicates, Ordering::Relaxed);
        }
    }
}
