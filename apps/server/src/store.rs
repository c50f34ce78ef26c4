//! The durable channel store: one object-safe trait, [`Store`], and its two backends: SQLite
//! ([`sqlite::SqliteStore`], one node, the default) and PostgreSQL ([`postgres::PostgresStore`],
//! several nodes on one database, with cross-node fan-out inside the store).
//!
//! API summary (for the hub, the session and the HTTP handlers):
//! - [`open`]`(&StoreConfig) -> Result<Opened, StoreError>`: opens (creates, migrates) the
//!   store. [`Opened`] holds `store: StoreHandle` (`Arc<dyn Store>`, clone freely) and
//!   `events: mpsc::Receiver<StoreEvent>`.
//! - [`Store::channel`]`(name)`: ensure the channel exists → [`ChannelInfo`]
//!   `{ name, epoch, latest_offset, oldest_retained }`. [`Store::channel_info`] reads without
//!   creating (`None` if unknown).
//! - [`Store::publish`]`(PublishRequest)` → [`PublishOutcome`]: `Stored { offset }` |
//!   `Duplicate { offset }` | `Conflict { offset }`. Returns only after COMMIT: an `Ok` means
//!   durable (WAL, `synchronous=NORMAL` survives a process crash; `FULL` also power loss).
//!   Publishes are group-committed by a single writer task (one transaction per batch), which
//!   also assigns offsets and checks duplicates, so a retry racing its original can neither
//!   burn an offset nor store twice. A request is queued when `publish` is *called* (not when
//!   its future is polled), so a session that calls `publish` for each frame in arrival order
//!   gets them stored in that order even if it awaits the acks later/concurrently.
//! - [`Store::read`]`(channel, after, limit)`: retained messages with offset > `after`, in
//!   offset order, at most `limit` (from a separate read pool).
//! - [`Store::purge`]`(channel)`: history and dedup records deleted, new epoch, offsets restart.
//! - [`Store::ping`]: reachability and latency (for `/health`).
//! - [`Store::maintain`]`(now)`: one retention + dedup-expiry pass;
//!   [`spawn_maintenance`] runs it every `maintenance_interval` until a `CancellationToken`
//!   fires.
//! - [`Store::close`]: finish pending writes, close files.
//!
//! **Consuming committed messages (for the hub).** After each COMMIT, the writer sends
//! [`StoreEvent::Committed`] with the batch's newly stored messages (never duplicates) in commit
//! order on the `events` channel; per channel the offsets are strictly increasing with no gap
//! across consecutive events. [`StoreEvent::Purged`] announces a reset (new epoch). Exactly one
//! task should own the receiver and fan out (the per-channel sequencer). The channel is
//! bounded: if the receiver is kept but not drained, the writer waits — publishes stall rather
//! than events being lost. If you do not need events (tools, tests), drop the receiver: sends
//! then fail and are ignored. Acks are answered *before* the event is sent, so a publisher may
//! see its ack before its own message; both happen only after COMMIT.
//! The task draining `events` must not await a *write* operation of the store (`channel` for a
//! new channel, `publish`, `purge`, `maintain`) inside its loop: with the events channel full,
//! the writer waits for that task and that task for the writer. Reads (`read`,
//! `channel_info`, `ping`) use the read pool and are safe there.
//!
//! Tests are written once as a suite over `&dyn Store` (`tests/store.rs`) so the PostgreSQL
//! backend can run the same suite.

pub mod calls;
pub mod postgres;
pub mod sqlite;

pub use calls::{CallRecord, CallState};

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use protocol::Timestamp;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A boxed, sendable future: keeps [`Store`] object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The shared store: clone it into every task that needs it.
pub type StoreHandle = Arc<dyn Store>;

