//! What nodes send each other through Redis: one byte for the kind, then length-prefixed fields
//! (`<decimal length>:<bytes>`), simple enough to build in a Lua script by concatenation. Bodies
//! are MessagePack-encoded [`ServerMessage`]s, except a durable message's: its JSON without `seq`
//! and `ts`, which the publish script assigns. A receiving node puts them in front and hands the
//! bytes to its JSON clients as they are: a durable message is encoded once per cluster, and a
//! node decodes it only for MessagePack clients. (A durable body that starts with a MessagePack
//! map, as older nodes wrote it, is still read: a JSON body starts with `{`, which no
//! MessagePack map does.)
//!
//! | kind | fields | published by |
//! |---|---|---|
//! | `D` durable | seq, epoch, ts, body (seq and ts are filled in on receipt) | the publish script; also the history stream entry |
//! | `V` volatile | origin node instance (empty: none), excluded user (empty: none), body | a node |
//! | `J` presence join | version, then a `V` envelope built by the node | the presence script |
//! | `L` presence leave | version, user | the presence script |
//! | `B` presence mark | version (nothing changed: where a join's snapshot stands) | the presence script |
//! | `U` user event | user, body | a node |
//! | `X` user disconnect | user, reason | a node |
//! | `C` canary | nonce | a node, to its own channel |

use super::DurableFormat;
use bytes::Bytes;
use std::io::Write;
use switchyard_protocol::{codec::SharedFrame, ServerMessage};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Envelope {
    Durable {
        seq: u64,
        epoch: String,
        body: Placed,
    },
    Volatile {
        origin: String,
        exclude_user: Option<String>,
        message: ServerMessage,
    },
    PresenceJoin {
        version: u64,
        exclude_user: Option<String>,
        message: ServerMessage,
    },
    PresenceLeave {
        version: u64,
        user_id: String,
    },
    PresenceMark {
        version: u64,
    },
    UserEvent {
        user_id: String,
        message: ServerMessage,
    },
    UserDisconnect {
        user_id: String,
        reason: String,
    },
    Canary {
        nonce: u64,
    },
}

/// A durable message as it arrived, its seq and time in place.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Placed {
    /// The message as JSON, byte for byte what its JSON clients get.
    Json(Bytes),
    /// Decoded from MessagePack (written by an older node).
    Message(ServerMessage),
}

