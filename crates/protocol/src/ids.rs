//! Identifiers that travel in messages: room ids (with their character rule and the reserved
//! `user:` prefix), `ref`/`tempId` values, and the glob patterns of the token's `rooms` claim.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::limits::{MAX_EVENT_NAME_CHARS, MAX_REF_CHARS, MAX_ROOM_ID_CHARS};

/// Rooms whose id starts with this prefix are reserved for the server (per-user channels).
pub const RESERVED_ROOM_PREFIX: &str = "user:";

/// Checks the `roomId` rule: 1 to 128 characters of `A-Z a-z 0-9 _ - : . @`.
pub fn validate_room_id(room: &str) -> Result<(), String> {
    if room.is_empty() || room.len() > MAX_ROOM_ID_CHARS {
        return Err(format!(
            "roomId must be 1 to {MAX_ROOM_ID_CHARS} characters"
        ));
    }
    if let Some(c) = room
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '.' | '@')))
    {
        return Err(format!(
            "roomId may only hold A-Z a-z 0-9 _ - : . @ (found {c:?})"
        ));
    }
    Ok(())
}

/// Whether a room id is reserved for the server (clients may not join or subscribe to it).
pub fn is_reserved_room(room: &str) -> bool {
    room.starts_with(RESERVED_ROOM_PREFIX)
}

/// A client-chosen correlation value: `ref` (echoed on replies) or `tempId` (idempotency key).
/// Either a string of at most 64 characters or an integer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Ref {
    Int(i64),
    Str(String),
}

impl Ref {
    /// Reads a `ref`/`tempId` from a decoded value, enforcing its type and length.
    pub fn from_value(field: &str, value: &serde_json::Value) -> Result<Ref, String> {
        match value {
            serde_json::Value::String(s) if s.chars().count() > MAX_REF_CHARS => Err(format!(
                "{field} must be at most {MAX_REF_CHARS} characters"
            )),
            serde_json::Value::String(s) => Ok(Ref::Str(s.clone())),
            serde_json::Value::Number(n) => n
                .as_i64()
                .map(Ref::Int)
                .ok_or_else(|| format!("{field} must be a string or an integer")),
            _ => Err(format!("{field} must be a string or an integer")),
        }
    }
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ref::Int(i) => write!(f, "{i}"),
            Ref::Str(s) => f.write_str(s),
        }
    }
}

/// Checks a custom event name: 1 to 128 characters.
pub fn validate_event_name(event: &str) -> Result<(), String> {
    let len = event.chars().count();
    if len == 0 || len > MAX_EVENT_NAME_CHARS {
        return Err(format!(
            "event must be 1 to {MAX_EVENT_NAME_CHARS} characters"
        ));
    }
    Ok(())
}

/// 64-bit FNV-1a: a hash that is the same in every process and version (unlike std's), for
/// values that must agree across nodes (cursor colours) or be cheap (conflation keys).
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Matches a room id against a glob of the `rooms` claim: `*` is any run of characters
/// (including none), `?` exactly one; everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Iterative matcher with one backtrack point: linear in practice, no recursion to exploit.
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids() {
        assert!(validate_room_id("doc:42.a_b-c@x").is_ok());
        assert!(validate_room_id("").is_err());
        assert!(validate_room_id("a b").is_err());
        assert!(validate_room_id(&"a".repeat(128)).is_ok());
        assert!(validate_room_id(&"a".repeat(129)).is_err());
        assert!(validate_room_id("é").is_err());
        assert!(is_reserved_room("user:alice"));
    }

    #[test]
    fn globs() {
        assert!(glob_match("doc:*", "doc:1"));
        assert!(glob_match("doc:*", "doc:"));
        assert!(!glob_match("doc:*", "docs:1"));
        assert!(glob_match("team-42", "team-42"));
        assert!(!glob_match("team-42", "team-421"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("*:*:x", "a:b:x"));
        assert!(!glob_match("*:*:x", "a:b:y"));
    }

    #[test]
    fn refs() {
        assert_eq!(
            Ref::from_value("ref", &serde_json::json!("a")),
            Ok(Ref::Str("a".into()))
        );
        assert_eq!(
            Ref::from_value("ref", &serde_json::json!(7)),
            Ok(Ref::Int(7))
        );
        assert!(Ref::from_value("ref", &serde_json::json!(1.5)).is_err());
        assert!(Ref::from_value("ref", &serde_json::json!("x".repeat(65))).is_err());
        assert!(Ref::from_value("ref", &serde_json::json!({})).is_err());
    }
}
