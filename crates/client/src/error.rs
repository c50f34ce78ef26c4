//! The client's errors, one enum per operation.
use protocol::ErrorCode;
use resilience::queue::QueueError;

/// Why a publish did not end with an `ack`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// Refused before queueing: the queue is full, the message is too large, the id or the
    /// channel is bad. Nothing was queued or sent.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The server refused it for good (`nack` `FORBIDDEN` or `BAD_REQUEST`, CONTRACT §5.4).
    #[error("refused by the server ({code}): {message}")]
    Refused {
        /// The nack's code.
        code: ErrorCode,
        /// The nack's message.
        message: String,
    },
    /// The server closed the connection with 1009 while it was in flight: it is too large
    /// for the server and is never resent.
    #[error("too large for the server (closed with 1009)")]
    TooLarge,
    /// It waited in the queue longer than the deduplication window.
    #[error("expired in the queue before it could be sent")]
    Expired,
    /// The client was closed before the message was acknowledged. It stays in the outbox
    /// file, when there is one, and is sent by the next client using it.
    #[error("the client was closed before the message was acknowledged")]
    Closed,
}

/// Why a subscribe was not registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// The channel name is invalid.
    #[error(transparent)]
    BadChannel(#[from] protocol::ChannelNameError),
    /// The client was closed.
    #[error("the client is closed")]
    Closed,
}

/// Why a client could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The outbox file could not be read.
    #[error(transparent)]
    Outbox(#[from] crate::outbox::OutboxError),
    /// The URL is not a `ws://` or `wss://` URL.
    #[error("not a ws:// or wss:// URL: {0}")]
    BadUrl(String),
}
