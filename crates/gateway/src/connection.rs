//! One WebSocket connection, from `welcome` to close. Two halves run side by side in one task:
//! the reader decodes frames and answers each client message, the writer drains the outbound
//! queue into frames (batches when messages wait), sends heartbeats and the close frame.
//!
//! A connection closes through [`ConnHandle::close`] from anywhere (slow consumer, drain,
//! disconnect command, heartbeat timeout, token expiry): the writer flushes what is queued,
//! sends the close frame, and the reader waits briefly for the peer's close reply.

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use governor::clock::{Clock, MonotonicClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tracing::Instrument;

use switchyard_broker::{BrokerError, DurableBody, DurableDraft, PresenceConn};
use switchyard_protocol::codec::{batch_len, encode, write_batch};
use switchyard_protocol::ids::is_reserved_room;
use switchyard_protocol::{
    decode_frame, now_ms, parse_message, AckError, ClientMessage, Encoding, ErrorCode, FrameError,
    Member, MemberList, Ref, Rejection, ServerMessage,
};

use crate::auth::Identity;
use crate::config::RateBudget;
use crate::hub::{close, ConnHandle, ConnId};
use crate::metrics::{self, metrics};
use crate::outbound::{Coalescer, Payload};
use crate::server::App;
use crate::upgrade::Socket;

/// The server stops typing for a user after this long without a new `typing:start`.
pub const TYPING_TIMEOUT: Duration = Duration::from_secs(5);
/// After this many rate-limited messages in a row, the connection is closed with 1008.
pub const ABUSE_STRIKES: u32 = 100;
/// Invalid messages (undecodable frames, or messages that fail validation) in a row after
/// which the connection is closed with 1008. Any valid message starts the count again.
pub const INVALID_STRIKES: u32 = 100;
/// How long the writer may take to flush the queue when closing.
pub const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the reader waits for the peer's close reply after the server closed.
pub const CLOSE_REPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// Most bytes the writer puts in one batched frame (a single message may be larger).
pub const BATCH_MAX_BYTES: usize = 64 * 1024;
/// Largest frame the writer sends: a larger message goes out in fragments of this size.
/// tungstenite's write buffer keeps the capacity of the largest frame it ever wrote, for the
/// connection's whole life; unfragmented, one 70 KB `room-joined` (1,000 members) would stay
/// in the connection's memory as 70 KB. A fan-out batch (about 20 messages) fits in one.
pub const FRAGMENT_BYTES: usize = 8 * 1024;
/// Longest a join or subscribe waits for its turn (`SWITCHYARD_MAX_CONCURRENT_JOINS`) before it
/// is refused with `unavailable`, to be tried again.
pub const JOIN_WAIT_MAX: Duration = Duration::from_secs(10);
/// Longest a publisher's `ack` waits for the node to deliver the publisher's own message, so
/// that both leave in one frame (one write, not two). It is often there already, and otherwise
/// usually comes within a millisecond or two; when the node's pub/sub is behind, the ack goes
/// after this long regardless (`switchyard_broker_echo_wait_timeouts_total`).
pub const ECHO_WAIT: Duration = Duration::from_millis(5);
/// The `retryAfterMs` of a join refused for that.
const JOIN_RETRY_AFTER_MS: u64 = 1_000;

/// What this connection is doing in one room.
#[derive(Default)]
struct RoomState {
    /// Joined (in presence), not only subscribed.
    present: bool,
    typing_until: Option<Instant>,
    cursor: bool,
}

struct Session {
    app: Arc<App>,
    conn: Arc<ConnHandle>,
    identity: Identity,
    rooms: HashMap<Arc<str>, RoomState>,
    rate: Limiter,
    volatile_rate: Limiter,
    strikes: u32,
    /// Invalid messages in a row (see [`INVALID_STRIKES`]).
    invalid_in_row: u32,
}

/// A connection's rate limiter. Its clock is the standard monotonic one, which takes no room
/// and costs nothing to make: governor's default (quanta) reads CPUID for every limiter made,
/// slow in a VM and paid twice per handshake.
type Limiter =
    RateLimiter<NotKeyed, InMemoryState, MonotonicClock, NoOpMiddleware<std::time::Instant>>;

fn limiter(budget: RateBudget) -> Limiter {
    let per = NonZeroU32::new(budget.per_sec).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(budget.burst).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct_with_clock(Quota::per_second(per).allow_burst(burst), MonotonicClock)
}

/// Serves an upgraded socket until it closes.
///
/// A plain function returning the connection's future, not an `async fn`: the setup runs now,
/// and the future holds only what the connection needs while it waits. (An `async fn` keeps
/// its arguments, the socket included, in its state as well as what they became: several
/// hundred bytes more in every idle connection.)
pub fn serve(
    app: Arc<App>,
    socket: Socket,
    identity: Identity,
    encoding: Encoding,
) -> impl std::future::Future<Output = ()> + Send {
    let (sink, stream) = socket.split();
    let id = ConnId::random();
    let conn = Arc::new(ConnHandle::new(
        id,
        identity.user_id.clone(),
        encoding,
        crate::outbound::OutboundQueue::new(app.config.queue_max),
    ));
    // At debug level: an enabled span keeps its formatted fields (about 300 bytes) for the
    // connection's life. The warnings below name the connection themselves.
    let span = tracing::debug_span!("connection", id = %id, user = %identity.user_id, node = %app.config.node_id);
    // Boxed, and made here: moved into the future below it would take its room twice.
    let writer = Box::pin(write_loop(
        app.clone(),
        conn.clone(),
        sink,
        identity.expires_at,
    ));
    let mut session = Session {
        rate: limiter(app.config.rate),
        volatile_rate: limiter(app.config.volatile_rate),
        app: app.clone(),
        conn: conn.clone(),
        identity,
        rooms: HashMap::new(),
        strikes: 0,
        invalid_in_row: 0,
    };
    async move {
        conn.last_seen_ms.store(app.elapsed_ms(), Ordering::Relaxed);
        session.reply(&ServerMessage::Welcome {
            connection_id: conn.id.to_string(),
            user_id: session.identity.user_id.to_string(),
            node: app.config.node_id.clone(),
            heartbeat_ms: app.config.heartbeat.as_millis() as u64,
        });
        app.hub.register(&conn);
        metrics().connections.increment(1.0);
        metrics().connections_accepted.increment(1);
        // Once per connection: the broker counts them and subscribes the user's channel once.
        if let Err(e) = app.broker.subscribe_user(&conn.user_id).await {
            tracing::warn!(connection = %conn.id, user = %conn.user_id, error = %e, "could not subscribe to the user's channel");
        }
        tracing::debug!(parent: &span, "connected");

        async { tokio::join!(session.run(stream), writer) }
            .instrument(span.clone())
            .await;

        app.hub.unregister(&conn);
        app.broker.unsubscribe_user(&conn.user_id).await;
        metrics().connections.decrement(1.0);
        let (code, reason) = conn
            .close_reason()
            .cloned()
            .unwrap_or((close::NORMAL, String::new()));
        tracing::debug!(parent: &span, code, reason = %reason, "closed");
    }
}

/// What woke a connection's reader.
enum Woke {
    Closing,
    TypingDue,
    Read(Option<Result<Message, WsError>>),
}

impl Session {
    async fn run(&mut self, mut stream: SplitStream<Socket>) {
        let conn = self.conn.clone();
        // A timer only while someone types: an idle connection holds none.
        let mut typing: Option<(Instant, Pin<Box<tokio::time::Sleep>>)> = None;
        loop {
            match (self.next_typing_deadline(), &mut typing) {
                (None, _) => typing = None,
                (Some(at), Some((armed, sleep))) if *armed != at => {
                    *armed = at;
                    sleep.as_mut().reset(at);
                }
                (Some(_), Some(_)) => {}
                (Some(at), None) => typing = Some((at, Box::pin(sleep_until(at)))),
            }
            let woke = tokio::select! {
                _ = conn.closed() => Woke::Closing,
                _ = typing_timer(&mut typing) => Woke::TypingDue,
                frame = stream.next() => Woke::Read(frame),
            };
            let go_on = match woke {
                Woke::Closing => false,
                Woke::TypingDue => {
                    Box::pin(self.expire_typing()).await;
                    true
                }
                // Boxed: the handling of a message (a publish, a join) is a large future, and
                // held inline it would be part of every idle connection's memory.
                Woke::Read(frame) => Box::pin(self.on_read(frame, &mut stream)).await,
            };
            if !go_on {
                break;
            }
        }
        Box::pin(self.leave_all()).await;
        if conn.is_closing() {
            // The server closed: give the peer a moment to answer the close frame, so it reads
            // the close code before the TCP connection goes.
            let _ = Box::pin(tokio::time::timeout(CLOSE_REPLY_TIMEOUT, async {
                while stream.next().await.is_some() {}
            }))
            .await;
        } else {
            self.conn.close(close::NORMAL, "");
        }
    }

    /// Handles what the socket gave; false when the connection is done.
    async fn on_read(
        &mut self,
        frame: Option<Result<Message, WsError>>,
        stream: &mut SplitStream<Socket>,
    ) -> bool {
        let message = match frame {
            None => return false,
            Some(Err(e)) => {
                let (code, reason) = read_error_close(e);
                self.conn.close(code, &reason);
                return false;
            }
            Some(Ok(message)) => message,
        };
        self.conn
            .last_seen_ms
            .store(self.app.elapsed_ms(), Ordering::Relaxed);
        match message {
            Message::Text(text) => self.on_frame(text.as_bytes(), false).await,
            Message::Binary(bytes) => self.on_frame(&bytes, true).await,
            // tungstenite answers pings itself; a frame is only ever something we send.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            Message::Close(_) => {
                // tungstenite has queued the answering close frame; reading once more writes
                // it (a send would be refused now) and then ends the stream.
                let _ = tokio::time::timeout(CLOSE_REPLY_TIMEOUT, stream.next()).await;
                return false;
            }
        }
        true
    }

    /// Queues a reply for this connection alone, encoded now in its encoding.
    fn reply(&self, message: &ServerMessage) {
        if self
            .conn
            .queue
            .push(Payload::Encoded(encode(message, self.conn.encoding)))
            .is_err()
        {
            self.conn.close_slow_consumer();
        }
    }

    fn reject(&self, reference: Option<Ref>, rejection: Rejection) {
        let message = match rejection.temp_id {
            Some(temp_id) => ServerMessage::Ack {
                temp_id,
                server_id: None,
                seq: None,
                ts: None,
                success: false,
                error: Some(AckError {
                    code: rejection.code,
                    message: rejection.message,
                    retry_after_ms: rejection.retry_after_ms,
                }),
                reference,
            },
            None => ServerMessage::Error {
                code: rejection.code,
                message: rejection.message,
                reference,
                retry_after_ms: rejection.retry_after_ms,
            },
        };
        self.reply(&message);
    }

    async fn on_frame(&mut self, payload: &[u8], binary: bool) {
        let values = match decode_frame(payload, binary, self.app.config.limits.max_batch) {
            Ok(values) => values,
            Err(e) => {
                metrics().messages_in_invalid.increment(1);
                let code = match e {
                    FrameError::BatchTooLarge { .. } => ErrorCode::TooLarge,
                    FrameError::Malformed(_) | FrameError::EmptyBatch => ErrorCode::BadRequest,
                };
                self.reply(&ServerMessage::error(code, e.to_string(), None));
                self.invalid();
                return;
            }
        };
        for value in values {
            let inbound = parse_message(value, &self.app.config.limits);
            match inbound.message {
                Ok(message) => {
                    self.invalid_in_row = 0;
                    metrics().message_in(message.type_name());
                    if let Err(rejection) = self.handle(message, inbound.reference.clone()).await {
                        self.reject(inbound.reference, rejection);
                    }
                }
                Err(rejection) => {
                    metrics().messages_in_invalid.increment(1);
                    self.reject(inbound.reference, rejection);
                    self.invalid();
                }
            }
            if self.conn.is_closing() {
                return;
            }
        }
    }

    async fn handle(
        &mut self,
        message: ClientMessage,
        reference: Option<Ref>,
    ) -> Result<(), Rejection> {
        match message {
            ClientMessage::Ping => self.reply(&ServerMessage::Pong {
                ts: now_ms(),
                reference,
            }),
            ClientMessage::JoinRoom {
                room_id,
                since_seq,
                epoch,
            } => {
                self.enter(room_id, since_seq, epoch, true, reference)
                    .await?
            }
            ClientMessage::Subscribe {
                room_id,
                since_seq,
                epoch,
            } => {
                self.enter(room_id, since_seq, epoch, false, reference)
                    .await?
            }
            ClientMessage::LeaveRoom { room_id } => {
                if !self.rooms.get(room_id.as_str()).is_some_and(|r| r.present) {
                    return Err(not_joined(&room_id));
                }
                self.exit(&room_id).await;
                self.reply(&ServerMessage::RoomLeft { room_id, reference });
            }
            ClientMessage::Unsubscribe { room_id } => {
                if !self.rooms.contains_key(room_id.as_str()) {
                    return Err(Rejection::new(
                        ErrorCode::NotJoined,
                        format!("not subscribed to {room_id}"),
                    ));
                }
                self.exit(&room_id).await;
                self.reply(&ServerMessage::Unsubscribed { room_id, reference });
            }
            ClientMessage::Message {
                room_id,
                temp_id,
                text,
                data,
            } => {
                let draft = DurableDraft {
                    user_id: Some(self.identity.user_id.to_string()),
                    name: self.identity.name.clone(),
                    temp_id: Some(temp_id.clone()),
                    body: DurableBody::Message { text, data },
                };
                self.publish(room_id, temp_id, draft, true, reference).await;
            }
            ClientMessage::Publish {
                room_id,
                temp_id,
                event,
                data,
            } => {
                if !self.identity.can_publish {
                    return Err(with_temp_id(
                        Rejection::new(
                            ErrorCode::Forbidden,
                            "this token may not publish events (publish claim)",
                        ),
                        temp_id,
                    ));
                }
                let draft = DurableDraft {
                    user_id: Some(self.identity.user_id.to_string()),
                    name: None,
                    temp_id: Some(temp_id.clone()),
                    body: DurableBody::Event { event, data },
                };
                self.publish(room_id, temp_id, draft, false, reference)
                    .await;
            }
            ClientMessage::TypingStart { room_id } => {
                self.present_in(&room_id)?.typing_until = Some(Instant::now() + TYPING_TIMEOUT);
                let user_id = self.identity.user_id.to_string();
                self.volatile(
                    &room_id,
                    ServerMessage::TypingStart {
                        room_id: room_id.clone(),
                        user_id,
                    },
                )
                .await;
            }
            ClientMessage::TypingStop { room_id } => {
                self.present_in(&room_id)?.typing_until = None;
                let user_id = self.identity.user_id.to_string();
                self.volatile(
                    &room_id,
                    ServerMessage::TypingStop {
                        room_id: room_id.clone(),
                        user_id,
                    },
                )
                .await;
            }
            ClientMessage::CursorMove { room_id, x, y } => {
                self.present_in(&room_id)?.cursor = true;
                let user_id = self.identity.user_id.to_string();
                let color = cursor_color(&user_id).to_owned();
                self.volatile(
                    &room_id,
                    ServerMessage::CursorMove {
                        room_id: room_id.clone(),
                        user_id,
                        x,
                        y,
                        color,
                    },
                )
                .await;
            }
            ClientMessage::CursorLeave { room_id } => {
                self.present_in(&room_id)?.cursor = false;
                let user_id = self.identity.user_id.to_string();
                self.volatile(
                    &room_id,
                    ServerMessage::CursorLeave {
                        room_id: room_id.clone(),
                        user_id,
                    },
                )
                .await;
            }
            ClientMessage::PresenceSync { room_id } => {
                self.authorize(&room_id)?;
                let members = self
                    .app
                    .broker
                    .presence_members(&room_id)
                    .await
                    .map_err(broker_rejection)?;
                self.reply(&ServerMessage::PresenceSync {
                    room_id,
                    members,
                    reference,
                });
            }
        }
        Ok(())
    }

    /// Checks the `rooms` claim and the reserved prefix; a refusal leaves no trace.
    fn authorize(&self, room_id: &str) -> Result<(), Rejection> {
        if is_reserved_room(room_id) {
            return Err(Rejection::new(
                ErrorCode::Forbidden,
                format!("{room_id}: rooms starting `user:` are reserved"),
            ));
        }
        if !self.identity.may_enter(room_id) {
            return Err(Rejection::new(
                ErrorCode::Forbidden,
                format!("this token does not allow room {room_id}"),
            ));
        }
        Ok(())
    }

    /// `join-room` (with presence) or `subscribe` (without), with an optional resume.
    async fn enter(
        &mut self,
        room_id: String,
        since_seq: Option<u64>,
        epoch: Option<String>,
        presence: bool,
        reference: Option<Ref>,
    ) -> Result<(), Rejection> {
        self.authorize(&room_id)?;
        let room: Arc<str> = Arc::from(room_id.as_str());
        let app = self.app.clone();
        let already = self.rooms.contains_key(&room);
        if !already && self.rooms.len() >= app.config.max_rooms_per_connection {
            return Err(Rejection::new(
                ErrorCode::Forbidden,
                format!(
                    "room limit reached: a connection may be in at most {} rooms",
                    app.config.max_rooms_per_connection
                ),
            ));
        }
        // Held until the reply is queued. A storm of resumes takes its turns, so the node's
        // live deliveries are not stuck behind thousands of joins at once.
        let _turn = take_join_turn(&app.joins).await?;
        if !already {
            app.broker
                .subscribe_room(&room)
                .await
                .map_err(broker_rejection)?;
            self.conn.begin_sync(&room);
            app.hub.subscribe(&room, &self.conn);
        } else if since_seq.is_some() {
            // A resume of a room the connection is already in: hold live events back as for a
            // first join. Without `sinceSeq` nothing is replayed and events keep flowing.
            self.conn.begin_sync(&room);
        }
        // Read the history (and the room's position) after subscribing: whatever is published
        // meanwhile waits in the sync buffer and is deduplicated against it by seq.
        let page = match app
            .broker
            .history(&room, since_seq, epoch.as_deref(), app.config.history_size)
            .await
        {
            Ok(page) => page,
            Err(e) => {
                self.fail_sync(&room, already).await;
                return Err(broker_rejection(e));
            }
        };
        app.hub.note_epoch(&room, &page.epoch);
        let state = self.rooms.entry(room.clone()).or_default();
        let newly_present = presence && !state.present;
        let (members, presence_floor) = if presence {
            let member = Member {
                user_id: self.identity.user_id.to_string(),
                name: self.identity.name.clone(),
                avatar: self.identity.avatar.clone(),
                joined_at: now_ms(),
            };
            match app
                .broker
                .presence_join(&room, &self.presence_conn(), member)
                .await
            {
                Ok(snapshot) => {
                    if newly_present {
                        if let Some(state) = self.rooms.get_mut(&room) {
                            state.present = true;
                            metrics().presence_members.increment(1.0);
                        }
                    }
                    (snapshot.members, Some(snapshot.version))
                }
                Err(e) => {
                    if !already {
                        self.rooms.remove(&room);
                    }
                    self.fail_sync(&room, already).await;
                    return Err(broker_rejection(e));
                }
            }
        } else {
            (MemberList::default(), None)
        };
        let recovered = since_seq.map(|_| page.complete);
        let mut floor = page.seq;
        if page.complete && since_seq.is_some() {
            floor = page
                .messages
                .last()
                .and_then(|m| m.seq())
                .unwrap_or(0)
                .max(page.seq);
            self.conn.queue.push_replay(page.messages);
        }
        let seq = page.seq;
        let epoch = page.epoch.to_string();
        self.reply(&if presence {
            ServerMessage::RoomJoined {
                room_id,
                seq,
                epoch,
                members,
                recovered,
                reference,
            }
        } else {
            ServerMessage::Subscribed {
                room_id,
                seq,
                epoch,
                recovered,
                reference,
            }
        });
        let behind = (!page.caught_up).then(|| page.epoch.clone());
        self.conn
            .end_sync(&room, Some(floor), presence_floor, behind);
        Ok(())
    }

    /// Undoes a join that failed. A first join leaves nothing behind: no subscription, and
    /// none of the room's events that arrived meanwhile (the client, told the join failed,
    /// must not see a message of the room without the replay before it). A resume of a room
    /// the connection is already in goes on live: what arrived meanwhile is queued.
    async fn fail_sync(&mut self, room: &Arc<str>, already: bool) {
        if already {
            self.conn.end_sync(room, None, None, None);
            return;
        }
        self.conn.abort_sync(room);
        self.app.hub.unsubscribe(room, &self.conn);
        self.app.broker.unsubscribe_room(room).await;
    }

    /// Leaves a room entirely: typing and cursor stop, presence, subscription.
    async fn exit(&mut self, room_id: &str) {
        let Some((room, state)) = self.rooms.remove_entry(room_id) else {
            return;
        };
        let app = self.app.clone();
        let user_id = self.identity.user_id.to_string();
        if state.typing_until.is_some() {
            let message = ServerMessage::TypingStop {
                room_id: room_id.to_owned(),
                user_id: user_id.clone(),
            };
            self.volatile(room_id, message).await;
        }
        if state.cursor {
            self.volatile(
                room_id,
                ServerMessage::CursorLeave {
                    room_id: room_id.to_owned(),
                    user_id,
                },
            )
            .await;
        }
        if state.present {
            metrics().presence_members.decrement(1.0);
            if let Err(e) = app
                .broker
                .presence_leave(&room, &self.presence_conn())
                .await
            {
                tracing::warn!(connection = %self.conn.id, user = %self.conn.user_id, room = %room, error = %e, "presence leave failed; the entry expires with its TTL");
            }
        }
        app.hub.unsubscribe(&room, &self.conn);
        // A join that still skips messages it covered: nothing more of the room comes.
        self.conn.abort_sync(&room);
        app.broker.unsubscribe_room(&room).await;
    }

    async fn leave_all(&mut self) {
        let rooms: Vec<Arc<str>> = self.rooms.keys().cloned().collect();
        for room in rooms {
            self.exit(&room).await;
        }
    }

    fn presence_conn(&self) -> PresenceConn {
        PresenceConn {
            connection_id: Arc::from(self.conn.id.to_string()),
            user_id: self.identity.user_id.clone(),
        }
    }

    /// Publishes a durable message and answers with its `ack`.
    async fn publish(
        &mut self,
        room_id: String,
        temp_id: Ref,
        draft: DurableDraft,
        needs_presence: bool,
        reference: Option<Ref>,
    ) {
        let refused = |r: Rejection| with_temp_id(r, temp_id.clone());
        let check = match self.rooms.get(room_id.as_str()) {
            Some(room) if room.present || !needs_presence => Ok(()),
            _ => Err(refused(not_joined(&room_id))),
        };
        let check = check.and_then(|_| self.take_budget().map_err(refused));
        if let Err(rejection) = check {
            self.reject(reference, rejection);
            return;
        }
        // Hold this connection's room events until the ack is queued: the sender sees its ack
        // first, then its own message (which may arrive from the broker before the reply). The
        // ack waits, briefly, for that message: both then go out in one frame.
        let room: Arc<str> = Arc::from(room_id.as_str());
        self.conn.begin_sync(&room);
        let started = std::time::Instant::now();
        let span = tracing::debug_span!("publish", room = %room_id, temp_id = ?temp_id);
        let result = self
            .app
            .broker
            .publish_durable(&room_id, draft)
            .instrument(span)
            .await;
        metrics()
            .broker_publish_seconds
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(published) => {
                if !published.duplicate {
                    self.app
                        .broker
                        .delivered_locally(&room_id, published.seq, ECHO_WAIT)
                        .await;
                }
                self.reply(&ServerMessage::Ack {
                    temp_id,
                    server_id: Some(published.id),
                    seq: Some(published.seq),
                    ts: Some(published.ts),
                    success: true,
                    error: None,
                    reference,
                });
            }
            Err(e) => self.reject(reference, refused(broker_rejection(e))),
        }
        self.conn.end_sync(&room, None, None, None);
    }

    /// Counts an invalid message; too many in a row close the connection (1008).
    fn invalid(&mut self) {
        self.invalid_in_row += 1;
        if self.invalid_in_row >= INVALID_STRIKES {
            self.conn
                .close(close::POLICY, "too many invalid messages in a row");
        }
    }

    /// Takes one unit of the durable budget; repeated refusals close the connection (1008).
    fn take_budget(&mut self) -> Result<(), Rejection> {
        match self.rate.check() {
            Ok(()) => {
                self.strikes = 0;
                Ok(())
            }
            Err(not_until) => {
                metrics::rate_limited("durable");
                self.strikes += 1;
                if self.strikes >= ABUSE_STRIKES {
                    self.conn
                        .close(close::POLICY, "flooding past the rate limit");
                }
                let wait = not_until.wait_time_from(MonotonicClock.now());
                let mut r = Rejection::new(ErrorCode::RateLimited, "message rate limit exceeded");
                r.retry_after_ms = Some(wait.as_millis().max(1) as u64);
                Err(r)
            }
        }
    }

    /// The state of a room this connection has joined (typing and cursors need presence).
    fn present_in(&mut self, room_id: &str) -> Result<&mut RoomState, Rejection> {
        self.rooms
            .get_mut(room_id)
            .filter(|r| r.present)
            .ok_or_else(|| not_joined(room_id))
    }

    /// Publishes a typing or cursor event within the volatile budget. Past the budget the
    /// event is dropped silently (and counted): the next one supersedes it anyway. A stop or
    /// leave is never dropped, so no typing indicator or cursor is left hanging.
    async fn volatile(&mut self, room_id: &str, message: ServerMessage) {
        if self.volatile_rate.check().is_err()
            && !matches!(
                message,
                ServerMessage::TypingStop { .. } | ServerMessage::CursorLeave { .. }
            )
        {
            metrics::rate_limited("volatile");
            return;
        }
        let exclude = Some(self.identity.user_id.clone());
        if let Err(e) = self
            .app
            .broker
            .publish_volatile(room_id, message, exclude)
            .await
        {
            tracing::debug!(room = %room_id, error = %e, "volatile event not published");
        }
    }

    fn next_typing_deadline(&self) -> Option<Instant> {
        self.rooms.values().filter_map(|r| r.typing_until).min()
    }

    async fn expire_typing(&mut self) {
        let now = Instant::now();
        let expired: Vec<Arc<str>> = self
            .rooms
            .iter_mut()
            .filter(|(_, r)| r.typing_until.is_some_and(|t| t <= now))
            .map(|(id, r)| {
                r.typing_until = None;
                id.clone()
            })
            .collect();
        for room_id in expired {
            let user_id = self.identity.user_id.to_string();
            let message = ServerMessage::TypingStop {
                room_id: room_id.to_string(),
                user_id,
            };
            self.volatile(&room_id, message).await;
        }
    }
}

