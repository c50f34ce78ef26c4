//! One task per WebSocket connection: the `tether.v1` protocol of CONTRACT §5.
//!
//! The task owns the socket and is its only writer. It waits for `hello` (close 4408 after the
//! connection timeout; anything else first: `AUTH_FAILURE` + 4401), answers `welcome`, and then
//! loops over one `select!`: incoming frames, live frames from its bounded [`Outbound`] queue
//! (filled by the hub), publish completions (kept in send order), replay pages read from the
//! store, the heartbeat tick, the dead-link deadline, the token's expiry, the slow-consumer cut
//! and the server's drain.
//!
//! Replays are written straight from the store to the socket a page at a time, so they are
//! paced by the socket and never fill the outbound queue; the hub takes the subscriber live
//! only once it has caught up (see `hub`).
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{FuturesOrdered, StreamExt as _};
use futures_util::{Future, SinkExt as _};
use protocol::{
    Ack, ChannelName, Claims, ClientMessage, CloseCode, ErrorCode, ErrorFrame, Nack, Pong, Publish,
    Reconnect, ReconnectReason, Refreshed, ServerMessage, Subscribe, Subscribed, Timestamp,
    TokenExpiring, Unsubscribed, Welcome, decode_client, encode,
};

use crate::abuse::Offence;
use crate::admission::{ConnectionPermit, SubPermit};
use crate::app::App;
use crate::auth::{AuthError, fingerprint};
use crate::config::RateLimit;
use crate::hub::{ConnKey, GoLive, encode_message};
use crate::outbound::Outbound;
use crate::ratelimit::{TokenBucket, retry_after_ms};
use crate::store::{self, PublishOutcome, PublishRequest, StoreError, StoredMessage};

/// Messages read from the store per replay page.
const REPLAY_PAGE: usize = 256;
/// Publishes one connection may have waiting for the store; at the cap the session stops
/// reading the socket until some complete (the store's queue is unbounded by design).
const MAX_IN_FLIGHT: usize = 1_024;
/// How long a close frame may take to go out (a slow consumer gets this long to read it).
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the client's close reply before dropping the socket.
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// Refused publishes a connection may accumulate (refilling at [`STRIKE_REFILL`]/s) before a
/// sustained excess closes it with 4429.
const STRIKE_BURST: u32 = 200;
const STRIKE_REFILL: f64 = 20.0;
/// What a connection refused by the per-`sub` cap is advised to wait.
const SUB_LIMIT_RETRY_MS: u64 = 5_000;
/// Live frames written per flush.
const WRITE_BATCH: usize = 64;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Runs one connection to its end. `permit` counts it against the admission limits until the
/// task ends.
///
/// Not an `async fn`: the socket goes to the heap at once, so the task's future does not keep
/// a second, moved-from copy of it for the connection's whole life (memory per idle
/// connection is what limits how many one process holds).
pub fn run(
    app: Arc<App>,
    socket: WebSocket,
    permit: ConnectionPermit,
) -> impl Future<Output = ()> + Send {
    let conn = Box::new(Conn {
        socket,
        connection_id: new_connection_id(),
    });
    let span = crate::telemetry::connection_span(&conn.connection_id);
    tracing::Instrument::instrument(drive(app, conn, permit), span)
}

async fn drive(app: Arc<App>, mut conn: Box<Conn>, permit: ConnectionPermit) {
    let ip = permit.ip();
    let opened = Instant::now();
    tracing::info!(
        component = "websocket",
        event = "connection_opened",
        connection_id = %conn.connection_id,
        client_ip = %ip,
    );
    crate::metrics::connection_opened();
    // Boxed like `Session::handle`: the handshake's state is not kept for the session's life.
    let hello = tracing::Instrument::instrument(
        handshake(&app, &mut conn, ip),
        crate::telemetry::hello_span(),
    );
    let code = match Box::pin(hello).await {
        Ok((claims, client, sub_permit)) => {
            crate::telemetry::record_sub(&claims.sub);
            let key = app.next_conn_key();
            let out = Arc::new(Outbound::new(app.config.limits.outbound_queue));
            let mut session = Box::new(Session::new(
                app.clone(),
                conn,
                key,
                ip,
                out,
                claims,
                client,
            ));
            let code = session.run().await;
            session.cleanup();
            drop(sub_permit);
            code
        }
        Err(code) => code,
    };
    tracing::info!(
        component = "websocket",
        event = "connection_closed",
        connection_id = %code.connection_id,
        code = code.code,
        reason = code.reason,
        duration_ms = u64::try_from(opened.elapsed().as_millis()).unwrap_or(u64::MAX),
    );
    crate::metrics::connection_closed(code.code);
    crate::telemetry::record_close(code.code);
    drop(permit);
}

/// How a connection ended, for `connection_closed`.
#[derive(Debug, Clone)]
struct Ended {
    code: u16,
    reason: &'static str,
    connection_id: String,
}

/// A unique id across restarts and nodes: a UUIDv7 (time-ordered, random) with a prefix.
fn new_connection_id() -> String {
    format!("c_{}", uuid::Uuid::now_v7().simple())
}

