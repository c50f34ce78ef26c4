//! [`Connection`]: THE connection state machine of CONTRACT §8.
//!
//! It composes [`Backoff`], [`Breaker`] and [`Heartbeat`] and decides everything about one
//! logical connection: when to open a socket, when an attempt has failed, how long to wait,
//! when to give up, when the link is dead. A driver only moves bytes: it performs the
//! [`Output`]s (open a socket, send `hello`/`ping`, close the socket) and reports what the
//! socket did as [`Input`]s.
//!
//! # Rules
//!
//! - The five states of [`ConnectionState`]: `CONNECTING` for attempts before the first
//!   `welcome` (since the app asked to connect), `RECONNECTING` for attempts after a
//!   connection was lost, `CONNECTED` from `welcome`, `DISCONNECTED` after the app closed or
//!   while the network is offline, `FAILED` when the budget is spent or after 4401 with no way
//!   to a new token.
//! - An attempt starts with [`Output::OpenSocket`] and must reach `welcome` within
//!   `connection_timeout` (5000 ms) of that moment, or it fails with `CONNECTION_TIMEOUT`.
//! - Every failed attempt counts once toward the attempt budget (10) and the breaker. A close
//!   the server advised (1012 after `reconnect.after_ms`, 4429 after `error` `RATE_LIMIT`
//!   `retry_after_ms`) is not a failure: the next attempt waits the advised time (plus up to
//!   10 % more, drawn at random, so a crowd told the same number still spreads); that attempt
//!   counts if it fails. The budget refills on `welcome`.
//! - A lost connection (not an attempt) is not a failure either: the next attempt waits a
//!   backoff delay. The flap guard (ADR 0003): every full `backoff_decay` (2 s) the connection
//!   stayed up takes one doubling off that delay, and one up at least `stable_after` (30 s)
//!   restarts it at the initial 1 s (jittered into `[0.5 s, 1 s]`); a connection that dropped
//!   within 2 s continues the growing delays, so a server that crashes after `welcome` is not
//!   hammered.
//! - When the breaker is open the next attempt waits until it turns half-open; the single
//!   half-open trial closes it on success and re-opens it on failure.
//! - 4401: the machine emits [`Event::TokenNeeded`] and waits for [`Input::TokenAvailable`]
//!   (then retries after a backoff delay) or [`Input::TokenUnavailable`] (then `FAILED`).
//! - `FAILED` is left only by [`Input::Retry`] or [`Input::NetworkOnline`]; both refill the
//!   budget and close the breaker. A retry starts at once; coming back online starts after a
//!   first-retry delay (`[0.5 s, 1 s]`), since a whole building's clients come back together.
//! - [`Input::Close`] and [`Input::NetworkOffline`] go to `DISCONNECTED` and close the socket.
//!
//! Inputs that do not fit the current phase (a late `Closed` from a socket already given up,
//! a `welcome` while disconnected) are ignored: input never panics.
use std::collections::VecDeque;
use std::time::Duration;

use protocol::{
    ClientMessage, CloseAction, CloseCode, ConnectionState, ErrorCode, ServerMessage, Welcome,
};

use crate::backoff::Backoff;
use crate::breaker::{Breaker, BreakerTransition, Refused};
use crate::heartbeat::{Heartbeat, HeartbeatEvent, RttStats};
use crate::{Config, Instant};

