//! The node's local tables: which of its connections are in which room, and which belong to
//! which user. The hub is the broker's [`EventSink`]: the fan-out loop that hands each room
//! event to every local subscriber lives here.
//!
//! A room event arrives once per node as an `Arc<SharedFrame>` and is queued for each recipient
//! by refcount; it is encoded at most once per encoding, by the first writer that sends it.

use smallvec::SmallVec;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use switchyard_broker::{EventSink, RoomEvent, UserEvent};
use switchyard_protocol::{Encoding, ServerMessage, SharedFrame};
use tokio::sync::Notify;

use crate::metrics::metrics;
use crate::outbound::{OutboundQueue, Payload, Pushed};

/// Close codes the gateway uses (see `docs/protocol.md`).
pub mod close {
    pub const NORMAL: u16 = 1000;
    /// Node draining or shutting down; heartbeat timeout.
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL: u16 = 1002;
    pub const INVALID_DATA: u16 = 1007;
    /// Kicked, token revoked, repeated abuse.
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    pub const TOKEN_EXPIRED: u16 = 4001;
    pub const SLOW_CONSUMER: u16 = 4009;
}

const ROOM_SHARDS: usize = 16;

/// A connection's id: a random 128-bit number, shown as 32 hex digits. Held as a number, not
/// a string: it is in every connection, and only logs and presence entries need its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(pub u128);

impl ConnId {
    pub fn random() -> Self {
        ConnId(switchyard_broker::random_uuid().as_u128())
    }
}

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// The part of a connection that other tasks reach: its queue, its identity and its close switch.
pub struct ConnHandle {
    pub id: ConnId,
    pub user_id: Arc<str>,
    pub encoding: Encoding,
    pub queue: OutboundQueue,
    /// Set when the connection is to close; the writer then sends the close frame. (A flag and
    /// a `Notify` rather than a cancellation token: no allocation of its own per connection.)
    closing: AtomicBool,
    /// Wakes the reader when `closing` is set; the writer is woken through its queue.
    closing_notify: Notify,
    /// Boxed: set only when closing, so an open connection pays a pointer for it.
    close_reason: OnceLock<Box<(u16, String)>>,
    /// Rooms being joined: their events wait in a buffer until the join reply is queued, so a
    /// resume is "missed messages, then the reply, then live" with no gap or repeat.
    /// A list, not a map: a connection syncs one room at a time, rarely two.
    syncing: Mutex<Vec<(Arc<str>, RoomSync)>>,
    syncing_count: AtomicUsize,
    /// Milliseconds (since the node started) of the last frame from the peer.
    pub last_seen_ms: AtomicU64,
}

impl ConnHandle {
    pub fn new(id: ConnId, user_id: Arc<str>, encoding: Encoding, queue: OutboundQueue) -> Self {
        ConnHandle {
            id,
            user_id,
            encoding,
            queue,
            closing: AtomicBool::new(false),
            closing_notify: Notify::new(),
            close_reason: OnceLock::new(),
            syncing: Mutex::default(),
            syncing_count: AtomicUsize::new(0),
            last_seen_ms: AtomicU64::new(0),
        }
    }

