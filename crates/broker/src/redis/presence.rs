//! Cluster-wide presence in Redis (`lua/presence.lua`). Per room: one entry per connection,
//! scored by its expiry; a count of live connections per user; the member of each present user.
//! The first connection of a user publishes `presence:join`, the last to go `presence:leave`.
//!
//! Each node refreshes its own entries every [`LocalPresence::tick`] (the heartbeat) and sweeps
//! expired ones in every room it serves. An entry lives `ttl - tick` past its last refresh, so
//! the members of a node that died without a word leave everyone's view within the presence TTL.

use bytes::Bytes;
use fred::interfaces::ClientLike;
use fred::prelude::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use switchyard_protocol::{Member, MemberList, ServerMessage};

use super::{envelope, room_channel, room_key, Inner};
use crate::{lock, sort_members, BrokerError, PresenceConn, PresenceSnapshot};

/// Entries refreshed per script call (a room with more local connections takes several).
const HEARTBEAT_BATCH: usize = 256;
/// Rooms refreshed at once by the heartbeat.
const HEARTBEAT_CONCURRENCY: usize = 32;

/// This node's connections in each room's presence: what the heartbeat refreshes (and
/// restores, if Redis lost them).
pub(super) struct LocalPresence {
    ttl: Duration,
    /// How long a served room's seq and epoch are kept alive by each heartbeat.
    meta_ttl: Duration,
    rooms: Mutex<HashMap<Arc<str>, ConnEntries>>,
}

/// A room's entries of this node, by connection id.
type ConnEntries = HashMap<Arc<str>, Entry>;

#[derive(Clone)]
struct Entry {
    connection_id: Arc<str>,
    /// `"<connection id> <user id>"` (connection ids have no spaces).
    entry: Bytes,
    user: Bytes,
    member: Bytes,
    join: Bytes,
}

impl LocalPresence {
    pub(super) fn new(ttl: Duration, meta_ttl: Duration) -> Self {
        LocalPresence {
            ttl,
            meta_ttl,
            rooms: Mutex::default(),
        }
    }

    /// Heartbeat period: a sixth of the TTL, between 250 ms and 5 s.
    pub(super) fn tick(&self) -> Duration {
        (self.ttl / 6).clamp(Duration::from_millis(250), Duration::from_secs(5))
    }

    fn args(&self, op: &str) -> Vec<Value> {
        let entry_ttl = self.ttl.saturating_sub(self.tick()).max(self.tick());
        vec![
            op.into(),
            (entry_ttl.as_millis() as i64).into(),
            ((self.ttl * 2).as_millis() as i64).into(),
            (self.meta_ttl.as_secs() as i64).into(),
        ]
    }
}

fn keys(room_id: &str) -> Vec<String> {
    vec![
        room_key(room_id, "presence:conns"),
        room_key(room_id, "presence:counts"),
        room_key(room_id, "presence:members"),
        room_channel(room_id),
        room_key(room_id, "meta"),
        room_key(room_id, "presence:version"),
    ]
}

fn entry_of(conn: &PresenceConn) -> Bytes {
    Bytes::from(format!("{} {}", conn.connection_id, conn.user_id))
}