/// The store's operations. Every backend must pass the suite in `tests/store.rs`.
pub trait Store: Send + Sync + 'static {
    /// Ensures `channel` exists (creating it with a fresh epoch) and returns its state.
    fn channel<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<ChannelInfo, StoreError>>;

    /// The channel's state, or `None` when it does not exist. Never creates.
    fn channel_info<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<Option<ChannelInfo>, StoreError>>;

    /// Stores a message durably (creating the channel if needed), or recognises a repeat.
    /// Resolves after COMMIT.
    ///
    /// The request is queued **when this method is called**, not when the future is first
    /// polled: calls made in some order (from one task) are stored in that order even if their
    /// futures are awaited later or concurrently. The future does not borrow the store
    /// (`'static`), so it can be kept in a per-connection queue of pending acks. The queue is
    /// unbounded; callers bound their in-flight publishes (the per-connection rate limit does).
    fn publish(
        &self,
        request: PublishRequest,
    ) -> BoxFuture<'static, Result<PublishOutcome, StoreError>>;

    /// Retained messages of `channel` with offset > `after`, ascending, at most `limit`.
    /// An unknown channel reads as empty.
    fn read<'a>(
        &'a self,
        channel: &'a str,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StoredMessage>, StoreError>>;

    /// Deletes the channel's history and dedup records and gives it a new epoch; offsets
    /// restart at 1. Creates the channel if it does not exist. Announced as
    /// [`StoreEvent::Purged`].
    fn purge<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<ChannelInfo, StoreError>>;

    /// Checks the store answers; returns the round-trip time.
    fn ping(&self) -> BoxFuture<'_, Result<Duration, StoreError>>;

    /// One maintenance pass at time `now`: trims each channel to the newest
    /// `retention_messages` and drops messages older than `retention_max_age`; expires dedup
    /// records older than `dedup_window` (independently of retention).
    fn maintain(&self, now: Timestamp) -> BoxFuture<'_, Result<MaintenanceReport, StoreError>>;

    /// Stops accepting work, finishes what is queued, closes the files. Later calls fail with
    /// [`StoreError::Closed`].
    fn close(&self) -> BoxFuture<'_, ()>;

    /// Backend name for logs and `/health` (`sqlite`, `postgres`).
    fn kind(&self) -> &'static str;

    /// The state of the cross-node notification path, for `checks.store` in `/health`.
    fn notifications(&self) -> Notifications {
        Notifications::Local
    }

    // --- Twilio call state (helper `twilio`; types in `store/calls.rs`) ---

    /// Inserts or replaces the record of `record.call_sid`.
    fn call_put<'a>(&'a self, record: &'a CallRecord) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The record of `call_sid`, if any.
    fn call_get<'a>(
        &'a self,
        call_sid: &'a str,
    ) -> BoxFuture<'a, Result<Option<CallRecord>, StoreError>>;

    /// Atomically uses the call's token: `true` (and the token is cleared) when `digest` is
    /// the call's unused token and it has not expired at `now`; `false` otherwise.
    fn call_consume_token<'a>(
        &'a self,
        call_sid: &'a str,
        digest: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Sets the call's state (and, when given, its end reason and current `streamSid`),
    /// leaving its token and resume count alone. An unknown call is not created.
    fn call_set_state<'a>(
        &'a self,
        call_sid: &'a str,
        state: CallState,
        end_reason: Option<&'a str>,
        stream_sid: Option<&'a str>,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Calls not `ended`, oldest first.
    fn calls_active(&self) -> BoxFuture<'_, Result<Vec<CallRecord>, StoreError>>;
}

/// Whether this node hears the other nodes' commits (see [`Store::notifications`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notifications {
    /// A single-node backend: there is nobody else to hear.
    Local,
    /// The listener is connected and listening.
    Listening,
    /// The listener is down (reconnecting): other nodes' messages still arrive, but only
    /// through the periodic catch-up, late.
    Down(String),
}

impl std::fmt::Debug for dyn Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.kind())
    }
}

/// A channel's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    /// The channel name.
    pub name: String,
    /// Random, unique; changes only when the history is reset ([`Store::purge`]).
    pub epoch: String,
    /// The latest assigned offset (0: no message yet).
    pub latest_offset: u64,
    /// The oldest retained message's offset; `None` when nothing is retained.
    pub oldest_retained: Option<u64>,
}

/// A publish to store.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishRequest {
    /// Channel name (already validated by the caller).
    pub channel: String,
    /// Publisher identity (`sub` of the token): dedup is per (channel, sub, id).
    pub sub: String,
    /// Client-chosen idempotency key.
    pub id: String,
    /// The JSON payload.
    pub data: Value,
    /// Time of publication (also "now" for the dedup window).
    pub published_at: Timestamp,
}

