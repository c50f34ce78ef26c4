//! What the client tells the application: [`ClientEvent`]s, the items of a
//! [`crate::Subscription`], and the [`Status`] snapshot a UI (or `tether probe`) renders.
use std::time::{Duration, Instant};

use protocol::{ConnectionState, Delivery, ErrorCode};
use resilience::alerts::{AlertEvent, AlertKind};
use resilience::metrics::QualitySnapshot;
use resilience::{BreakerTransition, RttStats, WaitCause};

/// Something that happened to the connection or to a publish.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientEvent {
    /// The connection state changed.
    StateChanged {
        /// The old state.
        from: ConnectionState,
        /// The new state.
        to: ConnectionState,
    },
    /// `welcome` arrived.
    Connected {
        /// The server's connection id.
        connection_id: String,
        /// The attempt that succeeded.
        attempt: u32,
    },
    /// The next attempt is scheduled.
    AttemptScheduled {
        /// Its number.
        attempt: u32,
        /// How long from now.
        delay: Duration,
        /// Why this long (backoff, the server's advice, the breaker, the network).
        cause: WaitCause,
    },
    /// The server advised reconnecting after `after_ms` (`reconnect`, before 1012).
    ReconnectAdvised {
        /// The advised wait, ms.
        after_ms: u64,
    },
    /// An attempt failed.
    RetryFailed {
        /// Its number.
        attempt: u32,
        /// Failed attempts counted toward the budget (and the breaker) so far.
        failures: u32,
        /// The contract code it counts as.
        code: ErrorCode,
        /// What happened.
        reason: String,
    },
    /// An established connection ended.
    ConnectionLost {
        /// The contract code it counts as.
        code: ErrorCode,
        /// What happened.
        reason: String,
        /// How long it had been up.
        connected_for: Duration,
    },
    /// The circuit breaker opened or closed.
    Breaker(BreakerTransition),
    /// A round-trip sample.
    Rtt(Duration),
    /// An alert began or ended.
    Alert(AlertEvent),
    /// The periodic quality sample (also logged as `connection_quality`).
    Quality(QualitySnapshot),
    /// A publish was acknowledged (also those restored from the outbox, which nobody awaits).
    Acked {
        /// The publish id.
        id: String,
        /// The channel.
        channel: String,
        /// The offset it is stored at.
        offset: u64,
        /// Whether the server had stored it before (a resend).
        duplicate: bool,
    },
    /// A publish failed for good.
    PublishFailed {
        /// The publish id.
        id: String,
        /// The channel.
        channel: String,
        /// Why.
        reason: String,
    },
    /// `recovered: false`: messages of this channel were missed for good; refetch its state.
    /// The subscription's stream carries the same notice in order.
    NotRecovered {
        /// The channel.
        channel: String,
        /// The channel's epoch now.
        epoch: String,
        /// The first offset replayed from now on.
        replay_from: u64,
    },
    /// The token was replaced without reconnecting (`refreshed`).
    TokenRefreshed,
    /// An `error` frame that concerns no publish and no channel.
    ServerError {
        /// The code.
        code: ErrorCode,
        /// The message.
        message: String,
    },
}

/// One item of a subscription, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum SubscriptionItem {
    /// The next message: its offset is exactly the previous one + 1 (or the first after a
    /// start or a reset).
    Message(Delivery),
    /// `recovered: false`: offsets were forgotten; messages continue from `replay_from`.
    Reset {
        /// The channel's epoch now.
        epoch: String,
        /// The first offset that follows.
        replay_from: u64,
    },
    /// The server ended the subscription (refused, or rights lost on refresh).
    Ended {
        /// The error code, when the server gave one.
        code: Option<ErrorCode>,
        /// The reason.
        message: String,
    },
}

/// A snapshot of one client's connection, updated after every step of the driver.
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    /// The connection state.
    pub state: ConnectionState,
    /// The number of the attempt under way or last made since the last success.
    pub attempt: u32,
    /// When the next attempt starts, while waiting for it.
    pub next_attempt_at: Option<Instant>,
    /// The server's id for the current connection.
    pub connection_id: Option<String>,
    /// RTT over the heartbeat's window.
    pub rtt: RttStats,
    /// The most recent RTT samples, oldest first (for a sparkline).
    pub rtt_history: Vec<Duration>,
    /// Successful reconnections.
    pub reconnects: u64,
    /// Publishes waiting in the queue (in flight included).
    pub queue_length: usize,
    /// Alerts in force.
    pub alerts: Vec<AlertKind>,
    /// The full quality figures.
    pub quality: QualitySnapshot,
}
