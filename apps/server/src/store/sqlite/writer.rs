//! The SQLite store's single writer task: takes every queued command (up to `batch_max`), runs
//! them in one transaction — dedup claim, offset assignment, inserts, purges, maintenance —
//! COMMITs once, then answers each caller and announces the new messages in commit order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use protocol::Timestamp;
use sqlx::sqlite::SqliteConnection;
use sqlx::{Connection as _, Row as _};
use tokio::sync::{mpsc, oneshot};

use crate::store::{
    ChannelInfo, MaintenanceReport, PublishOutcome, PublishRequest, StoreConfig, StoreError,
    StoreEvent, StoredMessage, data_hash, new_epoch,
};

pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// Work for the writer.
pub(super) enum Command {
    Publish(PublishRequest, Reply<PublishOutcome>),
    Ensure(String, Reply<ChannelInfo>),
    Purge(String, Reply<ChannelInfo>),
    Maintain(Timestamp, Reply<MaintenanceReport>),
    Close(oneshot::Sender<()>),
}

/// A result waiting for COMMIT before it is sent.
enum Pending {
    Publish(Reply<PublishOutcome>, Result<PublishOutcome, StoreError>),
    Info(Reply<ChannelInfo>, Result<ChannelInfo, StoreError>),
    Maintain(
        Reply<MaintenanceReport>,
        Result<MaintenanceReport, StoreError>,
    ),
}

#[derive(Clone)]
struct ChannelState {
    name: Arc<str>,
    epoch: String,
    last_offset: u64,
}

pub(super) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(super) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The single writer task.
pub(super) struct Writer {
    conn: SqliteConnection,
    /// Channel name → epoch and last offset, as committed (plus, inside a transaction, as
    /// assigned so far). Cleared when a transaction fails.
    cache: HashMap<String, ChannelState>,
    config: StoreConfig,
    events: mpsc::Sender<StoreEvent>,
}

impl Writer {
    /// A writer owning `conn` (migrated), announcing on `events`.
    pub(super) fn new(
        conn: SqliteConnection,
        config: StoreConfig,
        events: mpsc::Sender<StoreEvent>,
    ) -> Self {
        Self {
            conn,
            cache: HashMap::new(),
            config,
            events,
        }
    }