/// What [`Store::publish`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Newly stored at `offset`.
    Stored {
        /// The assigned offset.
        offset: u64,
    },
    /// The same (channel, sub, id) with the same data was stored before at `offset`; nothing
    /// new stored or announced. Ack with `duplicate: true`.
    Duplicate {
        /// The first publication's offset.
        offset: u64,
    },
    /// The same (channel, sub, id) was stored before with *different* data: refused
    /// (`nack BAD_REQUEST`).
    Conflict {
        /// The first publication's offset.
        offset: u64,
    },
}

/// A stored message.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    /// Channel name.
    pub channel: Arc<str>,
    /// Offset in the channel.
    pub offset: u64,
    /// The publisher's id.
    pub id: String,
    /// The publisher's `sub`.
    pub sub: String,
    /// The payload.
    pub data: Value,
    /// When it was published.
    pub published_at: Timestamp,
}

impl StoredMessage {
    /// The wire form (`{"type":"message",..}` body).
    #[must_use]
    pub fn to_delivery(&self) -> protocol::Delivery {
        protocol::Delivery {
            channel: self.channel.to_string(),
            offset: self.offset,
            id: self.id.clone(),
            data: self.data.clone(),
            published_at: self.published_at,
        }
    }
}

/// Announcements from the writer, in commit order (see the module docs).
#[derive(Debug, Clone)]
pub enum StoreEvent {
    /// Messages newly stored by one transaction, in offset order per channel.
    Committed(Arc<[StoredMessage]>),
    /// A channel's history was reset: new epoch, `latest_offset` 0.
    Purged(ChannelInfo),
}

/// What one [`Store::maintain`] pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Messages trimmed by retention (count and age).
    pub messages_trimmed: u64,
    /// Dedup records expired.
    pub dedup_expired: u64,
}

/// `synchronous` for SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// WAL + NORMAL: an acked message survives a crash of the process (the default).
    Normal,
    /// Also survives power loss; one fsync per transaction.
    Full,
}

/// Store settings.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// The SQLite file (its folder is created).
    pub path: PathBuf,
    /// `synchronous` pragma.
    pub synchronous: Synchronous,
    /// Newest messages kept per channel (10000).
    pub retention_messages: u64,
    /// Oldest message age kept (24 h).
    pub retention_max_age: Duration,
    /// How long a (channel, sub, id) is remembered (24 h), independent of retention.
    pub dedup_window: Duration,
    /// Interval of [`spawn_maintenance`] (60 s).
    pub maintenance_interval: Duration,
    /// Most publishes per group-commit transaction (512).
    pub batch_max: usize,
    /// Capacity of the events channel, in batches (1024).
    pub events_capacity: usize,
    /// SQLite busy timeout (5 s).
    pub busy_timeout: Duration,
    /// Read-pool connections (4).
    pub read_connections: u32,
    /// `Some`: the store is PostgreSQL at this URL (several nodes); `None`: SQLite at `path`.
    pub postgres: Option<PostgresConfig>,
}

/// The PostgreSQL backend's settings (CONTRACT §12).
#[derive(Clone, PartialEq)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/db` (may hold a password: never printed).
    pub url: String,
    /// Most connections in the pool shared by the writer, the reads and maintenance (10).
    pub max_connections: u32,
    /// Connections kept open while idle (1).
    pub min_connections: u32,
    /// How long an operation waits for a free pool connection (5 s).
    pub acquire_timeout: Duration,
    /// How often the node compares every channel it delivered with the database, so a lost
    /// notification is caught up (1 s).
    pub catch_up_interval: Duration,
    /// This node's name (`application_name` of its connections, for operators).
    pub node_id: String,
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("PostgresConfig")
            .field("url", &"<redacted>")
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("catch_up_interval", &self.catch_up_interval)
            .field("node_id", &self.node_id)
            .finish()
    }
}

impl PostgresConfig {
    /// Defaults for `url`, named `node_id`.
    #[must_use]
    pub fn new(url: impl Into<String>, node_id: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 10,
            min_connections: 1,
            acquire_timeout: Duration::from_secs(5),
            catch_up_interval: Duration::from_secs(1),
            node_id: node_id.into(),
        }
    }
}

