//! What nodes send each other through Redis: one byte for the kind, then length-prefixed fields
//! (`<decimal length>:<bytes>`), simple enough to build in a Lua script by concatenation. Bodies
//! are MessagePack-encoded [`ServerMessage`]s.
//!
//! | kind | fields | published by |
//! |---|---|---|
//! | `D` durable | seq, epoch, ts, body (seq and ts are filled in on receipt) | the publish script; also the history stream entry |
//! | `V` volatile | origin node instance (empty: none), excluded user (empty: none), body | a node; presence-join envelopes built by a node, published by a script |
//! | `L` presence leave | user | the presence scripts |
//! | `U` user event | user, body | a node |
//! | `X` user disconnect | user, reason | a node |
//! | `C` canary | nonce | a node, to its own channel |

use switchyard_protocol::ServerMessage;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Envelope {
    Durable {
        seq: u64,
        epoch: String,
        message: ServerMessage,
    },
    Volatile {
        origin: String,
        exclude_user: Option<String>,
        message: ServerMessage,
    },
    PresenceLeave {
        user_id: String,
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

#[derive(Debug, thiserror::Error)]
#[error("malformed envelope: {0}")]
pub(crate) struct EnvelopeError(String);

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(bytes);
}

/// MessagePack of a message, as it travels between nodes.
pub(crate) fn body(message: &ServerMessage) -> Vec<u8> {
    // Serializing our own message types into a Vec cannot fail.
    rmp_serde::to_vec_named(message).unwrap_or_default()
}

pub(crate) fn volatile(
    origin: &str,
    exclude_user: Option<&str>,
    message: &ServerMessage,
) -> Vec<u8> {
    let body = body(message);
    let mut out = Vec::with_capacity(body.len() + 64);
    out.push(b'V');
    field(&mut out, origin.as_bytes());
    field(&mut out, exclude_user.unwrap_or("").as_bytes());
    field(&mut out, &body);
    out
}

pub(crate) fn user_event(user_id: &str, message: &ServerMessage) -> Vec<u8> {
    let body = body(message);
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

    fn text(&mut self) -> Result<String, EnvelopeError> {
        String::from_utf8(self.next()?.to_vec()).map_err(|_| EnvelopeError("not UTF-8".into()))
    }

    fn number(&mut self) -> Result<u64, EnvelopeError> {
        self.text()?
            .parse()
            .map_err(|_| EnvelopeError("bad number".into()))
    }

    fn message(&mut self) -> Result<ServerMessage, EnvelopeError> {
        rmp_serde::from_slice(self.next()?).map_err(|e| EnvelopeError(format!("body: {e}")))
    }
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
            let mut message = f.message()?;
            place(&mut message, seq, ts);
            Envelope::Durable {
                seq,
                epoch,
                message,
            }
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
        b'L' => Envelope::PresenceLeave { user_id: f.text()? },
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
    fn durable_gets_its_place_on_receipt() {
        let message = ServerMessage::NewMessage {
            room_id: "r".into(),
            id: "x".into(),
            seq: 0,
            user_id: "u".into(),
            name: None,
            text: "hi".into(),
            data: Some(serde_json::json!({"n": 1})),
            ts: 0,
            temp_id: Ref::Int(3),
        };
        // What the publish script builds: 'D' .. f(seq) .. f(epoch) .. f(ts) .. f(body).
        let mut bytes = vec![b'D'];
        field(&mut bytes, b"17");
        field(&mut bytes, b"ep");
        field(&mut bytes, b"1700000000000");
        field(&mut bytes, &body(&message));
        let Envelope::Durable {
            seq,
            epoch,
            message,
        } = decode(&bytes).unwrap()
        else {
            panic!("not durable")
        };
        assert_eq!((seq, epoch.as_str()), (17, "ep"));
        assert_eq!(message.seq(), Some(17));
        assert!(matches!(
            message,
            ServerMessage::NewMessage {
                ts: 1_700_000_000_000,
                ..
            }
        ));
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in [&b""[..], b"Q", b"D3:12", b"L9:abc", b"Dx:1"] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }
}