/// Fires when the typing timer does; never when there is none.
async fn typing_timer(timer: &mut Option<(Instant, Pin<Box<tokio::time::Sleep>>)>) {
    match timer {
        Some((_, sleep)) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

fn not_joined(room_id: &str) -> Rejection {
    Rejection::new(ErrorCode::NotJoined, format!("not joined to {room_id}"))
}

fn with_temp_id(mut rejection: Rejection, temp_id: Ref) -> Rejection {
    rejection.temp_id = Some(temp_id);
    rejection
}

/// Waits, in arrival order, until fewer than `SWITCHYARD_MAX_CONCURRENT_JOINS` joins run on the
/// node; refused after [`JOIN_WAIT_MAX`].
async fn take_join_turn(
    turns: &tokio::sync::Semaphore,
) -> Result<tokio::sync::SemaphorePermit<'_>, Rejection> {
    if let Ok(permit) = turns.try_acquire() {
        return Ok(permit);
    }
    let m = metrics();
    m.joins_waiting.increment(1.0);
    let turn = tokio::time::timeout(JOIN_WAIT_MAX, turns.acquire()).await;
    m.joins_waiting.decrement(1.0);
    match turn {
        Ok(Ok(permit)) => Ok(permit),
        _ => {
            m.joins_refused_busy.increment(1);
            let mut rejection = Rejection::new(
                ErrorCode::Unavailable,
                "the node is busy with other joins; try again",
            );
            rejection.retry_after_ms = Some(JOIN_RETRY_AFTER_MS);
            Err(rejection)
        }
    }
}

fn broker_rejection(e: BrokerError) -> Rejection {
    match e {
        BrokerError::Unavailable(m) => {
            Rejection::new(ErrorCode::Unavailable, format!("broker unavailable: {m}"))
        }
        BrokerError::Internal(m) => {
            Rejection::new(ErrorCode::Internal, format!("broker error: {m}"))
        }
    }
}

/// A colour per user, the same on every node and every connection.
pub fn cursor_color(user_id: &str) -> &'static str {
    const PALETTE: [&str; 12] = [
        "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324",
        "#469990", "#800000", "#808000", "#000075",
    ];
    let hash = switchyard_protocol::fnv1a(user_id.bytes());
    PALETTE[(hash % PALETTE.len() as u64) as usize]
}