fn members_of(values: Vec<Value>) -> Result<Vec<Member>, BrokerError> {
    let mut members = values
        .into_iter()
        .map(|v| {
            v.as_str()
                .and_then(|s| serde_json::from_str::<Member>(&s).ok())
                .ok_or_else(|| BrokerError::Internal("malformed presence member in Redis".into()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    sort_members(&mut members);
    Ok(members)
}

pub(super) async fn join(
    inner: &Inner,
    room_id: &str,
    conn: &PresenceConn,
    member: Member,
) -> Result<PresenceSnapshot, BrokerError> {
    let user = conn.user_id.to_string();
    let join = ServerMessage::PresenceJoin {
        room_id: room_id.to_owned(),
        member: member.clone(),
    };
    let entry = Entry {
        connection_id: conn.connection_id.clone(),
        entry: entry_of(conn),
        user: Bytes::from(user.clone()),
        member: Bytes::from(serde_json::to_vec(&member).unwrap_or_default()),
        // No origin: every node delivers it, this one included.
        join: Bytes::from(envelope::volatile("", Some(&user), &join)),
    };
    lock(&inner.presence.rooms)
        .entry(Arc::from(room_id))
        .or_default()
        .insert(conn.connection_id.clone(), entry.clone());
    // With the room's members followed here, Redis need not send them.
    let cached = lock(&inner.rooms)
        .get(room_id)
        .is_some_and(|track| track.members.is_some());
    let (version, members) = match join_script(inner, room_id, &entry, !cached).await {
        Ok(answer) => answer,
        Err(e) => {
            forget(&inner.presence, room_id, conn);
            return Err(e);
        }
    };
    let received = wait_until_received(inner, room_id, version).await;
    if let Some(members) = members {
        let members = MemberList::from(members);
        if received {
            follow_members(inner, room_id, &members, version);
        }
        return Ok(PresenceSnapshot { members, version });
    }
    if received {
        let snapshot = lock(&inner.rooms)
            .get_mut(room_id)
            .and_then(|track| track.members.as_mut())
            .filter(|cache| cache.version >= version)
            .map(MemberCache::snapshot);
        if let Some(snapshot) = snapshot {
            return Ok(snapshot);
        }
    }
    // The followed members were dropped meanwhile (pub/sub resynced), or are behind: ask
    // Redis. The script is idempotent: the entry is only refreshed.
    match join_script(inner, room_id, &entry, true).await {
        Ok((version, Some(members))) => {
            // As for a first join: changes up to the snapshot must have come through first.
            wait_until_received(inner, room_id, version).await;
            Ok(PresenceSnapshot {
                members: members.into(),
                version,
            })
        }
        Ok((_, None)) => Err(BrokerError::Internal(
            "presence script answered no members".into(),
        )),
        Err(e) => {
            forget(&inner.presence, room_id, conn);
            Err(e)
        }
    }
}

/// Runs the join script for `entry`: the room's presence version, and its members if asked.
async fn join_script(
    inner: &Inner,
    room_id: &str,
    entry: &Entry,
    want_members: bool,
) -> Result<(u64, Option<Vec<Member>>), BrokerError> {
    let mut args = inner.presence.args("join");
    args.extend([
        entry.entry.clone().into(),
        entry.user.clone().into(),
        entry.member.clone().into(),
        entry.join.clone().into(),
        if want_members { "1" } else { "0" }.into(),
    ]);
    let reply = inner
        .eval(&inner.scripts.presence, keys(room_id), args)
        .await?
        .into_array();
    let mut values = reply.into_iter();
    let version = values
        .next()
        .and_then(|v| v.as_str().and_then(|s| s.parse::<u64>().ok()))
        .ok_or_else(|| BrokerError::Internal("presence script answered no version".into()))?;
    let members = match want_members {
        true => Some(members_of(values.collect())?),
        false => None,
    };
    Ok((version, members))
}

/// Starts following the room's members from a snapshot current at `version`, if no change
/// newer than it has come through since (it would be missing from the snapshot).
fn follow_members(inner: &Inner, room_id: &str, members: &MemberList, version: u64) {
    if let Some(track) = lock(&inner.rooms).get_mut(room_id) {
        if track.members.is_none() && track.presence == version {
            track.members = Some(MemberCache::new(members, version));
        }
    }
}

/// A room's members as this node follows them: a snapshot read from Redis at `version`, then
/// every change that came through the room's channel after it. It spares each join the whole
/// list from Redis (70 KB to read, parse and sort for a room of 1,000). It is dropped whenever
/// a change may have been missed: pub/sub reconnected or lagged, or the room is no longer
/// served.
pub(super) struct MemberCache {
    /// The newest change (or mark) applied.
    version: u64,
    /// In the order `room-joined` lists them: by join time, then user id.
    ordered: BTreeMap<(u64, String), Member>,
    joined_at: HashMap<String, u64>,
    /// `ordered` as the list every join shares, until the next change.
    listed: Option<MemberList>,
}

impl MemberCache {
    fn new(members: &MemberList, version: u64) -> Self {
        let mut cache = MemberCache {
            version,
            ordered: BTreeMap::new(),
            joined_at: HashMap::with_capacity(members.len()),
            listed: None,
        };
        for member in members.iter() {
            cache.insert(member.clone());
        }
        cache.listed = Some(members.clone());
        cache
    }

    fn insert(&mut self, member: Member) {
        if let Some(before) = self
            .joined_at
            .insert(member.user_id.clone(), member.joined_at)
        {
            self.ordered.remove(&(before, member.user_id.clone()));
        }
        self.ordered
            .insert((member.joined_at, member.user_id.clone()), member);
        self.listed = None;
    }

    /// Applies a change (`presence:join`/`presence:leave`) or a mark (`None`) of `version`;
    /// older ones are already in.
    pub(super) fn apply(&mut self, version: u64, change: Option<&ServerMessage>) {
        if version <= self.version {
            return;
        }
        self.version = version;
        match change {
            Some(ServerMessage::PresenceJoin { member, .. }) => self.insert(member.clone()),
            Some(ServerMessage::PresenceLeave { user_id, .. }) => {
                if let Some(joined_at) = self.joined_at.remove(user_id) {
                    self.ordered.remove(&(joined_at, user_id.clone()));
                    self.listed = None;
                }
            }
            _ => {}
        }
    }

    fn snapshot(&mut self) -> PresenceSnapshot {
        let members = self
            .listed
            .get_or_insert_with(|| {
                MemberList::from(self.ordered.values().cloned().collect::<Vec<_>>())
            })
            .clone();
        PresenceSnapshot {
            members,
            version: self.version,
        }
    }
}

/// Waits until every presence change up to `version` (or the script's mark) has come through
/// the room's channel: pub/sub keeps one channel's order, so nothing older can follow.
async fn wait_until_received(inner: &Inner, room_id: &str, version: u64) -> bool {
    let received = inner
        .wait_for_track(room_id, super::CATCH_UP_WAIT, |track| {
            track.presence >= version
        })
        .await;
    if !received {
        metrics::counter!("switchyard_broker_presence_catch_up_timeouts_total").increment(1);
        tracing::debug!(
            room = room_id,
            version,
            "presence changes were slow to arrive"
        );
    }
    received
}

fn forget(presence: &LocalPresence, room_id: &str, conn: &PresenceConn) {
    let mut rooms = lock(&presence.rooms);
    if let Some(conns) = rooms.get_mut(room_id) {
        conns.remove(&conn.connection_id);
        if conns.is_empty() {
            rooms.remove(room_id);
        }
    }
}

pub(super) async fn leave(
    inner: &Inner,
    room_id: &str,
    conn: &PresenceConn,
) -> Result<(), BrokerError> {
    forget(&inner.presence, room_id, conn);
    let mut args = inner.presence.args("leave");
    args.push(entry_of(conn).into());
    inner
        .eval(&inner.scripts.presence, keys(room_id), args)
        .await
        .map(|_| ())
}

pub(super) async fn members(inner: &Inner, room_id: &str) -> Result<Vec<Member>, BrokerError> {
    let args = inner.presence.args("members");
    members_of(
        inner
            .eval(&inner.scripts.presence, keys(room_id), args)
            .await?
            .into_array(),
    )
}

/// Refreshes this node's entries and sweeps expired ones, in every room the node serves.
pub(super) async fn heartbeat(inner: Weak<Inner>) {
    let period = match inner.upgrade() {
        Some(inner) => inner.presence.tick(),
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if !inner.client().is_connected() {
            continue;
        }
        // Rooms with local subscribers (they want to hear of dead nodes' members leaving) and
        // rooms with local members (their entries must not expire).
        let mut batches: Vec<(Arc<str>, Vec<Entry>)> = Vec::new();
        {
            let present = lock(&inner.presence.rooms);
            let rooms = lock(&inner.rooms);
            for room in rooms.keys() {
                if !present.contains_key(room) {
                    batches.push((room.clone(), Vec::new()));
                }
            }
            for (room, conns) in present.iter() {
                let entries: Vec<Entry> = conns.values().cloned().collect();
                for chunk in entries.chunks(HEARTBEAT_BATCH) {
                    batches.push((room.clone(), chunk.to_vec()));
                }
            }
        }
        for group in batches.chunks(HEARTBEAT_CONCURRENCY) {
            let calls = group.iter().map(|(room, entries)| {
                let mut args = inner.presence.args("heartbeat");
                for e in entries {
                    args.extend([
                        e.entry.clone().into(),
                        e.user.clone().into(),
                        e.member.clone().into(),
                        e.join.clone().into(),
                    ]);
                }
                let inner = &inner;
                async move {
                    if let Err(e) = inner.eval(&inner.scripts.presence, keys(room), args).await {
                        tracing::debug!(room = %room, error = %e, "presence heartbeat failed");
                    }
                    // A connection that left while its refresh was on the way was put back by
                    // it: take it out again.
                    for e in entries {
                        let gone = lock(&inner.presence.rooms)
                            .get(room)
                            .is_none_or(|conns| !conns.contains_key(&e.connection_id));
                        if gone {
                            let mut args = inner.presence.args("leave");
                            args.push(e.entry.clone().into());
                            let _ = inner.eval(&inner.scripts.presence, keys(room), args).await;
                        }
                    }
                }
            });
            futures_util::future::join_all(calls).await;
        }
    }
}