/// The socket plus the id the logs name it by.
struct Conn {
    socket: WebSocket,
    connection_id: String,
}

/// Why reading a frame failed.
enum ReadError {
    /// Larger than the message limit: 1009.
    TooBig,
    /// A text frame that is not UTF-8: 1007.
    BadUtf8,
    /// The transport failed.
    Broken,
}

fn classify(err: axum::Error) -> ReadError {
    let inner = err.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => ReadError::TooBig,
        Some(tungstenite::Error::Utf8(_)) => ReadError::BadUtf8,
        _ => ReadError::Broken,
    }
}

impl Conn {
    fn ended(&self, code: u16, reason: &'static str) -> Ended {
        Ended {
            code,
            reason,
            connection_id: self.connection_id.clone(),
        }
    }

    async fn send_frame(&mut self, msg: &ServerMessage) -> Result<(), axum::Error> {
        self.socket.send(Message::Text(encode(msg).into())).await
    }

    /// Sends a close frame (bounded in time), then waits briefly for the client's reply so
    /// the kernel does not reset the connection under unread data.
    async fn close(&mut self, code: CloseCode, reason: &'static str) -> Ended {
        let frame = Message::Close(Some(CloseFrame {
            code: code.0,
            reason: Utf8Bytes::from_static(reason),
        }));
        let sent = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, self.socket.send(frame)).await;
        if matches!(sent, Ok(Ok(()))) {
            let _ = tokio::time::timeout(CLOSE_LINGER, async {
                // Discard whatever the client still sends until its close arrives.
                while let Some(Ok(msg)) = self.socket.recv().await {
                    if matches!(msg, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
        self.ended(code.0, reason)
    }

    async fn fail(&mut self, code: ErrorCode, message: &str, close: CloseCode) -> Ended {
        let frame = ServerMessage::error(code, message);
        let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, self.send_frame(&frame)).await;
        self.close(close, short_reason(close)).await
    }

    async fn read_failed(&mut self, err: ReadError) -> Ended {
        match err {
            ReadError::TooBig => {
                self.close(CloseCode::MESSAGE_TOO_BIG, "message too large")
                    .await
            }
            ReadError::BadUtf8 => {
                self.close(CloseCode::INVALID_PAYLOAD, "invalid UTF-8")
                    .await
            }
            ReadError::Broken => self.ended(1006, "transport error"),
        }
    }
}

fn short_reason(code: CloseCode) -> &'static str {
    match code.0 {
        4401 => "authentication failed",
        4408 => "no hello in time",
        4429 => "rate limited",
        1012 => "service restart",
        1013 => "slow consumer",
        1001 => "no heartbeat",
        _ => "",
    }
}

fn log_auth_failure(connection_id: &str, ip: IpAddr, token: &str, err: &AuthError, phase: &str) {
    crate::metrics::auth_failure();
    tracing::warn!(
        component = "websocket",
        event = "auth_failure",
        connection_id = %connection_id,
        client_ip = %ip,
        reason = err.reason(),
        detail = %err,
        phase,
        token_fingerprint = %fingerprint(token),
    );
}

/// Waits for `hello` and answers `welcome`, or ends the connection.
async fn handshake(
    app: &Arc<App>,
    conn: &mut Conn,
    ip: IpAddr,
) -> Result<(Claims, Option<String>, SubPermit), Ended> {
    let deadline = tokio::time::Instant::now() + app.config.connection_timeout;
    loop {
        let next = tokio::select! {
            next = tokio::time::timeout_at(deadline, conn.socket.recv()) => next,
            () = app.drain.draining() => return Err(advise_reconnect(app, conn).await),
        };
        let msg = match next {
            Err(_) => {
                return Err(conn
                    .close(CloseCode::HELLO_TIMEOUT, "no hello in time")
                    .await);
            }
            Ok(None) => return Err(conn.ended(1006, "closed before hello")),
            Ok(Some(Err(e))) => {
                let err = classify(e);
                if !matches!(err, ReadError::Broken) {
                    app.admission
                        .offence(ip, None, Offence::ProtocolError, Instant::now());
                }
                return Err(conn.read_failed(err).await);
            }
            Ok(Some(Ok(msg))) => msg,
        };
        let text = match msg {
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Close(frame) => {
                let _ = tokio::time::timeout(CLOSE_LINGER, conn.socket.flush()).await;
                return Err(conn.ended(frame.map_or(1005, |f| f.code), "closed by client"));
            }
            Message::Binary(_) => None,
            Message::Text(text) => Some(text),
        };
        let hello = match text.as_deref().map(decode_client) {
            Some(Ok(ClientMessage::Hello(hello))) => hello,
            _ => {
                app.admission
                    .offence(ip, None, Offence::ProtocolError, Instant::now());
                return Err(conn
                    .fail(
                        ErrorCode::AuthFailure,
                        "the first frame must be a hello with a token",
                        CloseCode::AUTH_FAILED,
                    )
                    .await);
            }
        };
        return match app.auth.verify(hello.token.expose()) {
            Ok(claims) => {
                let Some(sub_permit) = app.admission.admit_sub(&claims.sub) else {
                    app.admission.offence(
                        ip,
                        Some(&claims.sub),
                        Offence::RateLimited,
                        Instant::now(),
                    );
                    crate::metrics::rate_limited();
                    tracing::warn!(
                        component = "websocket",
                        event = "rate_limited",
                        connection_id = %conn.connection_id,
                        client_ip = %ip,
                        limit = "connections_per_sub",
                    );
                    let frame = ServerMessage::Error(ErrorFrame {
                        code: ErrorCode::RateLimit,
                        message: "too many connections for this sub".into(),
                        channel: None,
                        retry_after_ms: Some(SUB_LIMIT_RETRY_MS),
                    });
                    let _ =
                        tokio::time::timeout(CLOSE_WRITE_TIMEOUT, conn.send_frame(&frame)).await;
                    return Err(conn.close(CloseCode::RATE_LIMITED, "rate limited").await);
                };
                let welcome = ServerMessage::Welcome(Welcome {
                    connection_id: conn.connection_id.clone(),
                    heartbeat_ms: millis(app.config.heartbeat),
                    max_message_bytes: app.config.limits.max_message_bytes as u64,
                    server_time: store::now(),
                    token_expires_at: Timestamp::from_unix_seconds(claims.exp),
                });
                match conn.send_frame(&welcome).await {
                    Ok(()) => Ok((claims, hello.client, sub_permit)),
                    Err(_) => Err(conn.ended(1006, "transport error")),
                }
            }
            Err(err) => {
                log_auth_failure(&conn.connection_id, ip, hello.token.expose(), &err, "hello");
                app.admission.auth_failed(ip, Instant::now());
                Err(conn
                    .fail(
                        ErrorCode::AuthFailure,
                        &err.to_string(),
                        CloseCode::AUTH_FAILED,
                    )
                    .await)
            }
        };
    }
}

/// Drain: `reconnect` with a delay spread over the drain window, then close 1012.
async fn advise_reconnect(app: &App, conn: &mut Conn) -> Ended {
    advise(conn, app.drain.advice_ms(), ReconnectReason::Shutdown).await
}

/// `reconnect` advice, then close 1012: the drain, and an operator's shed (`admin`).
async fn advise(conn: &mut Conn, after_ms: u64, reason: ReconnectReason) -> Ended {
    crate::metrics::reconnect_advice(reason);
    let advice = ServerMessage::Reconnect(Reconnect { after_ms, reason });
    let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, conn.send_frame(&advice)).await;
    conn.close(CloseCode::SERVICE_RESTART, "service restart")
        .await
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One subscription of this connection.
#[derive(Debug)]
struct Sub {
    /// Distinguishes a re-subscription from the one it replaced.
    generation: u64,
    /// The last offset written to the client.
    upto: u64,
    live: bool,
}

/// A publish waiting for the store, answered in the order it was sent.
type Pending = BoxFuture<ServerMessage>;

/// A replay page being read.
struct Page {
    channel: String,
    generation: u64,
    result: Result<Vec<StoredMessage>, StoreError>,
}

/// What woke the session.
enum Event {
    Drain,
    Shed(u64),
    Cut,
    Live(Utf8Bytes),
    Incoming(Option<Result<Message, axum::Error>>),
    Published(ServerMessage),
    Page(Page),
    /// The single timer fired; [`Session::due`] says for which deadline.
    Timer,
    Heartbeat,
    DeadCheck,
    Expiring,
    Expired,
}

struct Session {
    app: Arc<App>,
    conn: Box<Conn>,
    key: ConnKey,
    ip: IpAddr,
    out: Arc<Outbound>,
    claims: Claims,
    subs: HashMap<String, Sub>,
    generation: u64,
    /// Channels waiting for their replay, in subscribe order; the front one is being read.
    catchups: VecDeque<String>,
    page: Option<BoxFuture<Page>>,
    /// Created on the first publish: an idle connection holds no publish machinery.
    pending: Option<FuturesOrdered<Pending>>,
    publish_bucket: TokenBucket,
    strikes: TokenBucket,
    limited: bool,
    last_recv: Instant,
    ping_sent: Option<(u64, Instant)>,
    ping_seq: u64,
    dead_deadline: tokio::time::Instant,
    expiring_at: Option<tokio::time::Instant>,
    expires_at: tokio::time::Instant,
    next_ping: tokio::time::Instant,
}

impl Session {
    fn new(
        app: Arc<App>,
        conn: Box<Conn>,
        key: ConnKey,
        ip: IpAddr,
        out: Arc<Outbound>,
        claims: Claims,
        client: Option<String>,
    ) -> Self {
        tracing::debug!(
            component = "websocket",
            event = "authenticated",
            connection_id = %conn.connection_id,
            sub = %claims.sub,
            client = client.as_deref().unwrap_or(""),
        );
        let now = Instant::now();
        let limits = &app.config.limits;
        let publish_bucket = TokenBucket::new(limits.publish, now);
        let strikes = TokenBucket::new(
            RateLimit {
                burst: STRIKE_BURST,
                per_sec: STRIKE_REFILL,
            },
            now,
        );
        let dead = dead_after(app.config.heartbeat);
        let app_heartbeat = app.config.heartbeat;
        let mut session = Self {
            app,
            conn,
            key,
            ip,
            out,
            claims,
            subs: HashMap::new(),
            generation: 0,
            catchups: VecDeque::new(),
            page: None,
            pending: None,
            publish_bucket,
            strikes,
            limited: false,
            last_recv: now,
            ping_sent: None,
            ping_seq: 0,
            dead_deadline: tokio::time::Instant::now() + dead,
            expiring_at: None,
            expires_at: tokio::time::Instant::now(),
            next_ping: tokio::time::Instant::now() + app_heartbeat,
        };
        session.set_token_timers();
        session
    }

    fn set_token_timers(&mut self) {
        let now_ms = store::now();
        let exp = Timestamp::from_unix_seconds(self.claims.exp);
        let left = Duration::from_millis(u64::try_from(exp.millis_since(now_ms)).unwrap_or(0));
        let now = tokio::time::Instant::now();
        self.expires_at = now + left;
        let notice = self.app.config.token_expiry_notice;
        self.expiring_at = Some(now + left.saturating_sub(notice));
    }

    /// The main loop; returns how the connection ended.
    async fn run(&mut self) -> Ended {
        let drain = self.app.drain.clone();
        let mut shed = self.app.shed.register(self.key);
        // One timer for every deadline (heartbeat, dead link, token notice and expiry): each
        // armed timer costs memory on every idle connection.
        let timer = tokio::time::sleep_until(self.next_deadline());
        tokio::pin!(timer);
        loop {
            let wake = self.next_deadline();
            if timer.deadline() != wake {
                timer.as_mut().reset(wake);
            }
            let event = {
                let in_flight = self.pending.as_ref().map_or(0, FuturesOrdered::len);
                let can_read = in_flight < MAX_IN_FLIGHT;
                let has_pending = in_flight > 0;
                let has_page = self.page.is_some();
                let out = &self.out;
                let pending = &mut self.pending;
                let page = &mut self.page;
                let socket = &mut self.conn.socket;
                // Biased: frames already queued for the client go out before the next
                // incoming frame is handled, so an answer never overtakes earlier deliveries.
                tokio::select! {
                    biased;
                    () = drain.draining() => Event::Drain,
                    after_ms = shed.chosen() => Event::Shed(after_ms),
                    () = out.cut() => Event::Cut,
                    () = &mut timer => Event::Timer,
                    frame = out.recv() => Event::Live(frame),
                    Some(done) = async { pending.as_mut().expect("guarded by has_pending").next().await }, if has_pending => Event::Published(done),
                    page = async { page.as_mut().expect("guarded by has_page").await }, if has_page => Event::Page(page),
                    incoming = socket.recv(), if can_read => Event::Incoming(incoming),
                }
            };
            let event = match event {
                Event::Timer => self.due(),
                other => other,
            };
            // Boxed: handling an event needs far more state than waiting for one, and an idle
            // connection should only pay for the waiting (this task's size is per connection).
            if let Some(ended) = Box::pin(self.handle(event)).await {
                return ended;
            }
        }
    }

    /// The earliest of this connection's deadlines.
    fn next_deadline(&self) -> tokio::time::Instant {
        let mut at = self.expires_at.min(self.dead_deadline).min(self.next_ping);
        if let Some(expiring) = self.expiring_at {
            at = at.min(expiring);
        }
        at
    }

    /// Which deadline the timer fired for (the most urgent one that is due).
    fn due(&self) -> Event {
        let now = tokio::time::Instant::now();
        if self.expires_at <= now {
            Event::Expired
        } else if self.expiring_at.is_some_and(|at| at <= now) {
            Event::Expiring
        } else if self.dead_deadline <= now {
            Event::DeadCheck
        } else {
            Event::Heartbeat
        }
    }

    /// Handles one event; `Some` ends the connection.
    async fn handle(&mut self, event: Event) -> Option<Ended> {
        match event {
            Event::Drain => Some(advise_reconnect(&self.app, &mut self.conn).await),
            Event::Shed(after_ms) => {
                Some(advise(&mut self.conn, after_ms, ReconnectReason::Shed).await)
            }
            Event::Cut => Some(self.slow_consumer().await),
            Event::Timer => None,
            Event::Live(frame) => self.write_live(frame).await,
            Event::Published(reply) => self.write(&reply).await,
            Event::Page(page) => {
                self.page = None;
                self.on_page(page).await
            }
            Event::Incoming(incoming) => self.on_incoming(incoming).await,
            Event::Heartbeat => {
                let heartbeat = self.app.config.heartbeat;
                let now = tokio::time::Instant::now();
                self.next_ping = (self.next_ping + heartbeat).max(now + heartbeat / 2);
                self.ping_seq += 1;
                let sent = Instant::now();
                self.ping_sent = Some((self.ping_seq, sent));
                let payload = self.ping_seq.to_be_bytes().to_vec();
                self.send_guarded(Message::Ping(payload.into())).await.err()
            }
            Event::DeadCheck => {
                let dead = dead_after(self.app.config.heartbeat);
                let silent = self.last_recv.elapsed();
                if silent >= dead {
                    Some(self.conn.close(CloseCode::GOING_AWAY, "no heartbeat").await)
                } else {
                    self.dead_deadline = tokio::time::Instant::now() + (dead - silent);
                    None
                }
            }
            Event::Expiring => {
                self.expiring_at = None;
                let frame = ServerMessage::TokenExpiring(TokenExpiring {
                    expires_at: Timestamp::from_unix_seconds(self.claims.exp),
                });
                self.write(&frame).await
            }
            Event::Expired => Some(
                self.conn
                    .fail(
                        ErrorCode::AuthFailure,
                        "token expired",
                        CloseCode::AUTH_FAILED,
                    )
                    .await,
            ),
        }
    }

    async fn slow_consumer(&mut self) -> Ended {
        crate::metrics::slow_consumer();
        tracing::warn!(
            component = "websocket",
            event = "slow_consumer_disconnected",
            connection_id = %self.conn.connection_id,
            queue_capacity = self.app.config.limits.outbound_queue,
        );
        self.conn
            .close(CloseCode::TRY_AGAIN_LATER, "slow consumer")
            .await
    }

    /// Writes a message, giving up when the connection is cut meanwhile.
    async fn send_guarded(&mut self, msg: Message) -> Result<(), Ended> {
        let result = tokio::select! {
            r = self.conn.socket.send(msg) => r,
            () = self.out.cut() => return Err(self.slow_consumer().await),
        };
        result.map_err(|_| self.conn.ended(1006, "transport error"))
    }

    async fn write(&mut self, msg: &ServerMessage) -> Option<Ended> {
        self.send_guarded(Message::Text(encode(msg).into()))
            .await
            .err()
    }

    /// Writes a live frame plus whatever else is queued (up to a batch), then flushes once.
    async fn write_live(&mut self, first: Utf8Bytes) -> Option<Ended> {
        let out = self.out.clone();
        let result = tokio::select! {
            r = async {
                self.conn.socket.feed(Message::Text(first)).await?;
                for _ in 1..WRITE_BATCH {
                    match futures_util::FutureExt::now_or_never(out.recv()) {
                        Some(frame) => self.conn.socket.feed(Message::Text(frame)).await?,
                        None => break,
                    }
                }
                self.conn.socket.flush().await
            } => r,
            () = out.cut() => return Some(self.slow_consumer().await),
        };
        result
            .err()
            .map(|_| self.conn.ended(1006, "transport error"))
    }

    async fn on_incoming(
        &mut self,
        incoming: Option<Result<Message, axum::Error>>,
    ) -> Option<Ended> {
        let msg = match incoming {
            None => return Some(self.conn.ended(1006, "connection lost")),
            Some(Err(e)) => {
                let err = classify(e);
                if !matches!(err, ReadError::Broken) {
                    self.offence(Offence::ProtocolError);
                }
                return Some(self.conn.read_failed(err).await);
            }
            Some(Ok(msg)) => msg,
        };
        self.last_recv = Instant::now();
        match msg {
            Message::Text(text) => self.on_text(&text).await,
            Message::Binary(_) => {
                self.offence(Offence::ProtocolError);
                self.write(&ServerMessage::error(
                    ErrorCode::BadRequest,
                    "binary frames are not supported; send JSON text frames",
                ))
                .await
            }
            Message::Ping(_) => None,
            Message::Pong(payload) => {
                self.on_pong(&payload);
                None
            }
            Message::Close(frame) => {
                // tungstenite queued the close reply; send it before dropping the socket.
                let _ = tokio::time::timeout(CLOSE_LINGER, self.conn.socket.flush()).await;
                let code = frame.map_or(1005, |f| f.code);
                Some(self.conn.ended(code, "closed by client"))
            }
        }
    }

    fn on_pong(&mut self, payload: &[u8]) {
        let Some((seq, sent)) = self.ping_sent else {
            return;
        };
        if payload != seq.to_be_bytes() {
            return;
        }
        self.ping_sent = None;
        let rtt = sent.elapsed();
        self.app.latency.record(Instant::now(), rtt);
        crate::metrics::ws_rtt(rtt);
        if rtt > self.app.config.latency_threshold {
            tracing::warn!(
                component = "websocket",
                event = "latency_spike",
                connection_id = %self.conn.connection_id,
                rtt_ms = rtt.as_secs_f64() * 1_000.0,
                threshold_ms = millis(self.app.config.latency_threshold),
            );
        }
    }

    async fn on_text(&mut self, text: &str) -> Option<Ended> {
        let msg = match decode_client(text) {
            Ok(msg) => msg,
            Err(err) => {
                self.offence(Offence::ProtocolError);
                return self
                    .write(&ServerMessage::error(
                        ErrorCode::BadRequest,
                        err.to_string(),
                    ))
                    .await;
            }
        };
        match msg {
            ClientMessage::Hello(_) => {
                self.write(&ServerMessage::error(
                    ErrorCode::BadRequest,
                    "already authenticated: hello is only the first frame",
                ))
                .await
            }
            ClientMessage::Ping(ping) => {
                self.write(&ServerMessage::Pong(Pong {
                    id: ping.id,
                    server_time: store::now(),
                }))
                .await
            }
            ClientMessage::Subscribe(sub) => self.subscribe(sub).await,
            ClientMessage::Unsubscribe(unsub) => {
                self.end_subscription(&unsub.channel);
                self.write(&ServerMessage::Unsubscribed(Unsubscribed {
                    channel: unsub.channel,
                }))
                .await
            }
            ClientMessage::Publish(publish) => self.publish(publish).await,
            ClientMessage::Refresh(refresh) => self.refresh(refresh.token.expose()).await,
            // A quality report has no answer (CONTRACT §5.8); the metrics fold it in.
            ClientMessage::Report(r) => {
                match crate::fleet::report(&self.claims.sub, &self.conn.connection_id, None, &r) {
                    Ok(()) => None,
                    Err(e) => {
                        self.write(&ServerMessage::error(ErrorCode::BadRequest, e.to_string()))
                            .await
                    }
                }
            }
        }
    }

    fn channel_error(code: ErrorCode, channel: &str, message: impl Into<String>) -> ServerMessage {
        ServerMessage::Error(ErrorFrame {
            code,
            message: message.into(),
            channel: Some(channel.to_owned()),
            retry_after_ms: None,
        })
    }

    async fn subscribe(&mut self, req: Subscribe) -> Option<Ended> {
        let span = crate::telemetry::subscribe_span(&req.channel, req.since);
        if let Err(err) = ChannelName::parse(&req.channel) {
            let frame = Self::channel_error(ErrorCode::BadRequest, &req.channel, err.to_string());
            return self.write(&frame).await;
        }
        if !self.claims.can_subscribe(&req.channel) {
            let frame = Self::channel_error(
                ErrorCode::Forbidden,
                &req.channel,
                "the token does not allow subscribing to this channel",
            );
            return self.write(&frame).await;
        }
        // Replace an existing subscription: its replay (if any) is abandoned.
        self.end_subscription(&req.channel);
        // Register before reading the channel's state: whatever the hub fans out from now on
        // is either in the store reads below or delivered live (see `hub`).
        self.app
            .hub
            .register(&req.channel, self.key, self.out.clone());
        let info = match self.app.store.channel_info(&req.channel).await {
            Ok(Some(info)) => Ok(info),
            Ok(None) => self.app.store.channel(&req.channel).await,
            Err(e) => Err(e),
        };
        let info = match info {
            Ok(info) => info,
            Err(err) => {
                self.app.hub.unregister(&req.channel, self.key);
                tracing::error!(
                    component = "websocket",
                    event = "store_error",
                    connection_id = %self.conn.connection_id,
                    operation = "subscribe",
                    error = %err,
                );
                let frame = Self::channel_error(
                    ErrorCode::ServerError,
                    &req.channel,
                    "the store is unavailable; retry later",
                );
                return self.write(&frame).await;
            }
        };
        let latest = info.latest_offset;
        let (upto, recovered) = replay_start(
            req.since,
            req.epoch.as_deref(),
            &info.epoch,
            latest,
            info.oldest_retained,
        );
        self.generation += 1;
        self.subs.insert(
            req.channel.clone(),
            Sub {
                generation: self.generation,
                upto,
                live: false,
            },
        );
        let reply = ServerMessage::Subscribed(Subscribed {
            channel: req.channel.clone(),
            epoch: info.epoch,
            offset: latest,
            recovered,
            replayed: latest.saturating_sub(upto),
        });
        crate::telemetry::subscribed(&span, latest.saturating_sub(upto), recovered);
        if let Some(ended) = self.write(&reply).await {
            return Some(ended);
        }
        self.catchups.push_back(req.channel);
        self.next_page();
        None
    }

    /// Starts reading the next replay page, unless one is being read.
    fn next_page(&mut self) {
        if self.page.is_some() {
            return;
        }
        while let Some(channel) = self.catchups.front() {
            let Some(sub) = self.subs.get(channel) else {
                self.catchups.pop_front();
                continue;
            };
            let store = self.app.store.clone();
            let channel = channel.clone();
            let generation = sub.generation;
            let after = sub.upto;
            self.page = Some(Box::pin(async move {
                let result = store.read(&channel, after, REPLAY_PAGE).await;
                Page {
                    channel,
                    generation,
                    result,
                }
            }));
            return;
        }
    }

    async fn on_page(&mut self, page: Page) -> Option<Ended> {
        let current = self
            .subs
            .get(&page.channel)
            .is_some_and(|s| s.generation == page.generation && !s.live);
        if !current {
            // Unsubscribed or replaced while the page was read; `end_subscription` already
            // removed it from the queue.
            self.next_page();
            return None;
        }
        let msgs = match page.result {
            Ok(msgs) => msgs,
            Err(err) => {
                tracing::error!(
                    component = "websocket",
                    event = "store_error",
                    connection_id = %self.conn.connection_id,
                    operation = "replay",
                    error = %err,
                );
                self.end_subscription(&page.channel);
                let frame = Self::channel_error(
                    ErrorCode::ServerError,
                    &page.channel,
                    "replay failed; subscribe again later",
                );
                let ended = self.write(&frame).await;
                self.next_page();
                return ended;
            }
        };
        let full = msgs.len() >= REPLAY_PAGE;
        let mut upto = self.subs.get(&page.channel).map_or(0, |s| s.upto);
        let out = self.out.clone();
        let written = tokio::select! {
            r = async {
                for msg in &msgs {
                    if msg.offset <= upto {
                        continue;
                    }
                    self.conn.socket.feed(Message::Text(encode_message(msg))).await?;
                    crate::metrics::delivered(1);
                    upto = msg.offset;
                }
                self.conn.socket.flush().await
            } => r,
            () = out.cut() => return Some(self.slow_consumer().await),
        };
        if written.is_err() {
            return Some(self.conn.ended(1006, "transport error"));
        }
        let sub = self
            .subs
            .get_mut(&page.channel)
            .expect("checked current above");
        sub.upto = upto;
        if !full {
            match self.app.hub.try_go_live(&page.channel, self.key, upto) {
                GoLive::Live => {
                    sub.live = true;
                    self.catchups.pop_front();
                }
                // The hub moved on while this page was read: read the rest.
                GoLive::Behind(_) => {}
                GoLive::Gone => {
                    self.subs.remove(&page.channel);
                    self.catchups.pop_front();
                }
            }
        }
        self.next_page();
        None
    }

    /// Forgets a subscription (unsubscribe, replace, lost rights).
    fn end_subscription(&mut self, channel: &str) {
        if self.subs.remove(channel).is_some() {
            self.app.hub.unregister(channel, self.key);
        }
        let was_front = self.catchups.front().is_some_and(|c| c == channel);
        self.catchups.retain(|c| c != channel);
        if was_front {
            // Drop the page being read for it; the next channel's replay starts.
            self.page = None;
            self.next_page();
        }
    }

    /// Counts an offence of this connection's client ([`crate::abuse`]).
    fn offence(&self, offence: Offence) {
        self.app
            .admission
            .offence(self.ip, Some(&self.claims.sub), offence, Instant::now());
    }

    async fn publish(&mut self, publish: Publish) -> Option<Ended> {
        let now = Instant::now();
        if let Err(wait) = self.publish_bucket.try_take(now) {
            crate::metrics::rate_limited();
            self.offence(Offence::RateLimited);
            let retry = retry_after_ms(wait);
            if !self.limited {
                self.limited = true;
                tracing::warn!(
                    component = "websocket",
                    event = "rate_limited",
                    connection_id = %self.conn.connection_id,
                    limit = "publish",
                    retry_after_ms = retry,
                );
            }
            if self.strikes.try_take(now).is_err() {
                let frame = ServerMessage::Error(ErrorFrame {
                    code: ErrorCode::RateLimit,
                    message: "publish rate exceeded persistently".into(),
                    channel: None,
                    retry_after_ms: Some(retry.max(1_000)),
                });
                let _ =
                    tokio::time::timeout(CLOSE_WRITE_TIMEOUT, self.conn.send_frame(&frame)).await;
                return Some(
                    self.conn
                        .close(CloseCode::RATE_LIMITED, "rate limited")
                        .await,
                );
            }
            return self
                .write(&nack(
                    publish.id,
                    ErrorCode::RateLimit,
                    "publish rate exceeded",
                    Some(retry),
                ))
                .await;
        }
        self.limited = false;
        if let Err(err) = ChannelName::parse(&publish.channel) {
            return self
                .write(&nack(
                    publish.id,
                    ErrorCode::BadRequest,
                    &err.to_string(),
                    None,
                ))
                .await;
        }
        if !self.claims.can_publish(&publish.channel) {
            return self
                .write(&nack(
                    publish.id,
                    ErrorCode::Forbidden,
                    "the token does not allow publishing to this channel",
                    None,
                ))
                .await;
        }
        let request = PublishRequest {
            channel: publish.channel.clone(),
            sub: self.claims.sub.clone(),
            id: publish.id.clone(),
            data: publish.data,
            published_at: store::now(),
        };
        // `publish` enqueues at call time, so calling it here, in frame order, keeps this
        // connection's publishes in order in the store.
        let stored = crate::telemetry::traced_publish(
            &publish.channel,
            now,
            self.app.store.publish(request),
        );
        let connection_id = self.conn.connection_id.clone();
        let pending = self.pending.get_or_insert_with(FuturesOrdered::new);
        pending.push_back(Box::pin(async move {
            outcome_frame(stored.await, publish.id, publish.channel, &connection_id)
        }));
        None
    }

    async fn refresh(&mut self, token: &str) -> Option<Ended> {
        let claims = match self.app.auth.verify(token) {
            Ok(c) if c.sub == self.claims.sub => c,
            Ok(_) => {
                let err = AuthError::Malformed("token is for another sub".into());
                log_auth_failure(&self.conn.connection_id, self.ip, token, &err, "refresh");
                self.app
                    .admission
                    .auth_failed_for(self.ip, &self.claims.sub, Instant::now());
                return self
                    .write(&ServerMessage::error(
                        ErrorCode::AuthFailure,
                        "the new token must carry the same sub; the current token stays in force",
                    ))
                    .await;
            }
            Err(err) => {
                log_auth_failure(&self.conn.connection_id, self.ip, token, &err, "refresh");
                self.app
                    .admission
                    .auth_failed_for(self.ip, &self.claims.sub, Instant::now());
                return self
                    .write(&ServerMessage::error(
                        ErrorCode::AuthFailure,
                        format!("{err}; the current token stays in force"),
                    ))
                    .await;
            }
        };
        self.claims = claims;
        self.set_token_timers();
        let reply = ServerMessage::Refreshed(Refreshed {
            token_expires_at: Timestamp::from_unix_seconds(self.claims.exp),
        });
        if let Some(ended) = self.write(&reply).await {
            return Some(ended);
        }
        let lost: Vec<String> = self
            .subs
            .keys()
            .filter(|c| !self.claims.can_subscribe(c))
            .cloned()
            .collect();
        for channel in lost {
            self.end_subscription(&channel);
            let frame = Self::channel_error(
                ErrorCode::Forbidden,
                &channel,
                "the refreshed token no longer allows this channel; subscription ended",
            );
            if let Some(ended) = self.write(&frame).await {
                return Some(ended);
            }
        }
        None
    }

    /// Unregisters every subscription from the hub.
    fn cleanup(&mut self) {
        for channel in self.subs.keys() {
            self.app.hub.unregister(channel, self.key);
        }
        self.subs.clear();
    }
}

fn dead_after(heartbeat: Duration) -> Duration {
    heartbeat * 5 / 2
}

fn nack(id: String, code: ErrorCode, message: &str, retry_after_ms: Option<u64>) -> ServerMessage {
    crate::metrics::publish_refused();
    ServerMessage::Nack(Nack {
        id,
        code,
        message: message.to_owned(),
        retry_after_ms,
    })
}

fn outcome_frame(
    outcome: Result<PublishOutcome, StoreError>,
    id: String,
    channel: String,
    connection_id: &str,
) -> ServerMessage {
    match outcome {
        Ok(PublishOutcome::Stored { offset }) => ServerMessage::Ack(Ack {
            id,
            channel,
            offset,
            duplicate: false,
        }),
        Ok(PublishOutcome::Duplicate { offset }) => ServerMessage::Ack(Ack {
            id,
            channel,
            offset,
            duplicate: true,
        }),
        Ok(PublishOutcome::Conflict { .. }) => nack(
            id,
            ErrorCode::BadRequest,
            "this id was already published with different data",
            None,
        ),
        Err(err) => {
            tracing::error!(
                component = "websocket",
                event = "store_error",
                connection_id = %connection_id,
                operation = "publish",
                error = %err,
            );
            nack(
                id,
                ErrorCode::ServerError,
                "the message could not be stored; retry later",
                Some(1_000),
            )
        }
    }
}

/// Where a replay starts (the last offset the client already has) and whether the history
/// after `since` is complete (CONTRACT §5.3).
#[must_use]
pub fn replay_start(
    since: Option<u64>,
    client_epoch: Option<&str>,
    epoch: &str,
    latest: u64,
    oldest: Option<u64>,
) -> (u64, bool) {
    let Some(since) = since else {
        return (latest, true);
    };
    // Where a replay of "everything retained" starts.
    let from_oldest = oldest.map_or(latest, |o| o.saturating_sub(1));
    let epoch_changed = client_epoch.is_some_and(|e| e != epoch);
    if epoch_changed || since > latest {
        return (from_oldest, false);
    }
    match oldest {
        // Messages after `since` were trimmed.
        Some(o) if since.saturating_add(1) < o => (from_oldest, false),
        Some(_) => (since, true),
        // Nothing retained: complete only if nothing was published after `since`.
        None => (latest, since == latest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_start_follows_the_contract() {
        // Live only.
        assert_eq!(replay_start(None, None, "e", 10, Some(1)), (10, true));
        // Everything retained.
        assert_eq!(replay_start(Some(0), None, "e", 10, Some(1)), (0, true));
        assert_eq!(
            replay_start(Some(4), Some("e"), "e", 10, Some(1)),
            (4, true)
        );
        // Trimmed.
        assert_eq!(replay_start(Some(0), None, "e", 10, Some(5)), (4, false));
        assert_eq!(replay_start(Some(3), None, "e", 10, Some(5)), (4, false));
        assert_eq!(replay_start(Some(4), None, "e", 10, Some(5)), (4, true));
        // Epoch changed or since beyond latest.
        assert_eq!(
            replay_start(Some(4), Some("old"), "e", 10, Some(1)),
            (0, false)
        );
        assert_eq!(replay_start(Some(40), None, "e", 10, Some(1)), (0, false));
        // Empty channel.
        assert_eq!(replay_start(Some(0), None, "e", 0, None), (0, true));
        assert_eq!(replay_start(Some(3), None, "e", 0, None), (0, false));
    }
}
