//! The receive path: one task reads every pub/sub message of the node, in order, and hands it to
//! the gateway's hub. It never loses a durable message quietly:
//!
//! - a seq gap in a room (a message lost between Redis and this node: Redis cut the subscriber
//!   for its output buffer, a reconnect) is filled from the room's history stream before the
//!   message that revealed it is delivered;
//! - after a reconnect, or when fred's broadcast channel lagged, every channel is subscribed
//!   again and every room caught up from its stream;
//! - the canary (a message to the node's own channel every [`CANARY_INTERVAL`]) proves the path
//!   works end to end; when it stops coming back the node is not ready and reconnects pub/sub.

use fred::interfaces::ClientLike;
use fred::prelude::Server;
use fred::types::Message;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::broadcast::{error::RecvError, Receiver};

use switchyard_protocol::{ServerMessage, SharedFrame};

use super::envelope::{self, Envelope};
use super::{room_of_channel, Inner, Track, CANARY_INTERVAL, CANARY_TIMEOUT};
use crate::{lock, RoomEvent, UserEvent};

/// How often a pending resubscription is tried while pub/sub is down.
const RESYNC_RETRY: Duration = Duration::from_millis(100);
/// Rooms caught up at once after a reconnect or a lag.
const CATCH_UP_CONCURRENCY: usize = 32;

pub(super) async fn run(
    inner: Weak<Inner>,
    mut messages: Receiver<Message>,
    mut reconnects: Receiver<Server>,
    mut errors: Receiver<(fred::error::Error, Option<Server>)>,
) {
    // Subscribe what the node holds once pub/sub is up, and again after every reconnect.
    let mut resync = true;
    // Whether the rooms' followed members were dropped for the pending resync.
    let mut members_dropped = false;
    let mut retry = tokio::time::interval(RESYNC_RETRY);
    loop {
        if resync && !members_dropped {
            // A presence change may have been missed: joins read members from Redis again.
            let Some(inner) = inner.upgrade() else { return };
            inner.forget_members();
            members_dropped = true;
        }
        tokio::select! {
            received = messages.recv() => match received {
                Ok(message) => {
                    let Some(inner) = inner.upgrade() else { return };
                    inner.receive(message).await;
                }
                Err(RecvError::Lagged(missed)) => {
                    metrics::counter!("switchyard_broker_lagged_messages_total").increment(missed);
                    tracing::warn!(missed, "the pub/sub receiver lagged; catching every room up from its history");
                    resync = true;
                }
                Err(RecvError::Closed) => return,
            },
            reconnected = reconnects.recv() => match reconnected {
                Ok(_) | Err(RecvError::Lagged(_)) => {
                    // fred announces the first connection too: count only the ones after it.
                    let Some(inner) = inner.upgrade() else { return };
                    if inner.canary_seen_ms.swap(0, std::sync::atomic::Ordering::Relaxed) > 0 {
                        metrics::counter!("switchyard_broker_reconnects_total").increment(1);
                    }
                    resync = true;
                }
                Err(RecvError::Closed) => return,
            },
            error = errors.recv() => match error {
                Ok((e, _)) => {
                    // The pub/sub connection broke: not ready until it is back, subscribed
                    // again and the canary has made the round trip.
                    let Some(inner) = inner.upgrade() else { return };
                    inner.canary_seen_ms.store(0, std::sync::atomic::Ordering::Relaxed);
                    metrics::counter!("switchyard_broker_connection_errors_total").increment(1);
                    tracing::warn!(error = %e, "Redis pub/sub connection error; reconnecting");
                    resync = true;
                }
                Err(RecvError::Lagged(_)) => resync = true,
                Err(RecvError::Closed) => return,
            },
            _ = retry.tick() => {
                let Some(inner) = inner.upgrade() else { return };
                if !inner.subscriber.is_connected() {
                    inner.canary_seen_ms.store(0, std::sync::atomic::Ordering::Relaxed);
                }
                if inner.channels.resync_wanted.swap(false, std::sync::atomic::Ordering::Relaxed) {
                    resync = true;
                }
                if !resync {
                    inner.retry_behind().await;
                    continue;
                }
                if !inner.subscriber.is_connected() {
                    continue;
                }
                match inner.channels.resubscribe().await {
                    Ok(channels) => {
                        resync = false;
                        members_dropped = false;
                        // Anything followed while the channels were down may lack a change.
                        inner.forget_members();
                        // Prove the path at once rather than at the next canary tick.
                        let _ = inner
                            .spublish(inner.canary_channel.clone(), envelope::canary(0))
                            .await;
                        let rooms = inner.catch_up_all().await;
                        tracing::info!(channels, rooms, "pub/sub subscribed; rooms caught up");
                    }
                    Err(e) => tracing::warn!(error = %e, "resubscribing failed; retrying"),
                }
            }
        }
    }
}

