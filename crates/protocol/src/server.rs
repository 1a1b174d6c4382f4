//! Messages the server sends. Field names are the wire names (camelCase); optional fields are
//! left out when empty, so a frame carries only what it means.

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use crate::codec::{encode_value, Encoding};
use crate::ids::Ref;

/// A room member as presence reports it: one per user, however many connections it has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    pub joined_at: u64,
}

/// A room's members as `room-joined` lists them. A node shares one list with every join of the
/// room until the members change, and encodes it at most once per encoding: in a room of 1,000
/// the list is 70 KB of JSON, which a join then copies instead of encoding it again.
#[derive(Clone, Default)]
pub struct MemberList(Arc<Listed>);

#[derive(Default)]
struct Listed {
    members: Box<[Member]>,
    json: OnceLock<Bytes>,
    msgpack: OnceLock<Bytes>,
}

impl MemberList {
    /// The list encoded as an array, made on first use and kept.
    pub fn encoded(&self, encoding: Encoding) -> &Bytes {
        let cell = match encoding {
            Encoding::Json => &self.0.json,
            Encoding::MsgPack => &self.0.msgpack,
        };
        cell.get_or_init(|| encode_value(&*self.0.members, encoding))
    }
}

impl From<Vec<Member>> for MemberList {
    fn from(members: Vec<Member>) -> Self {
        MemberList(Arc::new(Listed {
            members: members.into_boxed_slice(),
            ..Listed::default()
        }))
    }
}

impl Deref for MemberList {
    type Target = [Member];
    fn deref(&self) -> &[Member] {
        &self.0.members
    }
}

impl std::fmt::Debug for MemberList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for MemberList {
    fn eq(&self, other: &Self) -> bool {
        self[..] == other[..]
    }
}

impl Serialize for MemberList {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self[..].serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for MemberList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<Member>::deserialize(deserializer).map(MemberList::from)
    }
}

/// The `code` of an `error` frame or of a refused `ack`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed or invalid message; the connection stays open.
    BadRequest,
    UnknownType,
    Forbidden,
    NotJoined,
    RateLimited,
    TooLarge,
    /// The broker is down: nothing was published.
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

/// The `error` object of a refused `ack`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AckError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// Every message the server sends, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ServerMessage {
    #[serde(rename = "welcome", rename_all = "camelCase")]
    Welcome {
        connection_id: String,
        user_id: String,
        node: String,
        heartbeat_ms: u64,
    },
    #[serde(rename = "pong", rename_all = "camelCase")]
    Pong {
        ts: u64,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Ref>,
    },
    #[serde(rename = "room-joined", rename_all = "camelCase")]
    RoomJoined {
        room_id: String,
        seq: u64,
        epoch: String,
        /// Shared: a node lists the same members to every join of the room until they change,
        /// and [`encode`](crate::codec::encode) copies their encoding in.
        members: MemberList,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Ref>,
    },
    #[serde(rename = "room-left", rename_all = "camelCase")]
    RoomLeft {
        room_id: String,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Ref>,
    },
    #[serde(rename = "subscribed", rename_all = "camelCase")]
    Subscribed {
        room_id: String,
        seq: u64,
        epoch: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Ref>,
    },
    #[serde(rename = "unsubscribed", rename_all = "camelCase")]
    Unsubscribed {
        room_id: String,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Ref>,
    },
    #[serde(rename = "ack", rename_all = "camelCase")]
    Ack {
        temp_id: Ref,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        server_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ts: Option<u64>,
        success: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<AckError>,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Ref>,
    },
    #[serde(rename = "new-message", rename_all = "camelCase")]
    NewMessage {
        room_id: String,
        id: String,
        /// 0 (not written) only before the seq is assigned: in the body a node hands the
        /// publish script, which assigns the seq and time.
        #[serde(default, skip_serializing_if = "unassigned")]
        seq: u64,
        user_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<Value>,
        /// 0 (not written) only before the time is assigned, like `seq`.
        #[serde(default, skip_serializing_if = "unassigned")]
        ts: u64,
        temp_id: Ref,
    },
    /// An application event: from a client's `publish` or the HTTP API (with `roomId`), or
    /// targeted at a user (without).
    #[serde(rename = "event", rename_all = "camelCase")]
    Event {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room_id: Option<String>,
        event: String,
        data: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ts: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        temp_id: Option<Ref>,
    },
    #[serde(rename = "presence:join", rename_all = "camelCase")]
    PresenceJoin { room_id: String, member: Member },
    #[serde(rename = "presence:leave", rename_all = "camelCase")]
    PresenceLeave { room_id: String, user_id: String },
    #[serde(rename = "presence:sync", rename_all = "camelCase")]
    PresenceSync {
        room_id: String,
        members: Vec<Member>,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Ref>,
    },
    #[serde(rename = "typing:start", rename_all = "camelCase")]
    TypingStart { room_id: String, user_id: String },
    #[serde(rename = "typing:stop", rename_all = "camelCase")]
    TypingStop { room_id: String, user_id: String },
    #[serde(rename = "cursor:move", rename_all = "camelCase")]
    CursorMove {
        room_id: String,
        user_id: String,
        x: f64,
        y: f64,
        color: String,
    },
    #[serde(rename = "cursor:leave", rename_all = "camelCase")]
    CursorLeave { room_id: String, user_id: String },
    /// The room's history was lost (new epoch): forget seen seqs and re-fetch.
    #[serde(rename = "room-reset", rename_all = "camelCase")]
    RoomReset {
        room_id: String,
        epoch: String,
        seq: u64,
    },
    #[serde(rename = "error", rename_all = "camelCase")]
    Error {
        code: ErrorCode,
        message: String,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        reference: Option<Ref>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

/// A seq or time not assigned yet (seqs start at 1).
fn unassigned(n: &u64) -> bool {
    *n == 0
}

impl ServerMessage {
    /// An `error` frame.
    pub fn error(code: ErrorCode, message: impl Into<String>, reference: Option<Ref>) -> Self {
        ServerMessage::Error {
            code,
            message: message.into(),
            reference,
            retry_after_ms: None,
        }
    }

    /// The per-room sequence number of a durable message, if this is one.
    pub fn seq(&self) -> Option<u64> {
        match self {
            ServerMessage::NewMessage { seq, .. } => Some(*seq),
            ServerMessage::Event { seq, .. } => *seq,
            _ => None,
        }
    }

    /// The room a room-scoped message belongs to.
    pub fn room_id(&self) -> Option<&str> {
        match self {
            ServerMessage::NewMessage { room_id, .. }
            | ServerMessage::PresenceJoin { room_id, .. }
            | ServerMessage::PresenceLeave { room_id, .. }
            | ServerMessage::TypingStart { room_id, .. }
            | ServerMessage::TypingStop { room_id, .. }
            | ServerMessage::CursorMove { room_id, .. }
            | ServerMessage::CursorLeave { room_id, .. }
            | ServerMessage::RoomReset { room_id, .. } => Some(room_id),
            ServerMessage::Event { room_id, .. } => room_id.as_deref(),
            _ => None,
        }
    }
}