    pub(super) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut close_reply = None;
        while let Some(first) = commands.recv().await {
            let mut batch = Vec::with_capacity(16);
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                match cmd {
                    Command::Close(reply) => {
                        close_reply = Some(reply);
                        break;
                    }
                    other => batch.push(other),
                }
                if batch.len() < self.config.batch_max {
                    next = commands.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.run_batch(batch).await;
            }
            if close_reply.is_some() {
                break;
            }
        }
        // Refuse anything queued after Close.
        commands.close();
        while let Ok(cmd) = commands.try_recv() {
            refuse(cmd);
        }
        let conn = self.conn;
        if let Err(e) = conn.close().await {
            tracing::warn!(component = "store", event = "store_close_failed", error = %e);
        }
        if let Some(reply) = close_reply {
            // The closer may have given up waiting; nothing to do then.
            let _ = reply.send(());
        }
    }

    /// One transaction for the whole batch; answers after COMMIT, then announces.
    async fn run_batch(&mut self, batch: Vec<Command>) {
        let mut pending = Vec::with_capacity(batch.len());
        let mut events = Vec::new();
        let outcome =
            crate::metrics::time_commit(self.apply(batch, &mut pending, &mut events)).await;
        match outcome {
            Ok(()) => {
                for p in pending {
                    // A caller that stopped waiting (dropped its future) is fine: the message
                    // is stored, and a retry will be recognised as a duplicate.
                    match p {
                        Pending::Publish(r, v) => drop(r.send(v)),
                        Pending::Info(r, v) => drop(r.send(v)),
                        Pending::Maintain(r, v) => drop(r.send(v)),
                    }
                }
                for event in events {
                    if self.events.send(event).await.is_err() {
                        // No receiver: nobody listens for commits (tools, tests).
                        break;
                    }
                }
            }
            Err((e, unanswered)) => {
                self.cache.clear();
                tracing::error!(component = "store", event = "store_write_failed", error = %e);
                let msg = e.to_string();
                let err = || StoreError::Write(msg.clone());
                for p in pending {
                    match p {
                        Pending::Publish(r, _) => drop(r.send(Err(err()))),
                        Pending::Info(r, _) => drop(r.send(Err(err()))),
                        Pending::Maintain(r, _) => drop(r.send(Err(err()))),
                    }
                }
                for cmd in unanswered {
                    fail(cmd, &msg);
                }
            }
        }
    }

    /// Applies the batch in one transaction. On error returns the commands not yet processed
    /// (to be failed with the rest).
    async fn apply(
        &mut self,
        batch: Vec<Command>,
        pending: &mut Vec<Pending>,
        events: &mut Vec<StoreEvent>,
    ) -> Result<(), (StoreError, Vec<Command>)> {
        let mut tx = match self.conn.begin().await {
            Ok(tx) => tx,
            Err(e) => return Err((e.into(), batch)),
        };
        let mut touched: HashSet<String> = HashSet::new();
        let mut stored: Vec<StoredMessage> = Vec::new();
        let mut rest = batch.into_iter();
        while let Some(cmd) = rest.next() {
            let step = match cmd {
                Command::Publish(req, reply) => {
                    match publish_one(&mut tx, &mut self.cache, &self.config, req, &mut stored)
                        .await
                    {
                        Ok(outcome) => {
                            if let PublishOutcome::Stored { .. } = outcome
                                && let Some(m) = stored.last()
                            {
                                touched.insert(m.channel.to_string());
                            }
                            pending.push(Pending::Publish(reply, Ok(outcome)));
                            Ok(())
                        }
                        Err(e) => {
                            pending.push(Pending::Publish(reply, Err(StoreError::Closed)));
                            Err(e)
                        }
                    }
                }
                Command::Ensure(name, reply) => {
                    match ensure_info(&mut tx, &mut self.cache, &name).await {
                        Ok(info) => {
                            pending.push(Pending::Info(reply, Ok(info)));
                            Ok(())
                        }
                        Err(e) => {
                            pending.push(Pending::Info(reply, Err(StoreError::Closed)));
                            Err(e)
                        }
                    }
                }
                Command::Purge(name, reply) => {
                    let r = async {
                        flush_offsets(&mut tx, &self.cache, &mut touched).await?;
                        purge_one(&mut tx, &mut self.cache, &name).await
                    }
                    .await;
                    match r {
                        Ok(info) => {
                            if !stored.is_empty() {
                                events.push(StoreEvent::Committed(
                                    std::mem::take(&mut stored).into(),
                                ));
                            }
                            events.push(StoreEvent::Purged(info.clone()));
                            pending.push(Pending::Info(reply, Ok(info)));
                            Ok(())
                        }
                        Err(e) => {
                            pending.push(Pending::Info(reply, Err(StoreError::Closed)));
                            Err(e)
                        }
                    }
                }
                Command::Maintain(now, reply) => {
                    let r = async {
                        flush_offsets(&mut tx, &self.cache, &mut touched).await?;
                        maintain(&mut tx, &self.config, now).await
                    }
                    .await;
                    match r {
                        Ok(report) => {
                            pending.push(Pending::Maintain(reply, Ok(report)));
                            Ok(())
                        }
                        Err(e) => {
                            pending.push(Pending::Maintain(reply, Err(StoreError::Closed)));
                            Err(e)
                        }
                    }
                }
                Command::Close(reply) => {
                    // `run` never puts Close in a batch; answer anyway.
                    let _ = reply.send(());
                    Ok(())
                }
            };
            if let Err(e) = step {
                // Dropping `tx` rolls back.
                return Err((e, rest.collect()));
            }
        }
        if let Err(e) = flush_offsets(&mut tx, &self.cache, &mut touched).await {
            return Err((e, Vec::new()));
        }
        if let Err(e) = tx.commit().await {
            return Err((e.into(), Vec::new()));
        }
        if !stored.is_empty() {
            events.push(StoreEvent::Committed(stored.into()));
        }
        Ok(())
    }
}

type Tx<'c> = sqlx::Transaction<'c, sqlx::Sqlite>;

