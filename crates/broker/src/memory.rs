//! The embedded broker: one node, no Redis. Rooms live in this process, with the same
//! guarantees as the Redis broker has across nodes: per-room seq, bounded history for resume,
//! idempotent publish, per-user presence.
//!
//! Bounds: each room keeps at most `history_size` messages for at most `history_ttl`; each room
//! remembers `tempId`s for 5 minutes and at most [`MAX_TEMP_IDS_PER_ROOM`] of them (the oldest
//! is forgotten first); a room with no subscriber, no presence and nothing left to remember is
//! dropped by a sweep every [`SWEEP_INTERVAL`], so the room table only holds live rooms.

use async_trait::async_trait;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use switchyard_protocol::{now_ms, Member, ServerMessage, SharedFrame};

use crate::{
    lock, new_epoch, sort_members, temp_id_key, Broker, BrokerError, DurableDraft, EventSink,
    HistoryPage, PresenceConn, PresenceSnapshot, Published, RoomEvent, UserEvent,
    DEFAULT_HISTORY_SIZE, DEFAULT_HISTORY_TTL_S, IDEMPOTENCY_TTL_S,
};

/// Most `tempId`s remembered per room; past it the oldest is forgotten (policy: evict oldest).
pub const MAX_TEMP_IDS_PER_ROOM: usize = 100_000;
/// How often idle rooms and expired history are swept.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
pub struct MemoryConfig {
    pub history_size: usize,
    pub history_ttl: Duration,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            history_size: DEFAULT_HISTORY_SIZE,
            history_ttl: Duration::from_secs(DEFAULT_HISTORY_TTL_S),
        }
    }
}

pub struct MemoryBroker {
    inner: Arc<Inner>,
}

struct Inner {
    config: MemoryConfig,
    sink: Arc<dyn EventSink>,
    rooms: Mutex<HashMap<Arc<str>, Arc<Mutex<RoomLog>>>>,
    presence: Mutex<HashMap<Arc<str>, RoomPresence>>,
    /// The version of the last presence change, in any room (so it never goes back when a
    /// room's presence is forgotten).
    presence_version: AtomicU64,
    /// Local subscribers per room: a room with subscribers is never swept.
    subscriptions: Mutex<HashMap<Arc<str>, usize>>,
}

struct RoomLog {
    seq: u64,
    epoch: Arc<str>,
    history: VecDeque<Stored>,
    temp_ids: HashMap<(Arc<str>, String), Published>,
    temp_id_expiry: VecDeque<(Instant, (Arc<str>, String))>,
}

struct Stored {
    seq: u64,
    at: Instant,
    frame: Arc<SharedFrame>,
}

/// A room's present users, by user id.
type RoomPresence = HashMap<Arc<str>, PresentUser>;

struct PresentUser {
    member: Member,
    connections: Vec<Arc<str>>,
}

impl RoomLog {
    fn new() -> Self {
        RoomLog {
            seq: 0,
            epoch: new_epoch(),
            history: VecDeque::new(),
            temp_ids: HashMap::new(),
            temp_id_expiry: VecDeque::new(),
        }
    }

    fn prune(&mut self, config: &MemoryConfig, now: Instant) {
        while self.history.len() > config.history_size
            || self
                .history
                .front()
                .is_some_and(|m| now.duration_since(m.at) > config.history_ttl)
        {
            self.history.pop_front();
        }
        let ttl = Duration::from_secs(IDEMPOTENCY_TTL_S);
        while let Some((at, _)) = self.temp_id_expiry.front() {
            if now.duration_since(*at) <= ttl && self.temp_id_expiry.len() <= MAX_TEMP_IDS_PER_ROOM
            {
                break;
            }
            if let Some((_, key)) = self.temp_id_expiry.pop_front() {
                self.temp_ids.remove(&key);
            }
        }
    }
}

impl MemoryBroker {
    /// Creates the broker and starts its sweeper on the current tokio runtime.
    pub fn new(config: MemoryConfig, sink: Arc<dyn EventSink>) -> Self {
        let inner = Arc::new(Inner {
            config,
            sink,
            rooms: Mutex::default(),
            presence: Mutex::default(),
            presence_version: AtomicU64::new(0),
            subscriptions: Mutex::default(),
        });
        let weak = Arc::downgrade(&inner);
        tokio::spawn(sweep(weak));
        MemoryBroker { inner }
    }