/// The close code for a read error: oversized frame 1009, invalid UTF-8 1007, protocol 1002.
fn read_error_close(error: WsError) -> (u16, String) {
    use tokio_tungstenite::tungstenite::error::CapacityError;
    match error {
        WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => (
            close::TOO_BIG,
            format!("frame of {size} bytes is over the {max_size}-byte limit"),
        ),
        WsError::Capacity(e) => (close::TOO_BIG, e.to_string()),
        WsError::Utf8(_) => (close::INVALID_DATA, "invalid UTF-8 in a text frame".into()),
        WsError::Protocol(e) => (close::PROTOCOL, e.to_string()),
        _ => (close::INTERNAL, "read error".into()),
    }
}

/// The writer half: batches the queue into frames, pings, and closes.
/// The writer (a plain function returning its future, like [`serve`], so the future holds its
/// state once).
fn write_loop(
    app: Arc<App>,
    conn: Arc<ConnHandle>,
    mut sink: SplitSink<Socket, Message>,
    expires_at: u64,
) -> impl std::future::Future<Output = ()> + Send {
    // One timer for the heartbeat and the token's expiry. The heartbeat ticks twice per
    // interval: every tick checks for silence (so a silent peer is closed within 2 to 2.5
    // intervals), every other tick sends the ping.
    let expires =
        Instant::now() + Duration::from_millis((expires_at * 1000).saturating_sub(now_ms()));
    let mut coalescer = Coalescer::new(app.config.batch_delay, Instant::now());
    async move {
        let config = &app.config;
        let mut ticks = 0u64;
        // Made in here, not captured: a captured timer would be held twice once pinned.
        let period = || config.heartbeat / 2;
        let timer = sleep_until((Instant::now() + period()).min(expires));
        tokio::pin!(timer);
        loop {
            tokio::select! {
                biased;
                // Also woken by `close`.
                _ = conn.queue.notified() => {
                    if conn.is_closing() {
                        break;
                    }
                    if let Some(at) = coalescer.write_at(Instant::now()) {
                        // Only a half-full queue (or a close) cuts the wait short: the pushes
                        // before that need not wake this task.
                        conn.queue.wake_from(conn.queue.max() / 2);
                        let go_on = Box::pin(coalesce(&conn, at)).await;
                        conn.queue.wake_from(0);
                        if !go_on {
                            break;
                        }
                    }
                    // Boxed, like the reader's message handling: an idle connection keeps only
                    // what it needs to wait.
                    match Box::pin(write_queued(&conn, &mut sink, config.batch_max)).await {
                        Ok(messages) => coalescer.wrote(Instant::now(), messages),
                        Err(_) => {
                            conn.close(close::GOING_AWAY, "write failed");
                            break;
                        }
                    }
                }
                _ = &mut timer => {
                    let now = Instant::now();
                    if now >= expires {
                        conn.close(close::TOKEN_EXPIRED, "token expired");
                        break;
                    }
                    let silent_ms = app.elapsed_ms().saturating_sub(conn.last_seen_ms.load(Ordering::Relaxed));
                    if silent_ms > 2 * config.heartbeat.as_millis() as u64 {
                        conn.close(close::GOING_AWAY, "heartbeat timeout");
                        break;
                    }
                    conn.queue.release_if_empty();
                    ticks += 1;
                    if ticks.is_multiple_of(2) && Box::pin(sink.send(Message::Ping(Bytes::new()))).await.is_err() {
                        conn.close(close::GOING_AWAY, "write failed");
                        break;
                    }
                    timer.as_mut().reset((now + period()).min(expires));
                }
            }
        }
        Box::pin(close_writer(&conn, &mut sink, config.batch_max)).await;
    }
}

