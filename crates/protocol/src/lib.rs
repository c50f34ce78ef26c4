//! `protocol`: everything Tether puts on the wire, and nothing else.
//!
//! This crate is the leaf every other crate builds on. It holds the `tether.v1` messages
//! (CONTRACT §5) as two closed enums, [`ClientMessage`] and [`ServerMessage`]; the error codes
//! (§6) and close codes (§5.7) with the action each implies for a client; the connection states
//! and their UI labels (§8); the JWT claims with channel-glob rights (§5.1, verification lives in
//! the server); channel-name validation; the structured log entry (§7); the HTTP bodies (§3);
//! and the client defaults of the original rules.
//!
//! It does no IO, reads no clock and holds no crypto, so it builds unchanged for
//! `wasm32-unknown-unknown`.
//!
//! ```
//! use protocol::{decode_client, encode, ClientMessage, ServerMessage, Pong, Timestamp};
//!
//! let msg = decode_client(r#"{"type":"ping","id":7}"#).unwrap();
//! let ClientMessage::Ping(ping) = msg else { unreachable!("a ping frame decodes to Ping") };
//! let reply = ServerMessage::Pong(Pong { id: ping.id, server_time: Timestamp::from_unix_millis(0) });
//! assert_eq!(encode(&reply), r#"{"type":"pong","id":7,"server_time":"1970-01-01T00:00:00.000Z"}"#);
//! ```
#![warn(missing_docs)]
#![warn(clippy::disallowed_methods)]

pub mod channel;
pub mod claims;
pub mod codec;
pub mod codes;
pub mod defaults;
pub mod http;
pub mod log;
pub mod message;
pub mod state;
pub mod time;
pub mod token;

pub use channel::{ChannelGlob, ChannelName, ChannelNameError};
pub use claims::{Audience, ChannelRights, Claims};
pub use codec::{DecodeError, decode_client, decode_server, encode};
pub use codes::{CloseAction, CloseCode, ErrorCode};
pub use log::{LogEntry, LogLevel};
pub use message::{
    Ack, ClientMessage, Delivery, ErrorFrame, Hello, Nack, Ping, Pong, Publish, Reconnect,
    ReconnectReason, Refresh, Refreshed, Report, RttSummary, ServerMessage, Subscribe, Subscribed,
    TokenExpiring, Unsubscribe, Unsubscribed, Welcome,
};
pub use state::ConnectionState;
pub use time::Timestamp;
pub use token::Token;

/// The WebSocket subprotocol the server accepts when a client offers it.
pub const SUBPROTOCOL: &str = "tether.v1";
