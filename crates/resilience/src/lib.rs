//! `resilience`: the sans-IO state machines that keep a Tether client connected.
//!
//! Everything that *decides* about a client connection lives here, written once as pure state
//! machines (STYLE §2, like `quinn-proto` and `str0m`): time is an argument, randomness comes
//! from a seeded RNG the machine owns, and nothing reads a clock, sleeps, spawns or touches a
//! socket. The native client (`crates/client`, tokio) and the web app (`apps/web`, browser)
//! drive the same machines, so they behave identically.
//!
//! | file | machine |
//! |---|---|
//! | `session.rs` | [`Session`]: **what a driver runs** — all of the below composed |
//! | `connection.rs` | [`Connection`]: the five states of CONTRACT §8; composes the next three |
//! | `backoff.rs` | [`Backoff`]: 1 s doubling to 30 s, equal jitter in `[d/2, d]`, budget of 10 |
//! | `breaker.rs` | [`Breaker`]: opens after 5 failures in 60 s, half-open after 30 s, one trial |
//! | `heartbeat.rs` | [`Heartbeat`]: pings, pongs by id, RTT median/p95, dead link after 2.5 × interval |
//! | `queue.rs` | [`OutboundQueue`]: bounded, persistable publishes, ids kept for exactly-once resend |
//! | `subscriptions.rs` | [`Subscriptions`]: last offset + epoch per channel, repeats dropped, gaps repaired |
//! | `metrics.rs` | [`Metrics`], [`QualitySnapshot`]: RTT, delivery rate, attempts, downtime |
//! | `alerts.rs` | [`Alerts`]: latency > 200 ms, > 3 attempts, > 5 failed messages, down > 30 s |
//! | `token.rs` | [`TokenBroker`]: who waits for a token, and what a failed fetch means |
//! | `urls.rs` | [`UrlRing`]: the server URLs and which one the next attempt uses |
//! | `report.rs` | [`ReportTimer`]: when a `report` frame goes out, and what it says |
//!
//! # Defaults ([`Config::new`], from `protocol::defaults`, CONTRACT §8)
//!
//! | setting | value |
//! |---|---|
//! | retry delay | 1000 ms doubling to 30000 ms (un-jittered); waited: uniform in `[d/2, d]` |
//! | attempt budget | 10 failed attempts, then `FAILED` |
//! | connection timeout | 5000 ms from opening the socket to `welcome` |
//! | circuit breaker | opens after 5 failures within 60 s; half-open after 30 s; one trial |
//! | heartbeat | a ping every `heartbeat_ms` of the `welcome` (30000 ms); dead after 2.5 × that with no frame |
//! | RTT window | last 20 samples (median, p95, nearest rank) |
//! | latency threshold | 200 ms (spike event and alert) |
//! | healthy connection | every 2 s up takes one doubling off the next retry; up ≥ 30 s: it starts again at 1 s |
//! | several URLs | after a failed attempt or a lost connection, the next attempt uses the next URL |
//! | quality report | a `report` frame every 60 s while connected, and one right after each reconnect |
//! | server advice | `after_ms` / `retry_after_ms` plus up to 10 % spread; `Retry-After` plus up to 1 s |
//! | outbound queue | 1000 entries, 64 KiB per frame (or the `welcome`'s limit), 256 in flight, 24 h expiry |
//! | alerts | RTT > 200 ms; > 3 attempts in an outage; > 5 failed messages in 5 min; down > 30 s |
//! | quality sample | every 60 s while a connection is wanted |
//!
//! # How to drive it
//!
//! A driver owns a socket, a timer and a clock; the [`Session`] owns every decision.
//!
//! 1. Create it with [`Config::new`] (give each client its own random seed) and both clocks
//!    read once: `Session::new(config, Instant::now(), wall_clock_now)`; or
//!    [`Session::restore`] with what [`Session::persist`] saved last time.
//! 2. Tell it what the app wants: [`Session::connect`], [`Session::subscribe`],
//!    [`Session::publish`], [`Session::close`], [`Session::retry`].
//! 3. Tell it what happened, with the current time: [`Input::SocketOpened`],
//!    [`Session::handle_text`] for every text frame, [`Input::Closed`] (code 1006 when the
//!    close had none), [`Input::TransportError`], [`Input::Refused`] (the upgrade got an HTTP
//!    error such as 429/503, with its `Retry-After`), [`Input::NetworkOnline`] /
//!    [`Input::NetworkOffline`], [`Input::TokenAvailable`] / [`Input::TokenUnavailable`] after
//!    [`Event::TokenNeeded`], and [`Session::handle_timeout`] when [`Session::poll_timeout`]
//!    is reached (early or spurious calls are harmless).
//! 4. After every call, drain [`Session::poll_output`] and do what it says — [`Output::OpenSocket`]
//!    (drop any old socket, open a new one), [`Output::SendHello`] (send `hello` with the
//!    current token), [`Output::Send`] (encode with `protocol::encode` and send),
//!    [`Output::CloseSocket`] (close and forget that socket: ignore its later events) — then
//!    drain [`Session::poll_event`] for the app and the logs ([`SessionEvent`]: state changes
//!    for `connection_state_changed`, `retry_failed`, `latency_spike`, alerts, a
//!    [`QualitySnapshot`] every 60 s for `connection_quality`, delivered messages, acks,
//!    [`SessionEvent::PersistRequested`] to save [`Session::persist`]).
//! 5. Sleep until [`Session::poll_timeout`] or the next socket event, whichever comes first.
//!
//! A driver has no `if` about policy: no delays, no counting, no deciding what a close code
//! means. In tokio that is a `select!` over the socket, `sleep_until(poll_timeout)` and a
//! command channel; in the browser, WebSocket callbacks plus one `setTimeout`.
//!
//! ```
//! use std::time::Duration;
//! use protocol::{ClientMessage, ServerMessage, Timestamp};
//! use resilience::{Config, Input, Instant, Output, Session, SessionEvent};
//!
//! // A pretend server: answers hello, ping, subscribe and publish at once.
//! fn server(msg: &ClientMessage) -> Option<String> {
//!     Some(match msg {
//!         ClientMessage::Ping(p) => format!(r#"{{"type":"pong","id":{},"server_time":"2026-11-27T14:00:00.000Z"}}"#, p.id),
//!         ClientMessage::Subscribe(s) => format!(r#"{{"type":"subscribed","channel":"{}","epoch":"e1","offset":0,"recovered":true,"replayed":0}}"#, s.channel),
//!         ClientMessage::Publish(p) => format!(r#"{{"type":"ack","id":"{}","channel":"{}","offset":1,"duplicate":false}}"#, p.id, p.channel),
//!         _ => return None,
//!     })
//! }
//! const WELCOME: &str = r#"{"type":"welcome","connection_id":"c1","heartbeat_ms":30000,"max_message_bytes":65536,"server_time":"2026-11-27T14:00:00.000Z","token_expires_at":"2026-11-27T15:00:00.000Z"}"#;
//!
//! # #[allow(clippy::disallowed_methods)] // the driver is where the clock is read
//! let start = Instant::now();
//! let mut now = start;
//! let mut session = Session::new(Config::new(7), now, Timestamp::from_unix_millis(1_795_788_000_000));
//! session.connect(now);
//! session.subscribe(now, "room:1", None).unwrap();
//! session.publish(now, "msg-1", "room:1", serde_json::json!({"text": "hello"})).unwrap();
//!
//! let mut inbox: Vec<String> = Vec::new(); // frames "received" from the socket
//! let mut acked = false;
//! while now < start + Duration::from_secs(120) {
//!     // Do what the machine says.
//!     while let Some(out) = session.poll_output() {
//!         match out {
//!             Output::OpenSocket { .. } => session.handle_input(now, Input::SocketOpened),
//!             Output::SendHello => inbox.push(WELCOME.to_owned()),
//!             Output::Send(msg) => inbox.extend(server(&msg)),
//!             Output::CloseSocket { .. } => {}
//!         }
//!     }
//!     // Tell the app and the logs.
//!     while let Some(event) = session.poll_event() {
//!         if let SessionEvent::Queue(resilience::QueueEvent::Acked { id, .. }) = &event {
//!             acked = id == "msg-1";
//!         }
//!     }
//!     // Feed what arrived; otherwise sleep until the next timeout.
//!     if let Some(text) = (!inbox.is_empty()).then(|| inbox.remove(0)) {
//!         session.handle_text(now, &text);
//!     } else {
//!         now = session.poll_timeout().unwrap_or(now + Duration::from_secs(1)).max(now);
//!         session.handle_timeout(now);
//!     }
//! }
//! assert!(acked);
//! assert_eq!(session.state(), protocol::ConnectionState::Connected);
//! assert!(session.connection().rtt().last.is_some());
//! ```
#![warn(missing_docs)]
#![warn(clippy::disallowed_methods)]

