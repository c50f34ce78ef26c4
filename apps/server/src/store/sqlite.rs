//! The SQLite backend of [`Store`]: WAL, embedded migrations, one writer task doing group
//! commit, and a separate read pool.
//!
//! How a write flows: `publish` pushes a [`Command`] with a oneshot onto the writer's queue at
//! call time. The writer takes the first waiting command plus everything else queued (up to
//! `batch_max`), runs them in one transaction — dedup check, offset assignment, inserts — and
//! COMMITs once; only then does it answer every oneshot and announce the new messages on the
//! events channel. The writer is the only code that writes, so it keeps each channel's epoch and
//! last offset in memory (`cache`), dropped whenever a transaction fails. A single process owns
//! a database file; two servers on one SQLite file are not supported (that is what the
//! PostgreSQL backend is for).

use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::Timestamp;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions as _, Row as _};
use tokio::sync::{mpsc, oneshot};

use super::{
    BoxFuture, CallRecord, CallState, ChannelInfo, MaintenanceReport, PublishOutcome,
    PublishRequest, Store, StoreConfig, StoreError, StoreEvent, StoredMessage, Synchronous,
};

mod calls;
mod writer;

use writer::{Command, Reply, Writer, to_i64, to_u64};

/// The migrations in `apps/server/migrations/sqlite`, compiled in.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The SQLite store. Cheap to share behind an `Arc`.
pub struct SqliteStore {
    /// Requests to the single writer task; unbounded so `publish` can enqueue at call time
    /// (ordering), callers bound what they have in flight.
    writer: mpsc::UnboundedSender<Command>,
    /// Readers (`read`, `channel_info`, `ping`); WAL lets them run beside the writer.
    read: SqlitePool,
    /// The writer task, awaited by `close`.
    writer_task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Creates the folder and file, applies WAL + `synchronous` + busy timeout, runs the
    /// migrations, opens the read pool and starts the writer. Returns the store and the
    /// commit-ordered event receiver (see [`super`]).
    pub async fn open(
        config: &StoreConfig,
    ) -> Result<(Self, mpsc::Receiver<StoreEvent>), StoreError> {
        if let Some(dir) = config.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(&config.path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match config.synchronous {
                Synchronous::Normal => SqliteSynchronous::Normal,
                Synchronous::Full => SqliteSynchronous::Full,
            })
            .busy_timeout(config.busy_timeout)
            .disable_statement_logging();
        let mut conn = options.connect().await?;
        MIGRATOR.run(&mut conn).await?;

        let read = SqlitePoolOptions::new()
            .max_connections(config.read_connections.max(1))
            .connect_with(options.clone().create_if_missing(false))
            .await?;

        let (writer, commands) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::channel(config.events_capacity.max(1));
        let task = Writer::new(conn, config.clone(), events_tx);
        let handle = tokio::spawn(task.run(commands));
        Ok((
            Self {
                writer,
                read,
                writer_task: std::sync::Mutex::new(Some(handle)),
            },
            events,
        ))
    }

    fn send<T: Send + 'static>(
        &self,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> BoxFuture<'static, Result<T, StoreError>> {
        let (tx, rx) = oneshot::channel();
        let queued = self.writer.send(make(tx)).is_ok();
        Box::pin(async move {
            if !queued {
                return Err(StoreError::Closed);
            }
            rx.await.unwrap_or(Err(StoreError::Closed))
        })
    }
}

const INFO_SQL: &str = "SELECT c.epoch, c.last_offset, \
     (SELECT MIN(m.msg_offset) FROM messages m WHERE m.channel = c.name) \
     FROM channels c WHERE c.name = ?1";

impl Store for SqliteStore {
    fn channel<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<ChannelInfo, StoreError>> {
        Box::pin(async move {
            if let Some(info) = self.channel_info(channel).await? {
                return Ok(info);
            }
            self.send(|r| Command::Ensure(channel.to_owned(), r)).await
        })
    }

    fn channel_info<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<Option<ChannelInfo>, StoreError>> {
        Box::pin(async move {
            let row = sqlx::query(INFO_SQL)
                .bind(channel)
                .fetch_optional(&self.read)
                .await?;
            Ok(row.map(|row| ChannelInfo {
                name: channel.to_owned(),
                epoch: row.get(0),
                latest_offset: to_u64(row.get(1)),
                oldest_retained: row.get::<Option<i64>, _>(2).map(to_u64),
            }))
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
            let rows = sqlx::query(
                "SELECT msg_offset, id, sub, data, published_at FROM messages \
                 WHERE channel = ?1 AND msg_offset > ?2 ORDER BY msg_offset LIMIT ?3",
            )
            .bind(channel)
            .bind(to_i64(after))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.read)
            .await?;
            let name: Arc<str> = Arc::from(channel);
            rows.into_iter()
                .map(|row| {
                    let text: String = row.get(3);
                    let data = serde_json::from_str(&text)
                        .map_err(|e| StoreError::Corrupt(format!("message data: {e}")))?;
                    Ok(StoredMessage {
                        channel: name.clone(),
                        offset: to_u64(row.get(0)),
                        id: row.get(1),
                        sub: row.get(2),
                        data,
                        published_at: Timestamp::from_unix_millis(row.get(4)),
                    })
                })
                .collect()
        })
    }

    fn purge<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<ChannelInfo, StoreError>> {
        self.send(|r| Command::Purge(channel.to_owned(), r))
    }

    fn ping(&self) -> BoxFuture<'_, Result<Duration, StoreError>> {
        Box::pin(async move {
            if self.writer.is_closed() {
                return Err(StoreError::Closed);
            }
            let start = Instant::now();
            sqlx::query("SELECT 1").execute(&self.read).await?;
            Ok(start.elapsed())
        })
    }

    fn maintain(&self, now: Timestamp) -> BoxFuture<'_, Result<MaintenanceReport, StoreError>> {
        self.send(|r| Command::Maintain(now, r))
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            if self.writer.send(Command::Close(tx)).is_ok() {
                // The writer answers once everything queued before it is committed.
                let _ = rx.await;
            }
            let handle = self
                .writer_task
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let Some(handle) = handle {
                // A panicked writer has nothing left to flush; closing goes on regardless.
                let _ = handle.await;
            }
            self.read.close().await;
        })
    }

    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn call_put<'a>(&'a self, record: &'a CallRecord) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(calls::put(&self.read, record))
    }

    fn call_get<'a>(
        &'a self,
        call_sid: &'a str,
    ) -> BoxFuture<'a, Result<Option<CallRecord>, StoreError>> {
        Box::pin(calls::get(&self.read, call_sid))
    }

    fn call_consume_token<'a>(
        &'a self,
        call_sid: &'a str,
        digest: &'a str,
        now: Timestamp,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(calls::consume_token(&self.read, call_sid, digest, now))
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
            &self.read, call_sid, state, end_reason, stream_sid, now,
        ))
    }

    fn calls_active(&self) -> BoxFuture<'_, Result<Vec<CallRecord>, StoreError>> {
        Box::pin(calls::active(&self.read))
    }
}
