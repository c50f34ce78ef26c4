//! The PostgreSQL store's writer task (one per node): takes every queued command (up to
//! `batch_max`) and runs them in one transaction — channel rows locked in name order, dedup
//! claim and offset assignment under that lock, one bulk insert of the new messages, one
//! `NOTIFY` per channel written — COMMITs once, then answers each caller and hands the commit
//! to the sequencer as a hint.
//!
//! Why the row lock: two nodes writing one channel both read `last_offset` under
//! `SELECT … FOR UPDATE`, so the second waits for the first to COMMIT and then sees its
//! offsets; nothing is assigned twice and nothing is skipped. Locking every channel of the
//! batch up front, sorted by name, means two batches never wait for each other in a cycle.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use protocol::Timestamp;
use sqlx::Row as _;
use sqlx::postgres::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::sequencer::Hint;
use super::{NOTIFY_CHANNEL, to_i64, to_u64};
use crate::store::{
    ChannelInfo, MaintenanceReport, PublishOutcome, PublishRequest, StoreConfig, StoreError,
    StoredMessage, data_hash, new_epoch,
};

pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// Work for the writer.
pub(super) enum Command {
    Publish(PublishRequest, Reply<PublishOutcome>),
    Purge(String, Reply<ChannelInfo>),
    /// Runs alone, between batches, so it sees every publish queued before it.
    Maintain(Timestamp, Reply<MaintenanceReport>),
    Close(oneshot::Sender<()>),
}

/// A result waiting for COMMIT before it is sent.
enum Pending {
    Publish(Reply<PublishOutcome>, PublishOutcome),
    Purge(Reply<ChannelInfo>, ChannelInfo),
}

/// A channel's row as locked by this transaction, and as written so far.
struct Row {
    name: Arc<str>,
    epoch: String,
    last_offset: u64,
    /// Purged in this transaction: a purge notification is due.
    purged: bool,
    /// Messages stored in this transaction (after its last purge, if any).
    stored: Vec<StoredMessage>,
}

/// The writer task.
pub(super) struct Writer {
    pool: PgPool,
    config: StoreConfig,
    /// Commits for the sequencer (bounded: when the fan-out lags, publishes wait).
    hints: mpsc::Sender<Hint>,
    /// Channels known to exist (rows are never deleted), so their insert can be skipped.
    known: HashSet<String>,
}

impl Writer {
    pub(super) fn new(pool: PgPool, config: StoreConfig, hints: mpsc::Sender<Hint>) -> Self {
        Self {
            pool,
            config,
            hints,
            known: HashSet::new(),
        }
    }