pub mod alerts;
pub mod backoff;
pub mod breaker;
pub mod connection;
pub mod heartbeat;
pub mod link;
pub mod metrics;
pub mod queue;
pub mod report;
pub mod session;
pub mod subscriptions;
pub mod token;
pub mod urls;

use std::time::Duration;

/// The monotonic instant every machine takes as `now`: `std::time::Instant` natively,
/// `web_time::Instant` in the browser (whose `std` version panics), as quinn-proto does.
#[cfg(not(target_arch = "wasm32"))]
pub use std::time::Instant;
#[cfg(target_arch = "wasm32")]
pub use web_time::Instant;

pub use alerts::{AlertEvent, AlertKind, Alerts};
pub use backoff::{Backoff, BackoffConfig};
pub use breaker::{Breaker, BreakerConfig, BreakerState, BreakerTransition};
pub use connection::{Connection, Event, Failure, Input, Output, WaitCause};
pub use heartbeat::{Heartbeat, HeartbeatConfig, HeartbeatEvent, RttStats};
pub use link::{Link, LinkOutput, LinkState};
pub use metrics::{Metrics, QualitySnapshot};
pub use queue::{OutboundQueue, QueueConfig, QueueError, QueueEvent};
pub use report::ReportTimer;
pub use session::{Session, SessionEvent};
pub use subscriptions::{EndCause, Position, SubscriptionEvent, Subscriptions, Verdict};
pub use token::{TokenBroker, TokenFailure, TokenOutcome, TokenSource};
pub use urls::UrlRing;