/// What to do with a durable message, given what the node delivered of its room.
enum Next {
    Deliver(Arc<str>),
    Duplicate,
    /// Read the stream first (the reason is for the log).
    CatchUp(&'static str),
}

impl Inner {
    async fn receive(&self, message: Message) {
        let Some(bytes) = message.value.as_bytes() else {
            return self.malformed(&message.channel, "not a string");
        };
        let envelope = match envelope::decode(bytes) {
            Ok(envelope) => envelope,
            Err(e) => return self.malformed(&message.channel, &e.to_string()),
        };
        let channel: &str = &message.channel;
        match envelope {
            Envelope::Durable { seq, epoch, body } => {
                if let Some(room) = room_of_channel(channel) {
                    self.durable(room, seq, &epoch, body).await;
                }
            }
            Envelope::Volatile {
                origin,
                exclude_user,
                message,
            } => {
                // Our own volatile events were delivered locally when published.
                if origin != self.instance {
                    if let Some(room) = room_of_channel(channel) {
                        self.volatile(room, message, exclude_user.map(Arc::from));
                    }
                }
            }
            Envelope::PresenceJoin {
                version,
                exclude_user,
                message,
            } => {
                if let Some(room) = room_of_channel(channel) {
                    self.presence_change(room, version, message, exclude_user.map(Arc::from));
                }
            }
            Envelope::PresenceLeave { version, user_id } => {
                if let Some(room) = room_of_channel(channel) {
                    let message = ServerMessage::PresenceLeave {
                        room_id: room.to_owned(),
                        user_id: user_id.clone(),
                    };
                    self.presence_change(room, version, message, Some(Arc::from(user_id)));
                }
            }
            Envelope::PresenceMark { version } => {
                if let Some(room) = room_of_channel(channel) {
                    self.presence_seen(room, version, None);
                }
            }
            Envelope::UserEvent { user_id, message } => {
                let event = UserEvent::Event(Arc::new(SharedFrame::new(message)));
                self.sink.user_event(&user_id, &event);
            }
            Envelope::UserDisconnect { user_id, reason } => {
                self.sink
                    .user_event(&user_id, &UserEvent::Disconnect { reason });
            }
            Envelope::Canary { .. } => {
                if channel == self.canary_channel {
                    self.canary_seen_ms
                        .store(self.elapsed_ms(), std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    }

    fn malformed(&self, channel: &str, why: &str) {
        metrics::counter!("switchyard_broker_malformed_messages_total").increment(1);
        tracing::warn!(channel, why, "ignoring a malformed pub/sub message");
    }

    fn volatile(&self, room_id: &str, message: ServerMessage, exclude_user: Option<Arc<str>>) {
        let event = RoomEvent::volatile(Arc::new(SharedFrame::new(message)), exclude_user);
        self.sink.room_event(room_id, &event);
    }

    fn presence_change(
        &self,
        room_id: &str,
        version: u64,
        message: ServerMessage,
        exclude_user: Option<Arc<str>>,
    ) {
        let event = RoomEvent {
            presence: Some(version),
            ..RoomEvent::volatile(Arc::new(SharedFrame::new(message)), exclude_user)
        };
        // Delivered before it is marked seen: a join waiting for it finds it in its buffer.
        self.sink.room_event(room_id, &event);
        self.presence_seen(room_id, version, Some(event.frame.message()));
    }

    /// Notes how far the room's presence changes have reached this node, for
    /// [`presence::join`](super::presence::join) to wait on, and applies the change to the
    /// room's followed members.
    fn presence_seen(&self, room_id: &str, version: u64, change: Option<&ServerMessage>) {
        self.change_track(room_id, |track| {
            track.presence = track.presence.max(version);
            if let Some(members) = &mut track.members {
                members.apply(version, change);
            }
        });
    }

    async fn durable(&self, room_id: &str, seq: u64, epoch: &str, body: envelope::Placed) {
        let next = {
            let mut rooms = lock(&self.rooms);
            let Some(track) = rooms.get_mut(room_id) else {
                return;
            };
            match (&track.epoch, track.seq) {
                (Some(known), Some(last)) if **known == *epoch => {
                    if seq <= last {
                        Next::Duplicate
                    } else if seq == last + 1 {
                        Next::Deliver(known.clone())
                    } else {
                        Next::CatchUp("seq gap")
                    }
                }
                // Another epoch: the room's history was lost (Redis restarted empty), or this
                // is a leftover of the old one. Only Redis knows which: ask it.
                (Some(_), Some(_)) => Next::CatchUp("epoch change"),
                // The room's first subscriber is still reading its position: the stream has
                // this message, the catch-up after it delivers it.
                _ => Next::CatchUp("not tracking yet"),
            }
        };
        match next {
            Next::Deliver(epoch) => {
                self.deliver(room_id, seq, epoch, Arc::new(body.into_frame(seq)))
            }
            Next::Duplicate => {}
            Next::CatchUp(why) => {
                if why == "seq gap" {
                    metrics::counter!("switchyard_broker_seq_gaps_total").increment(1);
                    tracing::warn!(
                        room = room_id,
                        seq,
                        "seq gap on the pub/sub path; filling it from the history stream"
                    );
                }
                if !self.catch_up(room_id).await {
                    // The message is in the stream: the retry delivers it in order.
                    self.behind(room_id);
                    return;
                }
                // Delivered by the catch-up, or live right after it; a message of another
                // epoch than the room's current one is dropped.
                if let Some(epoch) = self.is_next(room_id, seq, epoch, true) {
                    self.deliver(room_id, seq, epoch, Arc::new(body.into_frame(seq)));
                }
            }
        }
    }

    /// Whether `seq` is the room's next message (`contiguous`), or at least newer, in the
    /// room's current epoch; returns that epoch when it is. [`deliver`](Self::deliver) moves
    /// the room's position.
    fn is_next(&self, room_id: &str, seq: u64, epoch: &str, contiguous: bool) -> Option<Arc<str>> {
        let rooms = lock(&self.rooms);
        let track = rooms.get(room_id)?;
        let last = track.seq?;
        let next = if contiguous {
            last + 1 == seq
        } else {
            last < seq
        };
        if !next || track.epoch.as_deref() != Some(epoch) {
            return None;
        }
        track.epoch.clone()
    }

    /// Hands a durable message to the local subscribers, then moves the room's position to it.
    /// In that order: a join waits until the position reaches the seq it read, and must then
    /// find every message up to it already in its buffer, none still on its way (it would
    /// come after the join's reply, a second time). Only this task moves the position, so
    /// the next message is checked against it.
    fn deliver(&self, room_id: &str, seq: u64, epoch: Arc<str>, frame: Arc<SharedFrame>) {
        let event = RoomEvent {
            frame,
            durable: Some((seq, epoch.clone())),
            exclude_user: None,
            presence: None,
        };
        self.sink.room_event(room_id, &event);
        self.change_track(room_id, |track| {
            if track.epoch.as_ref() == Some(&epoch) && track.seq.is_some_and(|last| last < seq) {
                track.seq = Some(seq);
            }
        });
    }

    /// Delivers, in order, what the room's history holds past what the node delivered. When
    /// the room's epoch changed (its history was lost), the new epoch is delivered from its
    /// start. Returns false when the history could not be read (the room stays behind).
    async fn catch_up(&self, room_id: &str) -> bool {
        for _ in 0..2 {
            let (since, epoch) = {
                let rooms = lock(&self.rooms);
                match rooms.get(room_id) {
                    Some(Track {
                        seq: Some(seq),
                        epoch: Some(epoch),
                        ..
                    }) => (*seq, epoch.clone()),
                    // Its first subscriber is still reading the position: try again later.
                    Some(_) => return false,
                    // No longer subscribed: nothing to do.
                    None => return true,
                }
            };
            let page = match self
                .read_history(room_id, Some(since), Some(&epoch), self.config.history_size)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(room = room_id, error = %e, "could not read the history to fill a gap; retrying");
                    return false;
                }
            };
            if page.epoch != epoch {
                tracing::info!(
                    room = room_id,
                    "the room's history was lost; a new epoch starts"
                );
                // A join that read the new epoch waits for the node to be in it.
                let moved = self.change_track(room_id, |track| {
                    let ours = track.epoch.as_deref() == Some(&*epoch);
                    if ours {
                        track.epoch = Some(page.epoch.clone());
                        track.seq = Some(0);
                    }
                    ours
                });
                if moved != Some(true) {
                    return true;
                }
                continue;
            }
            if !page.complete {
                metrics::counter!("switchyard_broker_unrecoverable_gaps_total").increment(1);
                tracing::warn!(
                    room = room_id,
                    since,
                    "part of a gap is no longer in the history"
                );
            }
            metrics::counter!("switchyard_broker_gap_filled_messages_total")
                .increment(page.messages.len() as u64);
            for frame in page.messages {
                let Some(seq) = frame.seq() else {
                    continue;
                };
                if let Some(epoch) = self.is_next(room_id, seq, &epoch, false) {
                    self.deliver(room_id, seq, epoch, frame);
                }
            }
            return true;
        }
        true
    }

    /// Remembers a room that could not be caught up; the receive task retries it.
    fn behind(&self, room_id: &str) {
        lock(&self.behind).insert(Arc::from(room_id));
    }

    /// Catches every tracked room up; returns how many there were.
    async fn catch_up_all(&self) -> usize {
        let rooms: Vec<Arc<str>> = lock(&self.rooms)
            .iter()
            .filter(|(_, t)| t.seq.is_some())
            .map(|(room, _)| room.clone())
            .collect();
        self.catch_up_rooms(&rooms).await;
        rooms.len()
    }

    /// Catches rooms up, a few at a time; those that fail stay behind for the next try.
    async fn catch_up_rooms(&self, rooms: &[Arc<str>]) {
        for chunk in rooms.chunks(CATCH_UP_CONCURRENCY) {
            let done =
                futures_util::future::join_all(chunk.iter().map(|room| self.catch_up(room))).await;
            for (room, ok) in chunk.iter().zip(done) {
                if !ok {
                    self.behind(room);
                }
            }
        }
    }

    /// Retries the rooms left behind, once Redis answers.
    async fn retry_behind(&self) {
        if !self.client().is_connected() {
            return;
        }
        let rooms: Vec<Arc<str>> = lock(&self.behind).drain().collect();
        if !rooms.is_empty() {
            self.catch_up_rooms(&rooms).await;
        }
    }
}

/// Publishes the node's canary and watches it come back.
pub(super) async fn canary(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(CANARY_INTERVAL);
    let mut nonce = 0u64;
    let mut last_forced: Option<Instant> = None;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        nonce += 1;
        if let Err(e) = inner
            .spublish(inner.canary_channel.clone(), envelope::canary(nonce))
            .await
        {
            tracing::debug!(error = %e, "canary not sent");
            continue;
        }
        let seen = inner
            .canary_seen_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        let now = inner.elapsed_ms();
        let timeout = CANARY_TIMEOUT.as_millis() as u64;
        let silent = now.saturating_sub(seen.max(1)) >= timeout && now >= timeout;
        let may_force = last_forced.is_none_or(|t| t.elapsed() >= CANARY_TIMEOUT);
        if silent && may_force && inner.subscriber.is_connected() {
            metrics::counter!("switchyard_broker_canary_failures_total").increment(1);
            tracing::warn!(
                silent_ms = now.saturating_sub(seen),
                "the canary did not come back: pub/sub is broken; reconnecting it"
            );
            last_forced = Some(Instant::now());
            let subscriber = inner.subscriber.clone();
            tokio::spawn(async move {
                if let Err(e) = subscriber.force_reconnection().await {
                    tracing::warn!(error = %e, "forced pub/sub reconnection failed");
                }
            });
        }
    }
}
