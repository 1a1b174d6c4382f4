//! The outbound queue of one connection, and the policy at its bound.
//!
//! Everything a connection is sent waits here until its writer task takes it: replies, room
//! messages (shared, encoded once per node), replays. The queue is bounded by `queue_max`
//! messages, with a named policy at the bound:
//! - typing and cursor events are *droppable*: when the queue is full they are dropped (and
//!   counted); a queued cursor position is replaced by a newer one of the same user and room
//!   (conflation), so a busy room sends only the latest position;
//! - anything else evicts the oldest droppable event; when there is none, the connection is a
//!   slow consumer and is closed with 4009 (it resumes with `sinceSeq`).
//!
//! A replay (missed messages on a resume) is bounded by the room history size and is not counted
//! against the bound.

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_protocol::{Encoding, ServerMessage, SharedFrame};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Something queued for a connection.
#[derive(Debug, Clone)]
pub enum Payload {
    /// A message shared with other recipients on this node, encoded on first use.
    Shared(Arc<SharedFrame>),
    /// A message already encoded in this connection's encoding (a reply).
    Encoded(Bytes),
}

impl Payload {
    pub fn bytes(&self, encoding: Encoding) -> &[u8] {
        match self {
            Payload::Shared(frame) => frame.encoded(encoding),
            Payload::Encoded(bytes) => bytes,
        }
    }
}

/// The slow-consumer verdict: the queue is full of messages that may not be dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

/// What happened to a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// A droppable event was dropped (this one, or an older one to make room).
    DroppedVolatile,
    /// A cursor position replaced a queued one.
    Conflated,
}

/// A hash of (room, user): conflation keys cost no allocation per delivery. A collision is
/// detected (the queued frame's room and user differ) and then the move is queued unconflated.
type CursorKey = u64;

fn cursor_key(room_id: &str, user_id: &str) -> CursorKey {
    switchyard_protocol::fnv1a(room_id.bytes().chain([0xff]).chain(user_id.bytes()))
}

fn same_cursor(a: &ServerMessage, room: &str, user: &str) -> bool {
    matches!(a, ServerMessage::CursorMove { room_id, user_id, .. } if room_id == room && user_id == user)
}

enum Slot {
    Message {
        payload: Payload,
        droppable: bool,
        counted: bool,
    },
    /// The newest position of this (room, user) waits in `cursors`.
    Cursor(CursorKey),
}

#[derive(Default)]
struct State {
    slots: VecDeque<Slot>,
    cursors: HashMap<CursorKey, Arc<SharedFrame>>,
    /// Slots that count against the bound (everything but replays).
    counted: usize,
    /// A push wakes the writer only once `counted` reaches this (0: every push). Raised while
    /// the writer coalesces, so the pushes it waits for do not each wake it for nothing.
    wake_from: usize,
    closed: bool,
}

/// A connection's bounded outbound queue. Producers push from any task without waiting; the
/// writer is woken through `notify`. Nothing node-wide is touched per message: the node's queue
/// depth is summed over the connections when `/metrics` is scraped.
pub struct OutboundQueue {
    state: Mutex<State>,
    notify: Notify,
    max: usize,
}

impl OutboundQueue {
    /// The bound, in messages.
    pub fn max(&self) -> usize {
        self.max
    }

