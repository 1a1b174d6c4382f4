//! `reconnect-storm`: clients spread over the nodes, in rooms with a steady stream of messages
//! from a publisher on the last node; after `--after` seconds the node `--kill-pid` is killed
//! (SIGKILL, or SIGTERM with `--signal term` to see a drain). Its clients reconnect to another
//! node and resume with `sinceSeq`. Reports how long until every client had resumed, and
//! whether any client missed or repeated a message (by seq).

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::{connect_one, Common, CONNECT_CONCURRENCY};
use crate::stats::{lock, now_us, Percentiles, Recorder};
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
    /// Where the gaps were seen, to tell a lost message from a late resume.
    gap_detail: Mutex<GapDetail>,
    /// Where the duplicates were seen, the same way.
    duplicate_detail: Mutex<GapDetail>,
    /// How the clients' connections ended (close code, or "no close frame"), and refused joins.
    closes: Mutex<BTreeMap<String, u64>>,
    unparsed: AtomicU64,
}

/// Gaps (or duplicates) by where they showed and when (seconds from the kill, negative before
/// it), with the first few in full.
#[derive(Default)]
struct GapDetail {
    by_phase: BTreeMap<&'static str, u64>,
    by_second: BTreeMap<i64, u64>,
    samples: Vec<serde_json::Value>,
}

const GAP_SAMPLES: usize = 20;

impl GapDetail {
    fn report(&self) -> serde_json::Value {
        json!({
            "by_phase": self.by_phase,
            "by_second_from_kill": self.by_second.iter().map(|(s, n)| (s.to_string(), *n)).collect::<BTreeMap<_, _>>(),
            "samples": self.samples,
        })
    }
}

