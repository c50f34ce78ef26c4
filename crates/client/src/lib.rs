//! `client`: Tether's native client SDK — the `resilience` state machines driven over
//! tokio-tungstenite.
//!
//! A [`Client`] holds one logical connection that survives anything: it reconnects with the
//! jittered backoff and the circuit breaker of CONTRACT §8, asks its [`TokenProvider`] for a
//! fresh token on every (re)connect and on `token_expiring`, detects half-open links with the
//! heartbeat, resubscribes after a reconnect from the last offset handed to the application
//! (never repeating one or handing one out of order), and keeps publishes in a bounded queue
//! (optionally an outbox file) until the server acknowledges them, resending with the same id
//! so each is stored exactly once.
//!
//! | file | what |
//! |---|---|
//! | `driver.rs` | the one task: `select!` over socket, commands, `sleep_until(poll_timeout)`, cancel |
//! | `auth.rs` | [`Credentials`], [`TokenProvider`] |
//! | `event.rs` | [`ClientEvent`], [`SubscriptionItem`], [`Status`] |
//! | `outbox.rs` | the queue persisted atomically (temp file + rename) |
//! | `logs.rs` | the CONTRACT §7 client events through `tracing` |
//! | `probe.rs` | the live terminal view of `tether probe` |
//!
//! ```no_run
//! use client::{Client, ClientConfig, Credentials, SubscriptionItem};
//! use protocol::Token;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ClientConfig::new("ws://127.0.0.1:8081/ws");
//! let client = Client::connect(config, Credentials::Token(Token::new("<JWT>")))?;
//! let mut room = client.subscribe("room:1").await?;
//! let ack = client.publish("room:1", serde_json::json!({"text": "hi"})).await?;
//! println!("stored at offset {}", ack.offset);
//! while let Some(item) = room.recv().await {
//!     match item {
//!         SubscriptionItem::Message(m) => println!("{} {}", m.offset, m.data),
//!         SubscriptionItem::Reset { .. } => println!("missed messages: refetch the room"),
//!         SubscriptionItem::Ended { message, .. } => { println!("ended: {message}"); break }
//!     }
//! }
//! client.close().await;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod auth;
mod config;
mod driver;
mod error;
mod event;
mod logs;
pub mod outbox;
pub mod probe;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use protocol::{Ack, Publish};
use resilience::Session;
use tokio::sync::{Mutex, broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

pub use auth::{Credentials, TokenError, TokenFuture, TokenProvider};
pub use config::ClientConfig;
pub use error::{ClientError, PublishError, SubscribeError};
pub use event::{ClientEvent, Status, SubscriptionItem};
pub use resilience;

use driver::{Command, Driver, SubscriptionSink};
use outbox::Outbox;

/// Commands in flight from the handles to the driver.
const COMMAND_BUFFER: usize = 1024;

/// A connection to a Tether server that keeps itself alive. Cheap to clone; the connection
/// closes when the last clone is dropped or [`Client::close`] is called.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    /// To the driver task; bounded so a flood of publishes waits instead of growing memory.
    commands: mpsc::Sender<Command>,
    /// The driver's events; each [`Client::events`] receiver gets every one (or lags).
    events: broadcast::Sender<ClientEvent>,
    /// The latest [`Status`].
    status: watch::Receiver<Status>,
    /// Stops the driver.
    cancel: CancellationToken,
    /// Cancels the driver when the last handle goes.
    _guard: DropGuard,
    /// The driver task, awaited by [`Client::close`].
    task: Mutex<Option<JoinHandle<()>>>,
    /// Capacity of each subscription's buffer.
    subscription_buffer: usize,
}

impl Client {
    /// Starts connecting in the background (inside a tokio runtime) and returns at once.
    /// Queued publishes in the outbox file, if configured, are loaded and sent.
    pub fn connect(
        config: ClientConfig,
        credentials: impl Into<Credentials>,
    ) -> Result<Self, ClientError> {
        if !(config.url.starts_with("ws://") || config.url.starts_with("wss://")) {
            return Err(ClientError::BadUrl(config.url));
        }
        let outbox = config.outbox.clone().map(Outbox::new);
        let (now, wall) = (driver::now(), driver::wall_now());
        let saved = match &outbox {
            Some(outbox) => outbox.load()?,
            None => None,
        };
        let session = match (saved, &outbox) {
            (Some(text), Some(outbox)) => {
                Session::restore(config.resilience.clone(), now, wall, &text)
                    .map_err(|e| outbox.corrupt(e))?
            }
            _ => Session::new(config.resilience.clone(), now, wall),
        };
        let (commands, command_rx) = mpsc::channel(COMMAND_BUFFER);
        let (events, _) = broadcast::channel(config.event_buffer.max(1));
        let (status_tx, status) = watch::channel(driver::initial_status());
        let cancel = CancellationToken::new();
        let subscription_buffer = config.subscription_buffer.max(2);
        let driver = Driver::new(
            config,
            credentials.into(),
            session,
            outbox,
            command_rx,
            events.clone(),
            status_tx,
            cancel.clone(),
        );
        let task = tokio::spawn(driver.run());
        Ok(Self {
            inner: Arc::new(Inner {
                commands,
                events,
                status,
                _guard: cancel.clone().drop_guard(),
                cancel,
                task: Mutex::new(Some(task)),
                subscription_buffer,
            }),
        })
    }