/// A test base instant: the one clock read in this crate, for tests only.
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
pub(crate) fn t0() -> Instant {
    Instant::now()
}

/// Every number the machines use, with the defaults of CONTRACT §8 (from
/// `protocol::defaults`) and a seed for the jitter.
///
/// Give each client its own random seed (from `getrandom`, `crypto.getRandomValues`, …):
/// clients sharing a seed share a retry schedule, which defeats the jitter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `initialRetryDelay`: un-jittered delay before the first retry (1000 ms).
    pub initial_retry_delay: Duration,
    /// `maxRetryDelay`: cap of the un-jittered delay (30000 ms).
    pub max_retry_delay: Duration,
    /// `maxRetryAttempts`: failed attempts before `FAILED` (10).
    pub max_retry_attempts: u32,
    /// `connectionTimeout`: from opening the socket to `welcome` (5000 ms).
    pub connection_timeout: Duration,
    /// `heartbeatInterval` until a `welcome` says otherwise (30000 ms).
    pub heartbeat_interval: Duration,
    /// `latencyThreshold`: an RTT above it is a spike and raises the latency alert (200 ms).
    pub latency_threshold: Duration,
    /// Breaker: failures within `breaker_window` that open it (5).
    pub breaker_threshold: u32,
    /// Breaker: the sliding window (60 s).
    pub breaker_window: Duration,
    /// Breaker: from opening to half-open (30 s).
    pub breaker_open: Duration,
    /// A connection up at least this long was healthy: the next retry delay restarts at the
    /// initial delay (30 s), whatever it had grown to.
    pub stable_after: Duration,
    /// Each full period of this length a connection stayed up takes one doubling off the next
    /// retry delay (2 s; ADR 0003). A connection that dropped sooner keeps growing the delay,
    /// so a server that crashes right after `welcome` is not hammered, while a client that
    /// lived through several short outages in a row is not left waiting 8–16 s.
    /// `Duration::MAX` turns the decay off (the delay then restarts only after `stable_after`).
    pub backoff_decay: Duration,
    /// The server URLs to rotate through (CONTRACT §5.9): after a failed attempt or a lost
    /// connection the next attempt goes to the next one ([`Session::url`]). Empty: the driver
    /// has its one URL.
    pub urls: Vec<String>,
    /// How often a `report` frame (CONTRACT §5.8) is sent while connected (60 s); one is
    /// also sent right after every reconnect. `None`: never.
    pub report_interval: Option<Duration>,
    /// RTT samples kept for median and p95 (20).
    pub rtt_window: usize,
    /// Outbound queue capacity (1000).
    pub queue_capacity: usize,
    /// Largest encoded `publish` frame, until a `welcome` says otherwise (64 KiB).
    pub max_message_bytes: usize,
    /// Queued publishes older than this expire and are reported failed (24 h).
    pub dedup_window: Duration,
    /// Publishes sent but not yet acknowledged at most (keeps a flush after a reconnect
    /// inside the server's burst of 1000).
    pub max_in_flight: usize,
    /// How often a [`QualitySnapshot`] is emitted for the `connection_quality` log (60 s).
    pub quality_interval: Duration,
    /// Alert when more than this many attempts are made in one outage (3).
    pub alert_reconnect_attempts: u32,
    /// Alert when more than this many messages failed within `alert_failed_window` (5).
    pub alert_failed_messages: u32,
    /// The window failed messages are counted in for the alert (5 min).
    pub alert_failed_window: Duration,
    /// Alert when down longer than this (30 s).
    pub alert_downtime: Duration,
    /// Seed of the jitter RNG; give every client its own.
    pub seed: u64,
}