impl Placed {
    pub(crate) fn into_frame(self, seq: u64) -> SharedFrame {
        match self {
            Placed::Json(json) => SharedFrame::from_json(json, Some(seq)),
            Placed::Message(message) => SharedFrame::new(message),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("malformed envelope: {0}")]
pub(crate) struct EnvelopeError(String);

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(bytes);
}

/// MessagePack of a message, as it travels between nodes.
pub(crate) fn body_of(message: &ServerMessage) -> Vec<u8> {
    // Serializing our own message types into a Vec cannot fail.
    rmp_serde::to_vec_named(message).unwrap_or_default()
}

/// What a publish hands the publish script for a durable message, made with seq and time 0.
/// In JSON: the message without `seq` and `ts` (the script assigns them; [`decode`] puts them in
/// front). In MessagePack, as nodes before the JSON format wrote it: the message with both
/// fields present, as those nodes require (any value: [`decode`] overwrites them).
pub(crate) fn durable_body(mut message: ServerMessage, format: DurableFormat) -> Vec<u8> {
    if format == DurableFormat::MessagePack {
        place(&mut message, 1, 1);
        return body_of(&message);
    }
    match &mut message {
        // A new-message's seq and time of 0 are not written.
        ServerMessage::NewMessage { seq, ts, .. } => debug_assert!(*seq == 0 && *ts == 0),
        ServerMessage::Event { seq, ts, .. } => (*seq, *ts) = (None, None),
        _ => {}
    }
    // Serializing our own message types cannot fail.
    serde_json::to_vec(&message).unwrap_or_default()
}

/// A durable body with its seq and time put in: `{"seq":N,"ts":T,` then the rest of the JSON
/// object, or the MessagePack message with both fields set.
fn placed(body: &[u8], seq: u64, ts: u64) -> Result<Placed, EnvelopeError> {
    let Some(fields) = body.strip_prefix(b"{") else {
        let mut message = from_body(body)?;
        place(&mut message, seq, ts);
        return Ok(Placed::Message(message));
    };
    if !fields.ends_with(b"}") {
        return Err(EnvelopeError("body: not a JSON object".into()));
    }
    // `{"seq":` and `,"ts":` and two u64s: at most 53 bytes.
    let mut prefix = [0u8; 56];
    let mut rest = &mut prefix[..];
    let _ = write!(rest, "{{\"seq\":{seq},\"ts\":{ts}");
    let prefix_len = 56 - rest.len();
    let comma = fields != b"}";
    // At its exact length: `Bytes` from a full Vec needs no shared header.
    let mut json = Vec::with_capacity(prefix_len + comma as usize + fields.len());
    json.extend_from_slice(&prefix[..prefix_len]);
    if comma {
        json.push(b',');
    }
    json.extend_from_slice(fields);
    Ok(Placed::Json(Bytes::from(json)))
}

pub(crate) fn volatile(
    origin: &str,
    exclude_user: Option<&str>,
    message: &ServerMessage,
) -> Vec<u8> {
    let body = body_of(message);
    let mut out = Vec::with_capacity(body.len() + 64);
    out.push(b'V');
    field(&mut out, origin.as_bytes());
    field(&mut out, exclude_user.unwrap_or("").as_bytes());
    field(&mut out, &body);
    out
}

pub(crate) fn user_event(user_id: &str, message: &ServerMessage) -> Vec<u8> {
    let body = body_of(message);
    let mut out = Vec::with_capacity(body.len() + user_id.len() + 16);
    out.push(b'U');
    field(&mut out, user_id.as_bytes());
    field(&mut out, &body);
    out
}

pub(crate) fn user_disconnect(user_id: &str, reason: &str) -> Vec<u8> {
    let mut out = vec![b'X'];
    field(&mut out, user_id.as_bytes());
    field(&mut out, reason.as_bytes());
    out
}

pub(crate) fn canary(nonce: u64) -> Vec<u8> {
    let mut out = vec![b'C'];
    field(&mut out, nonce.to_string().as_bytes());
    out
}

struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn next(&mut self) -> Result<&'a [u8], EnvelopeError> {
        let colon = self
            .0
            .iter()
            .position(|b| *b == b':')
            .ok_or_else(|| EnvelopeError("missing field".into()))?;
        let len: usize = std::str::from_utf8(&self.0[..colon])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| EnvelopeError("bad field length".into()))?;
        let rest = &self.0[colon + 1..];
        if rest.len() < len {
            return Err(EnvelopeError("truncated field".into()));
        }
        let (value, rest) = rest.split_at(len);
        self.0 = rest;
        Ok(value)
    }

    fn str(&mut self) -> Result<&'a str, EnvelopeError> {
        std::str::from_utf8(self.next()?).map_err(|_| EnvelopeError("not UTF-8".into()))
    }

    fn text(&mut self) -> Result<String, EnvelopeError> {
        self.str().map(str::to_owned)
    }

    fn number(&mut self) -> Result<u64, EnvelopeError> {
        self.str()?
            .parse()
            .map_err(|_| EnvelopeError("bad number".into()))
    }

    fn message(&mut self) -> Result<ServerMessage, EnvelopeError> {
        from_body(self.next()?)
    }
}

/// The message of a MessagePack body.
fn from_body(body: &[u8]) -> Result<ServerMessage, EnvelopeError> {
    rmp_serde::from_slice(body).map_err(|e| EnvelopeError(format!("body: {e}")))
}