/// Where a client was when it saw a message.
#[derive(Clone, Copy)]
enum Phase {
    /// Live, on the connection it opened first.
    Undisturbed,
    /// Replayed during a resume.
    Replay,
    /// Live, after a resume.
    Resumed,
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
    let recorder = Arc::new(Recorder::default());
    // The same deliveries, counted again for the clients that were never disconnected: the
    // surviving node's service to everyone else. Its totals cover the storm only, from the
    // kill until every disconnected client has resumed ([`storm_window`]); its rows, every
    // second of the run.
    let undisturbed = Arc::new(Recorder::default());
    undisturbed.measure(false);
    let outcome = Arc::new(Outcome::default());
    let stop = CancellationToken::new();
    let killed_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    // The clients of the nodes that survive measure the service to everyone else. They run on
    // a runtime of their own: the generator's work for thousands of resumes at once
    // (handshakes, replays, member lists) must not delay their reads and show up as the node's
    // latency. The first node (the one killed) keeps its clients on the main runtime.
    let observers = Observers(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("storm-observers")
            .enable_all()
            .build()
            .context("starting the observers' runtime")?,
    ));
    // Each client reads from the moment it has joined: one that waited for all the others
    // would answer no ping for the minute 10,000 take to open, and be closed (1001).
    let tasks = futures_util::stream::iter(users.iter().enumerate())
        .map(|(i, (user, room))| {
            let (rooms, recorder, undisturbed, outcome, killed_at, stop) = (
                storm.rooms,
                recorder.clone(),
                undisturbed.clone(),
                outcome.clone(),
                killed_at.clone(),
                stop.clone(),
            );
            let client = move |node: usize, joined: crate::wire::Reply| StormClient {
                index: i,
                room: i % rooms,
                node,
                seq: joined.seq.unwrap_or(0),
                epoch: joined.epoch.unwrap_or_default(),
                recorder,
                undisturbed,
                outcome,
                killed_at,
                stop,
                resumed: false,
                resume_trace: String::new(),
            };
            let observers = observers.handle();
            let urls = common.urls.clone();
            async move {
                let tokens = common.tokens_for(user, &common.urls).await?;
                let node = i % common.urls.len();
                if node == 0 {
                    let opened = connect_one(common, i, user, room, true).await?;
                    let joined = opened.joined.context("joined")?;
                    let client = client(opened.node, joined);
                    return anyhow::Ok(tokio::spawn(client.run(
                        opened.ws,
                        common.urls.clone(),
                        tokens,
                    )));
                }
                let (url, room) = (urls[node].clone(), room.clone());
                let (ready, joined) = tokio::sync::oneshot::channel();
                let task = observers.spawn(async move {
                    let opened = async {
                        let mut ws = Dialect::Switchyard
                            .connect(&url, Some(&tokens[node]))
                            .await?;
                        ws.send(Message::text(Dialect::Switchyard.join(&room, None)))
                            .await?;
                        let joined =
                            wait_reply(Dialect::Switchyard, &mut ws, "room-joined").await?;
                        anyhow::Ok((ws, joined))
                    }
                    .await;
                    match opened {
                        Ok((ws, joined)) => {
                            let client = client(node, joined);
                            let _ = ready.send(Ok(()));
                            client.run(ws, urls, tokens).await
                        }
                        Err(e) => {
                            let _ = ready.send(Err(e));
                        }
                    }
                });
                joined
                    .await
                    .context("observer task ended")?
                    .with_context(|| format!("connecting {user} to node {node}"))?;
                anyhow::Ok(task)
            }
        })
        .buffered(CONNECT_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    eprintln!("reconnect-storm: {} clients joined", tasks.len());
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
    let window = tokio::spawn(storm_window(
        undisturbed.clone(),
        outcome.clone(),
        killed_at.clone(),
        progress_stop.clone(),
    ));
    tokio::time::sleep(storm.after).await;
    eprintln!("reconnect-storm: kill -{} {}", storm.signal, storm.kill_pid);
    *lock(&killed_at) = Some(Instant::now());
    // The storm window opens now: what came before is folded outside it.
    let kill_s = undisturbed.tick().t;
    undisturbed.measure(true);
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
    let ended_s = window.await.ok().flatten();
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    let (_, latency, resume) = recorder.totals();
    let (_, undisturbed_latency, _) = undisturbed.totals();
    let behind = behind(&outcome, &final_seq, storm.clients);
    let gaps = std::mem::take(&mut *lock(&outcome.gap_detail));
    let duplicates = std::mem::take(&mut *lock(&outcome.duplicate_detail));
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
        "gap_detail": gaps.report(),
        "duplicate_detail": duplicates.report(),
        "disconnect_reasons": *lock(&outcome.closes),
        "unparsed_frames": outcome.unparsed.load(Ordering::Relaxed),
        "clients_behind_at_end": behind,
        "delivery_latency": latency,
        // From the kill until every disconnected client had resumed (`storm_window_s`).
        "delivery_latency_undisturbed_clients": undisturbed_latency,
        "storm_window_s": ended_s.map(|end| ((end - kill_s) * 10.0).round() / 10.0),
        // The same clients second by second, `t` in seconds from the kill.
        "undisturbed_by_second": undisturbed.seconds().iter().map(|s| json!({
            "t": ((s.t - kill_s) * 10.0).round() / 10.0,
            "deliveries": s.deliveries,
            "p50_ms": s.p50_ms,
            "p99_ms": s.p99_ms,
            "max_ms": s.max_ms,
        })).collect::<Vec<_>>(),
        "errors": recorder.errors.load(Ordering::Relaxed),
    }))
}

fn behind(outcome: &Outcome, final_seq: &[u64], clients: usize) -> usize {
    let last = lock(&outcome.last);
    let caught_up = last
        .iter()
        .filter(|(room, seq)| *seq >= final_seq[*room])
        .count();
    clients - caught_up.min(clients)
}

/// The observers' runtime, shut down without waiting when the scenario ends (a runtime may not
/// be dropped, which blocks, inside another).
struct Observers(Option<tokio::runtime::Runtime>);

impl Observers {
    fn handle(&self) -> tokio::runtime::Handle {
        self.0
            .as_ref()
            .map_or_else(tokio::runtime::Handle::current, |r| r.handle().clone())
    }
}

