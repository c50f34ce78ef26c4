//! The thin tokio driver of one connection's [`Machine`]: it moves bytes between the
//! WebSocket, the store and the hub, and decides nothing.
//!
//! One `select!` waits for the drain, an operator's shed, the slow-consumer cut, the machine's
//! next deadline (`sleep_until(poll_timeout)`), a live frame from the bounded [`Outbound`]
//! queue, a publish outcome (kept in send order), a subscribe's channel state, a replay page,
//! and — when the machine wants them — socket frames. Each wake-up becomes one `handle_*`
//! call; then every [`Output`] is carried out in order. Replays are written as the machine
//! emits them, a page at a time, so they are paced by the socket and never fill the outbound
//! queue.
//!
//! Time comes from `tokio::time::Instant::now()`, so a test under `tokio::time::pause()`
//! drives every timer of the session.
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{FuturesOrdered, StreamExt as _};
use futures_util::{Future, SinkExt as _};

use super::machine::{Frame, HubOp, Machine, Output, StoreOp, StoreReply};
use crate::admin::ShedGuard;
use crate::admission::{ConnectionPermit, SubPermit};
use crate::app::App;
use crate::hub::ConnKey;
use crate::outbound::Outbound;
use crate::store;

/// How long a close frame (and the frame before it) may take to go out (a slow consumer gets
/// this long to read it).
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the client's close reply before dropping the socket.
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// Live frames written per flush.
const WRITE_BATCH: usize = 64;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// How a connection ended, for `connection_closed`.
#[derive(Debug, Clone, Copy)]
pub struct Ended {
    /// The close code (sent, received, or 1006 for a lost transport).
    pub code: u16,
    /// Why.
    pub reason: &'static str,
}

/// The machine's clock: tokio's, so `tokio::time::pause()` governs it.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Everything one connection holds; on the heap, so the task's future stays small.
pub struct Driver {
    app: Arc<App>,
    socket: WebSocket,
    machine: Machine,
    key: ConnKey,
    ip: IpAddr,
    /// Live frames from the hub; bounded, its overflow is the slow-consumer cut.
    out: Arc<Outbound>,
    /// Holds this connection's place under the per-`sub` cap once admitted.
    sub_permit: Option<SubPermit>,
    /// Lets an operator shed this connection once it is open.
    shed: Option<ShedGuard>,
    /// A subscribe's channel state being read (the machine reads no frame meanwhile).
    info: Option<BoxFuture<StoreReply>>,
    /// The replay page being read.
    page: Option<BoxFuture<StoreReply>>,
    /// Publishes waiting for the store, answered in send order; created on the first.
    pending: Option<FuturesOrdered<BoxFuture<StoreReply>>>,
    /// `ws.hello`: open from the upgrade until the hello is verified (or the end).
    hello: Option<tracing::Span>,
}

impl Driver {
    /// A driver for a freshly upgraded socket.
    pub fn new(app: Arc<App>, socket: WebSocket, ip: IpAddr, connection_id: String) -> Self {
        let machine = Machine::new(app.session.clone(), connection_id, ip, now(), store::now());
        let key = app.next_conn_key();
        let out = Arc::new(Outbound::new(app.config.limits.outbound_queue));
        Self {
            app,
            socket,
            machine,
            key,
            ip,
            out,
            sub_permit: None,
            shed: None,
            info: None,
            page: None,
            pending: None,
            hello: Some(crate::telemetry::hello_span()),
        }
    }

    /// The machine (for its connection id).
    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    /// Runs the connection to its end.
    pub async fn run(&mut self) -> Ended {
        let drain = self.app.drain.clone();
        // One timer for every deadline of the machine: each armed timer costs memory on every
        // idle connection.
        let timer = tokio::time::sleep_until(self.deadline());
        tokio::pin!(timer);
        loop {
            // Boxed: carrying out outputs needs far more state than waiting, and an idle
            // connection should only pay for the waiting (this task's size is per connection).
            if let Some(ended) = Box::pin(self.carry_out()).await {
                self.cleanup();
                return ended;
            }
            let wake = self.deadline();
            if timer.deadline() != wake {
                timer.as_mut().reset(wake);
            }
            let reads = self.machine.wants_frames();
            let has_pending = self.pending.as_ref().is_some_and(|p| !p.is_empty());
            let has_info = self.info.is_some();
            let has_page = self.page.is_some();
            let has_shed = self.shed.is_some();
            let out = &self.out;
            let pending = &mut self.pending;
            let info = &mut self.info;
            let page = &mut self.page;
            let shed = &mut self.shed;
            let socket = &mut self.socket;
            // Biased: frames already queued for the client go out before the next incoming
            // frame is handled, so an answer never overtakes earlier deliveries.
            let event = tokio::select! {
                biased;
                () = drain.draining() => Wake::Drain,
                after_ms = async { shed.as_mut().expect("guarded by has_shed").chosen().await }, if has_shed => Wake::Shed(after_ms),
                () = out.cut() => Wake::Cut,
                () = &mut timer => Wake::Timer,
                first = out.recv() => Wake::Live(first),
                Some(done) = async { pending.as_mut().expect("guarded by has_pending").next().await }, if has_pending => Wake::Store(done),
                reply = async { info.as_mut().expect("guarded by has_info").await }, if has_info => Wake::Info(reply),
                reply = async { page.as_mut().expect("guarded by has_page").await }, if has_page => Wake::Page(reply),
                incoming = socket.recv(), if reads => Wake::Incoming(incoming),
            };
            self.wake(event);
        }
    }

