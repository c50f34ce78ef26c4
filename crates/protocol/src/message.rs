//! The `tether.v1` messages (CONTRACT §5): one JSON object per text frame, tagged by `"type"`.
//!
//! [`ClientMessage`] is everything a client may send, [`ServerMessage`] everything the server
//! sends. Both are closed: an unknown `type` is a decode error. Unknown fields are ignored.
//! Channel names travel as plain strings so the server can answer a bad one with an `error`
//! that names the channel; validate them with [`crate::ChannelName::parse`].
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::codes::ErrorCode;
use crate::time::Timestamp;
use crate::token::Token;

/// A frame from client to server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// First frame: authenticate.
    Hello(Hello),
    /// Heartbeat; answered at once with `pong`.
    Ping(Ping),
    /// Subscribe (or re-subscribe) to a channel, optionally replaying after an offset.
    Subscribe(Subscribe),
    /// End a subscription.
    Unsubscribe(Unsubscribe),
    /// Publish a message, exactly once per `id`.
    Publish(Publish),
    /// Replace the connection's token without reconnecting.
    Refresh(Refresh),
    /// A client's connection-quality report (CONTRACT §5.8); the server does not answer.
    Report(Report),
}

/// `{"type":"hello","token":"<JWT>","client":"web/0.1.0"}`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The JWT.
    pub token: Token,
    /// Free-form client identification, e.g. `web/0.1.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

/// `{"type":"ping","id":7}`
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// Echoed in the `pong`, to match it to this ping.
    pub id: u64,
}

/// `{"type":"subscribe","channel":"room:1","since":12,"epoch":".."}`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribe {
    /// The channel.
    pub channel: String,
    /// Replay retained messages with a larger offset; absent: live messages only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    /// The epoch the client knew `since` in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

/// `{"type":"unsubscribe","channel":".."}`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsubscribe {
    /// The channel.
    pub channel: String,
}

/// `{"type":"publish","id":"..","channel":"room:1","data":<JSON>}`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Publish {
    /// Client-chosen unique id; a repeat within the deduplication window is stored once.
    pub id: String,
    /// The channel.
    pub channel: String,
    /// Any JSON value.
    pub data: Value,
}

/// `{"type":"refresh","token":"<new JWT>"}`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refresh {
    /// The new JWT; must carry the same `sub`.
    pub token: Token,
}

/// `{"type":"report","rtt_ms":{"last":41,"p50":38,"p95":120},"reconnects":2,...}` (CONTRACT §5.8).
///
/// Sent every 60 s while connected and once right after a reconnect. Every field is optional,
/// so an older or smaller client can send what it has.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Round-trip times the client measured, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<RttSummary>,
    /// Reconnections since the client started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnects: Option<u64>,
    /// Failed connection attempts since the client started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_attempts: Option<u64>,
    /// Total time spent without a connection, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<u64>,
    /// Publishes waiting in the client's outbound queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<u64>,
    /// Acknowledged ÷ sent publishes, 0.0–1.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_rate: Option<f64>,
}

/// The round-trip summary inside a [`Report`], in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RttSummary {
    /// The latest sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<f64>,
    /// The median of the client's window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50: Option<f64>,
    /// The 95th percentile of the client's window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95: Option<f64>,
}

/// A frame from server to client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Answer to a good `hello`.
    Welcome(Welcome),
    /// Answer to a `ping`.
    Pong(Pong),
    /// Answer to a `subscribe`; replayed messages follow.
    Subscribed(Subscribed),
    /// Answer to an `unsubscribe`.
    Unsubscribed(Unsubscribed),
    /// A message delivered on a subscribed channel.
    Message(Delivery),
    /// A publish was stored.
    Ack(Ack),
    /// A publish was refused.
    Nack(Nack),
    /// A refused frame or a connection-level error.
    Error(ErrorFrame),
    /// The token expires soon; send `refresh`.
    TokenExpiring(TokenExpiring),
    /// A `refresh` succeeded.
    Refreshed(Refreshed),
    /// The server advises reconnecting after a delay (it is about to close with 1012).
    Reconnect(Reconnect),
}

/// `{"type":"welcome","connection_id":..,"heartbeat_ms":..,"max_message_bytes":..,"server_time":..,"token_expires_at":..}`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// Unique across restarts and nodes.
    pub connection_id: String,
    /// The heartbeat interval the client should ping at.
    pub heartbeat_ms: u64,
    /// The largest message the server accepts.
    pub max_message_bytes: u64,
    /// The server's clock, for skew estimates.
    pub server_time: Timestamp,
    /// When the presented token expires.
    pub token_expires_at: Timestamp,
}

/// `{"type":"pong","id":7,"server_time":".."}`
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// The ping's id.
    pub id: u64,
    /// The server's clock.
    pub server_time: Timestamp,
}