impl StoreConfig {
    /// Defaults for a SQLite file.
    #[must_use]
    pub fn sqlite(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            synchronous: Synchronous::Normal,
            retention_messages: protocol::defaults::RETENTION_MESSAGES,
            retention_max_age: Duration::from_millis(protocol::defaults::RETENTION_MAX_AGE_MS),
            dedup_window: Duration::from_millis(protocol::defaults::DEDUP_WINDOW_MS),
            maintenance_interval: Duration::from_secs(60),
            batch_max: 512,
            events_capacity: 1_024,
            busy_timeout: Duration::from_secs(5),
            read_connections: 4,
            postgres: None,
        }
    }

    /// Defaults for a PostgreSQL database (retention and batching as for SQLite).
    #[must_use]
    pub fn postgres(postgres: PostgresConfig) -> Self {
        Self {
            postgres: Some(postgres),
            ..Self::sqlite("data/tether.db")
        }
    }
}

/// Store failures. Handlers answer `SERVER_ERROR` (nack/HTTP 500) and log the cause once.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed at open.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Creating the folder or file failed.
    #[error("cannot create {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The group-commit transaction this request was part of failed (every request in it
    /// fails; nothing of it was stored).
    #[error("write failed: {0}")]
    Write(String),
    /// Stored data could not be read back (corrupt row).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The store was closed or its writer stopped.
    #[error("store closed")]
    Closed,
}

/// An opened store and its commit announcements.
pub struct Opened {
    /// The store.
    pub store: StoreHandle,
    /// Commit-ordered announcements (see the module docs); drop it if unused.
    pub events: mpsc::Receiver<StoreEvent>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("store", &self.store.kind())
            .finish_non_exhaustive()
    }
}

/// Opens the store the config names: SQLite (creates the folder and file, sets WAL) or
/// PostgreSQL (connects, starts listening); applies the embedded migrations, starts the writer
/// task. Must be called inside a tokio runtime.
pub async fn open(config: &StoreConfig) -> Result<Opened, StoreError> {
    if config.postgres.is_some() {
        let (store, events) = postgres::PostgresStore::open(config).await?;
        return Ok(Opened {
            store: Arc::new(store),
            events,
        });
    }
    let (store, events) = sqlite::SqliteStore::open(config).await?;
    Ok(Opened {
        store: Arc::new(store),
        events,
    })
}

/// Runs [`Store::maintain`] every `interval` until `stop` fires; failures are logged
/// (`store_maintenance_failed`, warn) and retried next time. Trims are logged at debug.
pub fn spawn_maintenance(
    store: StoreHandle,
    interval: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            match store.maintain(now()).await {
                Ok(report) => tracing::debug!(
                    component = "store",
                    event = "store_maintenance",
                    messages_trimmed = report.messages_trimmed,
                    dedup_expired = report.dedup_expired,
                ),
                Err(StoreError::Closed) => break,
                Err(e) => tracing::warn!(
                    component = "store",
                    event = "store_maintenance_failed",
                    error = %e,
                ),
            }
        }
    })
}

/// The current wall-clock time as a [`Timestamp`].
#[must_use]
pub fn now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp::from_unix_millis(ms)
}

/// SHA-256 of the canonical JSON of `data` (object keys sorted at every level, no
/// whitespace), so `{"a":1,"b":2}` and `{"b":2,"a":1}` are the same data.
#[must_use]
pub fn data_hash(data: &Value) -> [u8; 32] {
    let mut text = String::new();
    canonical(data, &mut text);
    Sha256::digest(text.as_bytes()).into()
}

fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// A fresh epoch: a UUIDv7 as 32 hex digits (unique, roughly time-ordered).
#[must_use]
pub fn new_epoch() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn hash_ignores_key_order_but_not_values() {
        let a: Value = serde_json::from_str(r#"{"a":1,"b":{"x":[1,2],"y":null}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"b":{"y":null,"x":[1,2]},"a":1}"#).unwrap();
        let c: Value = serde_json::from_str(r#"{"a":1,"b":{"x":[2,1],"y":null}}"#).unwrap();
        assert_eq!(data_hash(&a), data_hash(&b));
        assert_ne!(data_hash(&a), data_hash(&c));
        assert_ne!(
            data_hash(&Value::String("1".into())),
            data_hash(&serde_json::json!(1))
        );
    }

    #[test]
    fn epochs_are_unique() {
        assert_ne!(new_epoch(), new_epoch());
        assert_eq!(new_epoch().len(), 32);
    }
}