    fn deadline(&self) -> tokio::time::Instant {
        // No deadline only once closed, and then nothing waits for it.
        let at = self
            .machine
            .poll_timeout()
            .unwrap_or_else(|| now() + Duration::from_secs(86_400));
        tokio::time::Instant::from_std(at)
    }

    fn wake(&mut self, event: Wake) {
        let machine = &mut self.machine;
        match event {
            Wake::Drain => machine.handle_drain(self.app.drain.advice_ms()),
            Wake::Shed(after_ms) => machine.handle_shed(after_ms),
            Wake::Cut => machine.handle_cut(self.app.config.limits.outbound_queue),
            Wake::Timer => machine.handle_timeout(now()),
            Wake::Live(first) => {
                machine.handle_live(first);
                // Up to a batch of what else is queued, written with one flush.
                for _ in 1..WRITE_BATCH {
                    match self.out.try_pop() {
                        Some(next) => machine.handle_live(next),
                        None => break,
                    }
                }
            }
            Wake::Store(reply) => machine.handle_store_reply(reply),
            Wake::Info(reply) => {
                self.info = None;
                machine.handle_store_reply(reply);
            }
            Wake::Page(reply) => {
                self.page = None;
                machine.handle_store_reply(reply);
            }
            Wake::Incoming(incoming) => {
                let now = now();
                match incoming {
                    None => machine.handle_frame(now, Frame::Lost),
                    Some(Err(err)) => machine.handle_frame(now, classify(err)),
                    Some(Ok(Message::Text(text))) => machine.handle_frame(now, Frame::Text(&text)),
                    Some(Ok(Message::Binary(_))) => machine.handle_frame(now, Frame::Binary),
                    Some(Ok(Message::Ping(_))) => machine.handle_frame(now, Frame::Ping),
                    Some(Ok(Message::Pong(payload))) => {
                        machine.handle_frame(now, Frame::Pong(&payload));
                    }
                    Some(Ok(Message::Close(frame))) => {
                        machine.handle_frame(now, Frame::Close(frame.map(|f| f.code)));
                    }
                }
            }
        }
    }

    /// Carries out the machine's outputs in order; `Some` once the connection has ended.
    async fn carry_out(&mut self) -> Option<Ended> {
        let mut fed = false;
        while let Some(output) = self.machine.poll_output() {
            match output {
                Output::Text(frame) => {
                    fed = true;
                    if let Err(ended) = self.feed(Message::Text(frame)).await {
                        return Some(ended);
                    }
                }
                Output::Ping(seq) => {
                    fed = true;
                    let payload = seq.to_be_bytes().to_vec();
                    if let Err(ended) = self.feed(Message::Ping(payload.into())).await {
                        return Some(ended);
                    }
                }
                Output::Close {
                    code,
                    reason,
                    notice,
                } => return Some(self.close(code, reason, notice).await),
                Output::End { code, reason } => {
                    // tungstenite queued the reply to a client's close; send it first.
                    let _ = tokio::time::timeout(CLOSE_LINGER, self.socket.flush()).await;
                    return Some(Ended { code, reason });
                }
                Output::Store(op) => self.store(op),
                Output::Hub(op) => self.hub(op),
                Output::Admit => {
                    let sub = self.machine.sub().expect("Admit follows a verified hello");
                    self.sub_permit = self.app.admission.admit_sub(sub);
                    crate::telemetry::record_sub(sub);
                    self.hello = None;
                    let admitted = self.sub_permit.is_some();
                    self.machine.handle_admission(now(), admitted);
                    if admitted {
                        self.shed = Some(self.app.shed.register(self.key));
                    }
                }
                Output::Offence(offence) => {
                    let sub = self.machine.sub();
                    self.app.admission.offence(self.ip, sub, offence, now());
                }
                Output::AuthFailed => match self.machine.sub() {
                    Some(sub) if self.machine.is_open() => {
                        self.app.admission.auth_failed_for(self.ip, sub, now());
                    }
                    _ => self.app.admission.auth_failed(self.ip, now()),
                },
                Output::Rtt(rtt) => self.app.latency.record(now(), rtt),
                Output::Report(report) => {
                    let sub = self.machine.sub().unwrap_or_default();
                    let id = self.machine.connection_id();
                    if let Err(err) = crate::fleet::report(sub, id, None, &report) {
                        self.machine.handle_report_refused(&err.to_string());
                    }
                }
            }
        }
        if fed {
            let flushed = tokio::select! {
                r = self.socket.flush() => r,
                () = self.out.cut() => {
                    self.machine.handle_cut(self.app.config.limits.outbound_queue);
                    return Box::pin(self.carry_out()).await;
                }
            };
            if flushed.is_err() {
                return Some(transport_error());
            }
        }
        None
    }