/// The writer's last steps: flush what is queued (not for a slow consumer), then the close
/// frame with the connection's close code.
async fn close_writer(conn: &ConnHandle, sink: &mut SplitSink<Socket, Message>, batch_max: usize) {
    let (code, reason) = conn
        .close_reason()
        .cloned()
        .unwrap_or((close::NORMAL, String::new()));
    if code != close::SLOW_CONSUMER {
        let _ =
            tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, write_queued(conn, sink, batch_max)).await;
    }
    conn.queue.close(true);
    let frame = CloseFrame {
        code: code.into(),
        reason: Utf8Bytes::from(reason),
    };
    let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
}

/// Waits until `at` so that more messages share the next write, or less when the queue fills to
/// half its bound (the wait must never make a client a slow consumer). False: the connection
/// is closing.
async fn coalesce(conn: &ConnHandle, at: Instant) -> bool {
    let sleep = sleep_until(at);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            biased;
            _ = conn.closed() => return false,
            _ = &mut sleep => return true,
            _ = conn.queue.notified() => {
                if conn.queue.len() >= conn.queue.max() / 2 {
                    return true;
                }
            }
        }
    }
}

/// Writes everything queued, as frames of at most `batch_max` messages; returns how many
/// messages were written. The batch is allocated per call: an idle connection holds none.
async fn write_queued(
    conn: &ConnHandle,
    sink: &mut SplitSink<Socket, Message>,
    batch_max: usize,
) -> Result<usize, WsError> {
    let mut written = 0;
    // Sized once for what is waiting, not grown message by message.
    let mut batch = Vec::with_capacity(conn.queue.len().clamp(1, batch_max));
    loop {
        batch.clear();
        conn.queue
            .drain_into(&mut batch, batch_max, BATCH_MAX_BYTES, conn.encoding);
        if batch.is_empty() {
            return Ok(written);
        }
        written += batch.len();
        let payload = frame_payload(conn.encoding, &batch);
        let m = metrics();
        m.frames_out.increment(1);
        m.messages_out.increment(batch.len() as u64);
        m.batch_size.record(batch.len() as f64);
        if payload.len() <= FRAGMENT_BYTES {
            sink.send(message(conn.encoding, payload)).await?;
        } else {
            send_fragments(sink, conn.encoding, payload).await?;
        }
    }
}

