//! The PostgreSQL backend of [`Store`]: several `tether serve` nodes on one database behave as
//! one service (CONTRACT §12). See `docs/adr/0003-pg-several-nodes-on-postgresql.md`.
//!
//! Four parts, one file each:
//! - [`writer`]: per node, one task group-commits publishes and purges. Every transaction locks
//!   the rows of the channels it writes (`SELECT … FOR UPDATE`, in name order so two nodes
//!   never deadlock), so offsets are gap-free per channel across nodes; the dedup primary key is
//!   checked under the same lock. Before COMMIT it sends `NOTIFY tether_events` with
//!   (channel, epoch, last offset) only — never the payload.
//! - [`listener`]: `LISTEN tether_events` on a connection of its own; reconnects when the
//!   connection is lost and then asks for a full catch-up.
//! - [`sequencer`]: the only sender of [`StoreEvent`]s. Per channel it keeps the epoch and the
//!   last offset it announced; local commits, notifications, subscriptions and a periodic
//!   check are only *hints*: anything beyond the last announced offset is read from the
//!   database in offset order, so a lost, late or repeated notification loses or repeats
//!   nothing.
//! - this file: opening (migrations, pools), reads, `channel`, `ping`, `maintain` (one node at
//!   a time, `pg_try_advisory_xact_lock`) and `close`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use protocol::Timestamp;
use sqlx::Row as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{
    BoxFuture, CallRecord, CallState, ChannelInfo, MaintenanceReport, Notifications,
    PostgresConfig, PublishOutcome, PublishRequest, Store, StoreConfig, StoreError, StoreEvent,
    StoredMessage,
};

mod calls;
mod listener;
mod sequencer;
mod writer;

use sequencer::{Hint, ListenerState};
use writer::{Command, Reply, Writer};

/// The migrations in `apps/server/migrations/postgres`, compiled in.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The NOTIFY channel every node listens on.
pub const NOTIFY_CHANNEL: &str = "tether_events";

/// Key of the advisory lock that lets one node at a time trim retention and dedup.
const MAINTENANCE_LOCK: i64 = 0x7465_7468_6572; // "tether"

/// The PostgreSQL store. Cheap to share behind an `Arc`.
pub struct PostgresStore {
    /// Requests to this node's writer task; unbounded so `publish` can enqueue at call time
    /// (ordering), callers bound what they have in flight.
    writer: mpsc::UnboundedSender<Command>,
    /// Reads, `channel`, `ping`, maintenance and the sequencer's catch-up reads.
    pool: PgPool,
    /// "Announce from here on" requests to the sequencer (a subscription starts); unbounded
    /// because a read must never wait for the fan-out.
    watch: mpsc::UnboundedSender<Hint>,
    /// Whether the listener currently listens (for `/health`).
    listener: Arc<ListenerState>,
    /// Stops the listener and the periodic check at `close`.
    stop: CancellationToken,
    closed: AtomicBool,
    /// The writer, listener and sequencer tasks, awaited by `close` in that order.
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Connection options for `config`, named `tether:<role>:<node>` in `pg_stat_activity`.
fn connect_options(pg: &PostgresConfig, role: &str) -> Result<PgConnectOptions, StoreError> {
    use sqlx::ConnectOptions as _;
    let options: PgConnectOptions = pg.url.parse()?;
    Ok(options
        .application_name(&format!("tether:{role}:{}", pg.node_id))
        .disable_statement_logging())
}

impl PostgresStore {
    /// Connects, applies the migrations, starts listening (before anything is served, so no
    /// commit of another node is missed), then starts the sequencer and the writer.
    pub async fn open(
        config: &StoreConfig,
    ) -> Result<(Self, mpsc::Receiver<StoreEvent>), StoreError> {
        let pg = config
            .postgres
            .clone()
            .ok_or_else(|| StoreError::Write("not a PostgreSQL configuration".into()))?;
        let pool = PgPoolOptions::new()
            .max_connections(pg.max_connections.max(2))
            .min_connections(pg.min_connections.min(pg.max_connections))
            .acquire_timeout(pg.acquire_timeout)
            .connect_with(connect_options(&pg, "pool")?)
            .await?;
        MIGRATOR.run(&pool).await?;

        let stop = CancellationToken::new();
        let capacity = config.events_capacity.max(1);
        let (hints_tx, hints) = mpsc::channel(capacity);
        let (watch, watches) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::channel(capacity);
        let state = Arc::new(ListenerState::default());

        let listen = listener::Listener::connect(&pg, state.clone()).await?;
        let listener_task = tokio::spawn(listen.run(hints_tx.clone(), stop.clone()));
        let seq = sequencer::Task::new(pool.clone(), events_tx);
        let seq_task = tokio::spawn(seq.run(hints, watches, pg.catch_up_interval, stop.clone()));
        let (writer, commands) = mpsc::unbounded_channel();
        let writer_task =
            tokio::spawn(Writer::new(pool.clone(), config.clone(), hints_tx).run(commands));
        Ok((
            Self {
                writer,
                pool,
                watch,
                listener: state,
                stop,
                closed: AtomicBool::new(false),
                tasks: std::sync::Mutex::new(vec![writer_task, listener_task, seq_task]),
            },
            events,
        ))
    }

