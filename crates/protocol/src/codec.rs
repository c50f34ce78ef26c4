//! Decoding and encoding frames, with limits that make hostile input a typed error.
//!
//! Decoding never panics. It refuses, with a [`DecodeError`] a server can turn into an
//! `error` `BAD_REQUEST` frame: invalid JSON, anything but an object, a missing or unknown
//! `type`, missing or mistyped fields, nesting deeper than [`MAX_JSON_DEPTH`], and ids, tokens
//! or client names longer than their limits. The size of a whole frame is the transport's
//! business (the server closes with 1009 before decoding).
use serde::Serialize;

use crate::defaults::{
    MAX_CLIENT_NAME_BYTES, MAX_EPOCH_BYTES, MAX_ID_BYTES, MAX_JSON_DEPTH, MAX_TOKEN_BYTES,
};
use crate::message::{CLIENT_TYPES, ClientMessage, SERVER_TYPES, ServerMessage};

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON at all (or truncated).
    #[error("invalid JSON: {0}")]
    Syntax(String),
    /// JSON, but not an object with a string `type` field.
    #[error("a frame must be a JSON object with a string \"type\" field")]
    NotAMessage,
    /// A `type` this side does not know.
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    /// A known `type` whose fields are missing or of the wrong type.
    #[error("invalid {kind} message: {detail}")]
    Invalid {
        /// The message type.
        kind: String,
        /// What is wrong.
        detail: String,
    },
    /// Nested deeper than [`MAX_JSON_DEPTH`].
    #[error("JSON nested deeper than {MAX_JSON_DEPTH} levels")]
    TooDeep,
    /// A field over its length limit.
    #[error("field {field} is {len} bytes; the limit is {max}")]
    FieldTooLong {
        /// The field name.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Decodes a client frame and checks its field limits.
pub fn decode_client(text: &str) -> Result<ClientMessage, DecodeError> {
    let msg: ClientMessage = decode(text, &CLIENT_TYPES)?;
    check_client_limits(&msg)?;
    Ok(msg)
}

/// Decodes a server frame.
pub fn decode_server(text: &str) -> Result<ServerMessage, DecodeError> {
    decode(text, &SERVER_TYPES)
}

/// Encodes any message (or HTTP body) as one line of JSON.
pub fn encode<T: Serialize>(msg: &T) -> String {
    serde_json::to_string(msg).expect("protocol types have string keys and no fallible serializers")
}

fn decode<T: serde::de::DeserializeOwned>(text: &str, known: &[&str]) -> Result<T, DecodeError> {
    if json_depth_exceeds(text.as_bytes(), MAX_JSON_DEPTH) {
        return Err(DecodeError::TooDeep);
    }
    serde_json::from_str(text).map_err(|err| classify(text, known, err))
}

/// Explains a failed decode. Runs only on the error path, so re-reading the frame is fine.
fn classify(text: &str, known: &[&str], err: serde_json::Error) -> DecodeError {
    use serde_json::error::Category;
    if matches!(
        err.classify(),
        Category::Syntax | Category::Eof | Category::Io
    ) {
        return DecodeError::Syntax(err.to_string());
    }
    #[derive(serde::Deserialize)]
    struct Envelope {
        #[serde(rename = "type")]
        kind: String,
    }
    match serde_json::from_str::<Envelope>(text) {
        Err(_) => DecodeError::NotAMessage,
        Ok(Envelope { kind }) if !known.contains(&kind.as_str()) => {
            DecodeError::UnknownType(truncate(kind, 64))
        }
        Ok(Envelope { kind }) => DecodeError::Invalid {
            kind,
            detail: strip_position(&err),
        },
    }
}

fn strip_position(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.find(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

fn check_client_limits(msg: &ClientMessage) -> Result<(), DecodeError> {
    fn limit(field: &'static str, value: &str, max: usize) -> Result<(), DecodeError> {
        if value.len() > max {
            return Err(DecodeError::FieldTooLong {
                field,
                len: value.len(),
                max,
            });
        }
        Ok(())
    }
    match msg {
        ClientMessage::Hello(h) => {
            limit("token", h.token.expose(), MAX_TOKEN_BYTES)?;
            limit(
                "client",
                h.client.as_deref().unwrap_or(""),
                MAX_CLIENT_NAME_BYTES,
            )
        }
        ClientMessage::Refresh(r) => limit("token", r.token.expose(), MAX_TOKEN_BYTES),
        ClientMessage::Publish(p) => {
            if p.id.is_empty() {
                return Err(DecodeError::Invalid {
                    kind: "publish".into(),
                    detail: "id must not be empty".into(),
                });
            }
            limit("id", &p.id, MAX_ID_BYTES)
        }
        ClientMessage::Subscribe(s) => {
            limit("epoch", s.epoch.as_deref().unwrap_or(""), MAX_EPOCH_BYTES)
        }
        ClientMessage::Ping(_) | ClientMessage::Unsubscribe(_) | ClientMessage::Report(_) => Ok(()),
    }
}

/// Whether `json` nests arrays/objects deeper than `max`.
///
/// Hand-written because serde_json's own guard is a fixed 128 levels that the caller cannot
/// lower; this is one pass over the bytes that skips string contents (and their escapes).
/// Malformed input is left for the parser to report.
pub fn json_depth_exceeds(json: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_scan_ignores_brackets_in_strings() {
        assert!(!json_depth_exceeds(br#"{"a":"[[[[[[[[[[[["}"#, 2));
        assert!(!json_depth_exceeds(br#"{"a":"\"[[[[["}"#, 2));
        assert!(json_depth_exceeds(b"[[[", 2));
        assert!(!json_depth_exceeds(b"[[]]", 2));
    }

    #[test]
    fn classifies_errors() {
        assert!(matches!(decode_client("{"), Err(DecodeError::Syntax(_))));
        assert!(matches!(
            decode_client("not json"),
            Err(DecodeError::Syntax(_))
        ));
        assert_eq!(decode_client("[]"), Err(DecodeError::NotAMessage));
        assert_eq!(decode_client("42"), Err(DecodeError::NotAMessage));
        assert_eq!(decode_client(r#"{"id":1}"#), Err(DecodeError::NotAMessage));
        assert_eq!(
            decode_client(r#"{"type":7}"#),
            Err(DecodeError::NotAMessage)
        );
        assert_eq!(
            decode_client(r#"{"type":"welcome"}"#),
            Err(DecodeError::UnknownType("welcome".into()))
        );
        let Err(DecodeError::Invalid { kind, detail }) =
            decode_client(r#"{"type":"ping","id":"x"}"#)
        else {
            panic!("a mistyped id is an invalid ping")
        };
        assert_eq!(kind, "ping");
        assert!(!detail.contains("line"), "{detail}");
        assert!(matches!(
            decode_client(r#"{"type":"publish","id":"a","channel":"c"}"#),
            Err(DecodeError::Invalid { .. })
        ));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let msg = decode_client(r#"{"type":"ping","id":1,"extra":{"deep":[1,2]}}"#).unwrap();
        assert_eq!(msg, ClientMessage::Ping(crate::Ping { id: 1 }));
    }

    #[test]
    fn limits_apply() {
        let long_id = "x".repeat(MAX_ID_BYTES + 1);
        let frame = format!(r#"{{"type":"publish","id":"{long_id}","channel":"c","data":1}}"#);
        assert!(matches!(
            decode_client(&frame),
            Err(DecodeError::FieldTooLong { field: "id", .. })
        ));
        let empty = r#"{"type":"publish","id":"","channel":"c","data":1}"#;
        assert!(matches!(
            decode_client(empty),
            Err(DecodeError::Invalid { .. })
        ));
        let deep = format!(
            r#"{{"type":"publish","id":"a","channel":"c","data":{}1{}}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        assert_eq!(decode_client(&deep), Err(DecodeError::TooDeep));
    }

    #[test]
    fn unknown_type_is_truncated() {
        let frame = format!(r#"{{"type":"{}"}}"#, "z".repeat(10_000));
        let Err(DecodeError::UnknownType(kind)) = decode_client(&frame) else {
            panic!("an unknown type decodes to UnknownType")
        };
        assert!(kind.len() < 100);
    }
}
