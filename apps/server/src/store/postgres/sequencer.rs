//! The per-channel sequencer of the PostgreSQL store: the only sender of [`StoreEvent`]s, so
//! the hub sees, per channel, strictly increasing offsets with no gap — whichever node
//! committed them.
//!
//! Everything that arrives here is a *hint* that a channel moved: this node's own commits
//! ([`Hint::Local`], which carry the messages), another node's `NOTIFY` ([`Hint::Notice`]: only
//! channel, epoch and last offset), a subscription starting on this node ([`Hint::Watch`]), a
//! purge, and a periodic or after-reconnect check of every tracked channel. [`Tracks`] keeps,
//! per channel, the epoch and the last offset announced and decides what a hint means: nothing
//! (already announced), announce directly (a local commit that continues the sequence), or
//! *sync*: read the database from the last announced offset, in offset order, in one statement
//! that also returns the channel's epoch (one snapshot), and announce what is new. A lost or
//! late notification therefore only delays a message until the next hint or check.
//!
//! Which channels are tracked: those this node committed to, purged, or was asked about
//! (`channel`/`channel_info`, which every subscription calls before it replays). Another node's
//! notice for an untracked channel is ignored: nobody here waits for it, and tracking starts,
//! with a sync, when somebody asks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::Row as _;
use sqlx::postgres::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{message_row, to_i64, to_u64};
use crate::store::{ChannelInfo, Notifications, StoreError, StoreEvent, StoredMessage};

/// Most messages one catch-up read returns; a longer gap takes several reads.
const PAGE: usize = 500;

/// Something that may have moved a channel.
#[derive(Debug)]
pub(crate) enum Hint {
    /// This node committed `messages` (one channel, ascending offsets) in `epoch`.
    Local {
        /// The epoch the transaction wrote in.
        epoch: String,
        /// The new messages.
        messages: Vec<StoredMessage>,
    },
    /// This node purged the channel.
    Purged(Arc<str>),
    /// A `NOTIFY` (from any node, this one included): the channel is at `last` in `epoch`.
    Notice {
        /// The channel.
        channel: Arc<str>,
        /// Its epoch at that commit.
        epoch: String,
        /// Its last offset at that commit.
        last: u64,
    },
    /// Someone on this node read the channel's state (a subscription starts).
    Watch {
        /// The channel.
        channel: Arc<str>,
        /// Its epoch as read.
        epoch: String,
        /// Its latest offset as read: nothing up to it needs announcing.
        latest: u64,
    },
    /// The listener (re)connected: notifications may have been lost, check every channel.
    CatchUpAll,
}

/// Per tracked channel: what the hub has been told.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Track {
    epoch: String,
    last: u64,
}

/// What a hint asks the task to do.
#[derive(Debug, PartialEq)]
pub(crate) enum Step {
    /// Nothing new.
    Nothing,
    /// Announce these (they continue the channel's sequence).
    Emit(Vec<StoredMessage>),
    /// Read the channel from the database and announce what is new.
    Sync(Arc<str>),
}

/// The sequencer's decisions, without IO (unit-tested below).
#[derive(Debug, Default)]
pub(crate) struct Tracks {
    map: HashMap<Arc<str>, Track>,
}