    fn send<T: Send + 'static>(
        &self,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> BoxFuture<'static, Result<T, StoreError>> {
        let (tx, rx) = oneshot::channel();
        let queued = !self.closed.load(Ordering::Acquire) && self.writer.send(make(tx)).is_ok();
        Box::pin(async move {
            if !queued {
                return Err(StoreError::Closed);
            }
            rx.await.unwrap_or(Err(StoreError::Closed))
        })
    }

    fn check_open(&self) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            Err(StoreError::Closed)
        } else {
            Ok(())
        }
    }

    /// Tells the sequencer that someone on this node now cares about `info`'s channel.
    fn watch(&self, info: &ChannelInfo) {
        // After close nobody listens any more; nothing to announce then.
        let _ = self.watch.send(Hint::Watch {
            channel: Arc::from(info.name.as_str()),
            epoch: info.epoch.clone(),
            latest: info.latest_offset,
        });
    }

    async fn info(&self, channel: &str) -> Result<Option<ChannelInfo>, StoreError> {
        let row = sqlx::query(
            "SELECT c.epoch, c.last_offset, \
             (SELECT MIN(m.msg_offset) FROM messages m WHERE m.channel = c.name) \
             FROM channels c WHERE c.name = $1",
        )
        .bind(channel)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| ChannelInfo {
            name: channel.to_owned(),
            epoch: row.get(0),
            latest_offset: to_u64(row.get(1)),
            oldest_retained: row.get::<Option<i64>, _>(2).map(to_u64),
        }))
    }
}

/// Decodes one `messages` row (`msg_offset, id, sub, data, published_at` from `first`).
pub(crate) fn message_row(
    channel: &Arc<str>,
    row: &sqlx::postgres::PgRow,
    first: usize,
) -> Result<StoredMessage, StoreError> {
    let text: String = row.get(first + 3);
    let data = serde_json::from_str(&text)
        .map_err(|e| StoreError::Corrupt(format!("message data: {e}")))?;
    Ok(StoredMessage {
        channel: channel.clone(),
        offset: to_u64(row.get(first)),
        id: row.get(first + 1),
        sub: row.get(first + 2),
        data,
        published_at: Timestamp::from_unix_millis(row.get(first + 4)),
    })
}

impl Store for PostgresStore {
    fn channel<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<ChannelInfo, StoreError>> {
        Box::pin(async move {
            self.check_open()?;
            if let Some(info) = self.info(channel).await? {
                self.watch(&info);
                return Ok(info);
            }
            // Two nodes may create it at once: the first insert wins, both read its epoch.
            sqlx::query(
                "INSERT INTO channels (name, epoch, last_offset, created_at) \
                 VALUES ($1, $2, 0, $3) ON CONFLICT (name) DO NOTHING",
            )
            .bind(channel)
            .bind(super::new_epoch())
            .bind(super::now().unix_millis())
            .execute(&self.pool)
            .await?;
            let info = self.info(channel).await?.ok_or_else(|| {
                StoreError::Corrupt(format!("channel {channel:?} missing after insert"))
            })?;
            self.watch(&info);
            Ok(info)
        })
    }

    fn channel_info<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<Option<ChannelInfo>, StoreError>> {
        Box::pin(async move {
            self.check_open()?;
            let info = self.info(channel).await?;
            if let Some(info) = &info {
                self.watch(info);
            }
            Ok(info)
        })
    }