    /// Queues a frame for the socket, giving up when the connection is cut meanwhile (the
    /// machine then asks for the 1013 close).
    async fn feed(&mut self, msg: Message) -> Result<(), Ended> {
        let result = tokio::select! {
            r = self.socket.feed(msg) => r,
            () = self.out.cut() => {
                self.machine.handle_cut(self.app.config.limits.outbound_queue);
                return Ok(());
            }
        };
        result.map_err(|_| transport_error())
    }

    fn store(&mut self, op: StoreOp) {
        let store = self.app.store.clone();
        match op {
            StoreOp::Info { channel, ticket } => {
                self.info = Some(Box::pin(async move {
                    let result = match store.channel_info(&channel).await {
                        Ok(Some(info)) => Ok(info),
                        Ok(None) => store.channel(&channel).await,
                        Err(e) => Err(e),
                    };
                    StoreReply::Info { ticket, result }
                }));
            }
            StoreOp::Read {
                channel,
                ticket,
                after,
                limit,
            } => {
                // Replaces (drops) a page being read that the machine abandoned.
                self.page = Some(Box::pin(async move {
                    let result = match store.read(&channel, after, limit).await {
                        Ok(msgs) => store.channel(&channel).await.map(|info| (msgs, info)),
                        Err(e) => Err(e),
                    };
                    StoreReply::Page { ticket, result }
                }));
            }
            StoreOp::Publish(request) => {
                let (id, channel) = (request.id.clone(), request.channel.clone());
                // `publish` enqueues at call time, so calling it here, in output order, keeps
                // this connection's publishes in order in the store.
                let stored =
                    crate::telemetry::traced_publish(&channel, now(), store.publish(request));
                self.pending
                    .get_or_insert_with(FuturesOrdered::new)
                    .push_back(Box::pin(async move {
                        StoreReply::Published {
                            id,
                            channel,
                            result: stored.await,
                        }
                    }));
            }
        }
    }

    fn hub(&mut self, op: HubOp) {
        let hub = &self.app.hub;
        match op {
            HubOp::Register {
                channel,
                generation,
            } => hub.register(&channel, self.key, generation, self.out.clone()),
            HubOp::Unregister { channel } => hub.unregister(&channel, self.key),
            HubOp::TryGoLive {
                channel,
                generation,
                upto,
                epoch,
            } => {
                let answer = hub.try_go_live(&channel, self.key, upto, epoch);
                self.machine.handle_go_live(&channel, generation, answer);
            }
        }
    }

    /// Sends `notice` and a close frame (each bounded in time), then waits briefly for the
    /// client's reply so the kernel does not reset the connection under unread data.
    async fn close(&mut self, code: u16, reason: &'static str, notice: Option<Utf8Bytes>) -> Ended {
        if let Some(notice) = notice {
            let _ =
                tokio::time::timeout(CLOSE_WRITE_TIMEOUT, self.socket.send(Message::Text(notice)))
                    .await;
        }
        let frame = Message::Close(Some(CloseFrame {
            code,
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
        Ended { code, reason }
    }

    /// Unregisters every subscription from the hub.
    fn cleanup(&mut self) {
        for channel in self.machine.registered_channels() {
            self.app.hub.unregister(channel, self.key);
        }
        self.sub_permit = None;
        self.shed = None;
        self.hello = None;
    }
}

/// What woke the driver.
enum Wake {
    Drain,
    Shed(u64),
    Cut,
    Timer,
    Live(crate::outbound::Delivery),
    Store(StoreReply),
    Info(StoreReply),
    Page(StoreReply),
    Incoming(Option<Result<Message, axum::Error>>),
}

fn transport_error() -> Ended {
    Ended {
        code: 1006,
        reason: "transport error",
    }
}

/// Why reading a frame failed, as the machine's [`Frame`].
fn classify(err: axum::Error) -> Frame<'static> {
    let inner = err.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => Frame::TooBig,
        Some(tungstenite::Error::Utf8(_)) => Frame::BadUtf8,
        _ => Frame::Lost,
    }
}

/// Runs one connection to its end; `permit` counts it against the admission limits until
/// then.
pub async fn drive(mut driver: Box<Driver>, permit: ConnectionPermit) {
    let opened = tokio::time::Instant::now();
    tracing::info!(
        component = "websocket",
        event = "connection_opened",
        connection_id = %driver.machine().connection_id(),
        client_ip = %permit.ip(),
    );
    crate::metrics::connection_opened();
    let ended = driver.run().await;
    tracing::info!(
        component = "websocket",
        event = "connection_closed",
        connection_id = %driver.machine().connection_id(),
        code = ended.code,
        reason = ended.reason,
        duration_ms = u64::try_from(opened.elapsed().as_millis()).unwrap_or(u64::MAX),
    );
    crate::metrics::connection_closed(ended.code);
    crate::telemetry::record_close(ended.code);
    drop(permit);
}