impl Tracks {
    /// Decides what `hint` means. `CatchUpAll` is the task's business (it needs the database).
    pub(crate) fn hint(&mut self, hint: Hint) -> Step {
        match hint {
            Hint::Local { epoch, messages } => {
                let Some(first) = messages.first() else {
                    return Step::Nothing;
                };
                let channel = first.channel.clone();
                let first_offset = first.offset;
                let track = self.map.entry(channel.clone()).or_insert_with(|| Track {
                    epoch: epoch.clone(),
                    last: first_offset - 1,
                });
                if track.epoch != epoch {
                    return Step::Sync(channel);
                }
                if first_offset > track.last + 1 {
                    // Another node's commits came in between and their notice is not here yet.
                    return Step::Sync(channel);
                }
                let new: Vec<StoredMessage> = messages
                    .into_iter()
                    .filter(|m| m.offset > track.last)
                    .collect();
                match new.last() {
                    Some(m) => {
                        track.last = m.offset;
                        Step::Emit(new)
                    }
                    None => Step::Nothing,
                }
            }
            Hint::Purged(channel) => {
                // Unknown epoch: the sync reads it, announces the reset, then what follows.
                self.map.entry(channel.clone()).or_insert_with(|| Track {
                    epoch: String::new(),
                    last: 0,
                });
                Step::Sync(channel)
            }
            Hint::Notice {
                channel,
                epoch,
                last,
            } => match self.map.get(&channel) {
                None => Step::Nothing,
                Some(t) if t.epoch == epoch && t.last >= last => Step::Nothing,
                Some(_) => Step::Sync(channel),
            },
            Hint::Watch {
                channel,
                epoch,
                latest,
            } => match self.map.get(&channel) {
                None => {
                    self.map.insert(
                        channel.clone(),
                        Track {
                            epoch,
                            last: latest,
                        },
                    );
                    // Notices that arrived while the channel was untracked were ignored.
                    Step::Sync(channel)
                }
                Some(t) if t.epoch == epoch && t.last >= latest => Step::Nothing,
                Some(_) => Step::Sync(channel),
            },
            Hint::CatchUpAll => Step::Nothing,
        }
    }

    /// The offset to read after for a sync of `channel` (`None`: not tracked).
    pub(crate) fn last(&self, channel: &str) -> Option<u64> {
        self.map.get(channel).map(|t| t.last)
    }

    /// Applies one database read of `channel` (its epoch and the messages after
    /// [`Tracks::last`]). Returns the events to announce and whether to read again.
    pub(crate) fn apply_read(
        &mut self,
        channel: &Arc<str>,
        epoch: &str,
        messages: Vec<StoredMessage>,
    ) -> (Vec<StoreEvent>, bool) {
        let Some(track) = self.map.get_mut(channel) else {
            return (Vec::new(), false);
        };
        if track.epoch != epoch {
            // Purged (here or elsewhere) since we last looked: announce the new epoch, then
            // read again from its start. The messages just read belong to the old offsets.
            track.epoch = epoch.to_owned();
            track.last = 0;
            let info = ChannelInfo {
                name: channel.to_string(),
                epoch: epoch.to_owned(),
                latest_offset: 0,
                oldest_retained: None,
            };
            return (vec![StoreEvent::Purged(info)], true);
        }
        let full = messages.len() >= PAGE;
        let new: Vec<StoredMessage> = messages
            .into_iter()
            .filter(|m| m.offset > track.last)
            .collect();
        match new.last() {
            Some(m) => {
                track.last = m.offset;
                (vec![StoreEvent::Committed(new.into())], full)
            }
            None => (Vec::new(), false),
        }
    }

    /// Every tracked channel with its epoch and last announced offset.
    fn snapshot(&self) -> Vec<(Arc<str>, String, u64)> {
        self.map
            .iter()
            .map(|(c, t)| (c.clone(), t.epoch.clone(), t.last))
            .collect()
    }
}

/// The listener's state, shared with the store for `/health`.
#[derive(Debug, Default)]
pub(crate) struct ListenerState {
    up: AtomicBool,
    error: Mutex<String>,
}

impl ListenerState {
    pub(crate) fn set_up(&self) {
        self.up.store(true, Ordering::Release);
    }

    pub(crate) fn set_down(&self, error: String) {
        *self
            .error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = error;
        self.up.store(false, Ordering::Release);
    }

    pub(crate) fn get(&self) -> Notifications {
        if self.up.load(Ordering::Acquire) {
            Notifications::Listening
        } else {
            let e = self
                .error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            Notifications::Down(if e.is_empty() {
                "not listening".to_owned()
            } else {
                e
            })
        }
    }
}

/// The sequencer task: [`Tracks`] plus the database reads and the events channel.
pub(crate) struct Task {
    pool: PgPool,
    tracks: Tracks,
    events: mpsc::Sender<StoreEvent>,
}

