//! Messages a client sends, parsed from a decoded frame value and validated against the
//! protocol's rules and [`Limits`]. A message that fails is turned into a [`Rejection`] that
//! says how to answer it: an `ack` with `success:false` for `message`/`publish` that carry a
//! `tempId`, one `error` frame otherwise.

use serde::Deserialize;
use serde_json::Value;

use crate::ids::{validate_event_name, validate_room_id, Ref};
use crate::limits::Limits;
use crate::server::ErrorCode;

/// A valid client message.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    Ping,
    JoinRoom {
        room_id: String,
        since_seq: Option<u64>,
        epoch: Option<String>,
    },
    LeaveRoom {
        room_id: String,
    },
    Subscribe {
        room_id: String,
        since_seq: Option<u64>,
        epoch: Option<String>,
    },
    Unsubscribe {
        room_id: String,
    },
    Message {
        room_id: String,
        temp_id: Ref,
        text: String,
        data: Option<Value>,
    },
    Publish {
        room_id: String,
        temp_id: Ref,
        event: String,
        data: Value,
    },
    TypingStart {
        room_id: String,
    },
    TypingStop {
        room_id: String,
    },
    CursorMove {
        room_id: String,
        x: f64,
        y: f64,
    },
    CursorLeave {
        room_id: String,
    },
    PresenceSync {
        room_id: String,
    },
}

impl ClientMessage {
    /// The wire `type`, for metrics labels and logs.
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientMessage::Ping => "ping",
            ClientMessage::JoinRoom { .. } => "join-room",
            ClientMessage::LeaveRoom { .. } => "leave-room",
            ClientMessage::Subscribe { .. } => "subscribe",
            ClientMessage::Unsubscribe { .. } => "unsubscribe",
            ClientMessage::Message { .. } => "message",
            ClientMessage::Publish { .. } => "publish",
            ClientMessage::TypingStart { .. } => "typing:start",
            ClientMessage::TypingStop { .. } => "typing:stop",
            ClientMessage::CursorMove { .. } => "cursor:move",
            ClientMessage::CursorLeave { .. } => "cursor:leave",
            ClientMessage::PresenceSync { .. } => "presence:sync",
        }
    }
}

/// Every message type a client may send, in the order of the protocol's table.
pub const CLIENT_TYPES: [&str; 12] = [
    "ping",
    "join-room",
    "leave-room",
    "subscribe",
    "unsubscribe",
    "message",
    "publish",
    "typing:start",
    "typing:stop",
    "cursor:move",
    "cursor:leave",
    "presence:sync",
];

/// How to answer a message that was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: String,
    /// Set for a `message`/`publish` with a valid `tempId`: answer with a refused `ack`.
    pub temp_id: Option<Ref>,
    pub retry_after_ms: Option<u64>,
}

impl Rejection {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Rejection {
            code,
            message: message.into(),
            temp_id: None,
            retry_after_ms: None,
        }
    }
}

