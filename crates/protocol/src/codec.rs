//! Frame decoding and message encoding, for both encodings of the protocol.
//!
//! Inbound, a frame (JSON text or MessagePack binary) decodes to a list of message values: one
//! object, or an array of them (a batch). Outbound, a message is encoded once per encoding and
//! shared ([`SharedFrame`]); a batch frame is built by concatenating already-encoded messages
//! ([`write_batch`]), so batching never re-encodes anything.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::OnceLock;

use crate::ids::Ref;
use crate::server::ServerMessage;

/// The encoding of the frames the server sends to one connection, chosen by subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Json,
    MsgPack,
}

impl Encoding {
    pub const JSON_PROTOCOL: &'static str = "switchyard.v1.json";
    pub const MSGPACK_PROTOCOL: &'static str = "switchyard.v1.msgpack";

    /// The encoding named by a `Sec-WebSocket-Protocol` token, if we support it.
    pub fn from_subprotocol(name: &str) -> Option<Encoding> {
        match name.trim() {
            Self::JSON_PROTOCOL => Some(Encoding::Json),
            Self::MSGPACK_PROTOCOL => Some(Encoding::MsgPack),
            _ => None,
        }
    }

    pub fn subprotocol(self) -> &'static str {
        match self {
            Encoding::Json => Self::JSON_PROTOCOL,
            Encoding::MsgPack => Self::MSGPACK_PROTOCOL,
        }
    }
}

/// Why a whole frame was refused; nothing of it is processed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("a batch must hold at least one message")]
    EmptyBatch,
    #[error("a batch holds at most {max} messages (got {got})")]
    BatchTooLarge { got: usize, max: usize },
}

/// Decodes one inbound frame into its message values. `binary` says whether it arrived as a
/// binary (MessagePack) or text (JSON) frame: clients may use either at any time.
/// Deepest nesting of arrays and maps a frame may have: MessagePack is held to the same depth
/// as JSON (serde_json's limit), so a frame of nested headers cannot exhaust the stack.
pub const MAX_NESTING: usize = 128;

pub fn decode_frame(
    payload: &[u8],
    binary: bool,
    max_batch: usize,
) -> Result<Vec<Value>, FrameError> {
    let value: Value = if binary {
        let mut decoder = rmp_serde::Deserializer::from_read_ref(payload);
        decoder.set_max_depth(MAX_NESTING);
        Value::deserialize(&mut decoder)
            .map_err(|e| FrameError::Malformed(format!("invalid MessagePack: {e}")))?
    } else {
        serde_json::from_slice(payload)
            .map_err(|e| FrameError::Malformed(format!("invalid JSON: {e}")))?
    };
    match value {
        Value::Array(items) if items.is_empty() => Err(FrameError::EmptyBatch),
        Value::Array(items) if items.len() > max_batch => Err(FrameError::BatchTooLarge {
            got: items.len(),
            max: max_batch,
        }),
        Value::Array(items) => Ok(items),
        other => Ok(vec![other]),
    }
}

/// Encodes one message. Encoding a [`ServerMessage`] cannot fail (every field is a plain value
/// or a `serde_json::Value`), so a failure here is a bug, reported as an `internal` error frame.
pub fn encode(message: &ServerMessage, encoding: Encoding) -> Bytes {
    let encoded = match message {
        ServerMessage::RoomJoined {
            room_id,
            seq,
            epoch,
            members,
            recovered,
            reference,
        } => room_joined(
            encoding,
            room_id,
            *seq,
            epoch,
            members.encoded(encoding),
            *recovered,
            reference.as_ref(),
        ),
        _ => serialize(message, encoding),
    };
    or_internal_error(encoded, encoding)
}

/// Encodes any value as [`encode`] does a message.
pub(crate) fn encode_value<T: Serialize + ?Sized>(value: &T, encoding: Encoding) -> Bytes {
    or_internal_error(serialize(value, encoding), encoding)
}

fn serialize<T: Serialize + ?Sized>(value: &T, encoding: Encoding) -> Result<Vec<u8>, String> {
    match encoding {
        Encoding::Json => serde_json::to_vec(value).map_err(|e| e.to_string()),
        Encoding::MsgPack => rmp_serde::to_vec_named(value).map_err(|e| e.to_string()),
    }
}

fn or_internal_error(encoded: Result<Vec<u8>, String>, encoding: Encoding) -> Bytes {
    let bytes = encoded.unwrap_or_else(|e| {
        let fallback = ServerMessage::error(
            crate::ErrorCode::Internal,
            format!("encoding failed: {e}"),
            None,
        );
        serialize(&fallback, encoding).unwrap_or_default()
    });
    Bytes::from(bytes)
}

