//! The Switchyard wire protocol (v1): the messages clients and servers exchange, their JSON and
//! MessagePack encodings, and the validation rules and limits of `docs/protocol.md`.
//!
//! This crate does no I/O and knows nothing of tokio, so it can be fuzzed and reused by every
//! other crate (the gateway, the brokers, the Rust client).
//!
//! - [`client`]: messages a client sends, parsed and validated from a decoded frame.
//! - [`server`]: messages the server sends, and the error codes.
//! - [`codec`]: frame decoding, message encoding, batch framing and [`SharedFrame`], the
//!   encode-once-per-node cache used by the fan-out path.
//! - [`limits`]: the size limits, with their defaults.
//! - [`ids`]: room ids, `ref`/`tempId` values and room glob patterns.
//! - [`fuzzing`]: the bodies of the fuzz targets (`fuzz/`, and the bounded run in CI).

pub mod client;
pub mod codec;
pub mod fuzzing;
pub mod ids;
pub mod limits;
pub mod server;

pub use client::{parse_message, ClientMessage, Inbound, Rejection};
pub use codec::{decode_frame, Encoding, FrameError, SharedFrame};
pub use ids::{fnv1a, glob_match, validate_event_name, validate_room_id, Ref};
pub use limits::Limits;
pub use server::{AckError, ErrorCode, Member, MemberList, ServerMessage};

/// Milliseconds since the Unix epoch, the unit of every `ts` and `joinedAt` in the protocol.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