    /// Publishes `data` to `channel` with a fresh id; returns when the server acknowledged it.
    /// While offline it waits in the queue and is sent after reconnecting.
    pub async fn publish(
        &self,
        channel: &str,
        data: serde_json::Value,
    ) -> Result<Ack, PublishError> {
        self.publish_with_id(new_id(), channel, data).await
    }

    /// Publishes with an id of the caller's choosing (an idempotency key).
    pub async fn publish_with_id(
        &self,
        id: String,
        channel: &str,
        data: serde_json::Value,
    ) -> Result<Ack, PublishError> {
        let (reply, outcome) = oneshot::channel();
        let publish = Publish {
            id,
            channel: channel.to_owned(),
            data,
        };
        self.inner
            .commands
            .send(Command::Publish { publish, reply })
            .await
            .map_err(|_| PublishError::Closed)?;
        outcome.await.unwrap_or(Err(PublishError::Closed))
    }

    /// Subscribes to live messages of `channel` (and, after reconnects, everything since the
    /// last one handed over).
    pub async fn subscribe(&self, channel: &str) -> Result<Subscription, SubscribeError> {
        self.subscribe_since(channel, None).await
    }

    /// Subscribes replaying every retained message after `since` (0: all retained).
    pub async fn subscribe_since(
        &self,
        channel: &str,
        since: Option<u64>,
    ) -> Result<Subscription, SubscribeError> {
        let capacity = self.inner.subscription_buffer;
        let (tx, rx) = mpsc::channel(capacity);
        let behind = Arc::new(AtomicBool::new(false));
        let (reply, done) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Subscribe {
                channel: channel.to_owned(),
                since,
                sink: SubscriptionSink {
                    tx,
                    behind: Arc::clone(&behind),
                },
                reply,
            })
            .await
            .map_err(|_| SubscribeError::Closed)?;
        done.await.map_err(|_| SubscribeError::Closed)??;
        Ok(Subscription {
            channel: channel.to_owned(),
            rx,
            capacity,
            behind,
            commands: self.inner.commands.clone(),
        })
    }

    /// A receiver of every [`ClientEvent`] from now on.
    pub fn events(&self) -> broadcast::Receiver<ClientEvent> {
        self.inner.events.subscribe()
    }

    /// The current [`Status`].
    pub fn status(&self) -> Status {
        self.inner.status.borrow().clone()
    }

    /// A watch of the [`Status`], changed after every step of the driver.
    pub fn watch_status(&self) -> watch::Receiver<Status> {
        self.inner.status.clone()
    }

    /// Leaves `FAILED` (or skips a wait): refills the budget and connects now.
    pub async fn retry(&self) {
        let _ = self.inner.commands.send(Command::Retry).await; // Closed: nothing to retry.
    }

    /// The network is back (e.g. an OS notification): leave `DISCONNECTED`/`FAILED`.
    pub async fn network_online(&self) {
        let _ = self.inner.commands.send(Command::NetworkOnline).await; // Closed: no-op.
    }

    /// The network is gone: `DISCONNECTED` until [`Client::network_online`].
    pub async fn network_offline(&self) {
        let _ = self.inner.commands.send(Command::NetworkOffline).await; // Closed: no-op.
    }

    /// Closes the connection (normal close) and waits for the driver to finish; queued
    /// publishes stay in the outbox file, when there is one. Other clones stop working too.
    pub async fn close(&self) {
        self.inner.cancel.cancel();
        if let Some(task) = self.inner.task.lock().await.take() {
            let _ = task.await; // A panicked driver has nothing more to clean up.
        }
    }
}

/// The messages of one channel, in offset order, each exactly once. Dropping it unsubscribes.
pub struct Subscription {
    channel: String,
    rx: mpsc::Receiver<SubscriptionItem>,
    capacity: usize,
    /// Set by the driver when this buffer was full and messages were left to a later replay.
    behind: Arc<AtomicBool>,
    commands: mpsc::Sender<Command>,
}

impl Subscription {
    /// The channel.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The next item; `None` once the subscription ended or the client closed.
    pub async fn recv(&mut self) -> Option<SubscriptionItem> {
        self.resume_if_drained().await;
        let item = self.rx.recv().await;
        self.resume_if_drained().await;
        item
    }

    /// The next message, skipping resets (use [`Subscription::recv`] to see them).
    pub async fn next_message(&mut self) -> Option<protocol::Delivery> {
        loop {
            match self.recv().await? {
                SubscriptionItem::Message(m) => return Some(m),
                SubscriptionItem::Reset { .. } => {}
                SubscriptionItem::Ended { .. } => return None,
            }
        }
    }

    async fn resume_if_drained(&mut self) {
        if self.behind.load(Ordering::Acquire)
            && self.rx.len() < self.capacity / 2
            && self.behind.swap(false, Ordering::AcqRel)
        {
            let resume = Command::Resume {
                channel: self.channel.clone(),
            };
            let _ = self.commands.send(resume).await; // Closed client: nothing to resume.
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let unsubscribe = Command::Unsubscribe {
            channel: std::mem::take(&mut self.channel),
        };
        // Best effort: a full command buffer or a closed client leaves nothing to undo that
        // matters (the driver drops deliveries for a closed buffer).
        let _ = self.commands.try_send(unsubscribe);
    }
}

/// A fresh publish id: 128 random bits, hex.
pub fn new_id() -> String {
    format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}
