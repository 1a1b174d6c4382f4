//! The fuzz targets' bodies, shared by the cargo-fuzz targets in `fuzz/` (libFuzzer, nightly)
//! and by the bounded stable run in `tests/fuzz.rs` (seed corpus plus mutations, in CI). Each
//! takes arbitrary bytes and panics only when an invariant of the protocol breaks.

use crate::{decode_frame, parse_message, Encoding, FrameError, Limits, ServerMessage};

/// The inbound path as a node runs it: decode a frame (first byte: 0 text/JSON, else
/// binary/MessagePack), then parse and validate each message it holds.
pub fn frame(data: &[u8]) {
    let Some((&kind, payload)) = data.split_first() else {
        return;
    };
    let limits = Limits::default();
    match decode_frame(payload, kind & 1 == 1, limits.max_batch) {
        Ok(items) => {
            assert!(!items.is_empty() && items.len() <= limits.max_batch);
            for item in items {
                message_value(item, &limits);
            }
        }
        Err(FrameError::EmptyBatch) | Err(FrameError::Malformed(_)) => {}
        Err(FrameError::BatchTooLarge { got, max }) => assert!(got > max),
    }
}

/// The validation path alone: the bytes as one JSON message.
pub fn message(data: &[u8]) {
    if let Ok(value) = serde_json::from_slice(data) {
        message_value(value, &Limits::default());
    }
}

fn message_value(value: serde_json::Value, limits: &Limits) {
    let inbound = parse_message(value, limits);
    // Whatever was refused is answered; what was accepted can be answered too: an error
    // frame echoing its `ref` always encodes, in both encodings.
    let error = ServerMessage::Error {
        code: match &inbound.message {
            Ok(_) => crate::ErrorCode::Internal,
            Err(rejection) => rejection.code,
        },
        message: "fuzz".into(),
        reference: inbound.reference,
        retry_after_ms: None,
    };
    for encoding in [Encoding::Json, Encoding::MsgPack] {
        assert!(!crate::codec::encode(&error, encoding).is_empty());
    }
}
