//! The broker: how gateway nodes share rooms. Every durable message gets its per-room `seq`
//! here, history and idempotency live here, and every room event reaches the nodes that serve
//! the room through here. The gateway holds a `Arc<dyn Broker>` and does not know which
//! implementation it has.
//!
//! - [`Broker`]: the trait (durable and volatile publish, history, subscriptions, presence).
//! - [`EventSink`]: what a broker delivers events to (the gateway's local room table).
//! - [`memory`]: the embedded broker for a single node, with no Redis.
//! - [`redis`]: the broker of a cluster of nodes, on Redis or Redis Cluster.

pub mod memory;
pub mod redis;

use async_trait::async_trait;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use switchyard_protocol::{Member, MemberList, Ref, ServerMessage, SharedFrame};

pub use memory::{MemoryBroker, MemoryConfig};
pub use redis::{DurableFormat, RedisBroker, RedisConfig, RedisServer};

/// Default number of durable messages kept per room for resume.
pub const DEFAULT_HISTORY_SIZE: usize = 1_000;
/// Default age after which a durable message leaves the history, in seconds.
pub const DEFAULT_HISTORY_TTL_S: u64 = 600;
/// How long a `tempId` is remembered, so a retry is not delivered twice.
pub const IDEMPOTENCY_TTL_S: u64 = 300;

/// A broker failure. A publish that fails was not delivered by this call, with one exception:
/// when the broker stops answering after it received the message (a timeout, a dropped
/// connection), the message may still be published. A retry with the same `tempId` is then
/// answered with the first publish's place, so nothing is delivered twice; a publish without a
/// `tempId` (the HTTP API) may be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The broker cannot be reached (answer `unavailable`).
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker answered something unexpected (answer `internal`).
    #[error("broker error: {0}")]
    Internal(String),
}

/// A durable message before the broker gives it a `seq`, an id and a time.
#[derive(Debug, Clone, PartialEq)]
pub struct DurableDraft {
    /// The token's `sub` (never a value the client sent), or `None` for the HTTP API.
    pub user_id: Option<String>,
    pub name: Option<String>,
    /// Idempotency key, with `user_id` and the room: a retry within 5 minutes is not delivered again.
    pub temp_id: Option<Ref>,
    pub body: DurableBody,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DurableBody {
    /// A chat `message` (delivered as `new-message`).
    Message {
        text: String,
        data: Option<serde_json::Value>,
    },
    /// A custom `event` (from `publish` or the HTTP API).
    Event {
        event: String,
        data: serde_json::Value,
    },
}

impl DurableDraft {
    /// The delivered message, once the broker has assigned its place in the room.
    pub fn into_message(self, room_id: &str, id: String, seq: u64, ts: u64) -> ServerMessage {
        match self.body {
            DurableBody::Message { text, data } => ServerMessage::NewMessage {
                room_id: room_id.to_owned(),
                id,
                seq,
                user_id: self.user_id.unwrap_or_default(),
                name: self.name,
                text,
                data,
                ts,
                temp_id: self.temp_id.unwrap_or(Ref::Int(0)),
            },
            DurableBody::Event { event, data } => ServerMessage::Event {
                room_id: Some(room_id.to_owned()),
                event,
                data,
                seq: Some(seq),
                user_id: self.user_id,
                id: Some(id),
                ts: Some(ts),
                temp_id: self.temp_id,
            },
        }
    }
}

/// Where a durable message landed. A duplicate (same user, room and `tempId` within 5 minutes)
/// returns the first publish's place and is not delivered again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub id: String,
    pub seq: u64,
    pub ts: u64,
    pub duplicate: bool,
}

/// A room's durable history from a given seq, read atomically with the room's position.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// Messages with a seq above the one asked for, oldest first, at most `limit`.
    pub messages: Vec<Arc<SharedFrame>>,
    /// The newest seq assigned in the room (0 for none).
    pub seq: u64,
    pub epoch: Arc<str>,
    /// Whether every message after the asked seq was still there (and the epoch matched).
    pub complete: bool,
    /// Whether this node had delivered the room's live messages up to `seq` when the page was
    /// returned. When not (its pub/sub stream lags), messages up to `seq` may still arrive
    /// live after the join has been answered: the joining connection must skip them.
    pub caught_up: bool,
}

/// How a room event is to be delivered.
#[derive(Debug, Clone)]
pub struct RoomEvent {
    pub frame: Arc<SharedFrame>,
    /// `Some` for a durable message: its seq and epoch.
    pub durable: Option<(u64, Arc<str>)>,
    /// Volatile events and presence changes skip the connections of the user who caused them.
    pub exclude_user: Option<Arc<str>>,
    /// `Some` for a presence change (`presence:join`/`leave`): its version, see
    /// [`PresenceSnapshot`].
    pub presence: Option<u64>,
}

impl RoomEvent {
    /// A volatile event (typing, cursors, a reset notice): no seq, not a presence change.
    pub fn volatile(frame: Arc<SharedFrame>, exclude_user: Option<Arc<str>>) -> Self {
        RoomEvent {
            frame,
            durable: None,
            exclude_user,
            presence: None,
        }
    }
}

