//! Size limits of the protocol. Each has a named default; the gateway makes them configurable.

/// Largest inbound WebSocket frame, in bytes. A larger frame closes the connection with 1009.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024;
/// Longest `text` of a `message`, in Unicode code points.
pub const DEFAULT_MAX_TEXT_CHARS: usize = 4_000;
/// Largest `data` value, measured as its JSON encoding, in bytes.
pub const DEFAULT_MAX_DATA_BYTES: usize = 16 * 1024;
/// Most messages in one client frame (a batch).
pub const DEFAULT_MAX_BATCH: usize = 100;
/// Longest `ref` or `tempId` string, in characters.
pub const MAX_REF_CHARS: usize = 64;
/// Longest custom `event` name, in characters.
pub const MAX_EVENT_NAME_CHARS: usize = 128;
/// Longest `roomId`, in characters.
pub const MAX_ROOM_ID_CHARS: usize = 128;

/// The limits a node enforces on what clients send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub max_text_chars: usize,
    pub max_data_bytes: usize,
    pub max_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_text_chars: DEFAULT_MAX_TEXT_CHARS,
            max_data_bytes: DEFAULT_MAX_DATA_BYTES,
            max_batch: DEFAULT_MAX_BATCH,
        }
    }
}