impl Config {
    /// The defaults of CONTRACT §8 with this jitter seed.
    pub fn new(seed: u64) -> Self {
        use protocol::defaults as d;
        Self {
            initial_retry_delay: Duration::from_millis(d::INITIAL_RETRY_DELAY_MS),
            max_retry_delay: Duration::from_millis(d::MAX_RETRY_DELAY_MS),
            max_retry_attempts: d::MAX_RETRY_ATTEMPTS,
            connection_timeout: Duration::from_millis(d::CONNECTION_TIMEOUT_MS),
            heartbeat_interval: Duration::from_millis(d::HEARTBEAT_INTERVAL_MS),
            latency_threshold: Duration::from_millis(d::LATENCY_THRESHOLD_MS),
            breaker_threshold: d::BREAKER_FAILURE_THRESHOLD,
            breaker_window: Duration::from_millis(d::BREAKER_WINDOW_MS),
            breaker_open: Duration::from_millis(d::BREAKER_OPEN_MS),
            stable_after: Duration::from_millis(d::MAX_RETRY_DELAY_MS),
            backoff_decay: Duration::from_secs(2),
            urls: Vec::new(),
            report_interval: Some(Duration::from_secs(60)),
            rtt_window: 20,
            queue_capacity: d::OFFLINE_QUEUE_CAPACITY,
            max_message_bytes: d::MAX_MESSAGE_BYTES,
            dedup_window: Duration::from_millis(d::DEDUP_WINDOW_MS),
            max_in_flight: 256,
            quality_interval: Duration::from_secs(60),
            alert_reconnect_attempts: d::ALERT_RECONNECT_ATTEMPTS,
            alert_failed_messages: d::ALERT_FAILED_MESSAGES,
            alert_failed_window: Duration::from_secs(5 * 60),
            alert_downtime: Duration::from_millis(d::ALERT_DOWNTIME_MS),
            seed,
        }
    }

    /// The same, rotating through these server URLs (CONTRACT §5.9).
    #[must_use]
    pub fn with_urls<S: Into<String>>(mut self, urls: impl IntoIterator<Item = S>) -> Self {
        self.urls = urls.into_iter().map(Into::into).collect();
        self
    }

    /// The backoff's part.
    pub fn backoff(&self) -> BackoffConfig {
        BackoffConfig {
            initial: self.initial_retry_delay,
            max: self.max_retry_delay,
            max_attempts: self.max_retry_attempts,
        }
    }

    /// The breaker's part.
    pub fn breaker(&self) -> BreakerConfig {
        BreakerConfig {
            threshold: self.breaker_threshold,
            window: self.breaker_window,
            open_for: self.breaker_open,
        }
    }

    /// The heartbeat's part (dead link after 2.5 intervals, as the server).
    pub fn heartbeat(&self) -> HeartbeatConfig {
        HeartbeatConfig {
            interval: self.heartbeat_interval,
            dead_after_num: protocol::defaults::DEAD_LINK_HEARTBEATS_NUM as u32,
            dead_after_den: protocol::defaults::DEAD_LINK_HEARTBEATS_DEN as u32,
            latency_threshold: self.latency_threshold,
            window: self.rtt_window,
        }
    }
}
