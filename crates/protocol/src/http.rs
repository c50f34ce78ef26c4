//! The JSON bodies of the HTTP endpoints (CONTRACT §3). `/health` lives in the `health` crate.
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::codes::ErrorCode;
use crate::message::Delivery;

/// `{"error":{"code":"<CODE>","message":"..."}}`, the body of every HTTP error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// One of the codes of CONTRACT §6.
    pub code: ErrorCode,
    /// Human-readable reason.
    pub message: String,
}

impl ErrorBody {
    /// An error body.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code,
                message: message.into(),
            },
        }
    }
}

/// `POST /v1/channels/{channel}/messages` body: `{"id":"<idempotency key>","data":<any JSON>}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PublishBody {
    /// Idempotency key.
    pub id: String,
    /// Any JSON value.
    pub data: Value,
}

/// Answer to a server-side publish: `{"channel":..,"offset":N,"duplicate":false}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishResponse {
    /// The channel.
    pub channel: String,
    /// The stored offset.
    pub offset: u64,
    /// True on a repeat of an id already stored.
    pub duplicate: bool,
}

/// Answer to `GET /v1/channels/{channel}/messages`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryResponse {
    /// The channel.
    pub channel: String,
    /// The channel's epoch.
    pub epoch: String,
    /// Messages in offset order, each shaped like a `message` frame.
    pub messages: Vec<HistoryMessage>,
}

/// A message in a history page: the `message` frame of CONTRACT §5.3, `type` included.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryMessage {
    #[serde(rename = "type")]
    kind: MessageTag,
    /// The message.
    #[serde(flatten)]
    pub message: Delivery,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum MessageTag {
    Message,
}

impl From<Delivery> for HistoryMessage {
    fn from(message: Delivery) -> Self {
        Self {
            kind: MessageTag::Message,
            message,
        }
    }
}

/// Answer to `GET /dev/token`: `{"token":"<JWT>"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenResponse {
    /// The signed JWT. (A plain `String`: this body exists to carry it.)
    pub token: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Timestamp;

    #[test]
    fn error_body_shape() {
        let body = ErrorBody::new(ErrorCode::AuthFailure, "token expired");
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"error":{"code":"AUTH_FAILURE","message":"token expired"}}"#
        );
    }

    #[test]
    fn history_messages_carry_their_type() {
        let page = HistoryResponse {
            channel: "room:1".into(),
            epoch: "e1".into(),
            messages: vec![
                Delivery {
                    channel: "room:1".into(),
                    offset: 1,
                    id: "m1".into(),
                    data: serde_json::json!({"x": 1}),
                    published_at: Timestamp::from_unix_millis(0),
                }
                .into(),
            ],
        };
        let json = serde_json::to_value(&page).unwrap();
        assert_eq!(json["messages"][0]["type"], "message");
        assert_eq!(json["messages"][0]["offset"], 1);
        let back: HistoryResponse = serde_json::from_value(json).unwrap();
        assert_eq!(back, page);
    }
}