/// One decoded message: its `ref` (echoed on the reply) and what it asks, or why it is refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    pub reference: Option<Ref>,
    pub message: Result<ClientMessage, Rejection>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoomOnly {
    room_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Resume {
    room_id: String,
    #[serde(default)]
    since_seq: Option<u64>,
    #[serde(default)]
    epoch: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageFields {
    room_id: String,
    text: String,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PublishFields {
    room_id: String,
    event: String,
    data: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CursorFields {
    room_id: String,
    x: f64,
    y: f64,
}

/// Parses and validates one message value of a frame.
pub fn parse_message(value: Value, limits: &Limits) -> Inbound {
    let Value::Object(map) = &value else {
        return Inbound {
            reference: None,
            message: Err(Rejection::new(
                ErrorCode::BadRequest,
                "a message must be an object",
            )),
        };
    };
    let reference = match map.get("ref") {
        None | Some(Value::Null) => None,
        Some(v) => match Ref::from_value("ref", v) {
            Ok(r) => Some(r),
            Err(e) => {
                return Inbound {
                    reference: None,
                    message: Err(Rejection::new(ErrorCode::BadRequest, e)),
                }
            }
        },
    };
    let message = parse_typed(&value, limits);
    Inbound { reference, message }
}

fn parse_typed(value: &Value, limits: &Limits) -> Result<ClientMessage, Rejection> {
    let kind = match value.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(_) => {
            return Err(Rejection::new(
                ErrorCode::BadRequest,
                "`type` must be a string",
            ))
        }
        None => {
            return Err(Rejection::new(
                ErrorCode::BadRequest,
                "missing field `type`",
            ))
        }
    };
    if !CLIENT_TYPES.contains(&kind) {
        let shown: String = kind.chars().take(64).collect();
        return Err(Rejection::new(
            ErrorCode::UnknownType,
            format!("unknown message type {shown:?}"),
        ));
    }
    // `message` and `publish` are answered by an ack, which needs their tempId: read it first so
    // that every later refusal can carry it.
    let temp_id = if matches!(kind, "message" | "publish") {
        match value.get("tempId") {
            None | Some(Value::Null) => {
                return Err(Rejection::new(
                    ErrorCode::BadRequest,
                    format!("`{kind}` needs a tempId"),
                ))
            }
            Some(v) => Some(
                Ref::from_value("tempId", v)
                    .map_err(|e| Rejection::new(ErrorCode::BadRequest, e))?,
            ),
        }
    } else {
        None
    };
    let with_temp_id = |mut r: Rejection| {
        r.temp_id = temp_id.clone();
        r
    };
    let message = match kind {
        "ping" => ClientMessage::Ping,
        "join-room" | "subscribe" => {
            let f: Resume = fields(value)?;
            room(&f.room_id)?;
            if let Some(epoch) = &f.epoch {
                if epoch.len() > 64 {
                    return Err(Rejection::new(
                        ErrorCode::BadRequest,
                        "epoch must be at most 64 characters",
                    ));
                }
            }
            if kind == "join-room" {
                ClientMessage::JoinRoom {
                    room_id: f.room_id,
                    since_seq: f.since_seq,
                    epoch: f.epoch,
                }
            } else {
                ClientMessage::Subscribe {
                    room_id: f.room_id,
                    since_seq: f.since_seq,
                    epoch: f.epoch,
                }
            }
        }
        "message" => {
            let f: MessageFields = fields(value).map_err(with_temp_id)?;
            room(&f.room_id).map_err(with_temp_id)?;
            let chars = f.text.chars().count();
            if chars == 0 {
                return Err(with_temp_id(Rejection::new(
                    ErrorCode::BadRequest,
                    "text must not be empty",
                )));
            }
            if chars > limits.max_text_chars {
                return Err(with_temp_id(Rejection::new(
                    ErrorCode::TooLarge,
                    format!(
                        "text is {chars} characters; the limit is {}",
                        limits.max_text_chars
                    ),
                )));
            }
            if let Some(data) = &f.data {
                check_data(data, limits).map_err(with_temp_id)?;
            }
            ClientMessage::Message {
                room_id: f.room_id,
                temp_id: temp_id.clone().unwrap_or(Ref::Int(0)),
                text: f.text,
                data: f.data,
            }
        }
        "publish" => {
            let f: PublishFields = fields(value).map_err(with_temp_id)?;
            room(&f.room_id).map_err(with_temp_id)?;
            validate_event_name(&f.event)
                .map_err(|e| with_temp_id(Rejection::new(ErrorCode::BadRequest, e)))?;
            check_data(&f.data, limits).map_err(with_temp_id)?;
            ClientMessage::Publish {
                room_id: f.room_id,
                temp_id: temp_id.clone().unwrap_or(Ref::Int(0)),
                event: f.event,
                data: f.data,
            }
        }
        "cursor:move" => {
            let f: CursorFields = fields(value)?;
            room(&f.room_id)?;
            if !f.x.is_finite() || !f.y.is_finite() {
                return Err(Rejection::new(
                    ErrorCode::BadRequest,
                    "x and y must be finite numbers",
                ));
            }
            ClientMessage::CursorMove {
                room_id: f.room_id,
                x: f.x,
                y: f.y,
            }
        }
        _ => {
            let RoomOnly { room_id } = fields(value)?;
            room(&room_id)?;
            match kind {
                "leave-room" => ClientMessage::LeaveRoom { room_id },
                "unsubscribe" => ClientMessage::Unsubscribe { room_id },
                "typing:start" => ClientMessage::TypingStart { room_id },
                "typing:stop" => ClientMessage::TypingStop { room_id },
                "cursor:leave" => ClientMessage::CursorLeave { room_id },
                _ => ClientMessage::PresenceSync { room_id },
            }
        }
    };
    Ok(message)
}

fn fields<T: for<'de> Deserialize<'de>>(value: &Value) -> Result<T, Rejection> {
    T::deserialize(value).map_err(|e| Rejection::new(ErrorCode::BadRequest, e.to_string()))
}

fn room(room_id: &str) -> Result<(), Rejection> {
    validate_room_id(room_id).map_err(|e| Rejection::new(ErrorCode::BadRequest, e))
}

fn check_data(data: &Value, limits: &Limits) -> Result<(), Rejection> {
    let size = json_len(data);
    if size > limits.max_data_bytes {
        return Err(Rejection::new(
            ErrorCode::TooLarge,
            format!(
                "data is {size} bytes encoded; the limit is {}",
                limits.max_data_bytes
            ),
        ));
    }
    Ok(())
}

/// Length of a value's compact JSON encoding (how `data` limits are measured), without
/// allocating it.
pub fn json_len(value: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Inbound {
        parse_message(v, &Limits::default())
    }

    #[test]
    fn valid_messages() {
        let m = parse(json!({"type": "join-room", "roomId": "a", "sinceSeq": 3, "ref": "r1"}));
        assert_eq!(m.reference, Some(Ref::Str("r1".into())));
        assert_eq!(
            m.message,
            Ok(ClientMessage::JoinRoom {
                room_id: "a".into(),
                since_seq: Some(3),
                epoch: None
            })
        );
        let m = parse(
            json!({"type": "message", "roomId": "a", "tempId": "t", "text": "hi", "userId": "ignored"}),
        );
        assert!(matches!(m.message, Ok(ClientMessage::Message { .. })));
        let m = parse(json!({"type": "cursor:move", "roomId": "a", "x": 1, "y": 0.5}));
        assert_eq!(
            m.message,
            Ok(ClientMessage::CursorMove {
                room_id: "a".into(),
                x: 1.0,
                y: 0.5
            })
        );
        assert_eq!(
            parse(json!({"type": "ping"})).message,
            Ok(ClientMessage::Ping)
        );
    }

    #[test]
    fn refusals() {
        let code = |v: Value| parse(v).message.unwrap_err().code;
        assert_eq!(code(json!({"type": "nope"})), ErrorCode::UnknownType);
        assert_eq!(code(json!({"roomId": "a"})), ErrorCode::BadRequest);
        assert_eq!(code(json!([1])), ErrorCode::BadRequest);
        assert_eq!(code(json!({"type": "join-room"})), ErrorCode::BadRequest);
        assert_eq!(
            code(json!({"type": "join-room", "roomId": "bad room"})),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(json!({"type": "join-room", "roomId": 5})),
            ErrorCode::BadRequest
        );
        assert_eq!(
            code(json!({"type": "cursor:move", "roomId": "a", "x": "1", "y": 0})),
            ErrorCode::BadRequest
        );
        let r = parse(
            json!({"type": "message", "roomId": "a", "tempId": "t", "text": "x".repeat(4001)}),
        );
        let rej = r.message.unwrap_err();
        assert_eq!(
            (rej.code, rej.temp_id),
            (ErrorCode::TooLarge, Some(Ref::Str("t".into())))
        );
        let rej = parse(json!({"type": "message", "roomId": "a", "text": "x"}))
            .message
            .unwrap_err();
        assert_eq!((rej.code, rej.temp_id), (ErrorCode::BadRequest, None));
        let big = json!({"type": "publish", "roomId": "a", "tempId": 1, "event": "e", "data": "x".repeat(17 * 1024)});
        assert_eq!(code(big), ErrorCode::TooLarge);
        // 4000 code points of a multi-byte character are within the limit.
        let ok = parse(
            json!({"type": "message", "roomId": "a", "tempId": "t", "text": "é".repeat(4000)}),
        );
        assert!(ok.message.is_ok());
        // A bad ref is refused without being echoed.
        let r = parse(json!({"type": "ping", "ref": {"x": 1}}));
        assert_eq!(
            (r.reference, r.message.unwrap_err().code),
            (None, ErrorCode::BadRequest)
        );
    }
}