/// `room-joined` with its member list copied in already encoded, byte for byte what serde
/// makes of the message (a test holds it to that): same fields, same order, same forms.
fn room_joined(
    encoding: Encoding,
    room_id: &str,
    seq: u64,
    epoch: &str,
    members: &[u8],
    recovered: Option<bool>,
    reference: Option<&Ref>,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(members.len() + 128 + room_id.len());
    let field = match encoding {
        Encoding::Json => {
            out.extend_from_slice(br#"{"type":"room-joined""#);
            json_field
        }
        Encoding::MsgPack => {
            let fields = 5 + recovered.is_some() as u8 + reference.is_some() as u8;
            out.push(0x80 | fields); // a fixmap: at most 15 entries
            msgpack_field(&mut out, "type", &"room-joined")?;
            msgpack_field
        }
    };
    field(&mut out, "roomId", &room_id)?;
    field(&mut out, "seq", &seq)?;
    field(&mut out, "epoch", &epoch)?;
    field(&mut out, "members", &Encoded(members))?;
    if let Some(recovered) = recovered {
        field(&mut out, "recovered", &recovered)?;
    }
    if let Some(reference) = reference {
        field(&mut out, "ref", reference)?;
    }
    if encoding == Encoding::Json {
        out.push(b'}');
    }
    Ok(out)
}

/// A value of a field: one serde writes, or one already encoded.
trait FieldValue {
    fn write(&self, out: &mut Vec<u8>, encoding: Encoding) -> Result<(), String>;
}

impl<T: Serialize> FieldValue for T {
    fn write(&self, out: &mut Vec<u8>, encoding: Encoding) -> Result<(), String> {
        match encoding {
            Encoding::Json => serde_json::to_writer(out, self).map_err(|e| e.to_string()),
            Encoding::MsgPack => {
                rmp_serde::encode::write_named(out, self).map_err(|e| e.to_string())
            }
        }
    }
}

struct Encoded<'a>(&'a [u8]);

impl FieldValue for Encoded<'_> {
    fn write(&self, out: &mut Vec<u8>, _: Encoding) -> Result<(), String> {
        out.extend_from_slice(self.0);
        Ok(())
    }
}

/// `,"name":value` (the first field, `type`, is written with the opening brace).
fn json_field(out: &mut Vec<u8>, name: &str, value: &dyn FieldValue) -> Result<(), String> {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    value.write(out, Encoding::Json)
}

/// The name as a MessagePack string, then the value.
fn msgpack_field(out: &mut Vec<u8>, name: &str, value: &dyn FieldValue) -> Result<(), String> {
    rmp_serde::encode::write(out, name).map_err(|e| e.to_string())?;
    value.write(out, Encoding::MsgPack)
}

/// A message shared by every recipient on this node, encoded at most once per encoding, on
/// first use. The fan-out path hands out `Arc<SharedFrame>`: one refcount per delivery.
///
/// A message that came from another node already encoded as JSON ([`SharedFrame::from_json`])
/// is decoded only if something asks for the message itself or for MessagePack: a node whose
/// clients all speak JSON passes the bytes on as they came.
#[derive(Debug)]
pub struct SharedFrame {
    message: OnceLock<ServerMessage>,
    seq: Option<u64>,
    json: OnceLock<Bytes>,
    msgpack: OnceLock<Bytes>,
}

impl SharedFrame {
    pub fn new(message: ServerMessage) -> Self {
        SharedFrame {
            seq: message.seq(),
            message: OnceLock::from(message),
            json: OnceLock::new(),
            msgpack: OnceLock::new(),
        }
    }

    /// A message already encoded as JSON (one object), with its seq if it is durable. The bytes
    /// are trusted to be what [`encode`] would write for some message (they come from this
    /// server's own nodes); if they do not decode when the message is needed, it becomes an
    /// `internal` error (see [`SharedFrame::message`]).
    pub fn from_json(json: Bytes, seq: Option<u64>) -> Self {
        SharedFrame {
            message: OnceLock::new(),
            seq,
            json: OnceLock::from(json),
            msgpack: OnceLock::new(),
        }
    }

    /// The message. One made by [`SharedFrame::from_json`] is decoded the first time; bytes that
    /// do not decode give an `internal` error message instead (never a panic).
    pub fn message(&self) -> &ServerMessage {
        self.message.get_or_init(|| {
            let json = self.json.get().map(|b| &b[..]).unwrap_or_default();
            serde_json::from_slice(json).unwrap_or_else(|e| {
                ServerMessage::error(
                    crate::ErrorCode::Internal,
                    format!("a message from another node did not decode: {e}"),
                    None,
                )
            })
        })
    }