    pub(super) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut close_reply = None;
        let mut carry: Option<Command> = None;
        loop {
            let first = match carry.take() {
                Some(cmd) => cmd,
                None => match commands.recv().await {
                    Some(cmd) => cmd,
                    None => break,
                },
            };
            match first {
                Command::Close(reply) => {
                    close_reply = Some(reply);
                    break;
                }
                Command::Maintain(now, reply) => {
                    let r = super::maintain(&self.pool, &self.config, now).await;
                    // The caller may have stopped waiting; the pass is done either way.
                    let _ = reply.send(r);
                    continue;
                }
                other => {
                    let mut batch = vec![other];
                    while batch.len() < self.config.batch_max {
                        match commands.try_recv() {
                            Ok(cmd @ (Command::Close(_) | Command::Maintain(..))) => {
                                carry = Some(cmd);
                                break;
                            }
                            Ok(cmd) => batch.push(cmd),
                            Err(_) => break,
                        }
                    }
                    self.run_batch(batch).await;
                }
            }
        }
        // Refuse anything queued after Close.
        commands.close();
        while let Ok(cmd) = commands.try_recv() {
            fail(cmd, || StoreError::Closed);
        }
        if let Some(reply) = close_reply {
            // The closer may have given up waiting; nothing to do then.
            let _ = reply.send(());
        }
    }

    async fn run_batch(&mut self, batch: Vec<Command>) {
        let names: BTreeSet<String> = batch
            .iter()
            .filter_map(|c| match c {
                Command::Publish(r, _) => Some(r.channel.clone()),
                Command::Purge(n, _) => Some(n.clone()),
                _ => None,
            })
            .collect();
        let mut pending = Vec::with_capacity(batch.len());
        match self.apply(&names, batch, &mut pending).await {
            Ok(rows) => {
                names.iter().for_each(|n| {
                    self.known.insert(n.clone());
                });
                for p in pending {
                    // A caller that stopped waiting (dropped its future) is fine: the message
                    // is stored, and a retry will be recognised as a duplicate.
                    match p {
                        Pending::Publish(r, v) => drop(r.send(Ok(v))),
                        Pending::Purge(r, v) => drop(r.send(Ok(v))),
                    }
                }
                for row in rows {
                    if row.purged {
                        // The sequencer reads the new epoch back (another node may already
                        // have purged again); only then the messages after it.
                        if self
                            .hints
                            .send(Hint::Purged(row.name.clone()))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    if !row.stored.is_empty() {
                        let hint = Hint::Local {
                            epoch: row.epoch,
                            messages: row.stored,
                        };
                        if self.hints.send(hint).await.is_err() {
                            // The sequencer stopped (closing): nobody announces any more.
                            return;
                        }
                    }
                }
            }
            Err((e, unanswered)) => {
                tracing::error!(component = "store", event = "store_write_failed", error = %e);
                let msg = e.to_string();
                for p in pending {
                    let err = StoreError::Write(msg.clone());
                    match p {
                        Pending::Publish(r, _) => drop(r.send(Err(err))),
                        Pending::Purge(r, _) => drop(r.send(Err(err))),
                    }
                }
                for cmd in unanswered {
                    fail(cmd, || StoreError::Write(msg.clone()));
                }
            }
        }
    }

    /// The whole batch in one transaction; the rows it wrote, for the hints. On error, the
    /// commands not reached yet are returned to be failed with the rest.
    async fn apply(
        &mut self,
        names: &BTreeSet<String>,
        batch: Vec<Command>,
        pending: &mut Vec<Pending>,
    ) -> Result<Vec<Row>, (StoreError, Vec<Command>)> {
        let mut tx = match self.pool.begin().await {
            Ok(tx) => tx,
            Err(e) => return Err((e.into(), batch)),
        };
        let mut rows = match lock_channels(&mut tx, names, &self.known).await {
            Ok(rows) => rows,
            Err(e) => return Err((e, batch)),
        };
        let mut inserts = Inserts::default();
        let mut rest = batch.into_iter();
        while let Some(cmd) = rest.next() {
            let step = match cmd {
                Command::Publish(req, reply) => {
                    let row = rows
                        .get_mut(req.channel.as_str())
                        .expect("every channel of the batch was locked above");
                    match publish_one(&mut tx, &self.config, row, req, &mut inserts).await {
                        Ok(outcome) => {
                            pending.push(Pending::Publish(reply, outcome));
                            Ok(())
                        }
                        Err(e) => {
                            drop(reply.send(Err(StoreError::Write(e.to_string()))));
                            Err(e)
                        }
                    }
                }
                Command::Purge(name, reply) => {
                    let row = rows
                        .get_mut(name.as_str())
                        .expect("every channel of the batch was locked above");
                    match purge_one(&mut tx, row, &mut inserts).await {
                        Ok(info) => {
                            pending.push(Pending::Purge(reply, info));
                            Ok(())
                        }
                        Err(e) => {
                            drop(reply.send(Err(StoreError::Write(e.to_string()))));
                            Err(e)
                        }
                    }
                }
                other => {
                    // `run` keeps Maintain and Close out of batches; refuse rather than lose.
                    fail(other, || StoreError::Closed);
                    Ok(())
                }
            };
            if let Err(e) = step {
                // Dropping `tx` rolls back.
                return Err((e, rest.collect()));
            }
        }
        let finish = async {
            inserts.write(&mut tx).await?;
            write_rows(&mut tx, &rows).await?;
            tx.commit().await?;
            Ok::<(), StoreError>(())
        };
        if let Err(e) = finish.await {
            return Err((e, Vec::new()));
        }
        Ok(rows.into_values().collect())
    }
}