    pub fn new(max: usize) -> Self {
        OutboundQueue {
            state: Mutex::default(),
            notify: Notify::new(),
            max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a message that may not be dropped.
    pub fn push(&self, payload: Payload) -> Result<Pushed, Overflow> {
        let mut s = self.lock();
        if s.closed {
            return Ok(Pushed::Queued);
        }
        let mut outcome = Pushed::Queued;
        if s.counted >= self.max {
            if !evict_droppable(&mut s) {
                return Err(Overflow);
            }
            outcome = Pushed::DroppedVolatile;
        }
        s.slots.push_back(Slot::Message {
            payload,
            droppable: false,
            counted: true,
        });
        s.counted += 1;
        let wake = s.counted >= s.wake_from;
        drop(s);
        if wake {
            self.notify.notify_one();
        }
        Ok(outcome)
    }

    /// Queues a typing or cursor event: conflated (cursors) and dropped first.
    pub fn push_volatile(&self, frame: &Arc<SharedFrame>) -> Pushed {
        let mut s = self.lock();
        if s.closed {
            return Pushed::Queued;
        }
        let key = match frame.message() {
            ServerMessage::CursorMove {
                room_id, user_id, ..
            } => {
                let key = cursor_key(room_id, user_id);
                match s.cursors.get_mut(&key) {
                    Some(queued) if same_cursor(queued.message(), room_id, user_id) => {
                        *queued = frame.clone();
                        return Pushed::Conflated;
                    }
                    Some(_) => None, // a hash collision: queue this move unconflated
                    None => Some(key),
                }
            }
            _ => None,
        };
        if s.counted >= self.max {
            return Pushed::DroppedVolatile;
        }
        match key {
            Some(key) => {
                s.cursors.insert(key, frame.clone());
                s.slots.push_back(Slot::Cursor(key));
            }
            None => s.slots.push_back(Slot::Message {
                payload: Payload::Shared(frame.clone()),
                droppable: true,
                counted: true,
            }),
        }
        s.counted += 1;
        let wake = s.counted >= s.wake_from;
        drop(s);
        if wake {
            self.notify.notify_one();
        }
        Pushed::Queued
    }

    /// Queues missed messages of a resume, in order, outside the bound.
    pub fn push_replay(&self, frames: impl IntoIterator<Item = Arc<SharedFrame>>) {
        let mut s = self.lock();
        if s.closed {
            return;
        }
        s.slots.extend(frames.into_iter().map(|f| Slot::Message {
            payload: Payload::Shared(f),
            droppable: false,
            counted: false,
        }));
        drop(s);
        self.notify.notify_one();
    }

    /// Moves up to `max_items` messages (and about `max_bytes`, at least one) into `out`.
    pub fn drain_into(
        &self,
        out: &mut Vec<Payload>,
        max_items: usize,
        max_bytes: usize,
        encoding: Encoding,
    ) {
        let mut s = self.lock();
        let mut bytes = 0;
        let mut taken = 0;
        while out.len() < max_items && bytes < max_bytes {
            let Some(slot) = s.slots.pop_front() else {
                break;
            };
            taken += 1;
            let payload = match slot {
                Slot::Message {
                    payload, counted, ..
                } => {
                    if counted {
                        s.counted -= 1;
                    }
                    payload
                }
                Slot::Cursor(key) => {
                    s.counted -= 1;
                    match s.cursors.remove(&key) {
                        Some(frame) => Payload::Shared(frame),
                        None => continue,
                    }
                }
            };
            bytes += payload.bytes(encoding).len();
            out.push(payload);
        }
        if s.slots.is_empty() && taken <= 2 {
            // A connection that receives little keeps no queue memory. A busy one keeps its
            // buffer rather than grow it again for every batch; the writer gives it back when
            // the connection has gone quiet ([`release_if_empty`](Self::release_if_empty)).
            s.slots = VecDeque::new();
        }
    }

    /// Frees the queue's buffer if nothing is queued (called on the heartbeat, so a connection
    /// that was busy holds it at most one heartbeat after it went quiet).
    pub fn release_if_empty(&self) {
        let mut s = self.lock();
        if s.slots.is_empty() {
            s.slots = VecDeque::new();
        }
    }

    /// From now on, pushes wake the writer only once `n` messages are queued (0: every push).
    /// The writer raises it while it waits to batch, and lowers it before it writes.
    pub fn wake_from(&self, n: usize) {
        self.lock().wake_from = n;
    }

    /// Number of queued messages.
    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuses further pushes; with `discard`, drops what is queued (a slow consumer's backlog).
    pub fn close(&self, discard: bool) {
        let mut s = self.lock();
        s.closed = true;
        if discard {
            s.slots.clear();
            s.cursors.clear();
            s.counted = 0;
        }
        drop(s);
        self.notify.notify_one();
    }

    /// Waits until something may have been pushed (or the connection is closing).
    pub async fn notified(&self) {
        self.notify.notified().await
    }

    /// Wakes the writer without pushing anything (the connection is closing).
    pub fn wake(&self) {
        self.notify.notify_one();
    }
}

fn evict_droppable(s: &mut State) -> bool {
    let Some(i) = s.slots.iter().position(|slot| {
        matches!(
            slot,
            Slot::Cursor(_)
                | Slot::Message {
                    droppable: true,
                    ..
                }
        )
    }) else {
        return false;
    };
    if let Some(Slot::Cursor(key)) = s.slots.remove(i) {
        s.cursors.remove(&key);
    }
    s.counted -= 1;
    true
}

/// Write coalescing, the writer's policy for *when* to write. A connection that receives
/// little is written to at once. A busy one (over the last [`Coalescer::WINDOW`], at least
/// [`Coalescer::BUSY_MESSAGES_PER_DELAY`] messages per `delay`, or a whole window's worth of
/// that rate in a burst) writes at most once per `delay`: what arrives meanwhile shares one
/// frame and one system call, which is most of the cost of a delivery. A chat member (a few messages a second) never waits; a member of a room
/// with hundreds of messages a second waits at most `delay` and receives them in batches.
#[derive(Debug)]
pub struct Coalescer {
    delay: Duration,
    last_write: Instant,
    window_start: Instant,
    window_messages: u64,
    busy: bool,
}

impl Coalescer {
    /// How far back the connection's rate is measured.
    pub const WINDOW: Duration = Duration::from_millis(250);
    /// A connection is busy when a wait of `delay` would batch at least this many messages.
    pub const BUSY_MESSAGES_PER_DELAY: f64 = 2.0;

    /// `delay` zero: never wait.
    pub fn new(delay: Duration, now: Instant) -> Self {
        Coalescer {
            delay,
            last_write: now,
            window_start: now,
            window_messages: 0,
            busy: false,
        }
    }

    /// When the writer, woken with something queued, may write: `None` for at once.
    pub fn write_at(&self, now: Instant) -> Option<Instant> {
        let at = self.last_write + self.delay;
        (self.busy && at > now).then_some(at)
    }

    /// Records a write of `messages` messages at `now`.
    pub fn wrote(&mut self, now: Instant, messages: usize) {
        self.last_write = now;
        self.window_messages += messages as u64;
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= Self::WINDOW {
            self.busy = self.busy_rate(elapsed);
            self.window_start = now;
            self.window_messages = 0;
        } else if !self.busy && self.busy_rate(Self::WINDOW) {
            // A burst: a whole window's worth of a busy rate already.
            self.busy = true;
        }
    }

    /// Whether the window's messages, spread over `over`, are a busy rate.
    fn busy_rate(&self, over: Duration) -> bool {
        !self.delay.is_zero()
            && self.window_messages as f64 * self.delay.as_secs_f64()
                >= Self::BUSY_MESSAGES_PER_DELAY * over.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_connection_is_written_at_once_and_a_busy_one_in_batches() {
        let delay = Duration::from_millis(20);
        let start = Instant::now();
        let ms = |n: u64| start + Duration::from_millis(n);
        let mut c = Coalescer::new(delay, start);
        // 10 messages a second (a chat member): never waits.
        for i in 1..=20 {
            assert_eq!(c.write_at(ms(i * 100)), None);
            c.wrote(ms(i * 100), 1);
        }
        // 1,000 a second: busy after one window, then at most one write per delay.
        let mut t = 2_000;
        for _ in 0..300 {
            t += 1;
            c.wrote(ms(t), 1);
        }
        assert_eq!(c.write_at(ms(t + 1)), Some(ms(t + 20)));
        assert_eq!(c.write_at(ms(t + 25)), None, "the delay is over");
        // A quiet spell: the first message after it goes at once.
        assert_eq!(c.write_at(ms(t + 5_000)), None);
        // After a quiet window, a burst is noticed before its window ends: 25 messages (a
        // whole window at 2 per 20 ms) go at once, then the writes are spaced.
        let mut b = Coalescer::new(delay, start);
        for i in 0..25 {
            assert_eq!(b.write_at(ms(i)), None, "message {i}");
            b.wrote(ms(i), 1);
        }
        assert_eq!(b.write_at(ms(25)), Some(ms(24 + 20)));
        // Zero delay: never waits, however busy.
        let mut z = Coalescer::new(Duration::ZERO, start);
        for i in 1..=1_000 {
            z.wrote(ms(i), 5);
        }
        assert_eq!(z.write_at(ms(1_000)), None);
    }

    fn cursor(user: &str, x: f64) -> Arc<SharedFrame> {
        Arc::new(SharedFrame::new(ServerMessage::CursorMove {
            room_id: "r".into(),
            user_id: user.into(),
            x,
            y: 0.0,
            color: "#000".into(),
        }))
    }

    fn typing() -> Arc<SharedFrame> {
        Arc::new(SharedFrame::new(ServerMessage::TypingStart {
            room_id: "r".into(),
            user_id: "u".into(),
        }))
    }

    fn reply(n: u8) -> Payload {
        Payload::Encoded(Bytes::from(vec![n]))
    }

    fn drain(q: &OutboundQueue) -> Vec<Payload> {
        let mut out = Vec::new();
        q.drain_into(&mut out, usize::MAX, usize::MAX, Encoding::Json);
        out
    }

    #[test]
    fn cursors_are_conflated_in_place() {
        let q = OutboundQueue::new(8);
        q.push_volatile(&cursor("a", 1.0));
        q.push(reply(1)).unwrap();
        assert_eq!(q.push_volatile(&cursor("a", 2.0)), Pushed::Conflated);
        q.push_volatile(&cursor("b", 3.0));
        let out = drain(&q);
        assert_eq!(out.len(), 3);
        let Payload::Shared(first) = &out[0] else {
            panic!()
        };
        assert!(matches!(first.message(), ServerMessage::CursorMove { x, .. } if *x == 2.0));
    }

    #[test]
    fn volatile_goes_first_then_4009() {
        let q = OutboundQueue::new(3);
        q.push_volatile(&typing());
        q.push(reply(1)).unwrap();
        q.push(reply(2)).unwrap();
        assert_eq!(
            q.push_volatile(&typing()),
            Pushed::DroppedVolatile,
            "full: volatile is dropped"
        );
        assert_eq!(
            q.push(reply(3)),
            Ok(Pushed::DroppedVolatile),
            "full: durable evicts the volatile"
        );
        assert_eq!(
            q.push(reply(4)),
            Err(Overflow),
            "full of durable: slow consumer"
        );
        assert_eq!(q.len(), 3);
        q.push_replay(vec![typing(), typing()]);
        assert_eq!(q.len(), 5, "replays are outside the bound");
        assert_eq!(drain(&q).len(), 5);
        assert!(q.is_empty());
    }

    #[test]
    fn drain_respects_batch_limits() {
        let q = OutboundQueue::new(100);
        for i in 0..10 {
            q.push(reply(i)).unwrap();
        }
        let mut out = Vec::new();
        q.drain_into(&mut out, 4, usize::MAX, Encoding::Json);
        assert_eq!(out.len(), 4);
        out.clear();
        q.drain_into(&mut out, 100, 2, Encoding::Json);
        assert_eq!(out.len(), 2, "stops once the byte budget is reached");
        q.close(true);
        assert!(q.is_empty());
    }

    #[test]
    fn while_the_writer_batches_only_a_half_full_queue_wakes_it() {
        use futures_util::FutureExt;
        let q = OutboundQueue::new(8);
        q.wake_from(4);
        for n in 0..3 {
            q.push(reply(n)).unwrap();
        }
        assert!(
            q.notified().now_or_never().is_none(),
            "three of eight queued: the writer sleeps on"
        );
        q.push(reply(3)).unwrap();
        assert!(q.notified().now_or_never().is_some(), "half full: woken");
        q.wake_from(0);
        q.push(reply(4)).unwrap();
        assert!(
            q.notified().now_or_never().is_some(),
            "every push wakes it again"
        );
    }
}