impl Task {
    pub(crate) fn new(pool: PgPool, events: mpsc::Sender<StoreEvent>) -> Self {
        Self {
            pool,
            tracks: Tracks::default(),
            events,
        }
    }

    /// Runs until every hint sender (writer, listener) is gone, then drops the events sender
    /// (which ends the hub).
    pub(crate) async fn run(
        mut self,
        mut hints: mpsc::Receiver<Hint>,
        mut watches: mpsc::UnboundedReceiver<Hint>,
        interval: Duration,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watching = true;
        loop {
            let hint = tokio::select! {
                biased;
                h = hints.recv() => match h {
                    Some(h) => h,
                    None => break,
                },
                w = watches.recv(), if watching => match w {
                    Some(w) => w,
                    None => { watching = false; continue; }
                },
                _ = tick.tick(), if !stop.is_cancelled() => Hint::CatchUpAll,
            };
            self.handle(hint).await;
        }
    }

    async fn handle(&mut self, hint: Hint) {
        if matches!(hint, Hint::CatchUpAll) {
            if let Err(e) = self.catch_up_all().await {
                warn_read(&e);
            }
            return;
        }
        match self.tracks.hint(hint) {
            Step::Nothing => {}
            Step::Emit(messages) => self.emit(StoreEvent::Committed(messages.into())).await,
            Step::Sync(channel) => {
                if let Err(e) = self.sync(&channel).await {
                    // The periodic check retries: the track still says what was announced.
                    warn_read(&e);
                }
            }
        }
    }

    async fn emit(&self, event: StoreEvent) {
        // No receiver: nobody fans out on this node (tools, tests); keep tracking anyway.
        let _ = self.events.send(event).await;
    }

    /// Reads `channel` from the last announced offset until nothing new is left.
    async fn sync(&mut self, channel: &Arc<str>) -> Result<(), StoreError> {
        while let Some(after) = self.tracks.last(channel) {
            let rows = sqlx::query(
                "SELECT c.epoch, m.msg_offset, m.id, m.sub, m.data, m.published_at \
                 FROM channels c LEFT JOIN LATERAL ( \
                   SELECT * FROM messages x WHERE x.channel = c.name AND x.msg_offset > $2 \
                   ORDER BY x.msg_offset LIMIT $3) m ON TRUE \
                 WHERE c.name = $1 ORDER BY m.msg_offset",
            )
            .bind(&**channel)
            .bind(to_i64(after))
            .bind(i64::try_from(PAGE).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
            let Some(first) = rows.first() else {
                return Ok(()); // No such channel (yet).
            };
            let epoch: String = first.get(0);
            let mut messages = Vec::with_capacity(rows.len());
            for row in &rows {
                if row.get::<Option<i64>, _>(1).is_some() {
                    messages.push(message_row(channel, row, 1)?);
                }
            }
            let (events, again) = self.tracks.apply_read(channel, &epoch, messages);
            for event in events {
                self.emit(event).await;
            }
            if !again {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Compares every tracked channel with the database (one query) and syncs those behind.
    async fn catch_up_all(&mut self) -> Result<(), StoreError> {
        let tracked = self.tracks.snapshot();
        if tracked.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = tracked.iter().map(|(c, _, _)| &**c).collect();
        let rows =
            sqlx::query("SELECT name, epoch, last_offset FROM channels WHERE name = ANY($1)")
                .bind(&names)
                .fetch_all(&self.pool)
                .await?;
        let by_name: HashMap<String, (String, u64)> = rows
            .iter()
            .map(|r| (r.get(0), (r.get(1), to_u64(r.get(2)))))
            .collect();
        for (channel, epoch, last) in tracked {
            let behind = by_name
                .get(&*channel)
                .is_some_and(|(e, l)| *e != epoch || *l > last);
            if behind {
                self.sync(&channel).await?;
            }
        }
        Ok(())
    }
}

fn warn_read(e: &StoreError) {
    tracing::warn!(component = "store", event = "store_catch_up_failed", error = %e);
}

#[cfg(test)]
mod tests;