    /// Asks the connection to close with `code`. The first reason wins.
    pub fn close(&self, code: u16, reason: &str) {
        if self
            .close_reason
            .set(Box::new((code, reason.to_owned())))
            .is_ok()
            && code == close::SLOW_CONSUMER
        {
            // Its backlog is what overflowed: drop it, the client resumes with sinceSeq.
            self.queue.close(true);
        }
        self.closing.store(true, Ordering::Release);
        self.closing_notify.notify_waiters();
        self.queue.wake();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Completes once [`close`](Self::close) is called.
    pub async fn closed(&self) {
        // Created before the check: `notify_waiters` wakes it even if it was never polled.
        let notified = self.closing_notify.notified();
        if self.is_closing() {
            return;
        }
        notified.await;
    }

    /// The policy at the bound for what may not be dropped: count it, close with 4009.
    pub fn close_slow_consumer(&self) {
        metrics().slow_consumer_closes.increment(1);
        self.close(
            close::SLOW_CONSUMER,
            "slow consumer: outbound queue overflowed",
        );
    }

    /// The close code and reason, once [`close`](Self::close) was called.
    pub fn close_reason(&self) -> Option<&(u16, String)> {
        self.close_reason.get().map(|reason| &**reason)
    }

    /// Queues a room event for this connection, following the queue's policy at its bound.
    fn deliver(&self, room_id: &str, event: &RoomEvent) {
        if self.syncing_count.load(Ordering::Acquire) > 0 {
            let mut syncing = self.syncing.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = syncing.iter().position(|(r, _)| **r == *room_id) {
                match &mut syncing[i].1 {
                    RoomSync::Holding { buffer, .. } => {
                        // Held back while a join or publish waits for the broker: bounded
                        // like the queue, with the same policy at the bound (volatile
                        // dropped, then 4009).
                        if buffer.len() >= self.queue.max() {
                            drop(syncing);
                            if event.durable.is_none() && is_droppable(event.frame.message()) {
                                metrics().volatile_dropped.increment(1);
                            } else {
                                self.close_slow_consumer();
                            }
                            return;
                        }
                        buffer.push(event.clone());
                        return;
                    }
                    RoomSync::Skipping(skip) => match &event.durable {
                        // Already in the replay, or covered by the reply's seq.
                        Some((seq, epoch)) if skip.covers(*seq, epoch) => return,
                        // The node's stream has passed the join's position.
                        Some(_) => {
                            syncing.swap_remove(i);
                            self.syncing_count.fetch_sub(1, Ordering::Release);
                        }
                        None => {}
                    },
                }
            }
        }
        self.enqueue(event);
    }

    fn enqueue(&self, event: &RoomEvent) {
        if event.durable.is_none() && is_droppable(event.frame.message()) {
            if self.queue.push_volatile(&event.frame) == Pushed::DroppedVolatile {
                metrics().volatile_dropped.increment(1);
            }
            return;
        }
        match self.queue.push(Payload::Shared(event.frame.clone())) {
            Ok(Pushed::DroppedVolatile) => metrics().volatile_dropped.increment(1),
            Ok(_) => {}
            Err(_) => self.close_slow_consumer(),
        }
    }

    /// Starts buffering the room's events (before its history is read).
    pub fn begin_sync(&self, room_id: &Arc<str>) {
        let mut syncing = self.syncing.lock().unwrap_or_else(|e| e.into_inner());
        match syncing.iter_mut().find(|(r, _)| r == room_id) {
            Some((_, sync)) => {
                *sync = match std::mem::replace(sync, RoomSync::holding(None)) {
                    holding @ RoomSync::Holding { .. } => holding,
                    // A join or publish while an earlier join still skips: hold from here,
                    // and keep skipping what that join covered.
                    RoomSync::Skipping(skip) => RoomSync::holding(Some(skip)),
                };
            }
            None => {
                syncing.push((room_id.clone(), RoomSync::holding(None)));
                self.syncing_count.fetch_add(1, Ordering::Release);
            }
        }
    }

    /// Ends buffering for a join that failed: what arrived meanwhile is dropped, since the
    /// connection is not in the room (a message of it, without the replay before it, would
    /// look like a gap to the client).
    pub fn abort_sync(&self, room_id: &str) {
        let mut syncing = self.syncing.lock().unwrap_or_else(|e| e.into_inner());
        if take_sync(&mut syncing, room_id).is_some() {
            self.syncing_count.fetch_sub(1, Ordering::Release);
        }
    }

    /// Ends buffering: queues what arrived meanwhile, skipping durable messages at or below
    /// `floor` (already replayed, or covered by the reply's `seq`) and presence changes at or
    /// below `presence_floor` (already in the reply's members).
    ///
    /// With `behind` (the epoch of the join's position), the node's live stream had not yet
    /// delivered up to `floor` when the join read it: the messages up to `floor` are still on
    /// their way, and are skipped as they arrive, until the first newer one.
    pub fn end_sync(
        &self,
        room_id: &str,
        floor: Option<u64>,
        presence_floor: Option<u64>,
        behind: Option<Arc<str>>,
    ) {
        let mut syncing = self.syncing.lock().unwrap_or_else(|e| e.into_inner());
        let Some(i) = syncing.iter().position(|(r, _)| **r == *room_id) else {
            return;
        };
        let (buffer, skip) = match std::mem::replace(&mut syncing[i].1, RoomSync::holding(None)) {
            RoomSync::Holding { buffer, skip } => (buffer, skip),
            // Not holding (no begin_sync before): nothing to end.
            skipping @ RoomSync::Skipping(_) => {
                syncing[i].1 = skipping;
                return;
            }
        };
        for event in &buffer {
            let old = matches!((event.durable.as_ref(), floor), (Some((seq, _)), Some(floor)) if *seq <= floor)
                || matches!(&event.durable, Some((seq, epoch)) if skip.as_ref().is_some_and(|s| s.covers(*seq, epoch)))
                || matches!((event.presence, presence_floor), (Some(v), Some(floor)) if v <= floor);
            if !old {
                self.enqueue(event);
            }
        }
        let behind = floor
            .zip(behind)
            .map(|(floor, epoch)| Skip { floor, epoch });
        match behind.or(skip) {
            Some(skip) => syncing[i].1 = RoomSync::Skipping(skip),
            None => {
                syncing.swap_remove(i);
                // Only now, with the buffer queued and the lock still held: a delivery that
                // sees no sync in progress skips the lock and queues at once, so it must not
                // overtake the buffer (it would put a newer message before older ones).
                self.syncing_count.fetch_sub(1, Ordering::Release);
            }
        }
    }
}

/// Where a connection is in syncing one room.
enum RoomSync {
    /// A join or publish waits for the broker: the room's events wait here (and an earlier
    /// join's skip still applies to them).
    Holding {
        buffer: Vec<RoomEvent>,
        skip: Option<Skip>,
    },
    /// A join was answered before the node's live stream reached its position.
    Skipping(Skip),
}

impl RoomSync {
    fn holding(skip: Option<Skip>) -> Self {
        RoomSync::Holding {
            buffer: Vec::new(),
            skip,
        }
    }
}

/// Durable messages up to `floor` of `epoch` were covered by a join's reply, and are dropped
/// as they arrive; the first newer one ends the skip.
struct Skip {
    floor: u64,
    epoch: Arc<str>,
}

impl Skip {
    fn covers(&self, seq: u64, epoch: &Arc<str>) -> bool {
        seq <= self.floor && *epoch == self.epoch
    }
}

/// Removes a room's sync state from a connection's list.
fn take_sync(syncing: &mut Vec<(Arc<str>, RoomSync)>, room_id: &str) -> Option<RoomSync> {
    let i = syncing.iter().position(|(r, _)| **r == *room_id)?;
    Some(syncing.swap_remove(i).1)
}

/// Typing and cursor events may be dropped for a slow client; nothing else may.
fn is_droppable(message: &ServerMessage) -> bool {
    matches!(
        message,
        ServerMessage::TypingStart { .. }
            | ServerMessage::TypingStop { .. }
            | ServerMessage::CursorMove { .. }
            | ServerMessage::CursorLeave { .. }
    )
}

#[derive(Default)]
struct RoomEntry {
    subscribers: Vec<Arc<ConnHandle>>,
    /// The epoch of the last durable message seen, to notice a history reset.
    epoch: Mutex<Option<Arc<str>>>,
}

/// One lock's worth of the room table (rooms are spread over shards by hash).
type RoomShard = RwLock<HashMap<Arc<str>, RoomEntry>>;

/// A user's connections on this node: inline for the usual one (no allocation per user).
type UserConns = SmallVec<[Arc<ConnHandle>; 1]>;

/// Local rooms and users of this node.
pub struct Hub {
    hasher: RandomState,
    rooms: Box<[RoomShard]>,
    users: RwLock<HashMap<Arc<str>, UserConns>>,
    connections: AtomicUsize,
    room_count: AtomicUsize,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            hasher: RandomState::new(),
            rooms: (0..ROOM_SHARDS).map(|_| RwLock::default()).collect(),
            users: RwLock::default(),
            connections: AtomicUsize::new(0),
            room_count: AtomicUsize::new(0),
        }
    }
}