/// A room's members, read atomically with the version of its presence. Every presence change
/// of a room has a version, larger than any before it; a change with a version at or below the
/// snapshot's is already in the snapshot. When `presence_join` returns, every change up to the
/// snapshot's version has reached the node's [`EventSink`], so a joining connection that holds
/// the room's events back until then can drop the ones the snapshot already covers.
#[derive(Debug, Clone, Default)]
pub struct PresenceSnapshot {
    /// Shared with the node's copy of the room's members (no copy per join).
    pub members: MemberList,
    pub version: u64,
}

/// A message for every connection of one user, on whichever node it is.
#[derive(Debug, Clone)]
pub enum UserEvent {
    Event(Arc<SharedFrame>),
    /// Close every connection of the user with 1008.
    Disconnect {
        reason: String,
    },
}

/// What a broker delivers to: the gateway's table of local subscribers. Calls must not block:
/// they run on the broker's delivery path.
pub trait EventSink: Send + Sync + 'static {
    fn room_event(&self, room_id: &str, event: &RoomEvent);
    fn user_event(&self, user_id: &str, event: &UserEvent);
}

/// Identity of one connection in cluster-wide presence.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PresenceConn {
    pub connection_id: Arc<str>,
    pub user_id: Arc<str>,
}

/// The broker interface. Room and user subscriptions are reference counted by the broker: the
/// gateway calls `subscribe_room` (`subscribe_user`) once per local subscriber (connection) and
/// `unsubscribe_room` (`unsubscribe_user`) once when it goes; the broker subscribes a channel
/// on the first and leaves it on the last. A failed `subscribe_room` holds no reference (do not
/// unsubscribe); a failed `subscribe_user` holds one (the broker subscribes the channel when it
/// can), so `unsubscribe_user` is always called.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Publishes a durable message: dedupe, next seq, history append, delivery to every node
    /// serving the room, in one step so the order is the same everywhere.
    async fn publish_durable(
        &self,
        room_id: &str,
        draft: DurableDraft,
    ) -> Result<Published, BrokerError>;

    /// Publishes a volatile room event (typing, cursors): no seq, no history.
    async fn publish_volatile(
        &self,
        room_id: &str,
        message: ServerMessage,
        exclude_user: Option<Arc<str>>,
    ) -> Result<(), BrokerError>;

    /// Sends an event or command to every connection of a user, on every node.
    async fn publish_user(&self, user_id: &str, event: UserEvent) -> Result<(), BrokerError>;

    /// Reads durable messages with a seq above `since_seq` (none when `None`), with the room's
    /// position. `epoch`, when given, is the epoch the caller's `since_seq` belongs to.
    async fn history(
        &self,
        room_id: &str,
        since_seq: Option<u64>,
        epoch: Option<&str>,
        limit: usize,
    ) -> Result<HistoryPage, BrokerError>;

    /// Waits, at most `within`, until this node has handed durable message `seq` of the room
    /// to its local subscribers. A publisher calls it before its `ack`, so that the ack and its
    /// own message (which the publish holds back until the ack) leave in one frame, not two.
    /// The in-memory broker delivers before `publish_durable` returns: nothing to wait for.
    async fn delivered_locally(&self, _room_id: &str, _seq: u64, _within: Duration) {}

    async fn subscribe_room(&self, room_id: &str) -> Result<(), BrokerError>;
    async fn unsubscribe_room(&self, room_id: &str);
    async fn subscribe_user(&self, user_id: &str) -> Result<(), BrokerError>;
    async fn unsubscribe_user(&self, user_id: &str);

    /// Adds a connection to a room's presence and returns the members. When it is the user's
    /// first connection in the room, the broker publishes `presence:join` to the room.
    async fn presence_join(
        &self,
        room_id: &str,
        conn: &PresenceConn,
        member: Member,
    ) -> Result<PresenceSnapshot, BrokerError>;

    /// Removes a connection from a room's presence. When it was the user's last, the broker
    /// publishes `presence:leave` to the room.
    async fn presence_leave(&self, room_id: &str, conn: &PresenceConn) -> Result<(), BrokerError>;

    async fn presence_members(&self, room_id: &str) -> Result<Vec<Member>, BrokerError>;

    /// Whether the broker can take publishes now (for `/readyz`).
    fn is_ready(&self) -> bool;

    /// Ends the broker's connections, once the node has drained. Nothing may be called
    /// after it. The in-memory broker has nothing to end.
    async fn close(&self) {}
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A random (version 4) UUID from the thread's CSPRNG, for ids made on the hot path: message
/// ids, candidate epochs and connection ids. `Uuid::new_v4` makes a `getrandom` system call
/// for each.
pub fn random_uuid() -> uuid::Uuid {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid()
}

/// A fresh history epoch: 16 hex digits.
pub(crate) fn new_epoch() -> Arc<str> {
    Arc::from(&random_uuid().simple().to_string()[..16])
}

/// The idempotency key of a tempId: `7` and `"7"` are different tempIds.
pub(crate) fn temp_id_key(temp_id: &Ref) -> String {
    match temp_id {
        Ref::Int(i) => format!("#{i}"),
        Ref::Str(s) => format!("'{s}"),
    }
}

/// Members in the order they joined (then by user id).
pub(crate) fn sort_members(members: &mut [Member]) {
    members.sort_by(|a, b| {
        a.joined_at
            .cmp(&b.joined_at)
            .then_with(|| a.user_id.cmp(&b.user_id))
    });
}