pub(crate) fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
    let (&kind, rest) = bytes
        .split_first()
        .ok_or_else(|| EnvelopeError("empty".into()))?;
    let mut f = Fields(rest);
    Ok(match kind {
        b'D' => {
            let seq = f.number()?;
            let epoch = f.text()?;
            let ts = f.number()?;
            let body = placed(f.next()?, seq, ts)?;
            Envelope::Durable { seq, epoch, body }
        }
        b'V' => {
            let origin = f.text()?;
            let exclude = f.text()?;
            Envelope::Volatile {
                origin,
                exclude_user: (!exclude.is_empty()).then_some(exclude),
                message: f.message()?,
            }
        }
        b'J' => {
            let version = f.number()?;
            match decode(f.0)? {
                Envelope::Volatile {
                    exclude_user,
                    message,
                    ..
                } => Envelope::PresenceJoin {
                    version,
                    exclude_user,
                    message,
                },
                _ => return Err(EnvelopeError("a join holds a volatile envelope".into())),
            }
        }
        b'L' => Envelope::PresenceLeave {
            version: f.number()?,
            user_id: f.text()?,
        },
        b'B' => Envelope::PresenceMark {
            version: f.number()?,
        },
        b'U' => Envelope::UserEvent {
            user_id: f.text()?,
            message: f.message()?,
        },
        b'X' => Envelope::UserDisconnect {
            user_id: f.text()?,
            reason: f.text()?,
        },
        b'C' => Envelope::Canary { nonce: f.number()? },
        other => return Err(EnvelopeError(format!("unknown kind {other}"))),
    })
}