impl Drop for Observers {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Ticks the undisturbed clients' recorder every second; after the kill, closes the storm
/// window (stops counting into the totals) once every client that was disconnected has
/// resumed, and returns when that was, in seconds of the recorder's clock.
async fn storm_window(
    undisturbed: Arc<Recorder>,
    outcome: Arc<Outcome>,
    killed_at: Arc<Mutex<Option<Instant>>>,
    stop: CancellationToken,
) -> Option<f64> {
    let mut ended = None;
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.tick().await;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.cancelled() => break,
        }
        let row = undisturbed.tick();
        let disconnected = outcome.disconnected.load(Ordering::Relaxed);
        if ended.is_none()
            && lock(&killed_at).is_some()
            && disconnected > 0
            && outcome.resumed.load(Ordering::Relaxed) >= disconnected
        {
            ended = Some(row.t);
            undisturbed.measure(false);
        }
    }
    undisturbed.tick();
    ended
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
    undisturbed: Arc<Recorder>,
    outcome: Arc<Outcome>,
    killed_at: Arc<Mutex<Option<Instant>>>,
    stop: CancellationToken,
    /// Has been disconnected and resumed at least once.
    resumed: bool,
    /// What the current resume has done so far (for the gap samples).
    resume_trace: String,
}

impl StormClient {
    async fn run(mut self, mut ws: Ws, urls: Vec<String>, tokens: Vec<String>) {
        let room_id = format!("storm-{}", self.room);
        let mut got = Received::default();
        let mut close = String::from("no close frame");
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => break,
                frame = ws.next() => match frame {
                    Some(Ok(Message::Text(t))) => {
                        got.probes.clear();
                        got.replies.clear();
                        Dialect::Switchyard.parse(&t, &mut got);
                        let phase = if self.resumed { Phase::Resumed } else { Phase::Undisturbed };
                        self.take(&got, phase);
                        self.report();
                    }
                    Some(Ok(Message::Close(frame))) => {
                        close = frame.map_or_else(|| "no code".to_owned(), |f| u16::from(f.code).to_string());
                    }
                    Some(Ok(_)) => {}
                    _ => {
                        self.outcome.disconnected.fetch_add(1, Ordering::Relaxed);
                        *lock(&self.outcome.closes).entry(std::mem::replace(&mut close, "no close frame".into())).or_default() += 1;
                        // From here on this client is disturbed, whatever its replay shows.
                        self.resumed = true;
                        match self.resume(&urls, &tokens, &room_id).await {
                            Some(next) => {
                                ws = next;
                                self.outcome.resumed.fetch_add(1, Ordering::Relaxed);
                                if let Some(at) = *lock(&self.killed_at) {
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
        self.outcome
            .unparsed
            .fetch_add(got.unparsed, Ordering::Relaxed);
        self.report();
    }

    fn report(&self) {
        let mut last = lock(&self.outcome.last);
        if last.len() <= self.index {
            last.resize(self.index + 1, (self.room, 0));
        }
        last[self.index] = (self.room, self.seq);
    }

    fn take(&mut self, got: &Received, phase: Phase) {
        let now = now_us();
        let mut slot = None;
        for (probe, seq) in &got.probes {
            let Some(seq) = *seq else { continue };
            if seq <= self.seq {
                self.outcome.duplicates.fetch_add(1, Ordering::Relaxed);
                self.note(&self.outcome.duplicate_detail, 1, seq, phase);
                continue;
            }
            if seq > self.seq + 1 {
                self.gap(seq, phase);
            }
            self.seq = seq;
            slot.get_or_insert_with(|| self.recorder.slot(self.index))
                .delivered(probe.t, now);
            if matches!(phase, Phase::Undisturbed) {
                self.undisturbed.slot(self.index).delivered(probe.t, now);
            }
        }
    }

    /// Counts the seqs skipped before `seq`, and notes where and when.
    fn gap(&self, seq: u64, phase: Phase) {
        let missed = seq - self.seq - 1;
        self.outcome.gaps.fetch_add(missed, Ordering::Relaxed);
        if matches!(phase, Phase::Undisturbed) {
            self.outcome.gaps_live.fetch_add(missed, Ordering::Relaxed);
        }
        self.note(&self.outcome.gap_detail, missed, seq, phase);
    }

    /// Notes `count` irregular seqs (gaps or duplicates) at `seq`: where and when.
    fn note(&self, detail: &Mutex<GapDetail>, count: u64, seq: u64, phase: Phase) {
        let from_kill_ms =
            lock(&self.killed_at).map_or(i64::MIN, |at| at.elapsed().as_millis() as i64);
        let phase = match phase {
            Phase::Undisturbed => "live, never disconnected",
            Phase::Replay => "replay of a resume",
            Phase::Resumed => "live, after a resume",
        };
        let mut detail = lock(detail);
        *detail.by_phase.entry(phase).or_default() += count;
        let second = if from_kill_ms == i64::MIN {
            i64::MIN
        } else {
            from_kill_ms.div_euclid(1000)
        };
        *detail.by_second.entry(second).or_default() += count;
        if detail.samples.len() < GAP_SAMPLES {
            detail.samples.push(json!({
                "client": self.index,
                "room": self.room,
                "node": self.node,
                "phase": phase,
                "had_seq": self.seq,
                "got_seq": seq,
                "ms_from_kill": (from_kill_ms != i64::MIN).then_some(from_kill_ms),
                "resume_trace": self.resume_trace,
            }));
        }
    }

    /// Reconnects to the next node and resumes; replayed messages come before room-joined.
    async fn resume(&mut self, urls: &[String], tokens: &[String], room_id: &str) -> Option<Ws> {
        self.resume_trace.clear();
        for attempt in 0..100u32 {
            self.node = (self.node + 1) % urls.len();
            self.resume_trace.push_str(&format!(
                "attempt {attempt} node {} since {}; ",
                self.node, self.seq
            ));
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
                let text = match crate::wire::next_text(&mut ws).await {
                    Ok(text) => text,
                    Err(e) => {
                        self.resume_trace.push_str(&format!("failed: {e:#}; "));
                        break;
                    }
                };
                got.probes.clear();
                got.replies.clear();
                Dialect::Switchyard.parse(&text, &mut got);
                if skips(self.seq, &got) {
                    // Worth the cost of a summary only when it shows in a sample.
                    self.resume_trace
                        .push_str(&format!("frame with a gap: {}; ", summary(&text)));
                }
                self.take(&got, Phase::Replay);
                if let Some(error) = got.replies.iter().find(|r| r.kind == "error") {
                    // The node refused the join (overloaded: its broker call timed out); try
                    // again, from the seq reached.
                    let why = format!("join refused: {}", error.code.as_deref().unwrap_or("?"));
                    *lock(&self.outcome.closes).entry(why).or_default() += 1;
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt.min(20) + 1)))
                        .await;
                    break;
                }
                if let Some(joined) = got.replies.iter().find(|r| r.kind == "room-joined") {
                    if joined.recovered == Some(false) {
                        self.outcome.not_recovered.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(epoch) = &joined.epoch {
                        self.epoch.clone_from(epoch);
                    }
                    self.seq = self.seq.max(joined.seq.unwrap_or(0));
                    self.outcome
                        .unparsed
                        .fetch_add(got.unparsed, Ordering::Relaxed);
                    return Some(ws);
                }
            }
        }
        None
    }
}

/// Whether the messages of `got` skip a seq after `seq`.
fn skips(mut seq: u64, got: &Received) -> bool {
    for s in got.probes.iter().filter_map(|(_, s)| *s) {
        if s > seq + 1 {
            return true;
        }
        seq = seq.max(s);
    }
    false
}

/// `type:seq` of each message of a frame, for the gap samples.
fn summary(text: &str) -> String {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return format!("unparsed {:.100}", text);
    };
    let one = |m: &serde_json::Value| {
        format!(
            "{}:{}{}",
            m["type"].as_str().unwrap_or("?"),
            m["seq"],
            m.get("recovered")
                .map_or(String::new(), |r| format!(" recovered {r}"))
        )
    };
    match value.as_array() {
        Some(batch) => batch.iter().map(one).collect::<Vec<_>>().join(","),
        None => one(&value),
    }
}