/// What happened, as the driver or the app reports it.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// The app wants to be connected (first connect, or again after [`Input::Close`]).
    Connect,
    /// The socket asked for by [`Output::OpenSocket`] is open (WebSocket `open`).
    SocketOpened,
    /// A frame arrived. The machine looks at `welcome`, `pong`, `reconnect` and `error`
    /// `RATE_LIMIT`; every frame counts as life for the heartbeat.
    Frame(ServerMessage),
    /// The socket closed with this code (1006 when the close had none).
    Closed {
        /// The close code.
        code: CloseCode,
        /// The close reason.
        reason: String,
    },
    /// The socket failed underneath (connect refused, DNS, TLS, reset): `NETWORK_FAILURE`.
    TransportError {
        /// What failed, for logs.
        reason: String,
    },
    /// The server refused the WebSocket upgrade with an HTTP status (429 rate limited, 503 at
    /// capacity or draining, 403 …), with its `Retry-After` if it sent one. A failed attempt;
    /// the next one waits at least `retry_after`. (Browsers cannot see the status: the web
    /// driver reports [`Input::TransportError`].) The wait gets up to 1 s (or 10 %) of
    /// random spread on top, since `Retry-After` is rounded to whole seconds.
    Refused {
        /// The HTTP status.
        status: u16,
        /// The `Retry-After` header, if any.
        retry_after: Option<Duration>,
    },
    /// After [`Event::TokenNeeded`]: the driver has a new token; reconnect.
    TokenAvailable,
    /// After [`Event::TokenNeeded`], or while an attempt waits for `hello`'s token: there is
    /// no way to a new token; go to `FAILED` (see [`crate::TokenBroker`]).
    TokenUnavailable,
    /// The app closes the connection: `DISCONNECTED`.
    Close,
    /// The network reports online (browser `online` event).
    NetworkOnline,
    /// The network reports offline (browser `offline` event): `DISCONNECTED`.
    NetworkOffline,
    /// The user asks to retry now (leaves `FAILED`, refills the budget, closes the breaker).
    Retry,
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Open a new socket now (drop any previous one first). `attempt` counts from 1 since the
    /// last successful connection.
    OpenSocket {
        /// The attempt's number.
        attempt: u32,
    },
    /// The socket is open: send `hello` with the current token now.
    SendHello,
    /// Send this frame (the heartbeat's `ping`).
    Send(ClientMessage),
    /// Close the socket with this code and reason, and forget it (ignore its later events).
    CloseSocket {
        /// The close code to send.
        code: CloseCode,
        /// The close reason to send.
        reason: &'static str,
    },
}

/// What happened, for the app, the logs and the metrics.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The state changed (log `connection_state_changed`).
    StateChanged {
        /// The old state.
        from: ConnectionState,
        /// The new state.
        to: ConnectionState,
    },
    /// The next attempt is scheduled.
    AttemptScheduled {
        /// The number the attempt will have.
        attempt: u32,
        /// When it starts.
        at: Instant,
        /// How long from now.
        delay: Duration,
        /// Why this long.
        cause: WaitCause,
    },
    /// An attempt started ([`Output::OpenSocket`] was emitted).
    AttemptStarted {
        /// The attempt's number.
        attempt: u32,
    },
    /// An attempt failed (log `retry_failed`).
    RetryFailed {
        /// The attempt's number.
        attempt: u32,
        /// Why it failed.
        reason: Failure,
        /// Failed attempts counted in the budget so far.
        failures: u32,
        /// Attempts left in the budget.
        remaining: u32,
    },
    /// The attempt budget is spent or no token can be had: `FAILED`.
    GaveUp {
        /// Failed attempts counted.
        failures: u32,
        /// The last failure.
        reason: Failure,
    },
    /// `welcome` arrived.
    Connected {
        /// The attempt that succeeded.
        attempt: u32,
        /// The server's connection id.
        connection_id: String,
        /// The heartbeat interval in force.
        heartbeat: Duration,
        /// The largest message the server accepts.
        max_message_bytes: u64,
    },
    /// An established connection ended.
    ConnectionLost {
        /// Why.
        reason: Failure,
        /// How long it had been up.
        connected_for: Duration,
    },
    /// 4401: get a new token, then send [`Input::TokenAvailable`] or [`Input::TokenUnavailable`].
    TokenNeeded,
    /// The circuit breaker opened or closed.
    Breaker(BreakerTransition),
    /// A new RTT sample from a pong.
    Rtt {
        /// The round trip.
        rtt: Duration,
    },
    /// An RTT above the latency threshold (log `latency_spike`).
    LatencySpike {
        /// The round trip.
        rtt: Duration,
        /// The threshold.
        threshold: Duration,
    },
}

