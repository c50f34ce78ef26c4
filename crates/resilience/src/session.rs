//! [`Session`]: everything a client decides, in one machine a driver can run.
//!
//! It composes the [`Connection`] (states, backoff, breaker, heartbeat) with the
//! [`OutboundQueue`], the [`Subscriptions`], the [`Metrics`] and the [`Alerts`], so the native
//! client and the web app share one implementation of every rule and a driver only moves
//! bytes between a socket and this machine:
//!
//! - after `welcome`: resubscribes every channel from its last processed offset and epoch,
//!   then sends the queued publishes (their original ids; at most `max_in_flight` unacked);
//! - every publish goes through the queue (refused at once when full or too large);
//! - a delivered message reaches the app only if it is the channel's next offset;
//! - acks, nacks, expiry, gaps, resets, alerts and a [`QualitySnapshot`] every 60 s come out
//!   as [`SessionEvent`]s (the quality sample only while the app wants a connection);
//!   [`SessionEvent::PersistRequested`] says when to save [`Session::persist`] (queue and
//!   positions) so a restart of the client loses nothing — debounce it if messages are many.
//!
//! The queue works on wall-clock [`Timestamp`]s (they are persisted); the session derives them
//! from the `Instant` it is given and one wall-clock reading taken by the driver at creation
//! ([`Session::new`]), refreshed with [`Session::set_wall_clock`] if the driver wishes.
use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use protocol::{
    ChannelNameError, ClientMessage, ConnectionState, Delivery, ErrorFrame, Publish, Refresh,
    ServerMessage, Timestamp, Token,
};
use serde::{Deserialize, Serialize};

use crate::alerts::{AlertConfig, AlertEvent, AlertInputs, Alerts};
use crate::connection::{Connection, Event, Input, Output};
use crate::metrics::{Metrics, QualitySnapshot};
use crate::queue::{OutboundQueue, QueueConfig, QueueError, QueueEvent};
use crate::report::{ReportTimer, report_from};
use crate::subscriptions::{SubscriptionEvent, Subscriptions, Verdict};
use crate::urls::UrlRing;
use crate::{Config, Instant};

/// What the app and the logs learn from a [`Session`].
#[derive(Clone, Debug, PartialEq)]
pub enum SessionEvent {
    /// From the connection machine: state changes, attempts, failures, RTT, spikes.
    Connection(Event),
    /// A message to hand to the app: the channel's next offset, never a repeat.
    Message(Delivery),
    /// From the queue: acked, failed for good, or delayed by a nack.
    Queue(QueueEvent),
    /// From the subscription tracker: subscribed, reset (refetch!), gap, ended.
    Subscription(SubscriptionEvent),
    /// An alert began or ended.
    Alert(AlertEvent),
    /// The periodic `connection_quality` sample (every `quality_interval`).
    Quality(QualitySnapshot),
    /// An `error` frame from the server (a refused subscribe names its channel).
    ServerError(ErrorFrame),
    /// The token expires soon: get a new one and call [`Session::refresh_token`].
    TokenExpiring {
        /// When it expires.
        expires_at: Timestamp,
    },
    /// A `refresh` succeeded.
    TokenRefreshed {
        /// When the new token expires.
        token_expires_at: Timestamp,
    },
    /// A frame that is not a known server message (ignored).
    Undecodable {
        /// Why it did not decode.
        error: String,
    },
    /// The queue or the positions changed: save [`Session::persist`] when convenient.
    PersistRequested,
}