impl Hub {
    fn shard(&self, room_id: &str) -> &RoomShard {
        &self.rooms[self.hasher.hash_one(room_id) as usize % ROOM_SHARDS]
    }

    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    pub fn room_count(&self) -> usize {
        self.room_count.load(Ordering::Relaxed)
    }

    /// Registers a connection under its user (user-targeted events, disconnects, drain).
    pub fn register(&self, conn: &Arc<ConnHandle>) {
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
        users
            .entry(conn.user_id.clone())
            .or_default()
            .push(conn.clone());
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Removes a connection.
    pub fn unregister(&self, conn: &ConnHandle) {
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
        let Some(list) = users.get_mut(&conn.user_id) else {
            return;
        };
        let before = list.len();
        list.retain(|c| c.id != conn.id);
        if list.len() < before {
            self.connections.fetch_sub(1, Ordering::Relaxed);
        }
        if list.is_empty() {
            users.remove(&conn.user_id);
        }
    }

    /// Every connection of the node (for drain).
    pub fn all_connections(&self) -> Vec<Arc<ConnHandle>> {
        let users = self.users.read().unwrap_or_else(|e| e.into_inner());
        users.values().flatten().cloned().collect()
    }

    /// Adds a local subscriber to a room.
    pub fn subscribe(&self, room_id: &Arc<str>, conn: &Arc<ConnHandle>) {
        let mut shard = self
            .shard(room_id)
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let entry = shard.entry(room_id.clone()).or_insert_with(|| {
            self.room_count.fetch_add(1, Ordering::Relaxed);
            RoomEntry::default()
        });
        entry.subscribers.push(conn.clone());
    }

    /// Records the room's epoch as read at a join, so the first message of a later epoch is
    /// preceded by `room-reset` even if no message of this epoch went through the node.
    pub fn note_epoch(&self, room_id: &str, epoch: &Arc<str>) {
        let shard = self
            .shard(room_id)
            .read()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = shard.get(room_id) {
            let mut known = entry.epoch.lock().unwrap_or_else(|e| e.into_inner());
            if known.is_none() {
                *known = Some(epoch.clone());
            }
        }
    }

    /// Removes a local subscriber from a room.
    pub fn unsubscribe(&self, room_id: &str, conn: &ConnHandle) {
        let mut shard = self
            .shard(room_id)
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let Some(entry) = shard.get_mut(room_id) else {
            return;
        };
        if let Some(i) = entry.subscribers.iter().position(|c| c.id == conn.id) {
            entry.subscribers.swap_remove(i);
        }
        if entry.subscribers.is_empty() {
            shard.remove(room_id);
            self.room_count.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The fan-out loop: one room event to every local subscriber of the room.
    fn fan_out(&self, room_id: &str, event: &RoomEvent) {
        let shard = self
            .shard(room_id)
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let Some(entry) = shard.get(room_id) else {
            return;
        };
        if let Some((seq, epoch)) = &event.durable {
            self.check_epoch(room_id, entry, *seq, epoch);
        }
        let mut delivered = 0u64;
        for conn in &entry.subscribers {
            if event
                .exclude_user
                .as_ref()
                .is_some_and(|u| *u == conn.user_id)
            {
                continue;
            }
            conn.deliver(room_id, event);
            delivered += 1;
        }
        let m = metrics();
        if event.durable.is_some() {
            &m.deliveries_durable
        } else {
            &m.deliveries_volatile
        }
        .increment(delivered);
    }

    /// Sends `room-reset` before the first message of a new epoch (the history was lost).
    fn check_epoch(&self, room_id: &str, entry: &RoomEntry, seq: u64, epoch: &Arc<str>) {
        let mut known = entry.epoch.lock().unwrap_or_else(|e| e.into_inner());
        let changed = known.as_ref().is_some_and(|k| k != epoch);
        *known = Some(epoch.clone());
        drop(known);
        if changed {
            let reset = Arc::new(SharedFrame::new(ServerMessage::RoomReset {
                room_id: room_id.to_owned(),
                epoch: epoch.to_string(),
                seq: seq.saturating_sub(1),
            }));
            let event = RoomEvent::volatile(reset, None);
            for conn in &entry.subscribers {
                conn.deliver(room_id, &event);
            }
        }
    }
}

impl EventSink for Hub {
    fn room_event(&self, room_id: &str, event: &RoomEvent) {
        self.fan_out(room_id, event);
    }

    fn user_event(&self, user_id: &str, event: &UserEvent) {
        let users = self.users.read().unwrap_or_else(|e| e.into_inner());
        let Some(conns) = users.get(user_id) else {
            return;
        };
        for conn in conns {
            match event {
                UserEvent::Event(frame) => {
                    let room_event = RoomEvent::volatile(frame.clone(), None);
                    conn.enqueue(&room_event);
                }
                UserEvent::Disconnect { reason } => conn.close(close::POLICY, reason),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(id: u128, user: &str, encoding: Encoding) -> Arc<ConnHandle> {
        let queue = OutboundQueue::new(16);
        Arc::new(ConnHandle::new(
            ConnId(id),
            Arc::from(user),
            encoding,
            queue,
        ))
    }

    /// A durable event of room "r" with `seq` (its body does not matter to the hub).
    fn durable(seq: u64) -> RoomEvent {
        let message = ServerMessage::RoomReset {
            room_id: "r".into(),
            epoch: "e".into(),
            seq,
        };
        RoomEvent {
            frame: Arc::new(SharedFrame::new(message)),
            durable: Some((seq, Arc::from("e"))),
            exclude_user: None,
            presence: None,
        }
    }

    fn drained(conn: &ConnHandle) -> Vec<Payload> {
        let mut out = Vec::new();
        conn.queue
            .drain_into(&mut out, 100, usize::MAX, conn.encoding);
        out
    }

    #[test]
    fn fan_out_encodes_once_per_encoding_and_skips_excluded_users() {
        let hub = Hub::default();
        let room: Arc<str> = Arc::from("r");
        let conns = [
            conn(1, "a", Encoding::Json),
            conn(2, "b", Encoding::Json),
            conn(3, "c", Encoding::MsgPack),
            conn(4, "d", Encoding::MsgPack),
            conn(5, "x", Encoding::Json),
        ];
        for c in &conns {
            hub.subscribe(&room, c);
        }
        let frame = Arc::new(SharedFrame::new(ServerMessage::TypingStart {
            room_id: "r".into(),
            user_id: "x".into(),
        }));
        hub.room_event("r", &RoomEvent::volatile(frame, Some(Arc::from("x"))));
        let bytes: Vec<Vec<*const u8>> = conns
            .iter()
            .map(|c| {
                drained(c)
                    .iter()
                    .map(|p| p.bytes(c.encoding).as_ptr())
                    .collect()
            })
            .collect();
        assert_eq!(bytes[0], bytes[1], "JSON recipients share one encoding");
        assert_eq!(
            bytes[2], bytes[3],
            "MessagePack recipients share one encoding"
        );
        assert_ne!(bytes[0], bytes[2]);
        assert!(
            bytes[4].is_empty(),
            "the excluded user's connections get nothing"
        );
        hub.unsubscribe("r", &conns[0]);
        assert_eq!(hub.room_count(), 1);
        for c in &conns[1..] {
            hub.unsubscribe("r", c);
        }
        assert_eq!(
            hub.room_count(),
            0,
            "a room without local subscribers is dropped"
        );
    }

    #[test]
    fn the_sync_buffer_is_bounded_like_the_queue() {
        let hub = Hub::default();
        let room: Arc<str> = Arc::from("r");
        let c = conn(1, "a", Encoding::Json);
        hub.subscribe(&room, &c);
        c.begin_sync(&room);
        for seq in 1..=16 {
            hub.room_event("r", &durable(seq));
        }
        let typing = RoomEvent::volatile(
            Arc::new(SharedFrame::new(ServerMessage::TypingStart {
                room_id: "r".into(),
                user_id: "b".into(),
            })),
            None,
        );
        hub.room_event("r", &typing);
        assert!(
            c.close_reason().is_none(),
            "a volatile event over the bound is dropped"
        );
        hub.room_event("r", &durable(17));
        assert_eq!(
            c.close_reason().map(|r| r.0),
            Some(close::SLOW_CONSUMER),
            "a durable one closes with 4009"
        );
    }

    /// The fan-out task delivers while the connection's own task opens and closes sync windows
    /// (as every publish does): the queue must hold the seqs in order, each once.
    #[test]
    fn deliveries_racing_sync_windows_stay_in_order() {
        const N: u64 = 100_000;
        let hub = Arc::new(Hub::default());
        let room: Arc<str> = Arc::from("r");
        let c = Arc::new(ConnHandle::new(
            ConnId(1),
            Arc::from("a"),
            Encoding::Json,
            OutboundQueue::new(usize::MAX),
        ));
        hub.subscribe(&room, &c);
        let fan_out = {
            let hub = hub.clone();
            std::thread::spawn(move || {
                for seq in 1..=N {
                    hub.room_event("r", &durable(seq));
                }
            })
        };
        let mut seen = Vec::with_capacity(N as usize);
        let mut batch = Vec::new();
        while seen.len() < N as usize {
            c.begin_sync(&room);
            std::hint::spin_loop();
            c.end_sync("r", None, None, None);
            batch.clear();
            c.queue.drain_into(&mut batch, 1024, usize::MAX, c.encoding);
            seen.extend(batch.iter().map(|p| match p {
                Payload::Shared(frame) => match frame.message() {
                    ServerMessage::RoomReset { seq, .. } => *seq,
                    other => panic!("unexpected {other:?}"),
                },
                Payload::Encoded(_) => panic!("only room events are queued"),
            }));
            if fan_out.is_finished() && c.queue.is_empty() && seen.len() < N as usize {
                break;
            }
        }
        fan_out.join().unwrap();
        let expected: Vec<u64> = (1..=N).collect();
        assert!(
            seen == expected,
            "{} of {N} delivered; first out of order at index {:?}",
            seen.len(),
            seen.windows(2).position(|w| w[1] != w[0] + 1)
        );
    }

    #[test]
    fn a_syncing_room_buffers_and_drops_what_the_reply_covers() {
        let hub = Hub::default();
        let room: Arc<str> = Arc::from("r");
        let c = conn(1, "a", Encoding::Json);
        hub.subscribe(&room, &c);
        c.begin_sync(&room);
        for seq in 4..=6 {
            hub.room_event("r", &durable(seq));
        }
        for version in [30, 50, 60] {
            let leave = ServerMessage::PresenceLeave {
                room_id: "r".into(),
                user_id: format!("u{version}"),
            };
            let event = RoomEvent {
                presence: Some(version),
                ..RoomEvent::volatile(Arc::new(SharedFrame::new(leave)), None)
            };
            hub.room_event("r", &event);
        }
        assert!(c.queue.is_empty(), "buffered while syncing");
        c.end_sync("r", Some(5), Some(50), None);
        let out = drained(&c);
        assert_eq!(
            out.len(),
            2,
            "seqs 4 and 5 and presence changes 30 and 50 are covered by the reply; seq 6 and \
             change 60 are live"
        );
    }

    #[test]
    fn a_join_answered_before_the_node_caught_up_skips_what_it_covered() {
        let hub = Hub::default();
        let room: Arc<str> = Arc::from("r");
        let c = conn(1, "a", Encoding::Json);
        hub.subscribe(&room, &c);
        let seqs = |c: &ConnHandle| -> Vec<u64> {
            drained(c)
                .iter()
                .map(|p| match p {
                    Payload::Shared(f) => match f.message() {
                        ServerMessage::RoomReset { seq, .. } => *seq,
                        _ => 0,
                    },
                    Payload::Encoded(_) => 0,
                })
                .collect()
        };
        c.begin_sync(&room);
        hub.room_event("r", &durable(4));
        // The join read position 6 while the node had delivered only up to 4.
        c.end_sync("r", Some(6), None, Some(Arc::from("e")));
        assert!(c.queue.is_empty(), "4 is covered by the reply");
        for seq in 5..=8 {
            hub.room_event("r", &durable(seq));
        }
        assert_eq!(seqs(&c), [7, 8], "5 and 6 arrive late and are not repeated");
        assert_eq!(
            c.syncing_count.load(Ordering::Relaxed),
            0,
            "past the join's position, deliveries take the fast path again"
        );
        // A publish (its own sync) while a join still skips keeps skipping what it covered.
        c.begin_sync(&room);
        c.end_sync("r", Some(10), None, Some(Arc::from("e")));
        c.begin_sync(&room);
        hub.room_event("r", &durable(9));
        c.end_sync("r", None, None, None);
        for seq in 10..=11 {
            hub.room_event("r", &durable(seq));
        }
        assert_eq!(seqs(&c), [11]);
        // Without `behind`, nothing is skipped after the reply.
        c.begin_sync(&room);
        c.end_sync("r", Some(12), None, None);
        hub.room_event("r", &durable(12));
        assert_eq!(seqs(&c), [12]);
    }

    #[test]
    fn a_failed_join_drops_what_it_buffered() {
        let hub = Hub::default();
        let room: Arc<str> = Arc::from("r");
        let c = conn(1, "a", Encoding::Json);
        hub.subscribe(&room, &c);
        c.begin_sync(&room);
        hub.room_event("r", &durable(7));
        c.abort_sync("r");
        hub.unsubscribe("r", &c);
        assert!(
            c.queue.is_empty(),
            "a message of a room the join failed for, without its replay, reads as a gap"
        );
        // Nothing is held back any more: a later join of the room delivers at once.
        hub.subscribe(&room, &c);
        hub.room_event("r", &durable(8));
        assert_eq!(drained(&c).len(), 1);
    }
}