/// Sends a message larger than [`FRAGMENT_BYTES`] as fragments of that size (RFC 6455 §5.4);
/// the peer receives one message. Each fragment is written before the next is made, so
/// tungstenite's write buffer never holds more than one.
async fn send_fragments(
    sink: &mut SplitSink<Socket, Message>,
    encoding: Encoding,
    payload: Bytes,
) -> Result<(), WsError> {
    let mut opcode = OpCode::Data(match encoding {
        Encoding::Json => Data::Text,
        Encoding::MsgPack => Data::Binary,
    });
    let mut start = 0;
    while start < payload.len() {
        let end = (start + FRAGMENT_BYTES).min(payload.len());
        let fragment = Frame::message(payload.slice(start..end), opcode, end == payload.len());
        sink.send(Message::Frame(fragment)).await?;
        opcode = OpCode::Data(Data::Continue);
        start = end;
    }
    Ok(())
}

/// The bytes of one frame from queued messages: the message itself, or an array of them. A
/// single shared message is sent without a copy.
fn frame_payload(encoding: Encoding, batch: &[Payload]) -> Bytes {
    if let [one] = batch {
        return match one {
            Payload::Shared(frame) => frame.encoded(encoding).clone(),
            Payload::Encoded(bytes) => bytes.clone(),
        };
    }
    let parts_len = batch.iter().map(|p| p.bytes(encoding).len()).sum();
    let mut out = Vec::with_capacity(batch_len(encoding, batch.len(), parts_len));
    write_batch(encoding, batch.iter().map(|p| p.bytes(encoding)), &mut out);
    Bytes::from(out)
}