/// Puts the seq and time the publish script assigned into a durable message.
fn place(message: &mut ServerMessage, at_seq: u64, at_ts: u64) {
    match message {
        ServerMessage::NewMessage { seq, ts, .. } => {
            *seq = at_seq;
            *ts = at_ts;
        }
        ServerMessage::Event { seq, ts, .. } => {
            *seq = Some(at_seq);
            *ts = Some(at_ts);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_protocol::Ref;

    #[test]
    fn round_trips() {
        let typing = ServerMessage::TypingStart {
            room_id: "r".into(),
            user_id: "u:1".into(),
        };
        let bytes = volatile("node-a", Some("u:1"), &typing);
        assert_eq!(
            decode(&bytes).unwrap(),
            Envelope::Volatile {
                origin: "node-a".into(),
                exclude_user: Some("u:1".into()),
                message: typing.clone()
            }
        );
        let bytes = volatile("", None, &typing);
        assert!(matches!(
            decode(&bytes).unwrap(),
            Envelope::Volatile {
                exclude_user: None,
                ..
            }
        ));
        assert_eq!(
            decode(&user_disconnect("a:b 7", "kicked: 1:2")).unwrap(),
            Envelope::UserDisconnect {
                user_id: "a:b 7".into(),
                reason: "kicked: 1:2".into()
            }
        );
        assert_eq!(decode(&canary(42)).unwrap(), Envelope::Canary { nonce: 42 });
    }

    #[test]
    fn presence_changes_carry_their_version() {
        let join = ServerMessage::PresenceJoin {
            room_id: "r".into(),
            member: switchyard_protocol::Member {
                user_id: "u".into(),
                name: None,
                avatar: None,
                joined_at: 1,
            },
        };
        // What the presence script publishes: 'J' .. f(version) .. the node's envelope.
        let mut bytes = vec![b'J'];
        field(&mut bytes, b"1795667667820123");
        bytes.extend(volatile("", Some("u"), &join));
        assert_eq!(
            decode(&bytes).unwrap(),
            Envelope::PresenceJoin {
                version: 1_795_667_667_820_123,
                exclude_user: Some("u".into()),
                message: join
            }
        );
        let mut bytes = vec![b'L'];
        field(&mut bytes, b"7");
        field(&mut bytes, b"u");
        assert_eq!(
            decode(&bytes).unwrap(),
            Envelope::PresenceLeave {
                version: 7,
                user_id: "u".into()
            }
        );
        let mut bytes = vec![b'J'];
        field(&mut bytes, b"8");
        bytes.extend(canary(1));
        assert!(decode(&bytes).is_err(), "a join holds a volatile envelope");
    }

    fn durable(seq: &[u8], ts: &[u8], body: &[u8]) -> Vec<u8> {
        // What the publish script builds: 'D' .. f(seq) .. f(epoch) .. f(ts) .. f(body).
        let mut bytes = vec![b'D'];
        field(&mut bytes, seq);
        field(&mut bytes, b"ep");
        field(&mut bytes, ts);
        field(&mut bytes, body);
        bytes
    }

    #[test]
    fn durable_gets_its_place_on_receipt() {
        let draft = |seq, ts| ServerMessage::NewMessage {
            room_id: "r".into(),
            id: "x".into(),
            seq,
            user_id: "u".into(),
            name: None,
            text: "hi \"seq\":0 }".into(),
            // A float that serde_json reads back one bit off without `float_roundtrip`.
            data: Some(serde_json::json!({"seq": 1, "ts": 2, "x": 1.7590189128792283e154})),
            ts,
            temp_id: Ref::Int(3),
        };
        let placed = draft(17, 1_700_000_000_000);
        // The body as this version publishes it: JSON without seq and ts (not those in `data`).
        let body = durable_body(draft(0, 0), DurableFormat::Json);
        let fields: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(fields.get("seq").is_none() && fields.get("ts").is_none());
        assert_eq!(
            fields["data"],
            serde_json::json!({"seq": 1, "ts": 2, "x": 1.7590189128792283e154})
        );
        let Envelope::Durable { seq, epoch, body } =
            decode(&durable(b"17", b"1700000000000", &body)).unwrap()
        else {
            panic!("not durable")
        };
        assert_eq!((seq, epoch.as_str()), (17, "ep"));
        let Placed::Json(json) = &body else {
            panic!("a JSON body is passed on as JSON")
        };
        assert!(json.starts_with(br#"{"seq":17,"ts":1700000000000,"type":"new-message","#));
        let frame = body.into_frame(seq);
        assert_eq!(frame.seq(), Some(17));
        assert_eq!(frame.message(), &placed);
        // MessagePack clients get the message encoded from it, as for any other message.
        assert_eq!(
            frame.encoded(switchyard_protocol::Encoding::MsgPack),
            &switchyard_protocol::codec::encode(&placed, switchyard_protocol::Encoding::MsgPack)
        );

        // A MessagePack body, as older nodes wrote it (and their history entries still are), with
        // seq and time present, as those nodes need them.
        let old = durable_body(draft(0, 0), DurableFormat::MessagePack);
        let fields: serde_json::Value = rmp_serde::from_slice(&old).unwrap();
        assert!(fields["seq"].is_u64() && fields["ts"].is_u64(), "{fields}");
        let Envelope::Durable { body, .. } =
            decode(&durable(b"17", b"1700000000000", &old)).unwrap()
        else {
            panic!("not durable")
        };
        assert_eq!(body, Placed::Message(placed));

        // An event the same way.
        let event = |seq, ts| ServerMessage::Event {
            room_id: Some("r".into()),
            event: "task-updated".into(),
            data: serde_json::json!({"seq": 1}),
            seq,
            user_id: None,
            id: Some("y".into()),
            ts,
            temp_id: None,
        };
        let body = durable_body(event(Some(0), Some(0)), DurableFormat::Json);
        let Envelope::Durable { body, .. } = decode(&durable(b"5", b"6", &body)).unwrap() else {
            panic!("not durable")
        };
        assert_eq!(body.into_frame(5).message(), &event(Some(5), Some(6)));
    }

    #[test]
    fn a_durable_body_that_is_not_an_object_is_an_error() {
        for body in [&b"{\"type\":\"new-message\""[..], b"[1]", b"\x01"] {
            assert!(decode(&durable(b"1", b"2", body)).is_err(), "{body:?}");
        }
        // The smallest object still comes out as one.
        let Envelope::Durable { body, .. } = decode(&durable(b"1", b"2", b"{}")).unwrap() else {
            panic!("not durable")
        };
        assert_eq!(
            body,
            Placed::Json(Bytes::from_static(br#"{"seq":1,"ts":2}"#))
        );
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in [&b""[..], b"Q", b"D3:12", b"L9:abc", b"Dx:1"] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }
}
