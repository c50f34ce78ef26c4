//! The per-connection state machine of `tether.v1` (CONTRACT §5), sans-IO in quinn-proto's
//! shape: the driver feeds it [`Frame`]s, store replies, hub answers, live deliveries and
//! timeouts, each with the time; it answers with [`Output`]s, drained by
//! [`Machine::poll_output`] after every `handle_*`, and says when to wake it next with
//! [`Machine::poll_timeout`].
//!
//! It decides everything a connection decides: hello and auth, heartbeat and dead link,
//! token expiry and refresh, subscription cursors (replay → live, see `cursor`), publish order,
//! rate limits and strikes (see `publishing`), and which frame goes out next.
//!
//! **It never reads a clock.** Time is the `now: Instant` argument; the wall clock it needs
//! (`server_time`, `published_at`, a token's `exp`) is derived from the one wall-clock reading
//! the driver hands to [`Machine::new`] plus the monotonic time elapsed since, so a test on a
//! virtual clock (or the driver under `tokio::time::pause()`) moves both together. The module
//! opts in to clippy's `disallowed_methods` (the clock and spawn ban list in `clippy.toml`).
#![warn(clippy::disallowed_methods)]

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use protocol::{
    Claims, ClientMessage, CloseCode, ErrorCode, ErrorFrame, Pong, Refreshed, ServerMessage,
    Timestamp, TokenExpiring, Welcome, decode_client, encode,
};

mod closing;

use super::cursor::{Catchup, Sub};
pub use super::events::{Frame, HubOp, Output, StoreOp, StoreReply};
pub use super::policy::Policy;
use super::publishing::Publishing;
use super::timer::{Timer, TimerTable};
use crate::abuse::Offence;
use crate::auth::{AuthError, Fingerprint};
use crate::hub::GoLive;
use crate::outbound::Delivery;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitingHello,
    /// Hello verified; waiting for the admission answer.
    Admitting,
    Open,
    Closed,
}

/// The per-connection machine.
#[derive(Debug)]
pub struct Machine {
    pub(super) policy: Arc<Policy>,
    pub(super) connection_id: String,
    pub(super) ip: IpAddr,
    state: State,
    /// The driver's clock readings at creation: `wall = wall0 + (now - mono0)`.
    mono0: Instant,
    wall0: Timestamp,
    pub(super) timers: TimerTable,
    pub(super) out: VecDeque<Output>,
    /// Present from the hello on.
    claims: Option<Claims>,
    token_print: Fingerprint,
    last_recv: Instant,
    /// The ping awaiting its pong: sequence number and when it went out.
    ping_sent: Option<(u64, Instant)>,
    ping_seq: u64,
    /// Subscriptions by channel.
    pub(super) subs: HashMap<String, Sub>,
    /// Source of subscription numbers and store tickets.
    pub(super) counter: u64,
    /// The replays (and the one subscribe waiting for its channel state); only a
    /// connection that is catching up pays for it.
    pub(super) catchup: Option<Box<Catchup>>,
    /// Created on the first publish: an idle connection holds no publish machinery.
    pub(super) publishing: Option<Box<Publishing>>,
}

impl Machine {
    /// A connection that has just been upgraded. `now` and `wall` are one reading of the
    /// monotonic and the wall clock.
    #[must_use]
    pub fn new(
        policy: Arc<Policy>,
        connection_id: String,
        ip: IpAddr,
        now: Instant,
        wall: Timestamp,
    ) -> Self {
        let mut timers = TimerTable::default();
        timers.set(Timer::Hello, now + policy.hello_timeout);
        Self {
            policy,
            connection_id,
            ip,
            state: State::AwaitingHello,
            mono0: now,
            wall0: wall,
            timers,
            out: VecDeque::new(),
            claims: None,
            token_print: Fingerprint::default(),
            last_recv: now,
            ping_sent: None,
            ping_seq: 0,
            subs: HashMap::new(),
            counter: 0,
            catchup: None,
            publishing: None,
        }
    }

