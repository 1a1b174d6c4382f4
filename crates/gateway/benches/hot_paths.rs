//! Micro-benchmarks of the delivery path: `cargo bench -p switchyard-gateway` (all of them) or
//! `cargo bench -p switchyard-gateway -- fan_out` (those whose name contains `fan_out`).
//!
//! - `encode/*`: one `new-message` encoded in each encoding (done once per node per message).
//! - `fan_out/*`: one room event handed to every local subscriber (the hub's loop: a refcount
//!   and a queue push per recipient), then each queue drained as its writer would.
//! - `batch/*`: the writer turning drained messages into one WebSocket frame.
//!
//! A small harness of our own (no benchmark crate to build in CI): each benchmark is calibrated
//! to about 20 ms per sample, sampled 25 times, and reported as the median and the fastest
//! sample per iteration. Compare runs on the same machine; the median is the figure to watch.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_broker::{EventSink, RoomEvent};
use switchyard_gateway::connection::build_frame;
use switchyard_gateway::hub::{ConnHandle, ConnId, Hub};
use switchyard_gateway::outbound::{OutboundQueue, Payload};
use switchyard_protocol::codec::encode;
use switchyard_protocol::{Encoding, Ref, ServerMessage, SharedFrame};

const SAMPLES: usize = 25;
const SAMPLE_TARGET: Duration = Duration::from_millis(20);

fn main() {
    // `cargo bench` passes `--bench`; any other argument is a name filter.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let wanted = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    println!("{:<32} {:>14} {:>14}", "benchmark", "median", "fastest");

    for encoding in [Encoding::Json, Encoding::MsgPack] {
        let name = format!("encode/new-message/{}", label(encoding));
        if wanted(&name) {
            let message = new_message(1);
            bench(&name, 1, || {
                black_box(encode(black_box(&message), encoding))
            });
        }
    }

    for subscribers in [10, 1_000] {
        let name = format!("fan_out/{subscribers}-subscribers");
        if wanted(&name) {
            let (hub, conns) = room_of(subscribers);
            let mut drained = Vec::with_capacity(4);
            let mut seq = 0;
            bench(&name, subscribers, || {
                seq += 1;
                let event = RoomEvent {
                    frame: Arc::new(SharedFrame::new(new_message(seq))),
                    durable: Some((seq, Arc::from("epoch"))),
                    exclude_user: None,
                    presence: None,
                };
                hub.room_event("bench", &event);
                for conn in &conns {
                    drained.clear();
                    conn.queue
                        .drain_into(&mut drained, 128, 64 * 1024, conn.encoding);
                    black_box(drained[0].bytes(conn.encoding));
                }
            });
        }
    }

    for (messages, encoding) in [
        (1, Encoding::Json),
        (16, Encoding::Json),
        (16, Encoding::MsgPack),
    ] {
        let name = format!("batch/{messages}-messages/{}", label(encoding));
        if wanted(&name) {
            let batch: Vec<Payload> = (0..messages)
                .map(|i| {
                    let frame = Arc::new(SharedFrame::new(new_message(i)));
                    frame.encoded(encoding);
                    Payload::Shared(frame)
                })
                .collect();
            bench(&name, messages as usize, || {
                black_box(build_frame(encoding, black_box(&batch)))
            });
        }
    }
}

fn label(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Json => "json",
        Encoding::MsgPack => "msgpack",
    }
}

/// A chat message as the load generator sends it: a short text and a small `data` object.
fn new_message(seq: u64) -> ServerMessage {
    ServerMessage::NewMessage {
        room_id: "bench".into(),
        id: format!("01JD{seq:022}"),
        seq,
        user_id: "u-publisher-1".into(),
        name: Some("Publisher 1".into()),
        text: "the quick brown fox jumps over the lazy dog".into(),
        data: Some(serde_json::json!({"p": 1, "n": seq, "t": 1_764_633_600_000_000u64})),
        ts: 1_764_633_600_000,
        temp_id: Ref::Str(format!("t-{seq}")),
    }
}

/// A hub with one room of `n` subscribers, each with its own queue, all JSON.
fn room_of(n: usize) -> (Hub, Vec<Arc<ConnHandle>>) {
    let hub = Hub::default();
    let room: Arc<str> = Arc::from("bench");
    let conns: Vec<Arc<ConnHandle>> = (0..n)
        .map(|i| {
            let conn = Arc::new(ConnHandle::new(
                ConnId(i as u128),
                Arc::from(format!("u{i}")),
                Encoding::Json,
                OutboundQueue::new(1024),
            ));
            hub.subscribe(&room, &conn);
            conn
        })
        .collect();
    (hub, conns)
}

/// Runs `f` in calibrated samples and prints the time per element (`per_iter` elements, e.g.
/// recipients or messages, per call).
fn bench<R>(name: &str, per_iter: usize, mut f: impl FnMut() -> R) {
    let mut iters = 1u64;
    loop {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(f());
        }
        if start.elapsed() >= SAMPLE_TARGET / 4 || iters >= 1 << 30 {
            let per = start.elapsed().as_secs_f64() / iters as f64;
            iters = ((SAMPLE_TARGET.as_secs_f64() / per) as u64).max(1);
            break;
        }
        iters *= 2;
    }
    let mut samples: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(f());
            }
            start.elapsed().as_secs_f64() * 1e9 / (iters as f64 * per_iter as f64)
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    let unit = if per_iter > 1 { "/elem" } else { "" };
    println!(
        "{name:<32} {:>9.1} ns{unit:<5} {:>9.1} ns{unit}",
        samples[SAMPLES / 2],
        samples[0]
    );
}
