//! The structured log line of CONTRACT §7, for tools that read Tether's logs.
//!
//! The server writes these lines through `tracing`; this type lets tests, `xtask doctor` and
//! any other reader parse them without guessing the shape.
use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// Severity of a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Only with `RUST_LOG`.
    Trace,
    /// Only with `RUST_LOG`.
    Debug,
    /// Normal events.
    Info,
    /// Something an operator should look at.
    Warn,
    /// Something failed.
    Error,
}

/// One JSON log line: `{"timestamp","level","component","event","data","connectionId"}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// When it happened (RFC 3339, UTC, milliseconds).
    pub timestamp: Timestamp,
    /// Severity.
    pub level: LogLevel,
    /// `websocket`, `ngrok`, `server`, `store`, `twilio`, `client`, `xtask`, …
    pub component: String,
    /// snake_case event name, e.g. `auth_failure`.
    pub event: String,
    /// Event details.
    #[serde(default)]
    pub data: serde_json::Map<String, serde_json::Value>,
    /// The connection concerned, where one is.
    #[serde(
        rename = "connectionId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub connection_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_contract_example() {
        let line = r#"{"timestamp":"2026-11-27T14:00:00.123Z","level":"warn","component":"websocket","event":"auth_failure","data":{"reason":"token expired"},"connectionId":"c_01H.."}"#;
        let entry: LogEntry = serde_json::from_str(line).unwrap();
        assert_eq!(entry.level, LogLevel::Warn);
        assert_eq!(entry.event, "auth_failure");
        assert_eq!(entry.connection_id.as_deref(), Some("c_01H.."));
        let back: serde_json::Value = serde_json::to_value(&entry).unwrap();
        assert_eq!(
            back,
            serde_json::from_str::<serde_json::Value>(line).unwrap()
        );
    }
}
