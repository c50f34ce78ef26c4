//! The session machine's inputs and outputs: the socket's [`Frame`]s, the store and hub
//! operations it asks for ([`StoreOp`], [`HubOp`]) and their replies ([`StoreReply`]), and
//! the [`Output`]s the driver carries out in order.
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use protocol::Report;

use crate::abuse::Offence;
use crate::store::{ChannelInfo, PublishOutcome, PublishRequest, StoreError, StoredMessage};

/// One thing the socket delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A text frame.
    Text(&'a str),
    /// A binary frame (not part of the protocol).
    Binary,
    /// A WebSocket ping (tungstenite answers it).
    Ping,
    /// A WebSocket pong with its payload.
    Pong(&'a [u8]),
    /// The client's close frame, with its code.
    Close(Option<u16>),
    /// A frame above the message limit.
    TooBig,
    /// A text frame that is not UTF-8.
    BadUtf8,
    /// The transport failed or the stream ended.
    Lost,
}

/// A store operation the driver must run, answered with [`crate::session::Machine::handle_store_reply`].
#[derive(Debug, Clone, PartialEq)]
pub enum StoreOp {
    /// The channel's state (creating it when missing), for a `subscribe`.
    Info {
        /// The channel.
        channel: String,
        /// Echoed in the reply.
        ticket: u64,
    },
    /// Up to `limit` messages after `after`, then the channel's state (read after the page, so
    /// its epoch tells whether the page might mix two epochs).
    Read {
        /// The channel.
        channel: String,
        /// Echoed in the reply.
        ticket: u64,
        /// Exclusive start offset.
        after: u64,
        /// Page size.
        limit: usize,
    },
    /// Store a publish. The driver must submit it before running the next output, so a
    /// connection's publishes reach the store in frame order; replies come back in that order.
    Publish(PublishRequest),
}

/// The result of a [`StoreOp`].
#[derive(Debug)]
pub enum StoreReply {
    /// Answer to [`StoreOp::Info`].
    Info {
        /// From the request.
        ticket: u64,
        /// The channel's state.
        result: Result<ChannelInfo, StoreError>,
    },
    /// Answer to [`StoreOp::Read`].
    Page {
        /// From the request.
        ticket: u64,
        /// The page and the channel's state read after it.
        result: Result<(Vec<StoredMessage>, ChannelInfo), StoreError>,
    },
    /// Answer to [`StoreOp::Publish`], in publish order.
    Published {
        /// The publish's id.
        id: String,
        /// Its channel.
        channel: String,
        /// What the store did.
        result: Result<PublishOutcome, StoreError>,
    },
}

/// A hub operation the driver must run at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubOp {
    /// Register in catching-up mode as subscription `generation`.
    Register {
        /// The channel.
        channel: String,
        /// The subscription's number.
        generation: u64,
    },
    /// Leave the channel.
    Unregister {
        /// The channel.
        channel: String,
    },
    /// Ask to turn live after `upto` on epoch `epoch`; answer with [`crate::session::Machine::handle_go_live`]
    /// before the next output.
    TryGoLive {
        /// The channel.
        channel: String,
        /// The subscription's number.
        generation: u64,
        /// The last offset written.
        upto: u64,
        /// The replay's [`crate::outbound::epoch_tag`].
        epoch: u64,
    },
}

/// What the driver must do next.
#[derive(Debug)]
pub enum Output {
    /// Write this text frame.
    Text(Utf8Bytes),
    /// Write a WebSocket ping with this sequence number as its 8-byte payload.
    Ping(u64),
    /// Write `notice` (bounded in time) if any, then close with `code`; the connection ends.
    Close {
        /// The close code.
        code: u16,
        /// The close reason (also logged).
        reason: &'static str,
        /// A last frame before the close.
        notice: Option<Utf8Bytes>,
    },
    /// The connection ended without a close frame from us (lost, or closed by the client:
    /// flush tungstenite's queued close reply).
    End {
        /// The code logged in `connection_closed`.
        code: u16,
        /// The reason logged.
        reason: &'static str,
    },
    /// Run a store operation.
    Store(StoreOp),
    /// Run a hub operation.
    Hub(HubOp),
    /// Ask admission for this `sub`'s connection slot ([`crate::session::Machine::sub`]); answer with
    /// [`crate::session::Machine::handle_admission`] before the next output.
    Admit,
    /// Count an offence of this client.
    Offence(Offence),
    /// Count a failed token check (hello, or refresh of [`crate::session::Machine::sub`]).
    AuthFailed,
    /// A measured ping round trip, for `/health`.
    Rtt(Duration),
    /// Fold this client quality report into the fleet summary (CONTRACT §5.8); a refusal
    /// goes back with [`crate::session::Machine::handle_report_refused`].
    Report(Box<Report>),
}
