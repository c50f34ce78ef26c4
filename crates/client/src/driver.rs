//! The driver: one tokio task that moves bytes for the `resilience` [`Session`] (STYLE §2).
//!
//! The session decides everything — when to connect, how long to wait, when the link is dead,
//! what to resubscribe and resend, which offsets reach the app, which alerts are on. The
//! driver owns the socket and loops over a `select!` of the app's commands, the socket
//! (connecting or open), a token fetch, `sleep_until(poll_timeout)` and the cancel token; each
//! wake feeds one input to the session, then [`Driver::pump`] does what it asks (open or close
//! the socket, send frames), reports what happened (events, logs, status) and saves the outbox
//! when asked. Two things here are plumbing rather than policy: the app's bounded buffers
//! (a full subscription buffer leaves messages to the server's replay, see
//! [`SubscriptionSink`]) and the tokens (asked of the [`Credentials`]).
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use protocol::{
    Ack, ClientMessage, CloseCode, ConnectionState, ErrorCode, Hello, ServerMessage, Timestamp,
    Token,
};
use resilience::metrics::Metrics;
use resilience::queue::{FailReason, QueueEvent};
use resilience::subscriptions::SubscriptionEvent;
use resilience::{Event, Input, Output, Session, SessionEvent};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use crate::auth::{Credentials, TokenError, TokenFuture};
use crate::config::ClientConfig;
use crate::error::PublishError;
use crate::event::{ClientEvent, Status, SubscriptionItem};
use crate::logs;
use crate::outbox::Outbox;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Connecting = Pin<Box<dyn Future<Output = Result<Box<(Ws, Token)>, OpenError>> + Send>>;

/// RTT samples kept for the status sparkline.
const RTT_HISTORY: usize = 40;