    /// Number of rooms the broker currently holds (for tests and metrics).
    pub fn room_count(&self) -> usize {
        lock(&self.inner.rooms).len()
    }
}

impl Inner {
    fn room(&self, room_id: &str) -> Arc<Mutex<RoomLog>> {
        let mut rooms = lock(&self.rooms);
        if let Some(room) = rooms.get(room_id) {
            return room.clone();
        }
        let room = Arc::new(Mutex::new(RoomLog::new()));
        rooms.insert(Arc::from(room_id), room.clone());
        room
    }

    fn sweep_once(&self) {
        let now = Instant::now();
        let subscribed: Vec<Arc<str>> = lock(&self.subscriptions).keys().cloned().collect();
        let present: Vec<Arc<str>> = lock(&self.presence).keys().cloned().collect();
        let mut rooms = lock(&self.rooms);
        rooms.retain(|id, room| {
            let mut log = lock(room);
            log.prune(&self.config, now);
            let idle = log.history.is_empty() && log.temp_ids.is_empty();
            !(idle && !subscribed.contains(id) && !present.contains(id))
        });
    }
}

async fn sweep(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.tick().await;
    loop {
        tick.tick().await;
        match inner.upgrade() {
            Some(inner) => inner.sweep_once(),
            None => return,
        }
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish_durable(
        &self,
        room_id: &str,
        draft: DurableDraft,
    ) -> Result<Published, BrokerError> {
        let inner = &self.inner;
        let room = inner.room(room_id);
        let mut log = lock(&room);
        let now = Instant::now();
        log.prune(&inner.config, now);
        let key = draft.temp_id.as_ref().map(|t| {
            (
                Arc::<str>::from(draft.user_id.as_deref().unwrap_or("")),
                temp_id_key(t),
            )
        });
        if let Some(first) = key.as_ref().and_then(|k| log.temp_ids.get(k)) {
            return Ok(Published {
                duplicate: true,
                ..first.clone()
            });
        }
        log.seq += 1;
        let published = Published {
            id: crate::random_uuid().simple().to_string(),
            seq: log.seq,
            ts: now_ms(),
            duplicate: false,
        };
        let message =
            draft.into_message(room_id, published.id.clone(), published.seq, published.ts);
        let frame = Arc::new(SharedFrame::new(message));
        log.history.push_back(Stored {
            seq: published.seq,
            at: now,
            frame: frame.clone(),
        });
        if let Some(key) = key {
            log.temp_ids.insert(key.clone(), published.clone());
            log.temp_id_expiry.push_back((now, key));
        }
        log.prune(&inner.config, now);
        // Delivered under the room's lock: concurrent publishers reach every queue in seq order.
        let event = RoomEvent {
            frame,
            durable: Some((published.seq, log.epoch.clone())),
            exclude_user: None,
            presence: None,
        };
        inner.sink.room_event(room_id, &event);
        Ok(published)
    }

    async fn publish_volatile(
        &self,
        room_id: &str,
        message: ServerMessage,
        exclude_user: Option<Arc<str>>,
    ) -> Result<(), BrokerError> {
        let event = RoomEvent::volatile(Arc::new(SharedFrame::new(message)), exclude_user);
        self.inner.sink.room_event(room_id, &event);
        Ok(())
    }

    async fn publish_user(&self, user_id: &str, event: UserEvent) -> Result<(), BrokerError> {
        self.inner.sink.user_event(user_id, &event);
        Ok(())
    }

    async fn history(
        &self,
        room_id: &str,
        since_seq: Option<u64>,
        epoch: Option<&str>,
        limit: usize,
    ) -> Result<HistoryPage, BrokerError> {
        let room = self.inner.room(room_id);
        let mut log = lock(&room);
        log.prune(&self.inner.config, Instant::now());
        let mut page = HistoryPage {
            messages: Vec::new(),
            seq: log.seq,
            epoch: log.epoch.clone(),
            complete: true,
            caught_up: true,
        };
        let Some(since) = since_seq else {
            return Ok(page);
        };
        if epoch.is_some_and(|e| *e != *log.epoch) || since > log.seq {
            page.complete = false;
            return Ok(page);
        }
        let oldest = log.history.front().map_or(log.seq + 1, |m| m.seq);
        page.complete = oldest <= since + 1;
        page.messages = log
            .history
            .iter()
            .filter(|m| m.seq > since)
            .take(limit)
            .map(|m| m.frame.clone())
            .collect();
        Ok(page)
    }

    async fn subscribe_room(&self, room_id: &str) -> Result<(), BrokerError> {
        *lock(&self.inner.subscriptions)
            .entry(Arc::from(room_id))
            .or_insert(0) += 1;
        Ok(())
    }

    async fn unsubscribe_room(&self, room_id: &str) {
        let mut subs = lock(&self.inner.subscriptions);
        if let Some(n) = subs.get_mut(room_id) {
            *n -= 1;
            if *n == 0 {
                subs.remove(room_id);
            }
        }
    }

    async fn subscribe_user(&self, _user_id: &str) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn unsubscribe_user(&self, _user_id: &str) {}

    async fn presence_join(
        &self,
        room_id: &str,
        conn: &PresenceConn,
        member: Member,
    ) -> Result<PresenceSnapshot, BrokerError> {
        let mut presence = lock(&self.inner.presence);
        let members = {
            let room = presence.entry(Arc::from(room_id)).or_default();
            let user = room
                .entry(conn.user_id.clone())
                .or_insert_with(|| PresentUser {
                    member: member.clone(),
                    connections: Vec::new(),
                });
            let first = user.connections.is_empty();
            if !user.connections.contains(&conn.connection_id) {
                user.connections.push(conn.connection_id.clone());
            }
            if first {
                let message = ServerMessage::PresenceJoin {
                    room_id: room_id.to_owned(),
                    member: user.member.clone(),
                };
                self.presence_change(room_id, message, &conn.user_id);
            }
            sorted_members(room)
        };
        // Read under the lock that orders the changes: every change up to it was delivered.
        let version = self.inner.presence_version.load(Ordering::Relaxed);
        drop(presence);
        Ok(PresenceSnapshot {
            members: members.into(),
            version,
        })
    }

    async fn presence_leave(&self, room_id: &str, conn: &PresenceConn) -> Result<(), BrokerError> {
        let mut presence = lock(&self.inner.presence);
        let Some(room) = presence.get_mut(room_id) else {
            return Ok(());
        };
        let Some(user) = room.get_mut(&conn.user_id) else {
            return Ok(());
        };
        user.connections.retain(|c| *c != conn.connection_id);
        if user.connections.is_empty() {
            room.remove(&conn.user_id);
            if room.is_empty() {
                presence.remove(room_id);
            }
            let message = ServerMessage::PresenceLeave {
                room_id: room_id.to_owned(),
                user_id: conn.user_id.to_string(),
            };
            self.presence_change(room_id, message, &conn.user_id);
        }
        Ok(())
    }

    async fn presence_members(&self, room_id: &str) -> Result<Vec<Member>, BrokerError> {
        Ok(lock(&self.inner.presence)
            .get(room_id)
            .map(sorted_members)
            .unwrap_or_default())
    }

    fn is_ready(&self) -> bool {
        true
    }
}

impl MemoryBroker {
    /// Delivers a presence change with the next version. Called under the presence lock, so
    /// changes reach the sink in version order.
    fn presence_change(&self, room_id: &str, message: ServerMessage, user_id: &Arc<str>) {
        let version = self.inner.presence_version.fetch_add(1, Ordering::Relaxed) + 1;
        let event = RoomEvent {
            presence: Some(version),
            ..RoomEvent::volatile(Arc::new(SharedFrame::new(message)), Some(user_id.clone()))
        };
        self.inner.sink.room_event(room_id, &event);
    }
}

fn sorted_members(room: &RoomPresence) -> Vec<Member> {
    let mut members: Vec<Member> = room.values().map(|u| u.member.clone()).collect();
    sort_members(&mut members);
    members
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DurableBody;
    use switchyard_protocol::Ref;

    #[derive(Default)]
    struct Collect(Mutex<Vec<(String, RoomEvent)>>);
    impl EventSink for Collect {
        fn room_event(&self, room_id: &str, event: &RoomEvent) {
            lock(&self.0).push((room_id.to_owned(), event.clone()));
        }
        fn user_event(&self, _: &str, _: &UserEvent) {}
    }

    fn draft(user: &str, temp: &str) -> DurableDraft {
        DurableDraft {
            user_id: Some(user.into()),
            name: None,
            temp_id: Some(Ref::Str(temp.into())),
            body: DurableBody::Message {
                text: "hi".into(),
                data: None,
            },
        }
    }

    #[tokio::test]
    async fn seq_dedupe_and_history() {
        let sink = Arc::new(Collect::default());
        let broker = MemoryBroker::new(
            MemoryConfig {
                history_size: 3,
                ..Default::default()
            },
            sink.clone(),
        );
        let a = broker.publish_durable("r", draft("u", "1")).await.unwrap();
        let b = broker.publish_durable("r", draft("u", "2")).await.unwrap();
        let again = broker.publish_durable("r", draft("u", "1")).await.unwrap();
        let other_user = broker.publish_durable("r", draft("v", "1")).await.unwrap();
        assert_eq!((a.seq, b.seq, other_user.seq), (1, 2, 3));
        assert!(again.duplicate && again.seq == 1 && again.id == a.id);
        assert_eq!(lock(&sink.0).len(), 3, "a duplicate is not delivered again");
        assert_eq!(
            broker
                .publish_durable("s", draft("u", "1"))
                .await
                .unwrap()
                .seq,
            1,
            "seq is per room"
        );
        let mut int_seven = draft("u", "x");
        int_seven.temp_id = Some(Ref::Int(7));
        let int = broker.publish_durable("t", int_seven).await.unwrap();
        let string = broker.publish_durable("t", draft("u", "7")).await.unwrap();
        assert!(
            !int.duplicate && !string.duplicate,
            "7 and \"7\" are different tempIds"
        );

        let page = broker.history("r", Some(1), None, 10).await.unwrap();
        assert!(page.complete);
        assert_eq!(
            page.messages
                .iter()
                .map(|m| m.message().seq().unwrap())
                .collect::<Vec<_>>(),
            vec![2, 3]
        );
        broker.publish_durable("r", draft("u", "3")).await.unwrap();
        let page = broker.history("r", Some(0), None, 10).await.unwrap();
        assert!(!page.complete, "seq 1 fell out of a 3-message history");
        let page = broker
            .history("r", Some(2), Some("other-epoch"), 10)
            .await
            .unwrap();
        assert!(!page.complete && page.messages.is_empty());
        let page = broker.history("r", Some(99), None, 10).await.unwrap();
        assert!(
            !page.complete,
            "a seq from the future means the history was lost"
        );
    }

    #[tokio::test]
    async fn presence_is_per_user() {
        let sink = Arc::new(Collect::default());
        let broker = MemoryBroker::new(MemoryConfig::default(), sink.clone());
        let member = Member {
            user_id: "u".into(),
            name: None,
            avatar: None,
            joined_at: 1,
        };
        let tab = |c: &str| PresenceConn {
            connection_id: c.into(),
            user_id: "u".into(),
        };
        for c in ["c1", "c2", "c3"] {
            assert_eq!(
                broker
                    .presence_join("r", &tab(c), member.clone())
                    .await
                    .unwrap()
                    .members
                    .len(),
                1
            );
        }
        broker.presence_leave("r", &tab("c1")).await.unwrap();
        broker.presence_leave("r", &tab("c2")).await.unwrap();
        assert_eq!(broker.presence_members("r").await.unwrap().len(), 1);
        broker.presence_leave("r", &tab("c3")).await.unwrap();
        assert!(broker.presence_members("r").await.unwrap().is_empty());
        let kinds: Vec<_> = lock(&sink.0)
            .iter()
            .map(|(_, e)| match e.frame.message() {
                ServerMessage::PresenceJoin { .. } => "join",
                ServerMessage::PresenceLeave { .. } => "leave",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, vec!["join", "leave"]);
    }
}