/// The channel's state, from the cache, the table, or created with a fresh epoch.
async fn channel_state<'s>(
    tx: &mut Tx<'_>,
    cache: &'s mut HashMap<String, ChannelState>,
    name: &str,
) -> Result<&'s mut ChannelState, StoreError> {
    if !cache.contains_key(name) {
        let row = sqlx::query("SELECT epoch, last_offset FROM channels WHERE name = ?1")
            .bind(name)
            .fetch_optional(&mut **tx)
            .await?;
        let state = match row {
            Some(row) => ChannelState {
                name: Arc::from(name),
                epoch: row.get(0),
                last_offset: to_u64(row.get(1)),
            },
            None => {
                let epoch = new_epoch();
                sqlx::query(
                    "INSERT INTO channels (name, epoch, last_offset, created_at) VALUES (?1, ?2, 0, ?3)",
                )
                .bind(name)
                .bind(&epoch)
                .bind(crate::store::now().unix_millis())
                .execute(&mut **tx)
                .await?;
                ChannelState {
                    name: Arc::from(name),
                    epoch,
                    last_offset: 0,
                }
            }
        };
        cache.insert(name.to_owned(), state);
    }
    Ok(cache
        .get_mut(name)
        .expect("inserted just above when it was missing"))
}

async fn publish_one(
    tx: &mut Tx<'_>,
    cache: &mut HashMap<String, ChannelState>,
    config: &StoreConfig,
    req: PublishRequest,
    stored: &mut Vec<StoredMessage>,
) -> Result<PublishOutcome, StoreError> {
    let state = channel_state(tx, cache, &req.channel).await?;
    let hash = data_hash(&req.data).to_vec();
    let now = req.published_at.unix_millis();
    let offset = state.last_offset + 1;

    // The common case is a new id: claim it, and only look closer when it was taken.
    let inserted = sqlx::query(
        "INSERT INTO dedup (channel, sub, id, data_hash, msg_offset, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (channel, sub, id) DO NOTHING",
    )
    .bind(&req.channel)
    .bind(&req.sub)
    .bind(&req.id)
    .bind(&hash)
    .bind(to_i64(offset))
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        let row = sqlx::query(
            "SELECT data_hash, msg_offset, created_at FROM dedup \
             WHERE channel = ?1 AND sub = ?2 AND id = ?3",
        )
        .bind(&req.channel)
        .bind(&req.sub)
        .bind(&req.id)
        .fetch_one(&mut **tx)
        .await?;
        let old_hash: Vec<u8> = row.get(0);
        let old_offset = to_u64(row.get(1));
        let created_at: i64 = row.get(2);
        let window = i64::try_from(config.dedup_window.as_millis()).unwrap_or(i64::MAX);
        if created_at >= now.saturating_sub(window) {
            return Ok(if old_hash == hash {
                PublishOutcome::Duplicate { offset: old_offset }
            } else {
                PublishOutcome::Conflict { offset: old_offset }
            });
        }
        // Remembered longer than the window (maintenance has not run yet): a new message.
        sqlx::query(
            "UPDATE dedup SET data_hash = ?4, msg_offset = ?5, created_at = ?6 \
             WHERE channel = ?1 AND sub = ?2 AND id = ?3",
        )
        .bind(&req.channel)
        .bind(&req.sub)
        .bind(&req.id)
        .bind(&hash)
        .bind(to_i64(offset))
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }

    let text = serde_json::to_string(&req.data)
        .map_err(|e| StoreError::Corrupt(format!("message data: {e}")))?;
    sqlx::query(
        "INSERT INTO messages (channel, msg_offset, id, sub, data, published_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .bind(&req.channel)
    .bind(to_i64(offset))
    .bind(&req.id)
    .bind(&req.sub)
    .bind(&text)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    state.last_offset = offset;
    stored.push(StoredMessage {
        channel: state.name.clone(),
        offset,
        id: req.id,
        sub: req.sub,
        data: req.data,
        published_at: req.published_at,
    });
    Ok(PublishOutcome::Stored { offset })
}