/// What the [`crate::Client`] handle asks of the driver.
pub(crate) enum Command {
    Publish {
        publish: protocol::Publish,
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

/// Why a connection attempt did not open.
enum OpenError {
    /// The upgrade was answered with an HTTP error (429, 503, …).
    Refused {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// Anything else: refused TCP, reset, TLS, a token that could not be had.
    Transport(String),
}

/// What woke the driver.
enum Wake {
    Cancelled,
    Command(Option<Command>),
    Opened(Result<Box<(Ws, Token)>, OpenError>),
    Frame(Option<Result<Message, WsError>>),
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
    session: Session,
    outbox: Option<Outbox>,
    /// The session asked to be saved since the last save.
    persist_requested: bool,

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
    lagging: HashMap<String, ()>,

    commands: mpsc::Receiver<Command>,
    events: broadcast::Sender<ClientEvent>,
    status: watch::Sender<Status>,
    cancel: CancellationToken,

    next_attempt_at: Option<Instant>,
    rtt_history: VecDeque<Duration>,
}

/// The monotonic now, from tokio's clock so that `tokio::time::pause` governs it in tests.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The wall-clock now, the session's anchor for the queue's persisted times.
pub(crate) fn wall_now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp::from_unix_millis(ms)
}

impl Driver {
    #[allow(clippy::too_many_arguments)] // Private constructor fed by `Client::connect` only.
    pub(crate) fn new(
        config: ClientConfig,
        credentials: Credentials,
        session: Session,
        outbox: Option<Outbox>,
        commands: mpsc::Receiver<Command>,
        events: broadcast::Sender<ClientEvent>,
        status: watch::Sender<Status>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            config,
            credentials,
            session,
            outbox,
            persist_requested: false,
            socket: None,
            connecting: None,
            token_fetch: None,
            renewed: None,
            hello_token: None,
            waiting: HashMap::new(),
            sinks: HashMap::new(),
            lagging: HashMap::new(),
            commands,
            events,
            status,
            cancel,
            next_attempt_at: None,
            rtt_history: VecDeque::new(),
        }
    }

    /// Runs until cancelled or until every [`crate::Client`] handle is gone.
    pub(crate) async fn run(mut self) {
        self.session.connect(now());
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
                    self.session.handle_input(now, Input::SocketOpened);
                }
                Wake::Opened(Err(err)) => {
                    self.connecting = None;
                    let input = match err {
                        OpenError::Refused {
                            status,
                            retry_after,
                        } => Input::Refused {
                            status,
                            retry_after,
                        },
                        OpenError::Transport(reason) => Input::TransportError { reason },
                    };
                    self.session.handle_input(now, input);
                }
                Wake::Frame(frame) => self.on_frame(now, frame),
                Wake::Token(result) => self.on_token(now, result),
                Wake::Timer => self.session.handle_timeout(now),
            }
        }
        // Closing: say goodbye, keep the queue on disk for the next client.
        self.session.close(now());
        self.pump().await;
        self.persist_requested = true;
        self.save_outbox();
        for (_, reply) in self.waiting.drain() {
            let _ = reply.send(Err(PublishError::Closed)); // The caller may be gone too.
        }
    }

    /// Sleeps until something happens.
    async fn wait(&mut self) -> Wake {
        let deadline = self.session.poll_timeout();
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

    fn on_command(&mut self, now: Instant, cmd: Command) {
        match cmd {
            Command::Publish { publish, reply } => {
                let id = publish.id.clone();
                match self
                    .session
                    .publish(now, publish.id, publish.channel, publish.data)
                {
                    Ok(()) => {
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
            } => {
                let result = self.session.subscribe(now, &channel, since);
                if result.is_ok() {
                    self.sinks.insert(channel.clone(), sink);
                    self.lagging.remove(&channel);
                }
                let _ = reply.send(result); // Caller may be gone.
            }
            Command::Unsubscribe { channel } => {
                self.sinks.remove(&channel);
                self.lagging.remove(&channel);
                self.session.unsubscribe(now, &channel);
            }
            Command::Resume { channel } => {
                if self.lagging.remove(&channel).is_some() {
                    // From the tracked position: the replay brings what was left behind.
                    let _ = self.session.subscribe(now, &channel, None); // Valid: tracked.
                }
            }
            Command::Retry => self.session.retry(now),
            Command::NetworkOnline => self.session.handle_input(now, Input::NetworkOnline),
            Command::NetworkOffline => self.session.handle_input(now, Input::NetworkOffline),
        }
    }

    fn on_frame(&mut self, now: Instant, frame: Option<Result<Message, WsError>>) {
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(close))) => {
                let (code, reason) = close.map_or((CloseCode(1005), String::new()), |f| {
                    (CloseCode(u16::from(f.code)), f.reason.to_string())
                });
                self.socket_gone();
                self.session
                    .handle_input(now, Input::Closed { code, reason });
                return;
            }
            // Pings are answered by tungstenite; binary frames are not part of tether.v1.
            Some(Ok(_)) => return,
            Some(Err(err)) => {
                self.socket_gone();
                let reason = err.to_string();
                self.session
                    .handle_input(now, Input::TransportError { reason });
                return;
            }
            None => {
                self.socket_gone();
                let reason = "connection dropped without a close frame".to_owned();
                self.session.handle_input(
                    now,
                    Input::Closed {
                        code: CloseCode(1006),
                        reason,
                    },
                );
                return;
            }
        };
        let msg = match protocol::decode_server(&text) {
            Ok(msg) => msg,
            Err(_) => return self.session.handle_text(now, &text),
        };
        match &msg {
            ServerMessage::Message(d) if !self.has_room(&d.channel) => {
                // The app's buffer is full: leave this one to the replay on resume. (The link's
                // liveness does not need it: pongs keep arriving.)
                return;
            }
            ServerMessage::Reconnect(r) => self.emit(ClientEvent::ReconnectAdvised {
                after_ms: r.after_ms,
            }),
            _ => {}
        }
        self.session.handle_message(now, msg);
    }

    /// Whether the app's buffer for `channel` can take a message (one slot is kept for a
    /// control item). A full one marks the channel lagging until the app drains it.
    fn has_room(&mut self, channel: &str) -> bool {
        if self.lagging.contains_key(channel) {
            return false;
        }
        let Some(sink) = self.sinks.get(channel) else {
            return true; // Not ours: the session drops it.
        };
        if sink.tx.capacity() > 1 || sink.tx.is_closed() {
            return true;
        }
        sink.behind.store(true, Ordering::Release);
        self.lagging.insert(channel.to_owned(), ());
        false
    }

    fn on_token(&mut self, now: Instant, result: Result<Token, TokenError>) {
        let Some((purpose, _)) = self.token_fetch.take() else {
            return;
        };
        match (purpose, result) {
            (TokenPurpose::Renew, Ok(token)) => {
                self.renewed = Some(token);
                self.session.handle_input(now, Input::TokenAvailable);
            }
            // A passing failure: try again after a backoff delay (fetching again then).
            (TokenPurpose::Renew, Err(TokenError::Unavailable(_))) => {
                self.session.handle_input(now, Input::TokenAvailable);
            }
            (TokenPurpose::Renew, Err(TokenError::Denied(_))) => {
                self.session.handle_input(now, Input::TokenUnavailable);
            }
            (TokenPurpose::Refresh, Ok(token)) => {
                // Not connected: the next `hello` fetches a token anyway.
                let _ = self.session.refresh_token(token);
            }
            (TokenPurpose::Refresh, Err(err)) => {
                tracing::warn!(component = "client", event = "token_refresh_failed", reason = %err);
            }
        }
    }

    /// The socket ended (about to be reported to the session): forget it.
    fn socket_gone(&mut self) {
        self.socket = None;
        self.connecting = None;
        self.hello_token = None;
    }

    /// Reports what the session decided and does what it asks, until it is quiet.
    async fn pump(&mut self) {
        loop {
            let mut busy = false;
            while let Some(event) = self.session.poll_event() {
                busy = true;
                self.on_session_event(now(), event);
            }
            // Before sending: whatever may reach the server is on disk first.
            self.save_outbox();
            while let Some(output) = self.session.poll_output() {
                busy = true;
                self.perform(output).await;
            }
            if !busy {
                break;
            }
        }
        self.publish_status(now());
    }

    async fn perform(&mut self, output: Output) {
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
            Output::Send(msg) => self.send(&msg).await,
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
            }
        }
    }

    /// Writes one frame; a failure is reported to the session (which then asks for a new
    /// socket). Without a socket (it just failed) the frame is dropped: the session resends
    /// what matters after the next `welcome`.
    async fn send(&mut self, msg: &ClientMessage) {
        let Some(ws) = self.socket.as_mut() else {
            return;
        };
        let text = Message::Text(Utf8Bytes::from(protocol::encode(msg)));
        let reason = match tokio::time::timeout(self.config.send_timeout, ws.send(text)).await {
            Ok(Ok(())) => return,
            Ok(Err(err)) => err.to_string(),
            Err(_) => format!("writing a frame took over {:?}", self.config.send_timeout),
        };
        self.socket_gone();
        self.session
            .handle_input(now(), Input::TransportError { reason });
    }

    /// A connection attempt: fetch the token (or use the renewed one), open the WebSocket
    /// offering `tether.v1`. Its time limit is the session's (it closes the attempt).
    fn open(&mut self) -> Connecting {
        let token: TokenFuture = match self.renewed.take() {
            Some(token) => Box::pin(async move { Ok(token) }),
            None => self.credentials.fetch(),
        };
        let url = self.config.url.clone();
        Box::pin(async move {
            let token = token
                .await
                .map_err(|err| OpenError::Transport(err.to_string()))?;
            let mut request = url
                .as_str()
                .into_client_request()
                .map_err(|err| OpenError::Transport(err.to_string()))?;
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_static(protocol::SUBPROTOCOL),
            );
            match tokio_tungstenite::connect_async_with_config(request, None, true).await {
                Ok((ws, _response)) => Ok(Box::new((ws, token))),
                Err(WsError::Http(response)) => Err(OpenError::Refused {
                    status: response.status().as_u16(),
                    retry_after: response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs),
                }),
                Err(err) => Err(OpenError::Transport(err.to_string())),
            }
        })
    }

    fn on_session_event(&mut self, now: Instant, event: SessionEvent) {
        match event {
            SessionEvent::Connection(event) => self.on_connection_event(now, event),
            SessionEvent::Message(delivery) => {
                if let Some(sink) = self.sinks.get(&delivery.channel) {
                    // Room was checked before the frame was fed; a dropped Subscription is
                    // the app's way to stop listening.
                    let _ = sink.tx.try_send(SubscriptionItem::Message(delivery));
                }
            }
            SessionEvent::Queue(event) => self.on_queue_event(event),
            SessionEvent::Subscription(event) => self.on_subscription_event(event),
            SessionEvent::Alert(alert) => {
                logs::alert(&alert);
                self.emit(ClientEvent::Alert(alert));
            }
            SessionEvent::Quality(snapshot) => {
                logs::quality(&snapshot, self.session.connection().connection_id());
                self.emit(ClientEvent::Quality(snapshot));
            }
            SessionEvent::ServerError(e) => match &e.channel {
                Some(channel) if matches!(e.code, ErrorCode::Forbidden | ErrorCode::BadRequest) => {
                    if let Some(sink) = self.sinks.remove(channel) {
                        // One slot is always kept free for control items.
                        let _ = sink.tx.try_send(SubscriptionItem::Ended {
                            code: Some(e.code),
                            message: e.message.clone(),
                        });
                    }
                    self.lagging.remove(channel);
                }
                _ => self.emit(ClientEvent::ServerError {
                    code: e.code,
                    message: e.message,
                }),
            },
            SessionEvent::TokenExpiring { .. } => {
                // A fixed token cannot be renewed: the server closes with 4401 at expiry.
                if self.token_fetch.is_none() && self.credentials.can_renew() {
                    self.token_fetch = Some((TokenPurpose::Refresh, self.credentials.fetch()));
                }
            }
            SessionEvent::TokenRefreshed { .. } => self.emit(ClientEvent::TokenRefreshed),
            SessionEvent::Undecodable { error } => {
                tracing::debug!(component = "client", event = "bad_frame", error = %error);
            }
            SessionEvent::PersistRequested => self.persist_requested = true,
        }
    }

    fn on_connection_event(&mut self, now: Instant, event: Event) {
        let conn = self.session.connection();
        match event {
            Event::StateChanged { from, to } => {
                logs::state_changed(from, to, conn.attempt(), conn.connection_id());
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
            } => self.emit(ClientEvent::ConnectionLost {
                code: reason.error_code(),
                reason: reason.to_string(),
                connected_for,
            }),
            Event::TokenNeeded => {
                if self.credentials.can_renew() {
                    self.token_fetch = Some((TokenPurpose::Renew, self.credentials.fetch()));
                } else {
                    self.session.handle_input(now, Input::TokenUnavailable);
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
                self.emit(ClientEvent::Rtt(rtt));
            }
            Event::LatencySpike { rtt, threshold } => {
                logs::latency_spike(rtt, threshold, conn.connection_id());
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
            SubscriptionEvent::Ended { channel, .. } => {
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

    fn on_queue_event(&mut self, event: QueueEvent) {
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
                tracing::debug!(component = "client", event = "publish_retry_later", id = %id, code = %code);
            }
        }
    }

    fn emit(&self, event: ClientEvent) {
        // No receiver is fine: events are for whoever listens.
        let _ = self.events.send(event);
    }

    fn save_outbox(&mut self) {
        if !std::mem::take(&mut self.persist_requested) {
            return;
        }
        if let Some(outbox) = &self.outbox
            && let Err(err) = outbox.save(&self.session.persist())
        {
            tracing::error!(component = "client", event = "outbox_write_failed", error = %err);
        }
    }

    fn publish_status(&mut self, now: Instant) {
        let quality = self.session.quality(now);
        let conn = self.session.connection();
        let status = Status {
            state: conn.state(),
            attempt: conn.attempt(),
            next_attempt_at: self.next_attempt_at.filter(|_| conn.state().is_trying()),
            connection_id: conn.connection_id().map(str::to_owned),
            rtt: conn.rtt(),
            rtt_history: self.rtt_history.iter().copied().collect(),
            reconnects: quality.reconnects,
            queue_length: self.session.queue().len(),
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