/// `{"type":"subscribed","channel":..,"epoch":..,"offset":N,"recovered":true,"replayed":3}`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribed {
    /// The channel.
    pub channel: String,
    /// The channel's epoch; changes only when its history is reset.
    pub epoch: String,
    /// The latest offset (0 while the channel has no messages).
    pub offset: u64,
    /// False when the requested history could not be replayed in full: the client must
    /// forget the offsets it had for this channel.
    pub recovered: bool,
    /// How many retained messages follow as replay.
    pub replayed: u64,
}

/// `{"type":"unsubscribed","channel":".."}`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsubscribed {
    /// The channel.
    pub channel: String,
}

/// `{"type":"message","channel":..,"offset":13,"id":..,"data":..,"published_at":..}`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// The channel.
    pub channel: String,
    /// Position in the channel: 1, 2, 3, … with no gap and no repeat per subscriber.
    pub offset: u64,
    /// The publisher's id.
    pub id: String,
    /// The published JSON.
    pub data: Value,
    /// When the server stored it.
    pub published_at: Timestamp,
}

/// `{"type":"ack","id":..,"channel":..,"offset":13,"duplicate":false}`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The publish id.
    pub id: String,
    /// The channel.
    pub channel: String,
    /// The stored offset (the first one, for a duplicate).
    pub offset: u64,
    /// True when this id had been stored before.
    pub duplicate: bool,
}

/// `{"type":"nack","id":..,"code":..,"message":..,"retry_after_ms":N}`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nack {
    /// The publish id.
    pub id: String,
    /// `FORBIDDEN`, `RATE_LIMIT`, `BAD_REQUEST` or `SERVER_ERROR`.
    pub code: ErrorCode,
    /// Human-readable reason.
    pub message: String,
    /// With `RATE_LIMIT` and `SERVER_ERROR`: when to retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// `{"type":"error","code":..,"message":..,"channel":..,"retry_after_ms":N}`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame {
    /// The error code.
    pub code: ErrorCode,
    /// Human-readable reason.
    pub message: String,
    /// The channel concerned, for a refused subscribe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// With `RATE_LIMIT`: when to retry (the close 4429 that follows honours it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// `{"type":"token_expiring","expires_at":".."}`
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenExpiring {
    /// When the current token expires.
    pub expires_at: Timestamp,
}

/// `{"type":"refreshed","token_expires_at":".."}`
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refreshed {
    /// When the new token expires.
    pub token_expires_at: Timestamp,
}

/// `{"type":"reconnect","after_ms":N,"reason":"shutdown"}`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconnect {
    /// Wait this long before reconnecting; spread so clients do not return at once.
    pub after_ms: u64,
    /// Why.
    pub reason: ReconnectReason,
}

/// Why the server advises a reconnect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReconnectReason {
    /// The server is shutting down (drain).
    Shutdown,
    /// An operator is shedding connections (`POST /v1/admin/shed`).
    Shed,
    /// A reason this client does not know; treat it like `shutdown`.
    #[serde(other)]
    Other,
}

impl ClientMessage {
    /// The `type` tag of this message.
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Hello(_) => "hello",
            Self::Ping(_) => "ping",
            Self::Subscribe(_) => "subscribe",
            Self::Unsubscribe(_) => "unsubscribe",
            Self::Publish(_) => "publish",
            Self::Refresh(_) => "refresh",
            Self::Report(_) => "report",
        }
    }
}

impl ServerMessage {
    /// The `type` tag of this message.
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Welcome(_) => "welcome",
            Self::Pong(_) => "pong",
            Self::Subscribed(_) => "subscribed",
            Self::Unsubscribed(_) => "unsubscribed",
            Self::Message(_) => "message",
            Self::Ack(_) => "ack",
            Self::Nack(_) => "nack",
            Self::Error(_) => "error",
            Self::TokenExpiring(_) => "token_expiring",
            Self::Refreshed(_) => "refreshed",
            Self::Reconnect(_) => "reconnect",
        }
    }

    /// An `error` frame without channel or retry hint.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error(ErrorFrame {
            code,
            message: message.into(),
            channel: None,
            retry_after_ms: None,
        })
    }
}

/// The names of every client message type, for error messages and tests.
pub const CLIENT_TYPES: [&str; 7] = [
    "hello",
    "ping",
    "subscribe",
    "unsubscribe",
    "publish",
    "refresh",
    "report",
];

/// The names of every server message type.
pub const SERVER_TYPES: [&str; 11] = [
    "welcome",
    "pong",
    "subscribed",
    "unsubscribed",
    "message",
    "ack",
    "nack",
    "error",
    "token_expiring",
    "refreshed",
    "reconnect",
];