/// Writes the in-memory last offsets of the channels touched so far.
async fn flush_offsets(
    tx: &mut Tx<'_>,
    cache: &HashMap<String, ChannelState>,
    touched: &mut HashSet<String>,
) -> Result<(), StoreError> {
    for name in touched.drain() {
        if let Some(state) = cache.get(&name) {
            sqlx::query("UPDATE channels SET last_offset = ?2 WHERE name = ?1")
                .bind(&name)
                .bind(to_i64(state.last_offset))
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

async fn oldest_retained(tx: &mut Tx<'_>, name: &str) -> Result<Option<u64>, StoreError> {
    let row = sqlx::query("SELECT MIN(msg_offset) FROM messages WHERE channel = ?1")
        .bind(name)
        .fetch_one(&mut **tx)
        .await?;
    Ok(row.get::<Option<i64>, _>(0).map(to_u64))
}

async fn ensure_info(
    tx: &mut Tx<'_>,
    cache: &mut HashMap<String, ChannelState>,
    name: &str,
) -> Result<ChannelInfo, StoreError> {
    let state = channel_state(tx, cache, name).await?.clone();
    Ok(ChannelInfo {
        name: name.to_owned(),
        epoch: state.epoch,
        latest_offset: state.last_offset,
        oldest_retained: oldest_retained(tx, name).await?,
    })
}

async fn purge_one(
    tx: &mut Tx<'_>,
    cache: &mut HashMap<String, ChannelState>,
    name: &str,
) -> Result<ChannelInfo, StoreError> {
    let state = channel_state(tx, cache, name).await?;
    let epoch = new_epoch();
    sqlx::query("DELETE FROM messages WHERE channel = ?1")
        .bind(name)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM dedup WHERE channel = ?1")
        .bind(name)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE channels SET epoch = ?2, last_offset = 0 WHERE name = ?1")
        .bind(name)
        .bind(&epoch)
        .execute(&mut **tx)
        .await?;
    state.epoch.clone_from(&epoch);
    state.last_offset = 0;
    Ok(ChannelInfo {
        name: name.to_owned(),
        epoch,
        latest_offset: 0,
        oldest_retained: None,
    })
}

async fn maintain(
    tx: &mut Tx<'_>,
    config: &StoreConfig,
    now: Timestamp,
) -> Result<MaintenanceReport, StoreError> {
    let mut report = MaintenanceReport::default();
    let max_age = i64::try_from(config.retention_max_age.as_millis()).unwrap_or(i64::MAX);
    report.messages_trimmed += sqlx::query("DELETE FROM messages WHERE published_at < ?1")
        .bind(now.unix_millis().saturating_sub(max_age))
        .execute(&mut **tx)
        .await?
        .rows_affected();

    let keep = to_i64(config.retention_messages);
    let over = sqlx::query("SELECT name, last_offset FROM channels WHERE last_offset > ?1")
        .bind(keep)
        .fetch_all(&mut **tx)
        .await?;
    for row in over {
        let name: String = row.get(0);
        let last: i64 = row.get(1);
        report.messages_trimmed +=
            sqlx::query("DELETE FROM messages WHERE channel = ?1 AND msg_offset <= ?2")
                .bind(&name)
                .bind(last - keep)
                .execute(&mut **tx)
                .await?
                .rows_affected();
    }

    let window = i64::try_from(config.dedup_window.as_millis()).unwrap_or(i64::MAX);
    report.dedup_expired = sqlx::query("DELETE FROM dedup WHERE created_at < ?1")
        .bind(now.unix_millis().saturating_sub(window))
        .execute(&mut **tx)
        .await?
        .rows_affected();
    Ok(report)
}

fn refuse(cmd: Command) {
    match cmd {
        Command::Publish(_, r) => drop(r.send(Err(StoreError::Closed))),
        Command::Ensure(_, r) | Command::Purge(_, r) => drop(r.send(Err(StoreError::Closed))),
        Command::Maintain(_, r) => drop(r.send(Err(StoreError::Closed))),
        Command::Close(r) => drop(r.send(())),
    }
}

fn fail(cmd: Command, msg: &str) {
    let err = || StoreError::Write(msg.to_owned());
    match cmd {
        Command::Publish(_, r) => drop(r.send(Err(err()))),
        Command::Ensure(_, r) | Command::Purge(_, r) => drop(r.send(Err(err()))),
        Command::Maintain(_, r) => drop(r.send(Err(err()))),
        Command::Close(r) => drop(r.send(())),
    }
}
