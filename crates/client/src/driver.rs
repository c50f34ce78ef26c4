//! The driver: one tokio task that moves bytes for the `resilience` machines (STYLE §2).
//!
//! It owns the socket and the machines — [`Connection`], [`OutboundQueue`],
//! [`Subscriptions`], [`Metrics`], [`Alerts`] — and loops over a `select!` of the app's
//! commands, the socket (connecting or open), a token fetch, `sleep_until` the earliest
//! machine deadline, and the cancel token. Each wake feeds one input to the machines; then
//! [`Driver::pump`] performs what they ask (open or close the socket, send frames) and
//! reports what happened (events, logs, status). Every decision — when to connect, how long
//! to wait, when the link is dead, what to resend, which offsets to hand over — is the
//! machines'; what remains here is plumbing.
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use protocol::{
    Ack, ClientMessage, CloseCode, ConnectionState, Hello, Publish, Refresh, ServerMessage,
    Timestamp, Token,
};
use resilience::alerts::{AlertConfig, AlertInputs, Alerts};
use resilience::metrics::Metrics;
use resilience::queue::{FailReason, OutboundQueue, QueueConfig, QueueEvent};
use resilience::subscriptions::{SubscriptionEvent, Subscriptions, Verdict};
use resilience::{Connection, Event, Input, Output};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use crate::auth::{Credentials, TokenError, TokenFuture};
use crate::config::ClientConfig;
use crate::error::PublishError;
use crate::event::{ClientEvent, Status, SubscriptionItem};
use crate::logs;
use crate::outbox::Outbox;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Connecting = Pin<Box<dyn Future<Output = Result<Box<(Ws, Token)>, String>> + Send>>;

/// RTT samples kept for the status sparkline.
const RTT_HISTORY: usize = 40;

/// What the [`crate::Client`] handle asks of the driver.
pub(crate) enum Command {
    Publish {
        publish: Publish,
        reply: oneshot::Sender<Result<Ack, PublishError>>,
    },
    Subscribe {
        channel: String,
        since: Option<u64>,
        sink: SubscriptionSink,
        reply: oneshot::Sender<Result<(), protocol::ChannelNameError>>,
    },
    Unsubscribe {
        channel: String,
    },
    /// The app drained a lagging subscription: resume it from the last offset handed over.
    Resume {
        channel: String,
    },
    Retry,
    NetworkOnline,
    NetworkOffline,
}

/// The driver's end of a subscription.
pub(crate) struct SubscriptionSink {
    pub(crate) tx: mpsc::Sender<SubscriptionItem>,
    /// Set by the driver when the app's buffer was full and messages were left to the
    /// server's replay; cleared by the app's side, which then sends [`Command::Resume`].
    pub(crate) behind: Arc<AtomicBool>,
}

/// What woke the driver.
enum Wake {
    Cancelled,
    Command(Option<Command>),
    Opened(Result<Box<(Ws, Token)>, String>),
    Frame(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
    Token(Result<Token, TokenError>),
    Timer,
}

/// Why a token is being fetched outside a connection attempt.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TokenPurpose {
    /// After a 4401: a new token decides between retrying and `FAILED`.
    Renew,
    /// After `token_expiring`: send `refresh`.
    Refresh,
}

pub(crate) struct Driver {
    config: ClientConfig,
    credentials: Credentials,
    conn: Connection,
    queue: OutboundQueue,
    subs: Subscriptions,
    metrics: Metrics,
    alerts: Alerts,
    outbox: Option<Outbox>,
    outbox_dirty: bool,

    socket: Option<Ws>,
    connecting: Option<Connecting>,
    token_fetch: Option<(TokenPurpose, TokenFuture)>,
    /// A token obtained after a 4401, used by the next attempt instead of fetching again.
    renewed: Option<Token>,
    /// The token of the attempt under way (sent in `hello` once the socket opens).
    hello_token: Option<Token>,
    /// Publishes whose callers wait for the outcome, by id.
    waiting: HashMap<String, oneshot::Sender<Result<Ack, PublishError>>>,
    sinks: HashMap<String, SubscriptionSink>,
    /// Channels whose app buffer was full: deliveries are left to the server's replay.
    lagging: HashMap<String, bool>,
    /// Frames to send at the next pump, in order (subscribes, refresh, unsubscribes).
    outgoing: VecDeque<ClientMessage>,