/// Why [`Session::restore`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The saved text is not what [`Session::persist`] writes.
    #[error("cannot restore the session: {0}")]
    Json(#[from] serde_json::Error),
    /// The queue part did not restore.
    #[error(transparent)]
    Queue(#[from] crate::queue::RestoreError),
    /// The subscriptions part did not restore.
    #[error(transparent)]
    Subscriptions(#[from] crate::subscriptions::RestoreSubscriptionsError),
}

#[derive(Serialize, Deserialize)]
struct Persisted {
    version: u32,
    queue: serde_json::Value,
    subscriptions: serde_json::Value,
}

/// The composed client machine. See the module docs and the crate's drive loop.
#[derive(Clone, Debug)]
pub struct Session {
    config: Config,
    conn: Connection,
    queue: OutboundQueue,
    subs: Subscriptions,
    metrics: Metrics,
    alerts: Alerts,
    /// One reading of both clocks, to turn `Instant`s into wall-clock `Timestamp`s.
    anchor: (Instant, Timestamp),
    next_quality_at: Instant,
    outputs: VecDeque<Output>,
    events: VecDeque<SessionEvent>,
    /// The queue or positions changed during this step.
    dirty: bool,
    /// An RTT sample arrived during this step (for the latency alert).
    new_rtt: Option<Duration>,
    /// The server URLs and the one the next attempt uses (CONTRACT §5.9).
    urls: UrlRing,
    /// When the next `report` goes out (CONTRACT §5.8).
    reports: ReportTimer,
    /// A `welcome` arrived before: the next one is a reconnect (report at once).
    welcomed: bool,
    /// Channels whose app buffer is full: deliveries are left to the server's replay until
    /// [`Session::resume`] (per-channel backpressure).
    paused: BTreeSet<String>,
}

impl Session {
    /// A session in `DISCONNECTED`. `wall` is the wall clock at `now` (the driver reads both).
    pub fn new(config: Config, now: Instant, wall: Timestamp) -> Self {
        let queue = OutboundQueue::new(queue_config(&config));
        Self::with_parts(config, now, wall, queue, Subscriptions::new())
    }

    /// A session with the queue and positions [`Session::persist`] saved earlier.
    pub fn restore(
        config: Config,
        now: Instant,
        wall: Timestamp,
        saved: &str,
    ) -> Result<Self, RestoreError> {
        let p: Persisted = serde_json::from_str(saved)?;
        let queue = OutboundQueue::from_json(queue_config(&config), &p.queue.to_string())?;
        let subs = Subscriptions::from_json(&p.subscriptions.to_string())?;
        Ok(Self::with_parts(config, now, wall, queue, subs))
    }

    fn with_parts(
        config: Config,
        now: Instant,
        wall: Timestamp,
        queue: OutboundQueue,
        subs: Subscriptions,
    ) -> Self {
        Self {
            urls: UrlRing::new(config.urls.clone()),
            reports: ReportTimer::new(config.report_interval),
            conn: Connection::new(&config, now),
            alerts: Alerts::new(AlertConfig::from(&config)),
            next_quality_at: now + config.quality_interval,
            config,
            queue,
            subs,
            metrics: Metrics::new(),
            anchor: (now, wall),
            outputs: VecDeque::new(),
            events: VecDeque::new(),
            dirty: false,
            new_rtt: None,
            welcomed: false,
            paused: BTreeSet::new(),
        }
    }

    /// The queue and the subscription positions as JSON, to save (browser storage, a file).
    pub fn persist(&self) -> String {
        let p = Persisted {
            version: 1,
            queue: serde_json::from_str(&self.queue.to_json())
                .expect("the queue writes valid JSON"),
            subscriptions: serde_json::from_str(&self.subs.to_json())
                .expect("the tracker writes valid JSON"),
        };
        serde_json::to_string(&p).expect("plain JSON values")
    }

    /// Re-anchors the wall clock (e.g. after the device clock was corrected).
    pub fn set_wall_clock(&mut self, now: Instant, wall: Timestamp) {
        self.anchor = (now, wall);
    }

    // ---- the app's commands -------------------------------------------------------------

    /// Connect (and stay connected) until [`Session::close`].
    pub fn connect(&mut self, now: Instant) {
        self.handle_input(now, Input::Connect);
    }

    /// Close the connection: `DISCONNECTED`. Queued publishes stay queued.
    pub fn close(&mut self, now: Instant) {
        self.handle_input(now, Input::Close);
    }

    /// Retry now (leaves `FAILED`).
    pub fn retry(&mut self, now: Instant) {
        self.handle_input(now, Input::Retry);
    }

    /// Publishes `data` to `channel` with the app's unique `id`: queued, sent when connected,
    /// resent with the same id after a reconnect until acknowledged. Refused at once (nothing
    /// queued) when the queue is full, the frame too large, or the id already queued.
    pub fn publish(
        &mut self,
        now: Instant,
        id: impl Into<String>,
        channel: impl Into<String>,
        data: serde_json::Value,
    ) -> Result<(), QueueError> {
        let publish = Publish {
            id: id.into(),
            channel: channel.into(),
            data,
        };
        self.queue.push(self.wall(now), publish)?;
        self.dirty = true;
        self.step(now);
        Ok(())
    }

    /// Subscribes to `channel` (`since`: replay after that offset; `None`: from the tracked
    /// position, or live only for a new channel). Sent now if connected, else on connecting.
    pub fn subscribe(
        &mut self,
        now: Instant,
        channel: &str,
        since: Option<u64>,
    ) -> Result<(), ChannelNameError> {
        let frame = self.subs.subscribe(channel, since)?;
        if self.conn.state() == ConnectionState::Connected {
            self.outputs
                .push_back(Output::Send(ClientMessage::Subscribe(frame)));
        }
        self.dirty = true;
        self.step(now);
        Ok(())
    }

    /// Ends the subscription to `channel` and forgets its position.
    pub fn unsubscribe(&mut self, now: Instant, channel: &str) {
        self.paused.remove(channel);
        if let Some(frame) = self.subs.unsubscribe(channel) {
            if self.conn.state() == ConnectionState::Connected {
                self.outputs
                    .push_back(Output::Send(ClientMessage::Unsubscribe(frame)));
            }
            self.dirty = true;
        }
        self.step(now);
    }

    /// The app's buffer for `channel` is full: from now on its deliveries are not handed over
    /// (nor counted as processed) but left to the server's replay, until [`Session::resume`].
    /// This is the per-channel backpressure: memory stays bounded and nothing is lost.
    pub fn pause(&mut self, channel: &str) {
        if self.subs.contains(channel) {
            self.paused.insert(channel.to_owned());
        }
    }

    /// The app drained `channel`: resubscribe from the last offset handed over, so the server
    /// replays what was left behind (now if connected, else after the next `welcome`).
    pub fn resume(&mut self, now: Instant, channel: &str) {
        if self.paused.remove(channel) && self.conn.state() == ConnectionState::Connected {
            // Tracked (it was paused only while tracked), so the name is valid.
            if let Ok(frame) = self.subs.subscribe(channel, None) {
                self.outputs
                    .push_back(Output::Send(ClientMessage::Subscribe(frame)));
            }
        }
        self.step(now);
    }

    /// Whether `channel`'s deliveries are held back ([`Session::pause`]).
    pub fn is_paused(&self, channel: &str) -> bool {
        self.paused.contains(channel)
    }

    /// The URL the next (or current) attempt uses: read it on [`Output::OpenSocket`].
    /// `None` when the configuration named no URLs (the driver has its own one).
    pub fn url(&self) -> Option<&str> {
        self.urls.current()
    }

    /// The server URLs, in rotation order.
    pub fn urls(&self) -> &UrlRing {
        &self.urls
    }

    /// Sends `refresh` with a new token (after [`SessionEvent::TokenExpiring`]). Returns
    /// whether it was sent (only while connected; otherwise the next `hello` carries it).
    pub fn refresh_token(&mut self, token: Token) -> bool {
        let connected = self.conn.state() == ConnectionState::Connected;
        if connected {
            self.outputs
                .push_back(Output::Send(ClientMessage::Refresh(Refresh { token })));
        }
        connected
    }

    // ---- the driver's inputs ------------------------------------------------------------

    /// Feeds what the socket, the network or the token source did.
    pub fn handle_input(&mut self, now: Instant, input: Input) {
        match input {
            Input::Frame(msg) => self.handle_message(now, msg),
            other => {
                self.conn.handle_input(now, other);
                self.step(now);
            }
        }
    }

    /// Feeds a text frame as received. One that does not decode is reported and ignored.
    pub fn handle_text(&mut self, now: Instant, text: &str) {
        match protocol::decode_server(text) {
            Ok(msg) => self.handle_message(now, msg),
            Err(e) => {
                self.events.push_back(SessionEvent::Undecodable {
                    error: e.to_string(),
                });
                self.step(now);
            }
        }
    }

    /// Feeds a decoded server message.
    pub fn handle_message(&mut self, now: Instant, msg: ServerMessage) {
        self.conn.handle_frame(now, &msg);
        match msg {
            // Held back: not processed, so the resume's replay brings it again.
            ServerMessage::Message(d) if self.paused.contains(&d.channel) => {}
            ServerMessage::Message(d) => {
                if self.subs.on_delivery(&d) == Verdict::Accept {
                    self.dirty = true;
                    self.events.push_back(SessionEvent::Message(d));
                }
            }
            ServerMessage::Subscribed(s) => {
                self.subs.on_subscribed(&s);
                self.dirty = true;
            }
            ServerMessage::Unsubscribed(u) => {
                self.paused.remove(&u.channel);
                self.subs.on_ended(&u.channel);
                self.dirty = true;
            }
            ServerMessage::Ack(a) => {
                self.dirty |= self.queue.on_ack(&a);
            }
            ServerMessage::Nack(n) => {
                let wall = self.wall(now);
                self.dirty |= self.queue.on_nack(wall, &n);
            }
            ServerMessage::Error(e) => {
                if let Some(channel) = &e.channel
                    && self.subs.on_refused(channel, e.code, &e.message)
                {
                    self.paused.remove(channel);
                    self.dirty = true;
                }
                self.events.push_back(SessionEvent::ServerError(e));
            }
            ServerMessage::TokenExpiring(t) => self.events.push_back(SessionEvent::TokenExpiring {
                expires_at: t.expires_at,
            }),
            ServerMessage::Refreshed(r) => self.events.push_back(SessionEvent::TokenRefreshed {
                token_expires_at: r.token_expires_at,
            }),
            ServerMessage::Welcome(_) | ServerMessage::Pong(_) | ServerMessage::Reconnect(_) => {}
        }
        self.step(now);
    }

    /// Runs what is due: attempts, timeouts, pings, expiry, alerts, the quality sample.
    /// Early or spurious calls are no-ops.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.conn.handle_timeout(now);
        let wall = self.wall(now);
        self.queue.handle_timeout(wall);
        if now >= self.next_quality_at && self.conn.is_wanted() {
            let snapshot = self.quality(now);
            self.events.push_back(SessionEvent::Quality(snapshot));
            // From `now`: after a frozen tab, one sample, not a burst.
            self.next_quality_at = now + self.config.quality_interval;
        }
        if self.conn.state() == ConnectionState::Connected && self.reports.due(now) {
            self.send_report(now);
        }
        self.step(now);
    }

    /// When [`Session::handle_timeout`] next has work.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let queue = self.queue.poll_timeout().map(|ts| self.instant_of(ts));
        [
            self.conn.poll_timeout(),
            self.alerts.poll_timeout(self.metrics.down_since()),
            // No sample while the app does not want a connection: an idle session has no timer.
            self.conn.is_wanted().then_some(self.next_quality_at),
            self.reports.poll_timeout(),
            queue,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next thing the driver must do. Drain until `None` after every call.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The next event for the app and the logs. Drain until `None` after every call.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    // ---- observers ----------------------------------------------------------------------

    /// The connection state.
    pub fn state(&self) -> ConnectionState {
        self.conn.state()
    }

    /// The connection machine (RTT, attempt, connection id, …).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The outbound queue.
    pub fn queue(&self) -> &OutboundQueue {
        &self.queue
    }

    /// The subscription tracker.
    pub fn subscriptions(&self) -> &Subscriptions {
        &self.subs
    }

    /// The quality figures at `now`.
    pub fn quality(&self, now: Instant) -> QualitySnapshot {
        self.metrics.snapshot(
            now,
            self.conn.rtt(),
            self.queue.stats(),
            self.queue.len(),
            self.alerts.active(),
        )
    }

    /// The wall clock at `now`, from the anchor.
    pub fn wall(&self, now: Instant) -> Timestamp {
        let (i, w) = self.anchor;
        if now >= i {
            w.add_millis(millis_i64(now - i))
        } else {
            w.add_millis(-millis_i64(i - now))
        }
    }

    fn instant_of(&self, ts: Timestamp) -> Instant {
        let (i, w) = self.anchor;
        let ms = ts.millis_since(w);
        if ms >= 0 {
            i + Duration::from_millis(ms.unsigned_abs())
        } else {
            // In the past: due now (the anchor is the earliest instant we know).
            i
        }
    }

    /// Queues a `report` with the figures at `now` (CONTRACT §5.8).
    fn send_report(&mut self, now: Instant) {
        let report = report_from(&self.quality(now));
        self.outputs
            .push_back(Output::Send(ClientMessage::Report(report)));
    }

    /// Moves everything the parts produced into the session's outputs and events.
    fn step(&mut self, now: Instant) {
        while let Some(out) = self.conn.poll_output() {
            self.outputs.push_back(out);
        }
        while let Some(ev) = self.conn.poll_event() {
            self.metrics.on_event(&ev);
            self.urls.on_event(&ev);
            match &ev {
                Event::Connected {
                    max_message_bytes, ..
                } => {
                    let server_max = usize::try_from(*max_message_bytes).unwrap_or(usize::MAX);
                    self.queue
                        .set_max_message_bytes(server_max.min(self.config.max_message_bytes));
                    for frame in self.subs.resubscribe_all() {
                        self.outputs
                            .push_back(Output::Send(ClientMessage::Subscribe(frame)));
                    }
                    let reconnect = std::mem::replace(&mut self.welcomed, true);
                    if self.reports.on_connected(now, reconnect) {
                        self.send_report(now);
                    }
                }
                Event::Rtt { rtt } => self.new_rtt = Some(*rtt),
                // 1009: the server could not take a message; never resend it (CONTRACT §5.7).
                Event::ConnectionLost {
                    reason: crate::Failure::Closed { code, .. },
                    ..
                } if code.action() == protocol::CloseAction::DropMessageAndReconnect => {
                    self.queue.fail_largest_in_flight();
                }
                _ => {}
            }
            self.events.push_back(SessionEvent::Connection(ev));
        }
        let state = self.conn.state();
        self.metrics.on_state(now, state, self.conn.is_wanted());
        if !self.conn.is_wanted() {
            // The first sample comes a full interval after the app asks to connect.
            self.next_quality_at = now + self.config.quality_interval;
        }

        if state == ConnectionState::Connected {
            while let Some(frame) = self.subs.poll_resubscribe() {
                self.outputs
                    .push_back(Output::Send(ClientMessage::Subscribe(frame)));
            }
            let wall = self.wall(now);
            while let Some(p) = self.queue.poll_transmit(wall) {
                self.dirty = true;
                self.outputs
                    .push_back(Output::Send(ClientMessage::Publish(p)));
            }
        } else {
            self.reports.on_disconnected();
            // Whatever was sent and not acknowledged is resent after the next welcome.
            self.queue.on_disconnect();
            // A gap repair is moot: resubscribing after the welcome covers it.
            while self.subs.poll_resubscribe().is_some() {}
        }

        while let Some(ev) = self.queue.poll_event() {
            if matches!(ev, QueueEvent::Failed { .. }) {
                self.alerts.on_message_failed(now);
            }
            self.dirty = true;
            self.events.push_back(SessionEvent::Queue(ev));
        }
        while let Some(ev) = self.subs.poll_event() {
            self.events.push_back(SessionEvent::Subscription(ev));
        }

        let inputs = AlertInputs {
            new_rtt: self.new_rtt.take(),
            connected: state == ConnectionState::Connected,
            outage_attempts: self.metrics.outage_attempts(),
            down_since: self.metrics.down_since(),
        };
        self.alerts.evaluate(now, &inputs);
        while let Some(ev) = self.alerts.poll_event() {
            self.events.push_back(SessionEvent::Alert(ev));
        }

        if std::mem::take(&mut self.dirty) {
            self.events.push_back(SessionEvent::PersistRequested);
        }
    }
}

fn queue_config(config: &Config) -> QueueConfig {
    QueueConfig {
        capacity: config.queue_capacity,
        max_message_bytes: config.max_message_bytes,
        dedup_window: config.dedup_window,
        max_in_flight: config.max_in_flight,
    }
}

fn millis_i64(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