/// Why the next attempt waits as long as it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitCause {
    /// The exponential backoff.
    Backoff,
    /// The server's advice (1012 `after_ms`, 4429 `retry_after_ms`).
    ServerAdvice,
    /// The breaker is open until it turns half-open.
    Breaker,
    /// The network came back online.
    NetworkOnline,
}

/// Why an attempt failed or a connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No `welcome` within the connection timeout.
    Timeout,
    /// The transport failed.
    Transport {
        /// What failed.
        reason: String,
    },
    /// The server (or the network stack) closed the socket.
    Closed {
        /// The close code.
        code: CloseCode,
        /// The close reason.
        reason: String,
    },
    /// The server refused the upgrade with this HTTP status.
    Refused {
        /// The HTTP status.
        status: u16,
    },
    /// Nothing arrived for the dead-link bound.
    DeadLink {
        /// How long the link was silent.
        silent_for: Duration,
    },
}

impl Failure {
    /// The contract error code this failure is reported as (CONTRACT §6).
    pub fn error_code(&self) -> ErrorCode {
        match self {
            Self::Timeout => ErrorCode::ConnectionTimeout,
            Self::Transport { .. } | Self::DeadLink { .. } => ErrorCode::NetworkFailure,
            Self::Refused { status } => match status {
                401 => ErrorCode::AuthFailure,
                403 => ErrorCode::Forbidden,
                429 => ErrorCode::RateLimit,
                _ => ErrorCode::ServerError,
            },
            Self::Closed { code, .. } => match code.0 {
                4401 => ErrorCode::AuthFailure,
                4403 => ErrorCode::Forbidden,
                4408 => ErrorCode::ConnectionTimeout,
                4429 => ErrorCode::RateLimit,
                1011..=1013 => ErrorCode::ServerError,
                _ => ErrorCode::NetworkFailure,
            },
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout => f.write_str("no welcome within the connection timeout"),
            Self::Transport { reason } => write!(f, "transport failed: {reason}"),
            Self::Closed { code, reason } if reason.is_empty() => write!(f, "closed with {code}"),
            Self::Closed { code, reason } => write!(f, "closed with {code}: {reason}"),
            Self::Refused { status } => write!(f, "upgrade refused with HTTP {status}"),
            Self::DeadLink { silent_for } => {
                write!(f, "no frame for {} ms", silent_for.as_millis())
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Phase {
    /// Not trying (never asked, closed by the app, or offline).
    Idle,
    /// The next attempt starts at `at`.
    Waiting { at: Instant },
    /// An attempt is under way.
    Opening {
        attempt: u32,
        deadline: Instant,
        opened: bool,
    },
    /// `welcome` received.
    Connected { since: Instant },
    /// 4401 seen; waiting for the driver to say whether a token can be had.
    AwaitingToken { failure: Failure },
    /// Gave up.
    Failed,
}

/// The connection state machine. See the module docs for the rules.
#[derive(Clone, Debug)]
pub struct Connection {
    connection_timeout: Duration,
    stable_after: Duration,
    backoff_decay: Duration,
    backoff: Backoff,
    breaker: Breaker,
    heartbeat: Heartbeat,
    phase: Phase,
    /// The app wants a connection (Connect without a later Close).
    wanted: bool,
    /// The network reported offline and not yet online.
    offline: bool,
    /// A `welcome` arrived since the app asked to connect: attempts are `RECONNECTING`.
    ever_connected: bool,
    /// Attempts since the last successful connection (or reset).
    attempt: u32,
    /// The wait the server advised on the current socket (`reconnect`, `error` `RATE_LIMIT`).
    advice: Option<Duration>,
    connection_id: Option<String>,
    max_message_bytes: Option<u64>,
    outputs: VecDeque<Output>,
    events: VecDeque<Event>,
}

impl Connection {
    /// A machine in `DISCONNECTED`, waiting for [`Input::Connect`].
    pub fn new(config: &Config, now: Instant) -> Self {
        Self {
            connection_timeout: config.connection_timeout,
            stable_after: config.stable_after,
            backoff_decay: config.backoff_decay,
            backoff: Backoff::new(config.backoff(), config.seed),
            breaker: Breaker::new(config.breaker()),
            heartbeat: Heartbeat::new(config.heartbeat(), now),
            phase: Phase::Idle,
            wanted: false,
            offline: false,
            ever_connected: false,
            attempt: 0,
            advice: None,
            connection_id: None,
            max_message_bytes: None,
            outputs: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The current state.
    pub fn state(&self) -> ConnectionState {
        match self.phase {
            Phase::Idle => ConnectionState::Disconnected,
            Phase::Connected { .. } => ConnectionState::Connected,
            Phase::Failed => ConnectionState::Failed,
            Phase::Waiting { .. } | Phase::Opening { .. } | Phase::AwaitingToken { .. } => {
                if self.ever_connected {
                    ConnectionState::Reconnecting
                } else {
                    ConnectionState::Connecting
                }
            }
        }
    }

    /// Whether the app wants a connection (so time not connected is downtime).
    pub fn is_wanted(&self) -> bool {
        self.wanted
    }

    /// The number of the attempt under way or last made since the last success.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Failed attempts counted in the budget.
    pub fn failures(&self) -> u32 {
        self.backoff.failures()
    }

    /// The server's id for the current connection.
    pub fn connection_id(&self) -> Option<&str> {
        match self.phase {
            Phase::Connected { .. } => self.connection_id.as_deref(),
            _ => None,
        }
    }

    /// The `max_message_bytes` of the last `welcome`.
    pub fn max_message_bytes(&self) -> Option<u64> {
        self.max_message_bytes
    }

    /// Since when the current connection has been up.
    pub fn connected_since(&self) -> Option<Instant> {
        match self.phase {
            Phase::Connected { since } => Some(since),
            _ => None,
        }
    }

    /// RTT statistics over the heartbeat's window.
    pub fn rtt(&self) -> RttStats {
        self.heartbeat.stats()
    }

    /// The breaker's state at `now`.
    pub fn breaker_state(&mut self, now: Instant) -> crate::BreakerState {
        self.breaker.state(now)
    }

    /// Feeds one input.
    pub fn handle_input(&mut self, now: Instant, input: Input) {
        match input {
            Input::Connect => self.on_connect(now),
            Input::SocketOpened => {
                if let Phase::Opening { opened, .. } = &mut self.phase
                    && !*opened
                {
                    *opened = true;
                    self.outputs.push_back(Output::SendHello);
                }
            }
            Input::Frame(msg) => self.handle_frame(now, &msg),
            Input::Closed { code, reason } => self.on_socket_end(now, Some(code), reason),
            Input::TransportError { reason } => self.on_socket_end(now, None, reason),
            Input::Refused {
                status,
                retry_after,
            } => {
                if let Phase::Opening { .. } = self.phase
                    && self.count_failure(now, Failure::Refused { status })
                {
                    let backoff = self.backoff.next_delay();
                    let (delay, cause) = match retry_after {
                        // `Retry-After` has whole seconds: a crowd refused within the same
                        // second would come back in the same instant. Up to a second (or 10 %,
                        // if more) of spread undoes the rounding.
                        Some(wait) if wait > backoff => (
                            wait + self.backoff.spread((wait / 10).max(Duration::from_secs(1))),
                            WaitCause::ServerAdvice,
                        ),
                        _ => (backoff, WaitCause::Backoff),
                    };
                    self.schedule_at(now, now + delay, cause);
                }
            }
            Input::TokenAvailable => {
                if let Phase::AwaitingToken { .. } = self.phase {
                    self.schedule_backoff(now);
                }
            }
            Input::TokenUnavailable => match &self.phase {
                Phase::AwaitingToken { failure } => {
                    let reason = failure.clone();
                    self.give_up(reason);
                }
                // The socket is open but no token can be had for `hello`: no attempt can
                // succeed, so `FAILED` at once (CONTRACT §8), as after a 4401.
                Phase::Opening { .. } => {
                    self.drop_socket("no token");
                    self.give_up(Failure::Transport {
                        reason: "no token can be had".to_owned(),
                    });
                }
                _ => {}
            },
            Input::Close => {
                self.wanted = false;
                self.drop_socket("closed by client");
                self.set_phase(Phase::Idle);
                // The next Connect is a fresh start: `CONNECTING` again.
                self.ever_connected = false;
                self.attempt = 0;
            }
            Input::NetworkOffline => {
                self.offline = true;
                self.drop_socket("network offline");
                self.set_phase(Phase::Idle);
            }
            Input::NetworkOnline => {
                self.offline = false;
                if self.wanted
                    && matches!(
                        self.phase,
                        Phase::Idle | Phase::Failed | Phase::Waiting { .. }
                    )
                {
                    self.refill();
                    let delay = self.backoff.jittered(1);
                    self.schedule_at(now, now + delay, WaitCause::NetworkOnline);
                }
            }
            Input::Retry => {
                if matches!(
                    self.phase,
                    Phase::Idle
                        | Phase::Failed
                        | Phase::Waiting { .. }
                        | Phase::AwaitingToken { .. }
                ) {
                    self.wanted = true;
                    self.offline = false;
                    self.refill();
                    self.start_attempt(now);
                }
            }
        }
    }

    /// Feeds a frame without giving it up (the same as [`Input::Frame`]).
    pub fn handle_frame(&mut self, now: Instant, msg: &ServerMessage) {
        match self.phase {
            Phase::Connected { .. } => self.heartbeat.handle_inbound(now),
            Phase::Opening { .. } => {}
            _ => return,
        }
        match msg {
            ServerMessage::Welcome(welcome) => {
                if let Phase::Opening { attempt, .. } = self.phase {
                    self.on_welcome(now, attempt, welcome);
                }
            }
            ServerMessage::Pong(pong) => {
                if let Phase::Connected { .. } = self.phase {
                    self.heartbeat.handle_pong(now, pong.id);
                    self.drain_heartbeat(now);
                }
            }
            ServerMessage::Reconnect(r) => self.advice = Some(Duration::from_millis(r.after_ms)),
            ServerMessage::Error(e) if e.code == ErrorCode::RateLimit && e.channel.is_none() => {
                if let Some(ms) = e.retry_after_ms {
                    self.advice = Some(Duration::from_millis(ms));
                }
            }
            _ => {}
        }
    }

    /// Starts a due attempt, fails an attempt past its timeout, runs the heartbeat.
    /// Early or spurious calls are no-ops.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Waiting { at } if now >= at => self.start_attempt(now),
            Phase::Opening { deadline, .. } if now >= deadline => {
                self.outputs.push_back(Output::CloseSocket {
                    code: CloseCode::NORMAL,
                    reason: "connection timeout",
                });
                self.fail_attempt(now, Failure::Timeout);
            }
            Phase::Connected { .. } => {
                self.heartbeat.handle_timeout(now);
                self.drain_heartbeat(now);
            }
            _ => {}
        }
    }

    /// When [`Connection::handle_timeout`] next has work.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Waiting { at } => Some(at),
            Phase::Opening { deadline, .. } => Some(deadline),
            Phase::Connected { .. } => self.heartbeat.poll_timeout(),
            _ => None,
        }
    }

    /// The next thing the driver must do. Drain until `None` after every `handle_*`.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The next event. Drain until `None` after every `handle_*`.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn on_connect(&mut self, now: Instant) {
        self.wanted = true;
        match self.phase {
            Phase::Idle | Phase::Failed if !self.offline => {
                self.backoff.reset();
                self.attempt = 0;
                self.start_attempt(now);
            }
            // Offline: stay DISCONNECTED until the network is back. Trying or connected: no-op.
            _ => {}
        }
    }

    fn on_welcome(&mut self, now: Instant, attempt: u32, welcome: &Welcome) {
        if let Some(t) = self.breaker.record_success(now) {
            self.events.push_back(Event::Breaker(t));
        }
        self.backoff.reset_budget();
        self.attempt = 0;
        self.advice = None;
        self.connection_id = Some(welcome.connection_id.clone());
        self.max_message_bytes = Some(welcome.max_message_bytes);
        let interval = Duration::from_millis(welcome.heartbeat_ms);
        self.set_phase(Phase::Connected { since: now });
        // After the state change, so that it reads CONNECTING -> CONNECTED the first time.
        self.ever_connected = true;
        self.heartbeat.start(now, Some(interval));
        self.events.push_back(Event::Connected {
            attempt,
            connection_id: welcome.connection_id.clone(),
            heartbeat: self.heartbeat.interval(),
            max_message_bytes: welcome.max_message_bytes,
        });
        self.drain_heartbeat(now);
    }

    /// The socket closed (`code`) or failed (`None`).
    fn on_socket_end(&mut self, now: Instant, code: Option<CloseCode>, reason: String) {
        let failure = match code {
            Some(code) => Failure::Closed { code, reason },
            None => Failure::Transport { reason },
        };
        let action = code.map(CloseCode::action);
        // A `reconnect` frame announces the close: whatever ends the socket next is advised.
        let advised = action == Some(CloseAction::ReconnectAfterAdvice)
            || (self.advice.is_some() && action != Some(CloseAction::RenewToken));
        match self.phase {
            Phase::Opening { .. } => {
                if advised {
                    // Neither success nor failure: a half-open trial stays available.
                    self.breaker.release_trial();
                    self.schedule_advised(now);
                } else if action == Some(CloseAction::RenewToken) {
                    if self.count_failure(now, failure.clone()) {
                        self.await_token(failure);
                    }
                } else {
                    self.fail_attempt(now, failure);
                }
            }
            Phase::Connected { since } => {
                self.heartbeat.stop();
                let connected_for = now.saturating_duration_since(since);
                self.events.push_back(Event::ConnectionLost {
                    reason: failure.clone(),
                    connected_for,
                });
                self.decay_backoff(connected_for);
                if advised {
                    self.schedule_advised(now);
                } else if action == Some(CloseAction::RenewToken) {
                    self.await_token(failure);
                } else {
                    self.schedule_backoff(now);
                }
            }
            // A late report from a socket already given up.
            _ => {}
        }
    }

    fn on_dead_link(&mut self, now: Instant, silent_for: Duration) {
        if let Phase::Connected { since } = self.phase {
            self.heartbeat.stop();
            self.outputs.push_back(Output::CloseSocket {
                code: CloseCode::NORMAL,
                reason: "heartbeat timeout",
            });
            let connected_for = now.saturating_duration_since(since);
            self.events.push_back(Event::ConnectionLost {
                reason: Failure::DeadLink { silent_for },
                connected_for,
            });
            self.decay_backoff(connected_for);
            self.schedule_backoff(now);
        }
    }

    /// The flap guard (ADR 0003): each full `backoff_decay` the connection stayed up takes one
    /// doubling off the next delay; `stable_after` restarts it at the initial delay.
    fn decay_backoff(&mut self, connected_for: Duration) {
        if connected_for >= self.stable_after {
            self.backoff.reset_step();
        } else if !self.backoff_decay.is_zero() {
            let periods = connected_for.as_nanos() / self.backoff_decay.as_nanos();
            self.backoff
                .decay_step(u32::try_from(periods).unwrap_or(u32::MAX));
        }
    }

    fn start_attempt(&mut self, now: Instant) {
        match self.breaker.try_acquire(now) {
            Ok(()) => {
                self.attempt += 1;
                self.advice = None;
                self.set_phase(Phase::Opening {
                    attempt: self.attempt,
                    deadline: now + self.connection_timeout,
                    opened: false,
                });
                self.outputs.push_back(Output::OpenSocket {
                    attempt: self.attempt,
                });
                self.events.push_back(Event::AttemptStarted {
                    attempt: self.attempt,
                });
            }
            Err(Refused::Open { until }) => self.schedule_at(now, until, WaitCause::Breaker),
            // Only one attempt is ever under way, so a trial cannot be in flight here; should
            // it be, wait a full open period rather than risk a second trial.
            Err(Refused::TrialInFlight) => {
                let at = now + self.breaker.config().open_for;
                self.schedule_at(now, at, WaitCause::Breaker);
            }
        }
    }

    /// Counts a failed attempt; gives up when the budget is spent. Returns whether to go on.
    fn count_failure(&mut self, now: Instant, reason: Failure) -> bool {
        let go_on = self.backoff.record_failure();
        if let Some(t) = self.breaker.record_failure(now) {
            self.events.push_back(Event::Breaker(t));
        }
        self.events.push_back(Event::RetryFailed {
            attempt: self.attempt,
            reason: reason.clone(),
            failures: self.backoff.failures(),
            remaining: self.backoff.remaining(),
        });
        if !go_on {
            self.give_up(reason);
        }
        go_on
    }

    fn fail_attempt(&mut self, now: Instant, reason: Failure) {
        if self.count_failure(now, reason) {
            self.schedule_backoff(now);
        }
    }

    fn await_token(&mut self, failure: Failure) {
        self.set_phase(Phase::AwaitingToken { failure });
        self.events.push_back(Event::TokenNeeded);
    }

    fn give_up(&mut self, reason: Failure) {
        self.set_phase(Phase::Failed);
        self.events.push_back(Event::GaveUp {
            failures: self.backoff.failures(),
            reason,
        });
    }

    fn schedule_backoff(&mut self, now: Instant) {
        let delay = self.backoff.next_delay();
        self.schedule_at(now, now + delay, WaitCause::Backoff);
    }

    fn schedule_advised(&mut self, now: Instant) {
        match self.advice.take() {
            Some(wait) => {
                let extra = self.backoff.spread(wait / 10);
                self.schedule_at(now, now + wait + extra, WaitCause::ServerAdvice);
            }
            None => self.schedule_backoff(now),
        }
    }

    /// Schedules the next attempt at `at`, or later if the breaker is open until then.
    fn schedule_at(&mut self, now: Instant, at: Instant, cause: WaitCause) {
        let (at, cause) = match self.breaker.ready_at(now) {
            Some(ready) if ready > at => (ready, WaitCause::Breaker),
            _ => (at, cause),
        };
        self.set_phase(Phase::Waiting { at });
        self.events.push_back(Event::AttemptScheduled {
            attempt: self.attempt + 1,
            at,
            delay: at.saturating_duration_since(now),
            cause,
        });
    }

    fn refill(&mut self) {
        self.backoff.reset();
        self.breaker.reset();
        self.attempt = 0;
    }

    fn drop_socket(&mut self, reason: &'static str) {
        if let Phase::Opening { .. } = self.phase {
            self.breaker.release_trial();
        }
        if matches!(self.phase, Phase::Opening { .. } | Phase::Connected { .. }) {
            self.outputs.push_back(Output::CloseSocket {
                code: CloseCode::NORMAL,
                reason,
            });
        }
        self.heartbeat.stop();
        self.advice = None;
    }

    fn drain_heartbeat(&mut self, now: Instant) {
        while let Some(ev) = self.heartbeat.poll_event() {
            match ev {
                HeartbeatEvent::Ping(ping) => self
                    .outputs
                    .push_back(Output::Send(ClientMessage::Ping(ping))),
                HeartbeatEvent::Rtt { rtt } => self.events.push_back(Event::Rtt { rtt }),
                HeartbeatEvent::LatencySpike { rtt, threshold } => self
                    .events
                    .push_back(Event::LatencySpike { rtt, threshold }),
                HeartbeatEvent::Dead { silent_for } => self.on_dead_link(now, silent_for),
            }
        }
    }

    fn set_phase(&mut self, phase: Phase) {
        let from = self.state();
        self.phase = phase;
        let to = self.state();
        if from != to {
            self.events.push_back(Event::StateChanged { from, to });
        }
    }
}

#[cfg(test)]
mod tests;