    commands: mpsc::Receiver<Command>,
    events: broadcast::Sender<ClientEvent>,
    status: watch::Sender<Status>,
    cancel: CancellationToken,

    next_attempt_at: Option<Instant>,
    rtt_history: VecDeque<Duration>,
    new_rtt: Option<Duration>,
    next_quality: Instant,
}

/// The monotonic now, from tokio's clock so that `tokio::time::pause` governs it in tests.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The wall-clock now, for the queue (whose times must survive a restart).
fn wall_now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp::from_unix_millis(ms)
}

impl Driver {
    #[allow(clippy::too_many_arguments)] // Private constructor fed by `Client::start` only.
    pub(crate) fn new(
        config: ClientConfig,
        credentials: Credentials,
        queue: OutboundQueue,
        outbox: Option<Outbox>,
        commands: mpsc::Receiver<Command>,
        events: broadcast::Sender<ClientEvent>,
        status: watch::Sender<Status>,
        cancel: CancellationToken,
    ) -> Self {
        let now = now();
        let conn = Connection::new(&config.resilience, now);
        let alerts = Alerts::new(AlertConfig::from(&config.resilience));
        let next_quality = now + config.resilience.quality_interval;
        Self {
            conn,
            queue,
            subs: Subscriptions::new(),
            metrics: Metrics::new(),
            alerts,
            outbox,
            outbox_dirty: false,
            socket: None,
            connecting: None,
            token_fetch: None,
            renewed: None,
            hello_token: None,
            waiting: HashMap::new(),
            sinks: HashMap::new(),
            lagging: HashMap::new(),
            outgoing: VecDeque::new(),
            commands,
            events,
            status,
            cancel,
            next_attempt_at: None,
            rtt_history: VecDeque::new(),
            new_rtt: None,
            next_quality,
            credentials,
            config,
        }
    }

    /// The queue configuration a client with `config` uses.
    pub(crate) fn queue_config(config: &resilience::Config) -> QueueConfig {
        QueueConfig {
            capacity: config.queue_capacity,
            max_message_bytes: config.max_message_bytes,
            dedup_window: config.dedup_window,
            max_in_flight: config.max_in_flight,
        }
    }

    /// Runs until cancelled or until every [`crate::Client`] handle is gone.
    pub(crate) async fn run(mut self) {
        self.conn.handle_input(now(), Input::Connect);
        loop {
            self.pump().await;
            let wake = self.wait().await;
            let now = now();
            match wake {
                Wake::Cancelled | Wake::Command(None) => break,
                Wake::Command(Some(cmd)) => self.on_command(now, cmd),
                Wake::Opened(Ok(opened)) => {
                    let (ws, token) = *opened;
                    self.connecting = None;
                    self.socket = Some(ws);
                    self.hello_token = Some(token);
                    self.conn.handle_input(now, Input::SocketOpened);
                }
                Wake::Opened(Err(reason)) => {
                    self.connecting = None;
                    self.conn
                        .handle_input(now, Input::TransportError { reason });
                    self.socket_gone();
                }
                Wake::Frame(frame) => self.on_frame(now, frame),
                Wake::Token(result) => self.on_token(now, result),
                Wake::Timer => {
                    self.conn.handle_timeout(now);
                    self.queue.handle_timeout(wall_now());
                    if now >= self.next_quality {
                        self.next_quality = now + self.config.resilience.quality_interval;
                        self.emit_quality(now);
                    }
                }
            }
        }
        // Closing: say goodbye, keep the queue on disk for the next client.
        self.conn.handle_input(now(), Input::Close);
        self.pump().await;
        self.save_outbox();
        for (_, reply) in self.waiting.drain() {
            let _ = reply.send(Err(PublishError::Closed)); // The caller may be gone too.
        }
    }