type Tx<'c> = sqlx::Transaction<'c, sqlx::Postgres>;

/// Creates the missing channels and locks every channel row of the batch, in name order.
async fn lock_channels(
    tx: &mut Tx<'_>,
    names: &BTreeSet<String>,
    known: &HashSet<String>,
) -> Result<HashMap<String, Row>, StoreError> {
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let missing: Vec<&str> = all
        .iter()
        .copied()
        .filter(|n| !known.contains(*n))
        .collect();
    if !missing.is_empty() {
        let epochs: Vec<String> = missing.iter().map(|_| new_epoch()).collect();
        sqlx::query(
            "INSERT INTO channels (name, epoch, last_offset, created_at) \
             SELECT n, e, 0, $3 FROM UNNEST($1::text[], $2::text[]) AS t(n, e) ORDER BY n \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&missing)
        .bind(&epochs)
        .bind(crate::store::now().unix_millis())
        .execute(&mut **tx)
        .await?;
    }
    let locked = sqlx::query(
        "SELECT name, epoch, last_offset FROM channels WHERE name = ANY($1) \
         ORDER BY name FOR UPDATE",
    )
    .bind(&all)
    .fetch_all(&mut **tx)
    .await?;
    let mut rows = HashMap::with_capacity(locked.len());
    for r in locked {
        let name: String = r.get(0);
        rows.insert(
            name.clone(),
            Row {
                name: Arc::from(name.as_str()),
                epoch: r.get(1),
                last_offset: to_u64(r.get(2)),
                purged: false,
                stored: Vec::new(),
            },
        );
    }
    if rows.len() != all.len() {
        return Err(StoreError::Corrupt(
            "a channel row vanished inside the transaction".into(),
        ));
    }
    Ok(rows)
}

/// One message row waiting for the batch's bulk insert.
struct Insert {
    channel: Arc<str>,
    offset: i64,
    id: String,
    sub: String,
    data: String,
    published_at: i64,
}

/// The messages of a batch, inserted with one statement before COMMIT.
#[derive(Default)]
struct Inserts(Vec<Insert>);

impl Inserts {
    /// Forgets the pending messages of `channel` (a purge in the same batch).
    fn drop_channel(&mut self, channel: &str) {
        self.0.retain(|i| &*i.channel != channel);
    }

    async fn write(&self, tx: &mut Tx<'_>) -> Result<(), StoreError> {
        if self.0.is_empty() {
            return Ok(());
        }
        let col = |f: fn(&Insert) -> &str| self.0.iter().map(f).collect::<Vec<&str>>();
        let num = |f: fn(&Insert) -> i64| self.0.iter().map(f).collect::<Vec<i64>>();
        sqlx::query(
            "INSERT INTO messages (channel, msg_offset, id, sub, data, published_at) \
             SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::int8[])",
        )
        .bind(col(|i| &i.channel))
        .bind(num(|i| i.offset))
        .bind(col(|i| &i.id))
        .bind(col(|i| &i.sub))
        .bind(col(|i| &i.data))
        .bind(num(|i| i.published_at))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

/// Writes back each channel's epoch and last offset, and queues one notification per channel
/// written: `{"c":channel,"e":epoch,"o":last_offset}` (never the payload: PostgreSQL caps a
/// notification at 8000 bytes, and the other nodes read the messages themselves).
async fn write_rows(tx: &mut Tx<'_>, rows: &HashMap<String, Row>) -> Result<(), StoreError> {
    let changed: Vec<&Row> = rows
        .values()
        .filter(|r| r.purged || !r.stored.is_empty())
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = changed.iter().map(|r| &*r.name).collect();
    let epochs: Vec<&str> = changed.iter().map(|r| r.epoch.as_str()).collect();
    let lasts: Vec<i64> = changed.iter().map(|r| to_i64(r.last_offset)).collect();
    sqlx::query(
        "UPDATE channels SET epoch = t.e, last_offset = t.o \
         FROM UNNEST($1::text[], $2::text[], $3::int8[]) AS t(n, e, o) WHERE name = t.n",
    )
    .bind(&names)
    .bind(&epochs)
    .bind(&lasts)
    .execute(&mut **tx)
    .await?;
    let payloads: Vec<String> = changed
        .iter()
        .map(|r| super::listener::encode_notice(&r.name, &r.epoch, r.last_offset))
        .collect();
    // NOTIFY is transactional: it is delivered at COMMIT, and not at all on rollback.
    sqlx::query("SELECT pg_notify($1, p) FROM UNNEST($2::text[]) AS p")
        .bind(NOTIFY_CHANNEL)
        .bind(&payloads)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn publish_one(
    tx: &mut Tx<'_>,
    config: &StoreConfig,
    row: &mut Row,
    req: PublishRequest,
    inserts: &mut Inserts,
) -> Result<PublishOutcome, StoreError> {
    let hash = data_hash(&req.data).to_vec();
    let now = req.published_at.unix_millis();
    let offset = row.last_offset + 1;

    // The common case is a new id: claim it, and only look closer when it was taken. The
    // channel row lock serialises this with every other node's claim on this channel.
    let claim = sqlx::query(
        "INSERT INTO dedup (channel, sub, id, data_hash, msg_offset, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (channel, sub, id) DO NOTHING \
         RETURNING msg_offset",
    )
    .bind(&req.channel)
    .bind(&req.sub)
    .bind(&req.id)
    .bind(&hash)
    .bind(to_i64(offset))
    .bind(now)
    .fetch_optional(&mut **tx)
    .await?;
    if claim.is_none() {
        let old = sqlx::query(
            "SELECT data_hash, msg_offset, created_at FROM dedup \
             WHERE channel = $1 AND sub = $2 AND id = $3",
        )
        .bind(&req.channel)
        .bind(&req.sub)
        .bind(&req.id)
        .fetch_one(&mut **tx)
        .await?;
        let old_hash: Vec<u8> = old.get(0);
        let old_offset = to_u64(old.get(1));
        let created_at: i64 = old.get(2);
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
            "UPDATE dedup SET data_hash = $4, msg_offset = $5, created_at = $6 \
             WHERE channel = $1 AND sub = $2 AND id = $3",
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
    inserts.0.push(Insert {
        channel: row.name.clone(),
        offset: to_i64(offset),
        id: req.id.clone(),
        sub: req.sub.clone(),
        data: text,
        published_at: now,
    });
    row.last_offset = offset;
    row.stored.push(StoredMessage {
        channel: row.name.clone(),
        offset,
        id: req.id,
        sub: req.sub,
        data: req.data,
        published_at: req.published_at,
    });
    Ok(PublishOutcome::Stored { offset })
}

async fn purge_one(
    tx: &mut Tx<'_>,
    row: &mut Row,
    inserts: &mut Inserts,
) -> Result<ChannelInfo, StoreError> {
    sqlx::query("DELETE FROM messages WHERE channel = $1")
        .bind(&*row.name)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM dedup WHERE channel = $1")
        .bind(&*row.name)
        .execute(&mut **tx)
        .await?;
    // Messages of this batch stored before the purge never become visible: forget them.
    inserts.drop_channel(&row.name);
    row.stored.clear();
    row.epoch = new_epoch();
    row.last_offset = 0;
    row.purged = true;
    Ok(ChannelInfo {
        name: row.name.to_string(),
        epoch: row.epoch.clone(),
        latest_offset: 0,
        oldest_retained: None,
    })
}

fn fail(cmd: Command, err: impl Fn() -> StoreError) {
    match cmd {
        Command::Publish(_, r) => drop(r.send(Err(err()))),
        Command::Purge(_, r) => drop(r.send(Err(err()))),
        Command::Maintain(_, r) => drop(r.send(Err(err()))),
        Command::Close(r) => drop(r.send(())),
    }
}