    /// The per-room seq of a durable message (without decoding it).
    pub fn seq(&self) -> Option<u64> {
        self.seq
    }

    /// The encoded message; encodes it the first time an encoding is asked for.
    pub fn encoded(&self, encoding: Encoding) -> &Bytes {
        let cell = match encoding {
            Encoding::Json => &self.json,
            Encoding::MsgPack => &self.msgpack,
        };
        cell.get_or_init(|| encode(self.message(), encoding))
    }
}

/// Builds one frame from already-encoded messages: the message itself when there is one, an
/// array of them otherwise (`[a,b]` in JSON, a MessagePack array header then the items).
pub fn write_batch<'a>(
    encoding: Encoding,
    parts: impl ExactSizeIterator<Item = &'a [u8]>,
    out: &mut Vec<u8>,
) {
    let n = parts.len();
    if n == 1 {
        for part in parts {
            out.extend_from_slice(part);
        }
        return;
    }
    match encoding {
        Encoding::Json => {
            out.push(b'[');
            for (i, part) in parts.enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(part);
            }
            out.push(b']');
        }
        Encoding::MsgPack => {
            write_msgpack_array_len(n, out);
            for part in parts {
                out.extend_from_slice(part);
            }
        }
    }
}

/// The exact length of what [`write_batch`] writes for `n` parts of `parts_len` bytes in all.
/// A frame allocated at exactly its size becomes `Bytes` without a second allocation (a `Vec`
/// with spare capacity needs a shared header, allocated and freed once per frame).
pub fn batch_len(encoding: Encoding, n: usize, parts_len: usize) -> usize {
    if n == 1 {
        return parts_len;
    }
    match encoding {
        // `[`, a comma between two parts, `]`.
        Encoding::Json => parts_len + n.saturating_sub(1) + 2,
        Encoding::MsgPack => {
            parts_len
                + match n {
                    0..16 => 1,
                    16..=0xffff => 3,
                    _ => 5,
                }
        }
    }
}