    /// Sleeps until something happens.
    async fn wait(&mut self) -> Wake {
        let deadline = self.deadline();
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let connecting = async {
            match self.connecting.as_mut() {
                Some(fut) => fut.await,
                None => std::future::pending().await,
            }
        };
        let frame = async {
            match self.socket.as_mut() {
                Some(ws) => ws.next().await,
                None => std::future::pending().await,
            }
        };
        let token = async {
            match self.token_fetch.as_mut() {
                Some((_, fut)) => fut.await,
                None => std::future::pending().await,
            }
        };
        // Unbiased: a flood of commands must not starve the socket, nor frames the timers.
        tokio::select! {
            () = self.cancel.cancelled() => Wake::Cancelled,
            cmd = self.commands.recv() => Wake::Command(cmd),
            opened = connecting => Wake::Opened(opened),
            frame = frame => Wake::Frame(frame),
            token = token => Wake::Token(token),
            () = sleep => Wake::Timer,
        }
    }

    /// The earliest deadline of any machine.
    fn deadline(&self) -> Option<Instant> {
        let now_i = now();
        let now_t = wall_now();
        let queue = self.queue.poll_timeout().map(|at| {
            let ms = u64::try_from(at.millis_since(now_t)).unwrap_or(0);
            now_i + Duration::from_millis(ms)
        });
        [
            self.conn.poll_timeout(),
            self.alerts.poll_timeout(self.metrics.down_since()),
            queue,
            Some(self.next_quality),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn on_command(&mut self, now: Instant, cmd: Command) {
        match cmd {
            Command::Publish { publish, reply } => {
                let id = publish.id.clone();
                match self.queue.push(wall_now(), publish) {
                    Ok(()) => {
                        self.outbox_dirty = true;
                        self.waiting.insert(id, reply);
                    }
                    Err(err) => {
                        let _ = reply.send(Err(PublishError::Queue(err))); // Caller may be gone.
                    }
                }
            }
            Command::Subscribe {
                channel,
                since,
                sink,
                reply,
            } => match self.subs.subscribe(&channel, since) {
                Ok(frame) => {
                    self.sinks.insert(channel.clone(), sink);
                    self.lagging.remove(&channel);
                    if self.conn.state() == ConnectionState::Connected {
                        self.send_later(ClientMessage::Subscribe(frame));
                    }
                    let _ = reply.send(Ok(())); // Caller may be gone.
                }
                Err(err) => {
                    let _ = reply.send(Err(err)); // Caller may be gone.
                }
            },
            Command::Unsubscribe { channel } => {
                self.sinks.remove(&channel);
                self.lagging.remove(&channel);
                if let Some(frame) = self.subs.unsubscribe(&channel)
                    && self.conn.state() == ConnectionState::Connected
                {
                    self.send_later(ClientMessage::Unsubscribe(frame));
                }
            }
            Command::Resume { channel } => {
                if self.lagging.remove(&channel).is_some()
                    && self.conn.state() == ConnectionState::Connected
                    && let Ok(frame) = self.subs.subscribe(&channel, None)
                {
                    self.send_later(ClientMessage::Subscribe(frame));
                }
            }
            Command::Retry => self.conn.handle_input(now, Input::Retry),
            Command::NetworkOnline => self.conn.handle_input(now, Input::NetworkOnline),
            Command::NetworkOffline => self.conn.handle_input(now, Input::NetworkOffline),
        }
    }

    fn on_frame(
        &mut self,
        now: Instant,
        frame: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) {
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(close))) => {
                let (code, reason) = close.map_or((CloseCode(1005), String::new()), |f| {
                    (CloseCode(u16::from(f.code)), f.reason.to_string())
                });
                if code == CloseCode::MESSAGE_TOO_BIG {
                    // Before the socket is forgotten: the queue needs to know what was in flight.
                    self.queue.fail_largest_in_flight();
                }
                self.conn.handle_input(now, Input::Closed { code, reason });
                self.socket_gone();
                return;
            }
            // Pings are answered by tungstenite; binary frames are not part of tether.v1.
            Some(Ok(_)) => return,
            Some(Err(err)) => {
                self.conn.handle_input(
                    now,
                    Input::TransportError {
                        reason: err.to_string(),
                    },
                );
                self.socket_gone();
                return;
            }
            None => {
                self.conn.handle_input(
                    now,
                    Input::Closed {
                        code: CloseCode(1006),
                        reason: "connection dropped without a close frame".into(),
                    },
                );
                self.socket_gone();
                return;
            }
        };
        let msg = match protocol::decode_server(&text) {
            Ok(msg) => msg,
            Err(err) => {
                tracing::debug!(component = "client", event = "bad_frame", error = %err);
                return;
            }
        };
        self.conn.handle_frame(now, &msg);
        match msg {
            ServerMessage::Welcome(welcome) => {
                let max = usize::try_from(welcome.max_message_bytes).unwrap_or(usize::MAX);
                self.queue.set_max_message_bytes(max);
                for frame in self.subs.resubscribe_all() {
                    self.send_later(ClientMessage::Subscribe(frame));
                }
                self.lagging.clear();
            }
            ServerMessage::Subscribed(s) => self.subs.on_subscribed(&s),
            ServerMessage::Message(delivery) => self.on_delivery(delivery),
            ServerMessage::Ack(ack) => {
                self.queue.on_ack(&ack);
            }
            ServerMessage::Nack(nack) => {
                self.queue.on_nack(wall_now(), &nack);
            }
            ServerMessage::Unsubscribed(u) => self.subs.on_ended(&u.channel),
            ServerMessage::Error(e) => match &e.channel {
                Some(channel) => {
                    if let Some(sink) = self.sinks.remove(channel) {
                        let _ = sink.tx.try_send(SubscriptionItem::Ended {
                            code: Some(e.code),
                            message: e.message.clone(),
                        }); // A full or dropped subscription just ends.
                    }
                    self.subs.on_ended(channel);
                }
                None => self.emit(ClientEvent::ServerError {
                    code: e.code,
                    message: e.message,
                }),
            },
            ServerMessage::TokenExpiring(_) => {
                // A fixed token cannot be renewed: the server closes with 4401 at expiry.
                if self.token_fetch.is_none() && self.credentials.can_renew() {
                    self.token_fetch = Some((TokenPurpose::Refresh, self.credentials.fetch()));
                }
            }
            ServerMessage::Refreshed(_) => self.emit(ClientEvent::TokenRefreshed),
            ServerMessage::Reconnect(r) => self.emit(ClientEvent::ReconnectAdvised {
                after_ms: r.after_ms,
            }),
            ServerMessage::Pong(_) => {}
        }
    }

    fn on_delivery(&mut self, delivery: protocol::Delivery) {
        let channel = delivery.channel.clone();
        if self.lagging.contains_key(&channel) {
            return; // Left to the replay after the app catches up.
        }
        let Some(sink) = self.sinks.get(&channel) else {
            // Not ours (any more); the tracker drops it too.
            let _ = self.subs.on_delivery(&delivery);
            return;
        };
        // Keep one slot free for a control item (reset, end).
        if sink.tx.capacity() <= 1 && !sink.tx.is_closed() {
            sink.behind.store(true, Ordering::Release);
            self.lagging.insert(channel, true);
            return;
        }
        if self.subs.on_delivery(&delivery) == Verdict::Accept {
            // The app dropping its Subscription is its way to stop listening.
            let _ = sink.tx.try_send(SubscriptionItem::Message(delivery));
        }
    }

    fn on_token(&mut self, now: Instant, result: Result<Token, TokenError>) {
        let Some((purpose, _)) = self.token_fetch.take() else {
            return;
        };
        match (purpose, result) {
            (TokenPurpose::Renew, Ok(token)) => {
                self.renewed = Some(token);
                self.conn.handle_input(now, Input::TokenAvailable);
            }
            // A passing failure: try again after a backoff delay (fetching again then).
            (TokenPurpose::Renew, Err(TokenError::Unavailable(_))) => {
                self.conn.handle_input(now, Input::TokenAvailable);
            }
            (TokenPurpose::Renew, Err(TokenError::Denied(_))) => {
                self.conn.handle_input(now, Input::TokenUnavailable);
            }
            (TokenPurpose::Refresh, Ok(token)) => {
                if self.conn.state() == ConnectionState::Connected {
                    self.send_later(ClientMessage::Refresh(Refresh { token }));
                }
            }
            (TokenPurpose::Refresh, Err(err)) => {
                tracing::warn!(component = "client", event = "token_refresh_failed", reason = %err);
            }
        }
    }

    /// Frames to send at the next pump (in order).
    fn send_later(&mut self, msg: ClientMessage) {
        self.outgoing.push_back(msg);
    }

    /// The socket ended (reported to the machine already): forget it.
    fn socket_gone(&mut self) {
        self.socket = None;
        self.connecting = None;
        self.hello_token = None;
        self.outgoing.clear();
        self.queue.on_disconnect();
    }

    /// Performs what the machines ask and reports what happened, until they are quiet.
    async fn pump(&mut self) {
        loop {
            let now = now();
            let mut busy = false;
            while let Some(output) = self.conn.poll_output() {
                busy = true;
                self.perform(now, output).await;
            }
            while let Some(event) = self.conn.poll_event() {
                busy = true;
                self.metrics.on_event(&event);
                self.on_connection_event(now, event);
            }
            let connected = self.conn.state() == ConnectionState::Connected;
            while let Some(frame) = self.subs.poll_resubscribe() {
                if connected {
                    self.send_later(ClientMessage::Subscribe(frame));
                }
            }
            while let Some(event) = self.subs.poll_event() {
                self.on_subscription_event(event);
            }
            while let Some(event) = self.queue.poll_event() {
                self.on_queue_event(now, event);
            }
            self.metrics
                .on_state(now, self.conn.state(), self.conn.is_wanted());
            let inputs = AlertInputs {
                new_rtt: self.new_rtt.take(),
                connected,
                outage_attempts: self.metrics.outage_attempts(),
                down_since: self.metrics.down_since(),
            };
            self.alerts.evaluate(now, &inputs);
            while let Some(alert) = self.alerts.poll_event() {
                logs::alert(&alert);
                self.emit(ClientEvent::Alert(alert));
            }
            // Persist before sending: whatever may reach the server is on disk first.
            self.save_outbox();
            if connected && self.socket.is_some() {
                busy |= !self.flush().await;
            }
            if !busy {
                break;
            }
        }
        self.publish_status(now());
    }

    /// Sends the pending frames, then the queue's due publishes. False if the socket failed.
    async fn flush(&mut self) -> bool {
        while let Some(msg) = self.outgoing.pop_front() {
            if !self.send(&msg).await {
                return false;
            }
        }
        while let Some(publish) = self.queue.poll_transmit(wall_now()) {
            if !self.send(&ClientMessage::Publish(publish)).await {
                return false;
            }
        }
        true
    }

    /// Writes one frame; on failure reports it to the machine and forgets the socket.
    async fn send(&mut self, msg: &ClientMessage) -> bool {
        let Some(ws) = self.socket.as_mut() else {
            return false;
        };
        let text = Message::Text(Utf8Bytes::from(protocol::encode(msg)));
        let reason = match tokio::time::timeout(self.config.send_timeout, ws.send(text)).await {
            Ok(Ok(())) => return true,
            Ok(Err(err)) => err.to_string(),
            Err(_) => format!("writing a frame took over {:?}", self.config.send_timeout),
        };
        self.conn
            .handle_input(now(), Input::TransportError { reason });
        self.socket_gone();
        false
    }

    async fn perform(&mut self, now: Instant, output: Output) {
        match output {
            Output::OpenSocket { .. } => {
                self.socket_gone();
                self.connecting = Some(self.open());
            }
            Output::SendHello => {
                if let Some(token) = self.hello_token.take() {
                    let hello = ClientMessage::Hello(Hello {
                        token,
                        client: Some(self.config.client_name.clone()),
                    });
                    self.send(&hello).await;
                }
            }
            Output::Send(msg) => {
                self.send(&msg).await;
            }
            Output::CloseSocket { code, reason } => {
                if let Some(mut ws) = self.socket.take() {
                    let frame = CloseFrame {
                        code: WsCloseCode::from(code.0),
                        reason: reason.into(),
                    };
                    // A dead link may never take the close frame: do not wait on it long.
                    let wait = self.config.send_timeout.min(Duration::from_secs(1));
                    let _ = tokio::time::timeout(wait, ws.close(Some(frame))).await;
                }
                self.socket_gone();
                let _ = now;
            }
        }
    }

    /// A connection attempt: fetch the token (or use the renewed one), open the WebSocket
    /// offering `tether.v1`. Its time limit is the machine's (it closes the attempt).
    fn open(&mut self) -> Connecting {
        let token: TokenFuture = match self.renewed.take() {
            Some(token) => Box::pin(async move { Ok(token) }),
            None => self.credentials.fetch(),
        };
        let url = self.config.url.clone();
        Box::pin(async move {
            let token = token.await.map_err(|err| err.to_string())?;
            let mut request = url
                .as_str()
                .into_client_request()
                .map_err(|err| err.to_string())?;
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_static(protocol::SUBPROTOCOL),
            );
            let (ws, _response) = tokio_tungstenite::connect_async_with_config(request, None, true)
                .await
                .map_err(|err| err.to_string())?;
            Ok(Box::new((ws, token)))
        })
    }

    fn on_connection_event(&mut self, now: Instant, event: Event) {
        match event {
            Event::StateChanged { from, to } => {
                logs::state_changed(from, to, self.conn.attempt(), self.conn.connection_id());
                self.emit(ClientEvent::StateChanged { from, to });
            }
            Event::AttemptScheduled {
                attempt,
                at,
                delay,
                cause,
            } => {
                self.next_attempt_at = Some(at);
                self.emit(ClientEvent::AttemptScheduled {
                    attempt,
                    delay,
                    cause,
                });
            }
            Event::AttemptStarted { .. } => self.next_attempt_at = None,
            Event::RetryFailed {
                attempt,
                reason,
                failures,
                remaining,
            } => {
                logs::retry_failed(attempt, &reason, failures, remaining);
                self.emit(ClientEvent::RetryFailed {
                    attempt,
                    failures,
                    code: reason.error_code(),
                    reason: reason.to_string(),
                });
            }
            Event::GaveUp { failures, reason } => logs::gave_up(failures, &reason),
            Event::Connected {
                attempt,
                connection_id,
                ..
            } => self.emit(ClientEvent::Connected {
                connection_id,
                attempt,
            }),
            Event::ConnectionLost {
                reason,
                connected_for,
            } => {
                self.queue.on_disconnect();
                self.emit(ClientEvent::ConnectionLost {
                    code: reason.error_code(),
                    reason: reason.to_string(),
                    connected_for,
                });
            }
            Event::TokenNeeded => {
                if self.credentials.can_renew() {
                    self.token_fetch = Some((TokenPurpose::Renew, self.credentials.fetch()));
                } else {
                    self.conn.handle_input(now, Input::TokenUnavailable);
                }
            }
            Event::Breaker(transition) => {
                logs::breaker(&transition, now);
                self.emit(ClientEvent::Breaker(transition));
            }
            Event::Rtt { rtt } => {
                if self.rtt_history.len() == RTT_HISTORY {
                    self.rtt_history.pop_front();
                }
                self.rtt_history.push_back(rtt);
                self.new_rtt = Some(rtt);
                self.emit(ClientEvent::Rtt(rtt));
            }
            Event::LatencySpike { rtt, threshold } => {
                logs::latency_spike(rtt, threshold, self.conn.connection_id());
            }
        }
    }

    fn on_subscription_event(&mut self, event: SubscriptionEvent) {
        match event {
            SubscriptionEvent::Reset {
                channel,
                epoch,
                replay_from,
            } => {
                if let Some(sink) = self.sinks.get(&channel) {
                    // One slot is always kept free for control items.
                    let _ = sink.tx.try_send(SubscriptionItem::Reset {
                        epoch: epoch.clone(),
                        replay_from,
                    });
                }
                logs::not_recovered(&channel, &epoch, replay_from);
                self.emit(ClientEvent::NotRecovered {
                    channel,
                    epoch,
                    replay_from,
                });
            }
            SubscriptionEvent::Gap {
                channel,
                expected,
                got,
            } => {
                tracing::debug!(component = "client", event = "subscription_gap", channel = %channel, expected, got);
            }
            SubscriptionEvent::Ended { channel } => {
                if let Some(sink) = self.sinks.remove(&channel) {
                    let _ = sink.tx.try_send(SubscriptionItem::Ended {
                        code: None,
                        message: "unsubscribed".into(),
                    }); // A dropped subscription needs no notice.
                }
            }
            SubscriptionEvent::Subscribed { .. } => {}
        }
    }

    fn on_queue_event(&mut self, now: Instant, event: QueueEvent) {
        self.outbox_dirty = true;
        match event {
            QueueEvent::Acked {
                id,
                channel,
                offset,
                duplicate,
            } => {
                if let Some(reply) = self.waiting.remove(&id) {
                    let _ = reply.send(Ok(Ack {
                        id: id.clone(),
                        channel: channel.clone(),
                        offset,
                        duplicate,
                    })); // The caller may have stopped waiting.
                }
                self.emit(ClientEvent::Acked {
                    id,
                    channel,
                    offset,
                    duplicate,
                });
            }
            QueueEvent::Failed {
                id,
                channel,
                reason,
            } => {
                self.alerts.on_message_failed(now);
                let (error, text) = match reason {
                    FailReason::Refused { code, message } => {
                        let text = format!("{code}: {message}");
                        (PublishError::Refused { code, message }, text)
                    }
                    FailReason::Expired => (PublishError::Expired, "expired".to_owned()),
                    FailReason::TooLarge => (
                        PublishError::TooLarge,
                        "closed with 1009: too large for the server".to_owned(),
                    ),
                };
                if let Some(reply) = self.waiting.remove(&id) {
                    let _ = reply.send(Err(error)); // The caller may have stopped waiting.
                }
                self.emit(ClientEvent::PublishFailed {
                    id,
                    channel,
                    reason: text,
                });
            }
            QueueEvent::RetryLater { id, code, .. } => {
                self.outbox_dirty = false;
                tracing::debug!(component = "client", event = "publish_retry_later", id = %id, code = %code);
            }
        }
    }

    fn emit(&self, event: ClientEvent) {
        // No receiver is fine: events are for whoever listens.
        let _ = self.events.send(event);
    }

    fn save_outbox(&mut self) {
        if !self.outbox_dirty {
            return;
        }
        self.outbox_dirty = false;
        if let Some(outbox) = &self.outbox
            && let Err(err) = outbox.save(&self.queue)
        {
            tracing::error!(component = "client", event = "outbox_write_failed", error = %err);
        }
    }

    fn emit_quality(&mut self, now: Instant) {
        let snapshot = self.snapshot(now);
        logs::quality(&snapshot, self.conn.connection_id());
        self.emit(ClientEvent::Quality(snapshot));
    }

    fn snapshot(&self, now: Instant) -> resilience::metrics::QualitySnapshot {
        self.metrics.snapshot(
            now,
            self.conn.rtt(),
            self.queue.stats(),
            self.queue.len(),
            self.alerts.active(),
        )
    }

    fn publish_status(&mut self, now: Instant) {
        let quality = self.snapshot(now);
        let status = Status {
            state: self.conn.state(),
            attempt: self.conn.attempt(),
            next_attempt_at: self
                .next_attempt_at
                .filter(|_| self.conn.state().is_trying()),
            connection_id: self.conn.connection_id().map(str::to_owned),
            rtt: self.conn.rtt(),
            rtt_history: self.rtt_history.iter().copied().collect(),
            reconnects: quality.reconnects,
            queue_length: self.queue.len(),
            alerts: quality.alerts.clone(),
            quality,
        };
        self.status.send_replace(status);
    }
}

/// The status before the driver's first step.
pub(crate) fn initial_status() -> Status {
    let quality = Metrics::new().snapshot(
        now(),
        resilience::RttStats::default(),
        resilience::queue::QueueStats::default(),
        0,
        Vec::new(),
    );
    Status {
        state: ConnectionState::Disconnected,
        attempt: 0,
        next_attempt_at: None,
        connection_id: None,
        rtt: resilience::RttStats::default(),
        rtt_history: Vec::new(),
        reconnects: 0,
        queue_length: 0,
        alerts: Vec::new(),
        quality,
    }
}