/// A whole message in the connection's encoding: text for JSON, binary for MessagePack.
fn message(encoding: Encoding, payload: Bytes) -> Message {
    match encoding {
        // Our JSON encoder only writes UTF-8; the check is the price of a safe conversion.
        Encoding::Json => match Utf8Bytes::try_from(payload) {
            Ok(text) => Message::Text(text),
            Err(_) => Message::Text(Utf8Bytes::from_static(
                r#"{"type":"error","code":"internal","message":"encoding"}"#,
            )),
        },
        Encoding::MsgPack => Message::Binary(payload),
    }
}

/// One frame from queued messages, as the writer makes it. Public for the benchmarks
/// (`benches/hot_paths.rs`).
pub fn build_frame(encoding: Encoding, batch: &[Payload]) -> Message {
    message(encoding, frame_payload(encoding, batch))
}

#[cfg(test)]
mod tests {
    use super::{cursor_color, take_join_turn, JOIN_RETRY_AFTER_MS, JOIN_WAIT_MAX};
    use switchyard_protocol::ErrorCode;
    use tokio::sync::Semaphore;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn a_join_waits_its_turn_then_is_refused_with_a_retry_hint() {
        let turns = Semaphore::new(1);
        let held = take_join_turn(&turns).await.unwrap();
        // The next one waits, and gets the turn as soon as it is given back.
        let started = Instant::now();
        let (waited, _) = tokio::join!(take_join_turn(&turns), async {
            tokio::time::sleep(JOIN_WAIT_MAX / 2).await;
            drop(held);
        });
        assert!(waited.is_ok());
        assert_eq!(started.elapsed(), JOIN_WAIT_MAX / 2);
        // With every turn taken for longer than the bound: refused, with when to come back.
        let _kept = waited.unwrap();
        let started = Instant::now();
        let refused = take_join_turn(&turns).await.unwrap_err();
        assert_eq!(started.elapsed(), JOIN_WAIT_MAX);
        assert_eq!(refused.code, ErrorCode::Unavailable);
        assert_eq!(refused.retry_after_ms, Some(JOIN_RETRY_AFTER_MS));
    }

    #[test]
    fn cursor_colors_are_stable() {
        assert_eq!(cursor_color("alice"), cursor_color("alice"));
        assert!(cursor_color("alice").starts_with('#'));
    }
}