fn write_msgpack_array_len(n: usize, out: &mut Vec<u8>) {
    if n < 16 {
        out.push(0x90 | n as u8);
    } else if n <= u16::MAX as usize {
        out.push(0xdc);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{Member, MemberList};

    fn pong(ts: u64) -> ServerMessage {
        ServerMessage::Pong {
            ts,
            reference: Some(Ref::Int(1)),
        }
    }

    #[test]
    fn a_frame_from_json_is_decoded_only_when_needed_and_never_panics() {
        let json = Bytes::from_static(br#"{"ts":5,"type":"pong","ref":1}"#);
        let frame = SharedFrame::from_json(json.clone(), None);
        // JSON clients get the bytes as they came.
        assert_eq!(frame.encoded(Encoding::Json), &json);
        assert_eq!(frame.message(), &pong(5));
        assert_eq!(
            frame.encoded(Encoding::MsgPack),
            &encode(&pong(5), Encoding::MsgPack)
        );

        let broken = SharedFrame::from_json(Bytes::from_static(b"{\"type\":\"pong\"}"), Some(3));
        assert_eq!(broken.seq(), Some(3));
        assert!(matches!(
            broken.message(),
            ServerMessage::Error {
                code: crate::ErrorCode::Internal,
                ..
            }
        ));
    }

    #[test]
    fn decodes_objects_and_batches() {
        assert_eq!(
            decode_frame(br#"{"type":"ping"}"#, false, 100)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            decode_frame(br#"[{"type":"ping"},{"type":"ping"}]"#, false, 100)
                .unwrap()
                .len(),
            2
        );
        assert_eq!(decode_frame(b"[]", false, 100), Err(FrameError::EmptyBatch));
        assert!(matches!(
            decode_frame(b"{", false, 100),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            decode_frame(b"[1,2,3]", false, 2),
            Err(FrameError::BatchTooLarge { got: 3, max: 2 })
        ));
        let mp = rmp_serde::to_vec_named(&serde_json::json!({"type": "ping", "ref": 3})).unwrap();
        assert_eq!(decode_frame(&mp, true, 100).unwrap()[0]["ref"], 3);
        assert!(matches!(
            decode_frame(&[0xc1], true, 100),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn nesting_is_bounded_in_both_encodings() {
        let mut deep = vec![0x91u8; 60_000];
        deep.push(0xc0);
        assert!(matches!(
            decode_frame(&deep, true, 100),
            Err(FrameError::Malformed(_))
        ));
        let json = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(
            decode_frame(json.as_bytes(), false, 100),
            Err(FrameError::Malformed(_))
        ));
        // Within the bound, nesting is fine.
        let mut ok = vec![0x91u8; MAX_NESTING - 2];
        ok.push(0xc0);
        let mut frame = vec![0x81, 0xa4];
        frame.extend(b"data");
        frame.extend(ok);
        assert!(decode_frame(&frame, true, 100).is_ok());
    }

    #[test]
    fn batches_concatenate_encoded_messages() {
        for encoding in [Encoding::Json, Encoding::MsgPack] {
            let frames: Vec<SharedFrame> = (0..20).map(|i| SharedFrame::new(pong(i))).collect();
            let mut out = Vec::new();
            write_batch(
                encoding,
                frames.iter().map(|f| f.encoded(encoding).as_ref()),
                &mut out,
            );
            let decoded: Vec<ServerMessage> = match encoding {
                Encoding::Json => serde_json::from_slice(&out).unwrap(),
                Encoding::MsgPack => rmp_serde::from_slice(&out).unwrap(),
            };
            assert_eq!(decoded, (0..20).map(pong).collect::<Vec<_>>());
        }
        let one = SharedFrame::new(pong(5));
        let mut out = Vec::new();
        write_batch(
            Encoding::Json,
            std::iter::once(one.encoded(Encoding::Json).as_ref()),
            &mut out,
        );
        assert_eq!(
            serde_json::from_slice::<ServerMessage>(&out).unwrap(),
            pong(5)
        );
    }

    #[test]
    fn batch_len_is_what_write_batch_writes() {
        let part = [7u8; 3];
        for encoding in [Encoding::Json, Encoding::MsgPack] {
            for n in [0, 1, 2, 15, 16, 17, 0xffff, 0x10000] {
                let mut out = Vec::new();
                write_batch(encoding, std::iter::repeat_n(&part[..], n), &mut out);
                assert_eq!(batch_len(encoding, n, 3 * n), out.len(), "{encoding:?} {n}");
            }
        }
    }

    #[test]
    fn shared_frame_encodes_once() {
        let f = SharedFrame::new(pong(1));
        let a = f.encoded(Encoding::Json).as_ptr();
        let b = f.encoded(Encoding::Json).as_ptr();
        assert_eq!(a, b);
        let json: serde_json::Value = serde_json::from_slice(f.encoded(Encoding::Json)).unwrap();
        assert_eq!(json, serde_json::json!({"type": "pong", "ts": 1, "ref": 1}));
    }

    #[test]
    fn room_joined_with_its_list_copied_in_is_what_serde_makes() {
        let members = MemberList::from(
            (0..40)
                .map(|i| Member {
                    user_id: format!("user-{i} \"quoted\" é"),
                    name: (i % 2 == 0).then(|| format!("Name {i}")),
                    avatar: (i % 3 == 0).then(|| "https://a.example/x.png".to_owned()),
                    joined_at: 1_700_000_000_000 + i,
                })
                .collect::<Vec<_>>(),
        );
        let optional = [
            (None, None),
            (Some(true), None),
            (Some(false), Some(Ref::Int(7))),
            (None, Some(Ref::Str("r\"1".into()))),
        ];
        for members in [members, MemberList::default()] {
            for (recovered, reference) in optional.clone() {
                for seq in [0, 7, 300, u64::MAX] {
                    let message = ServerMessage::RoomJoined {
                        room_id: "doc:a.b@c".into(),
                        seq,
                        epoch: "1733140000-ab12".into(),
                        members: members.clone(),
                        recovered,
                        reference: reference.clone(),
                    };
                    assert_eq!(
                        encode(&message, Encoding::Json),
                        serde_json::to_vec(&message).unwrap(),
                        "{message:?}"
                    );
                    assert_eq!(
                        encode(&message, Encoding::MsgPack),
                        rmp_serde::to_vec_named(&message).unwrap(),
                        "{message:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_member_list_is_encoded_once() {
        let members = MemberList::from(vec![Member {
            user_id: "u".into(),
            name: None,
            avatar: None,
            joined_at: 1,
        }]);
        let copy = members.clone();
        assert_eq!(
            members.encoded(Encoding::Json).as_ptr(),
            copy.encoded(Encoding::Json).as_ptr()
        );
        assert_eq!(
            &members.encoded(Encoding::Json)[..],
            br#"[{"userId":"u","joinedAt":1}]"#
        );
    }
}