    /// The id the logs name this connection by.
    #[must_use]
    pub fn connection_id(&self) -> &str {
        &self.connection_id
    }

    /// The token's `sub`, once a hello verified.
    #[must_use]
    pub fn sub(&self) -> Option<&str> {
        self.claims.as_ref().map(|c| c.sub.as_str())
    }

    /// Whether the hello has been answered with `welcome`.
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Whether the driver should read the socket now: not once closed, not while a subscribe
    /// waits for its channel state (frames are handled in order), not while too many
    /// publishes wait for the store.
    #[must_use]
    pub fn wants_frames(&self) -> bool {
        match self.state {
            State::AwaitingHello => true,
            State::Admitting | State::Closed => false,
            State::Open => {
                !self.catchup.as_ref().is_some_and(|c| c.awaiting_info())
                    && self.publishing.as_ref().is_none_or(|p| !p.is_full())
            }
        }
    }

    /// Every channel the hub may hold this connection on (to unregister at the end).
    pub fn registered_channels(&self) -> impl Iterator<Item = &str> {
        let pending = self.catchup.as_ref().and_then(|c| c.pending_channel());
        self.subs.keys().map(String::as_str).chain(pending)
    }

    /// The next output, until `None`. Call after every `handle_*`.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        let next = self.out.pop_front();
        if next.is_none() && self.out.capacity() > 16 {
            // A replay's burst of outputs should not stay allocated on an idle connection.
            self.out.shrink_to_fit();
        }
        next
    }

    /// When to call [`Machine::handle_timeout`] next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// The wall-clock time at `now`.
    #[must_use]
    pub fn wall(&self, now: Instant) -> Timestamp {
        let since = now.saturating_duration_since(self.mono0);
        self.wall0
            .add_millis(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
    }

    /// The monotonic instant of a wall-clock time (now, if it is already past).
    fn instant_of(&self, now: Instant, wall: i64) -> Instant {
        let ahead = wall.saturating_sub(self.wall(now).unix_millis());
        now + Duration::from_millis(u64::try_from(ahead).unwrap_or(0))
    }

    pub(super) fn send(&mut self, msg: &ServerMessage) {
        self.out
            .push_back(Output::Text(Utf8Bytes::from(encode(msg))));
    }

    /// Ends the connection: `notice` (if any), then a close frame.
    pub(super) fn close(
        &mut self,
        code: CloseCode,
        reason: &'static str,
        notice: Option<ServerMessage>,
    ) {
        if self.state == State::Closed {
            return;
        }
        self.state = State::Closed;
        self.timers.clear();
        let notice = notice.map(|m| Utf8Bytes::from(encode(&m)));
        self.out.push_back(Output::Close {
            code: code.0,
            reason,
            notice,
        });
    }

    fn end(&mut self, code: u16, reason: &'static str) {
        if self.state == State::Closed {
            return;
        }
        self.state = State::Closed;
        self.timers.clear();
        self.out.push_back(Output::End { code, reason });
    }

    pub(super) fn offence(&mut self, offence: Offence) {
        self.out.push_back(Output::Offence(offence));
    }

    /// Handles one frame from the socket.
    pub fn handle_frame(&mut self, now: Instant, frame: Frame<'_>) {
        match self.state {
            State::Closed | State::Admitting => {}
            State::AwaitingHello => self.frame_before_hello(now, frame),
            State::Open => {
                self.last_recv = now;
                self.frame_when_open(now, frame);
            }
        }
    }

    fn frame_before_hello(&mut self, now: Instant, frame: Frame<'_>) {
        let text = match frame {
            Frame::Ping | Frame::Pong(_) => return,
            Frame::Close(code) => return self.end(code.unwrap_or(1005), "closed by client"),
            Frame::Lost => return self.end(1006, "closed before hello"),
            Frame::TooBig | Frame::BadUtf8 => return self.bad_transport_frame(frame),
            Frame::Binary => None,
            Frame::Text(text) => Some(text),
        };
        let hello = match text.map(decode_client) {
            Some(Ok(ClientMessage::Hello(hello))) => hello,
            _ => {
                self.offence(Offence::ProtocolError);
                let notice = ServerMessage::error(
                    ErrorCode::AuthFailure,
                    "the first frame must be a hello with a token",
                );
                return self.close(
                    CloseCode::AUTH_FAILED,
                    "authentication failed",
                    Some(notice),
                );
            }
        };
        let token = hello.token.expose();
        match self
            .policy
            .auth
            .verify_at(token, self.wall(now).unix_seconds())
        {
            Ok(claims) => {
                tracing::debug!(
                    component = "websocket",
                    event = "authenticated",
                    connection_id = %self.connection_id,
                    sub = %claims.sub,
                    client = hello.client.as_deref().unwrap_or(""),
                );
                self.claims = Some(claims);
                self.token_print = Fingerprint::of(token);
                self.state = State::Admitting;
                self.out.push_back(Output::Admit);
            }
            Err(err) => {
                self.log_auth_failure(Fingerprint::of(token), &err, "hello");
                self.out.push_back(Output::AuthFailed);
                let notice = ServerMessage::error(ErrorCode::AuthFailure, err.to_string());
                self.close(
                    CloseCode::AUTH_FAILED,
                    "authentication failed",
                    Some(notice),
                );
            }
        }
    }

    /// The answer to [`Output::Admit`]: `welcome`, or 4429 when the `sub` has too many
    /// connections.
    pub fn handle_admission(&mut self, now: Instant, admitted: bool) {
        if self.state != State::Admitting {
            return;
        }
        if !admitted {
            self.offence(Offence::RateLimited);
            crate::metrics::rate_limited();
            tracing::warn!(
                component = "websocket",
                event = "rate_limited",
                connection_id = %self.connection_id,
                client_ip = %self.ip,
                limit = "connections_per_sub",
            );
            let notice = ServerMessage::Error(ErrorFrame {
                code: ErrorCode::RateLimit,
                message: "too many connections for this sub".into(),
                channel: None,
                retry_after_ms: Some(SUB_LIMIT_RETRY_MS),
            });
            return self.close(CloseCode::RATE_LIMITED, "rate limited", Some(notice));
        }
        let claims = self
            .claims
            .as_ref()
            .expect("Admitting is entered with claims");
        let welcome = ServerMessage::Welcome(Welcome {
            connection_id: self.connection_id.clone(),
            heartbeat_ms: millis(self.policy.heartbeat),
            max_message_bytes: self.policy.max_message_bytes,
            server_time: self.wall(now),
            token_expires_at: Timestamp::from_unix_seconds(claims.exp),
        });
        self.state = State::Open;
        self.send(&welcome);
        self.timers.stop(Timer::Hello);
        self.timers.set(Timer::Ping, now + self.policy.heartbeat);
        self.timers
            .set(Timer::DeadLink, now + self.policy.dead_after());
        self.last_recv = now;
        self.set_token_timers(now);
    }

    /// Arms `token_expiring` (`exp` minus the notice) and the expiry (`exp` plus the same
    /// leeway verification allows: [`crate::auth::Authenticator::expiry_millis`]).
    fn set_token_timers(&mut self, now: Instant) {
        let claims = self.claims.as_ref().expect("token timers need claims");
        let expired = self.policy.auth.expiry_millis(claims);
        let notice = i64::try_from(self.policy.expiry_notice.as_millis()).unwrap_or(i64::MAX);
        let expiring = claims.exp.saturating_mul(1_000).saturating_sub(notice);
        let expired_at = self.instant_of(now, expired);
        let expiring_at = self.instant_of(now, expiring);
        self.timers.set(Timer::TokenExpired, expired_at);
        self.timers.set(Timer::TokenExpiring, expiring_at);
    }

    fn bad_transport_frame(&mut self, frame: Frame<'_>) {
        self.offence(Offence::ProtocolError);
        match frame {
            Frame::TooBig => self.close(CloseCode::MESSAGE_TOO_BIG, "message too large", None),
            _ => self.close(CloseCode::INVALID_PAYLOAD, "invalid UTF-8", None),
        }
    }

    fn frame_when_open(&mut self, now: Instant, frame: Frame<'_>) {
        match frame {
            Frame::Text(text) => self.on_text(now, text),
            Frame::Binary => {
                self.offence(Offence::ProtocolError);
                self.send(&ServerMessage::error(
                    ErrorCode::BadRequest,
                    "binary frames are not supported; send JSON text frames",
                ));
            }
            Frame::Ping => {}
            Frame::Pong(payload) => self.on_pong(now, payload),
            Frame::Close(code) => self.end(code.unwrap_or(1005), "closed by client"),
            Frame::TooBig | Frame::BadUtf8 => self.bad_transport_frame(frame),
            Frame::Lost => self.end(1006, "connection lost"),
        }
    }

    fn on_pong(&mut self, now: Instant, payload: &[u8]) {
        let Some((seq, sent)) = self.ping_sent else {
            return;
        };
        if payload != seq.to_be_bytes() {
            return;
        }
        self.ping_sent = None;
        let rtt = now.saturating_duration_since(sent);
        self.out.push_back(Output::Rtt(rtt));
        crate::metrics::ws_rtt(rtt);
        if rtt > self.policy.latency_threshold {
            tracing::warn!(
                component = "websocket",
                event = "latency_spike",
                connection_id = %self.connection_id,
                rtt_ms = rtt.as_secs_f64() * 1_000.0,
                threshold_ms = millis(self.policy.latency_threshold),
            );
        }
    }

    fn on_text(&mut self, now: Instant, text: &str) {
        let msg = match decode_client(text) {
            Ok(msg) => msg,
            Err(err) => {
                self.offence(Offence::ProtocolError);
                return self.send(&ServerMessage::error(
                    ErrorCode::BadRequest,
                    err.to_string(),
                ));
            }
        };
        match msg {
            ClientMessage::Hello(_) => self.send(&ServerMessage::error(
                ErrorCode::BadRequest,
                "already authenticated: hello is only the first frame",
            )),
            ClientMessage::Ping(ping) => {
                let pong = ServerMessage::Pong(Pong {
                    id: ping.id,
                    server_time: self.wall(now),
                });
                self.send(&pong);
            }
            ClientMessage::Subscribe(sub) => self.subscribe(sub),
            ClientMessage::Unsubscribe(unsub) => self.unsubscribe(unsub.channel),
            ClientMessage::Publish(publish) => self.publish(now, publish),
            ClientMessage::Refresh(refresh) => self.refresh(now, refresh.token.expose()),
            // A quality report has no answer (CONTRACT §5.8); the fleet summary folds it in
            // (the driver, since folding reads the clock), and a bad one is answered with
            // [`Machine::handle_report_refused`].
            ClientMessage::Report(report) => self.out.push_back(Output::Report(Box::new(report))),
        }
    }

    fn refresh(&mut self, now: Instant, token: &str) {
        let current = self.claims.as_ref().expect("Open has claims");
        let claims = match self
            .policy
            .auth
            .verify_at(token, self.wall(now).unix_seconds())
        {
            Ok(c) if c.sub == current.sub => c,
            result => {
                let (err, message) = match result {
                    Ok(_) => (
                        AuthError::Malformed("token is for another sub".into()),
                        "the new token must carry the same sub; the current token stays in force"
                            .to_owned(),
                    ),
                    Err(err) => {
                        let message = format!("{err}; the current token stays in force");
                        (err, message)
                    }
                };
                self.log_auth_failure(Fingerprint::of(token), &err, "refresh");
                self.out.push_back(Output::AuthFailed);
                return self.send(&ServerMessage::error(ErrorCode::AuthFailure, message));
            }
        };
        let expires = Timestamp::from_unix_seconds(claims.exp);
        self.claims = Some(claims);
        self.token_print = Fingerprint::of(token);
        self.set_token_timers(now);
        self.send(&ServerMessage::Refreshed(Refreshed {
            token_expires_at: expires,
        }));
        self.drop_forbidden_subscriptions();
    }

    pub(super) fn claims(&self) -> &Claims {
        self.claims.as_ref().expect("only an open connection asks")
    }

    fn log_auth_failure(&self, print: Fingerprint, err: &AuthError, phase: &str) {
        crate::metrics::auth_failure();
        tracing::warn!(
            component = "websocket",
            event = "auth_failure",
            connection_id = %self.connection_id,
            client_ip = %self.ip,
            reason = err.reason(),
            detail = %err,
            phase,
            token_fingerprint = %print,
        );
    }

    /// Handles every deadline due at `now`; early or spurious calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.expired(now) {
            self.on_timer(now, timer);
        }
    }

    fn on_timer(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::Hello => {
                self.close(CloseCode::HELLO_TIMEOUT, "no hello in time", None);
            }
            Timer::Ping => {
                self.ping_seq += 1;
                self.ping_sent = Some((self.ping_seq, now));
                self.out.push_back(Output::Ping(self.ping_seq));
                self.timers.set(Timer::Ping, now + self.policy.heartbeat);
            }
            Timer::DeadLink => {
                let dead = self.policy.dead_after();
                let silent = now.saturating_duration_since(self.last_recv);
                if silent >= dead {
                    self.close(CloseCode::GOING_AWAY, "no heartbeat", None);
                } else {
                    self.timers.set(Timer::DeadLink, self.last_recv + dead);
                }
            }
            Timer::TokenExpiring => {
                let exp = self.claims().exp;
                self.send(&ServerMessage::TokenExpiring(TokenExpiring {
                    expires_at: Timestamp::from_unix_seconds(exp),
                }));
            }
            Timer::TokenExpired => {
                self.log_auth_failure(self.token_print, &AuthError::Expired, "expiry");
                let notice = ServerMessage::error(ErrorCode::AuthFailure, "token expired");
                self.close(
                    CloseCode::AUTH_FAILED,
                    "authentication failed",
                    Some(notice),
                );
            }
        }
    }

    /// A frame the hub queued for this connection.
    pub fn handle_live(&mut self, delivery: Delivery) {
        if self.state == State::Open {
            self.deliver(delivery);
        }
    }

    /// The hub's answer to [`HubOp::TryGoLive`].
    pub fn handle_go_live(&mut self, channel: &str, generation: u64, answer: GoLive) {
        if self.state == State::Open {
            self.went_live(channel, generation, answer);
        }
    }

    /// The fleet summary refused a quality report: answered `BAD_REQUEST`.
    pub fn handle_report_refused(&mut self, reason: &str) {
        if self.state == State::Open {
            self.send(&ServerMessage::error(ErrorCode::BadRequest, reason));
        }
    }

    /// The result of a [`StoreOp`].
    pub fn handle_store_reply(&mut self, reply: StoreReply) {
        if self.state != State::Open {
            return;
        }
        match reply {
            StoreReply::Info { ticket, result } => self.on_info(ticket, result),
            StoreReply::Page { ticket, result } => self.on_page(ticket, result),
            StoreReply::Published {
                id,
                channel,
                result,
            } => self.on_published(id, channel, result),
        }
    }
}

/// What a connection refused by the per-`sub` cap is advised to wait.
const SUB_LIMIT_RETRY_MS: u64 = 5_000;

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