    fn publish(
        &self,
        request: PublishRequest,
    ) -> BoxFuture<'static, Result<PublishOutcome, StoreError>> {
        self.send(|r| Command::Publish(request, r))
    }

    fn read<'a>(
        &'a self,
        channel: &'a str,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StoredMessage>, StoreError>> {
        Box::pin(async move {
            self.check_open()?;
            let rows = sqlx::query(
                "SELECT msg_offset, id, sub, data, published_at FROM messages \
                 WHERE channel = $1 AND msg_offset > $2 ORDER BY msg_offset LIMIT $3",
            )
            .bind(channel)
            .bind(to_i64(after))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
            let name: Arc<str> = Arc::from(channel);
            rows.iter().map(|row| message_row(&name, row, 0)).collect()
        })
    }

    fn purge<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<ChannelInfo, StoreError>> {
        self.send(|r| Command::Purge(channel.to_owned(), r))
    }

    fn ping(&self) -> BoxFuture<'_, Result<Duration, StoreError>> {
        Box::pin(async move {
            self.check_open()?;
            let start = Instant::now();
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(start.elapsed())
        })
    }

    fn maintain(&self, now: Timestamp) -> BoxFuture<'_, Result<MaintenanceReport, StoreError>> {
        self.send(|r| Command::Maintain(now, r))
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.closed.store(true, Ordering::Release);
            let (tx, rx) = oneshot::channel();
            if self.writer.send(Command::Close(tx)).is_ok() {
                // The writer answers once everything queued before it is committed.
                let _ = rx.await;
            }
            self.stop.cancel();
            let tasks = std::mem::take(
                &mut *self
                    .tasks
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            for task in tasks {
                // A panicked task has nothing left to flush; closing goes on regardless.
                let _ = task.await;
            }
            self.pool.close().await;
        })
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn notifications(&self) -> Notifications {
        self.listener.get()
    }

    fn call_put<'a>(&'a self, record: &'a CallRecord) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(calls::put(&self.pool, record))
    }

    fn call_get<'a>(
        &'a self,
        call_sid: &'a str,
    ) -> BoxFuture<'a, Result<Option<CallRecord>, StoreError>> {
        Box::pin(calls::get(&self.pool, call_sid))
    }

    fn call_consume_token<'a>(
        &'a self,
        call_sid: &'a str,
        digest: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(calls::consume_token(&self.pool, call_sid, digest, now))
    }

    fn call_set_state<'a>(
        &'a self,
        call_sid: &'a str,
        state: CallState,
        end_reason: Option<&'a str>,
        stream_sid: Option<&'a str>,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(calls::set_state(
            &self.pool, call_sid, state, end_reason, stream_sid, now,
        ))
    }

    fn calls_active(&self) -> BoxFuture<'_, Result<Vec<CallRecord>, StoreError>> {
        Box::pin(calls::active(&self.pool))
    }
}

/// One retention + dedup pass, by one node at a time: the others skip (zero report) while
/// the advisory lock is held elsewhere.
pub(crate) async fn maintain(
    pool: &PgPool,
    config: &StoreConfig,
    now: Timestamp,
) -> Result<MaintenanceReport, StoreError> {
    let mut tx = pool.begin().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(MAINTENANCE_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    let mut report = MaintenanceReport::default();
    if !locked {
        return Ok(report);
    }
    let max_age = i64::try_from(config.retention_max_age.as_millis()).unwrap_or(i64::MAX);
    report.messages_trimmed += sqlx::query("DELETE FROM messages WHERE published_at < $1")
        .bind(now.unix_millis().saturating_sub(max_age))
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let keep = to_i64(config.retention_messages);
    report.messages_trimmed += sqlx::query(
        "DELETE FROM messages m USING channels c \
         WHERE m.channel = c.name AND c.last_offset > $1 AND m.msg_offset <= c.last_offset - $1",
    )
    .bind(keep)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let window = i64::try_from(config.dedup_window.as_millis()).unwrap_or(i64::MAX);
    report.dedup_expired = sqlx::query("DELETE FROM dedup WHERE created_at < $1")
        .bind(now.unix_millis().saturating_sub(window))
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(report)
}
