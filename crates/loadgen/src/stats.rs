//! Measurements of a run: latency histograms (HDR, microseconds), deliveries and sends per
//! second, and the totals. Connection tasks record into one of a few sharded slots (a lock per
//! received frame, not per message); a ticker folds the slots into one row per second.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SHARDS: usize = 32;
/// Latencies above a minute are recorded as a minute.
const MAX_LATENCY_US: u64 = 60_000_000;

fn histogram() -> Histogram<u64> {
    // Bounds that are fixed and valid: this cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// Microseconds since the Unix epoch: the send time carried in a payload, compared on receipt
/// by the same machine's clock.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// One slot of what happened since the last tick.
pub(crate) struct Slot {
    pub(crate) latency: Histogram<u64>,
    pub(crate) ack: Histogram<u64>,
    pub(crate) deliveries: u64,
}

impl Slot {
    fn new() -> Self {
        Slot {
            latency: histogram(),
            ack: histogram(),
            deliveries: 0,
        }
    }

    /// A message delivered `sent_us` after the epoch (its send time).
    pub(crate) fn delivered(&mut self, sent_us: u64, now: u64) {
        self.deliveries += 1;
        let _ = self
            .latency
            .record(now.saturating_sub(sent_us).clamp(1, MAX_LATENCY_US));
    }

    pub(crate) fn acked(&mut self, after_us: u64) {
        let _ = self.ack.record(after_us.clamp(1, MAX_LATENCY_US));
    }
}

/// One second of a run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Second {
    pub(crate) t: f64,
    pub(crate) deliveries: u64,
    pub(crate) sent: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
}

/// Percentiles of a histogram, in milliseconds.
#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct Percentiles {
    pub(crate) count: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
}

impl Percentiles {
    pub(crate) fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

pub(crate) struct Recorder {
    started: Instant,
    slots: Box<[Mutex<Slot>]>,
    /// Messages sent by publishers (counted as they are written).
    pub(crate) sent: AtomicU64,
    sent_at_last_tick: AtomicU64,
    pub(crate) ack_failures: AtomicU64,
    pub(crate) errors: AtomicU64,
    folded: Mutex<Folded>,
}

struct Folded {
    seconds: Vec<Second>,
    latency: Histogram<u64>,
    ack: Histogram<u64>,
    deliveries: u64,
    /// Whether the measured window is open (warm-up and drain are not counted).
    measuring: bool,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            started: Instant::now(),
            slots: (0..SHARDS).map(|_| Mutex::new(Slot::new())).collect(),
            sent: AtomicU64::new(0),
            sent_at_last_tick: AtomicU64::new(0),
            ack_failures: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            folded: Mutex::new(Folded {
                seconds: Vec::new(),
                latency: histogram(),
                ack: histogram(),
                deliveries: 0,
                measuring: true,
            }),
        }
    }
}

/// Locks, going on past a poisoned lock (a panicked client task must not stop the report).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Recorder {
    /// The slot of connection `i`: record into it while holding it for one frame.
    pub(crate) fn slot(&self, i: usize) -> std::sync::MutexGuard<'_, Slot> {
        lock(&self.slots[i % SHARDS])
    }

    /// Folds the slots into a row for the second just ended; returns it.
    pub(crate) fn tick(&self) -> Second {
        let mut latency = histogram();
        let mut ack = histogram();
        let mut deliveries = 0;
        for slot in self.slots.iter() {
            let mut s = lock(slot);
            let _ = latency.add(&s.latency);
            let _ = ack.add(&s.ack);
            deliveries += s.deliveries;
            s.latency.reset();
            s.ack.reset();
            s.deliveries = 0;
        }
        let sent_total = self.sent.load(Ordering::Relaxed);
        let sent = sent_total - self.sent_at_last_tick.swap(sent_total, Ordering::Relaxed);
        let ms = |us: u64| us as f64 / 1000.0;
        let row = Second {
            t: (self.started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            deliveries,
            sent,
            p50_ms: ms(latency.value_at_quantile(0.5)),
            p99_ms: ms(latency.value_at_quantile(0.99)),
            max_ms: ms(latency.max()),
        };
        let mut f = lock(&self.folded);
        if f.measuring {
            let _ = f.latency.add(&latency);
            let _ = f.ack.add(&ack);
            f.deliveries += deliveries;
        }
        f.seconds.push(row.clone());
        row
    }

    /// Starts or stops counting into the totals (the per-second rows always go on).
    pub(crate) fn measure(&self, on: bool) {
        lock(&self.folded).measuring = on;
    }

    pub(crate) fn seconds(&self) -> Vec<Second> {
        lock(&self.folded).seconds.clone()
    }

    pub(crate) fn totals(&self) -> (u64, Percentiles, Percentiles) {
        let f = lock(&self.folded);
        (
            f.deliveries,
            Percentiles::of(&f.latency),
            Percentiles::of(&f.ack),
        )
    }
}

/// Runs `tick` every second until `stop`, printing a progress line to stderr.
pub(crate) async fn progress(
    recorder: std::sync::Arc<Recorder>,
    label: String,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.tick().await;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.cancelled() => return,
        }
        let s = recorder.tick();
        eprintln!(
            "  [{label}] t={:>5.1}s sent/s={:>8} deliveries/s={:>9} p50={:>7.2}ms p99={:>8.2}ms max={:>8.2}ms",
            s.t, s.sent, s.deliveries, s.p50_ms, s.p99_ms, s.max_ms
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_fold_slots_into_seconds_and_totals() {
        let r = Recorder::default();
        let now = now_us();
        {
            let mut s = r.slot(3);
            s.delivered(now - 2_000, now);
            s.delivered(now - 4_000, now);
        }
        r.slot(40).delivered(now - 1_000, now);
        r.sent.fetch_add(5, Ordering::Relaxed);
        let row = r.tick();
        assert_eq!((row.deliveries, row.sent), (3, 5));
        assert!((row.max_ms - 4.0).abs() < 0.01, "{row:?}");
        r.measure(false);
        r.slot(0).delivered(now - 9_000, now);
        let row = r.tick();
        assert_eq!((row.deliveries, row.sent), (1, 0));
        let (deliveries, latency, _) = r.totals();
        assert_eq!(deliveries, 3, "the drain is not counted");
        assert!((latency.p50_ms - 2.0).abs() < 0.01, "{latency:?}");
    }
}
