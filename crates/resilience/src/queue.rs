//! [`OutboundQueue`]: the bounded, persistable queue of outgoing publishes (CONTRACT §5.4, §8).
//!
//! Every publish goes through the queue, online or not, so there is one path for "send now"
//! and "send after reconnecting":
//!
//! - **Bounded** (1000 by default): a full queue refuses a new publish with
//!   [`QueueError::Full`]; nothing is ever dropped silently. A publish whose encoded frame is
//!   larger than `max_message_bytes` is refused at once with [`QueueError::TooLarge`].
//! - **Ids are kept**: an entry is resent after a reconnect with its original `id`, so the
//!   server's deduplication stores it exactly once (`ack` with `duplicate: true` on a repeat).
//! - **In flight**: [`OutboundQueue::poll_transmit`] hands out entries in order and marks them
//!   sent; [`OutboundQueue::on_disconnect`] puts every sent-but-unacknowledged entry back to be
//!   resent. At most `max_in_flight` entries are unacknowledged at once.
//! - **Acks and nacks**: `ack` removes the entry. `nack` `FORBIDDEN`/`BAD_REQUEST` removes it
//!   and reports it failed; any other code keeps it and pauses sending until `retry_after_ms`
//!   (1 s when absent), so the order of the queue is kept.
//! - **Expiry**: an entry older than the deduplication window (24 h) can no longer be resent
//!   safely (the server may have forgotten its id); it is removed and reported failed.
//! - **Persistence**: [`OutboundQueue::to_json`] / [`OutboundQueue::from_json`] save and restore
//!   the entries (browser `localStorage`, a native outbox file). Times are wall-clock
//!   [`Timestamp`]s, since a monotonic `Instant` means nothing after a restart; that is why this
//!   machine takes `now: Timestamp` where the others take `Instant`. Restored entries are all
//!   unsent: whatever was in flight is resent with its id.
use std::collections::VecDeque;
use std::time::Duration;

use protocol::{
    Ack, ChannelName, ChannelNameError, ClientMessage, ErrorCode, Nack, Publish, Timestamp,
};
use serde::{Deserialize, Serialize};

/// The numbers an [`OutboundQueue`] works with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    /// Entries at most (1000).
    pub capacity: usize,
    /// Largest encoded `publish` frame in bytes (64 KiB; the `welcome` may lower it).
    pub max_message_bytes: usize,
    /// Entries older than this expire (24 h, the server's deduplication window).
    pub dedup_window: Duration,
    /// Sent-but-unacknowledged entries at most.
    pub max_in_flight: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            capacity: protocol::defaults::OFFLINE_QUEUE_CAPACITY,
            max_message_bytes: protocol::defaults::MAX_MESSAGE_BYTES,
            dedup_window: Duration::from_millis(protocol::defaults::DEDUP_WINDOW_MS),
            max_in_flight: 256,
        }
    }
}

/// Why a publish was not queued. Nothing was queued; the caller still owns the message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The queue holds `capacity` entries.
    #[error("the outbound queue is full ({capacity} messages)")]
    Full {
        /// The capacity.
        capacity: usize,
    },
    /// The encoded frame is larger than the server accepts.
    #[error("message is {bytes} bytes; the limit is {max}")]
    TooLarge {
        /// The encoded size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// An entry with this id is already queued.
    #[error("a message with id {id:?} is already queued")]
    DuplicateId {
        /// The id.
        id: String,
    },
    /// The id is empty or longer than the protocol allows.
    #[error("message id must be 1 to {max} bytes")]
    BadId {
        /// The longest id allowed.
        max: usize,
    },
    /// The channel name is invalid.
    #[error(transparent)]
    BadChannel(#[from] ChannelNameError),
}

/// Why [`OutboundQueue::from_json`] could not restore a queue.
#[derive(Debug, thiserror::Error)]
#[error("cannot restore the outbound queue: {0}")]
pub struct RestoreError(#[from] serde_json::Error);

/// One queued publish.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueuedPublish {
    /// The publish id (kept across resends).
    pub id: String,
    /// The channel.
    pub channel: String,
    /// The JSON payload.
    pub data: serde_json::Value,
    /// When the app published it (wall clock).
    pub enqueued_at: Timestamp,
    /// How many times it has been sent.
    #[serde(default)]
    pub sends: u32,
    /// Sent on the current connection and not yet acknowledged (not persisted).
    #[serde(skip)]
    pub in_flight: bool,
}

impl QueuedPublish {
    fn to_publish(&self) -> Publish {
        Publish {
            id: self.id.clone(),
            channel: self.channel.clone(),
            data: self.data.clone(),
        }
    }
}

/// Why a queued publish failed for good.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailReason {
    /// The server refused it with `FORBIDDEN` or `BAD_REQUEST`.
    Refused {
        /// The nack's code.
        code: ErrorCode,
        /// The nack's message.
        message: String,
    },
    /// It waited longer than the deduplication window.
    Expired,
    /// The server closed the connection with 1009 (message too large) while it was in flight:
    /// never resent.
    TooLarge,
}

/// What happened to queued publishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueEvent {
    /// Stored by the server (removed from the queue).
    Acked {
        /// The publish id.
        id: String,
        /// The channel.
        channel: String,
        /// The offset it was stored at.
        offset: u64,
        /// Whether it had been stored before (a resend).
        duplicate: bool,
    },
    /// Failed for good (removed from the queue); counts as a failed message.
    Failed {
        /// The publish id.
        id: String,
        /// The channel.
        channel: String,
        /// Why.
        reason: FailReason,
    },
    /// Refused for now; kept, and sending pauses until `at`.
    RetryLater {
        /// The publish id.
        id: String,
        /// The nack's code.
        code: ErrorCode,
        /// When sending resumes.
        at: Timestamp,
    },
}

/// Running totals, kept across persistence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Publishes accepted into the queue.
    pub enqueued: u64,
    /// Publishes sent at least once (each counted once, however often resent).
    pub sent: u64,
    /// Publishes acknowledged.
    pub acked: u64,
    /// Publishes failed for good.
    pub failed: u64,
    /// Acks that said `duplicate: true`.
    pub duplicates: u64,
}

/// The persisted form (versioned, so a later format can still read this one).
#[derive(Serialize, Deserialize)]
struct Persisted {
    version: u32,
    entries: VecDeque<QueuedPublish>,
    #[serde(default)]
    paused_until: Option<Timestamp>,
    #[serde(default)]
    stats: QueueStats,
}

/// The outbound publish queue. See the module docs.
#[derive(Clone, Debug)]
pub struct OutboundQueue {
    config: QueueConfig,
    entries: VecDeque<QueuedPublish>,
    paused_until: Option<Timestamp>,
    stats: QueueStats,
    events: VecDeque<QueueEvent>,
}

/// The pause after a retryable nack without `retry_after_ms`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

impl OutboundQueue {
    /// An empty queue.
    pub fn new(config: QueueConfig) -> Self {
        Self {
            config,
            entries: VecDeque::new(),
            paused_until: None,
            stats: QueueStats::default(),
            events: VecDeque::new(),
        }
    }

    /// Restores a queue saved by [`OutboundQueue::to_json`]. A restored queue may hold more
    /// than `capacity` entries (if the capacity shrank); none is dropped, new publishes are
    /// refused until it drains below the capacity.
    pub fn from_json(config: QueueConfig, json: &str) -> Result<Self, RestoreError> {
        let p: Persisted = serde_json::from_str(json)?;
        let mut entries = p.entries;
        for e in &mut entries {
            e.in_flight = false;
        }
        Ok(Self {
            config,
            entries,
            paused_until: p.paused_until,
            stats: p.stats,
            events: VecDeque::new(),
        })
    }

    /// The queue as JSON, to persist.
    pub fn to_json(&self) -> String {
        let p = Persisted {
            version: 1,
            entries: self.entries.clone(),
            paused_until: self.paused_until,
            stats: self.stats,
        };
        serde_json::to_string(&p).expect("queue entries are plain JSON values and strings")
    }

    /// The configuration.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Takes the server's limit from the `welcome`.
    pub fn set_max_message_bytes(&mut self, max: usize) {
        self.config.max_message_bytes = max;
    }

    /// Queues a publish. Refuses (nothing queued) when full, too large, a repeated id, or a
    /// bad id or channel.
    pub fn push(&mut self, now: Timestamp, publish: Publish) -> Result<(), QueueError> {
        if publish.id.is_empty() || publish.id.len() > protocol::defaults::MAX_ID_BYTES {
            return Err(QueueError::BadId {
                max: protocol::defaults::MAX_ID_BYTES,
            });
        }
        ChannelName::parse(&publish.channel)?;
        if self.entries.iter().any(|e| e.id == publish.id) {
            return Err(QueueError::DuplicateId { id: publish.id });
        }
        let bytes = encoded_len(&publish);
        if bytes > self.config.max_message_bytes {
            return Err(QueueError::TooLarge {
                bytes,
                max: self.config.max_message_bytes,
            });
        }
        if self.entries.len() >= self.config.capacity {
            return Err(QueueError::Full {
                capacity: self.config.capacity,
            });
        }
        self.entries.push_back(QueuedPublish {
            id: publish.id,
            channel: publish.channel,
            data: publish.data,
            enqueued_at: now,
            sends: 0,
            in_flight: false,
        });
        self.stats.enqueued += 1;
        Ok(())
    }

    /// The next publish to send now, in queue order, marked in flight; `None` when nothing is
    /// due (empty, all in flight, `max_in_flight` reached, or paused after a nack). Call only
    /// while connected, until `None`.
    pub fn poll_transmit(&mut self, now: Timestamp) -> Option<Publish> {
        if self.paused_until.is_some_and(|until| now < until) {
            return None;
        }
        self.paused_until = None;
        if self.in_flight() >= self.config.max_in_flight {
            return None;
        }
        let entry = self.entries.iter_mut().find(|e| !e.in_flight)?;
        entry.in_flight = true;
        if entry.sends == 0 {
            self.stats.sent += 1;
        }
        entry.sends += 1;
        Some(entry.to_publish())
    }

    /// An `ack`: removes the entry. Returns whether the id was queued.
    pub fn on_ack(&mut self, ack: &Ack) -> bool {
        let Some(pos) = self.position(&ack.id) else {
            return false;
        };
        let entry = self
            .entries
            .remove(pos)
            .expect("position() returned an index inside the queue");
        self.stats.acked += 1;
        if ack.duplicate {
            self.stats.duplicates += 1;
        }
        self.events.push_back(QueueEvent::Acked {
            id: entry.id,
            channel: entry.channel,
            offset: ack.offset,
            duplicate: ack.duplicate,
        });
        true
    }

    /// A `nack`: drops and fails the entry on `FORBIDDEN`/`BAD_REQUEST`; otherwise keeps it and
    /// pauses sending until `retry_after_ms`. Returns whether the id was queued.
    pub fn on_nack(&mut self, now: Timestamp, nack: &Nack) -> bool {
        let Some(pos) = self.position(&nack.id) else {
            return false;
        };
        if nack.code.is_retryable() {
            let wait = nack
                .retry_after_ms
                .map(Duration::from_millis)
                .unwrap_or(DEFAULT_RETRY_AFTER);
            let at = now.add_millis(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
            self.entries[pos].in_flight = false;
            self.paused_until = Some(self.paused_until.map_or(at, |p| p.max(at)));
            self.events.push_back(QueueEvent::RetryLater {
                id: nack.id.clone(),
                code: nack.code,
                at,
            });
        } else {
            let entry = self
                .entries
                .remove(pos)
                .expect("position() returned an index inside the queue");
            self.fail(
                entry,
                FailReason::Refused {
                    code: nack.code,
                    message: nack.message.clone(),
                },
            );
        }
        true
    }

    /// The connection ended: everything sent but unacknowledged will be resent (same ids).
    pub fn on_disconnect(&mut self) {
        for e in &mut self.entries {
            e.in_flight = false;
        }
    }

    /// The server closed with 1009: the largest message in flight is the one it could not
    /// take. It is removed and reported failed, so a resend cannot loop forever. Returns its id.
    pub fn fail_largest_in_flight(&mut self) -> Option<String> {
        let pos = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.in_flight)
            .max_by_key(|(_, e)| encoded_len(&e.to_publish()))
            .map(|(i, _)| i)?;
        let entry = self
            .entries
            .remove(pos)
            .expect("the index came from the queue");
        let id = entry.id.clone();
        self.fail(entry, FailReason::TooLarge);
        Some(id)
    }

    /// Expires entries older than the deduplication window. Early calls are no-ops.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let window = i64::try_from(self.config.dedup_window.as_millis()).unwrap_or(i64::MAX);
        let mut kept = VecDeque::with_capacity(self.entries.len());
        for e in std::mem::take(&mut self.entries) {
            if now.millis_since(e.enqueued_at) > window {
                self.fail(e, FailReason::Expired);
            } else {
                kept.push_back(e);
            }
        }
        self.entries = kept;
    }

    /// When the next entry expires or sending resumes after a nack (wall clock).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let window = i64::try_from(self.config.dedup_window.as_millis()).unwrap_or(i64::MAX);
        let expiry = self
            .entries
            .iter()
            .map(|e| e.enqueued_at.add_millis(window).add_millis(1))
            .min();
        let resume = self
            .paused_until
            .filter(|_| self.entries.iter().any(|e| !e.in_flight));
        match (expiry, resume) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next event. Drain after every call that changes the queue.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<QueueEvent> {
        self.events.pop_front()
    }

    /// Entries queued (in flight included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries sent on this connection and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.entries.iter().filter(|e| e.in_flight).count()
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &QueuedPublish> {
        self.entries.iter()
    }

    /// Running totals.
    pub fn stats(&self) -> QueueStats {
        self.stats
    }

    fn position(&self, id: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.id == id)
    }

    fn fail(&mut self, entry: QueuedPublish, reason: FailReason) {
        self.stats.failed += 1;
        self.events.push_back(QueueEvent::Failed {
            id: entry.id,
            channel: entry.channel,
            reason,
        });
    }
}

/// Size of the `publish` frame this message becomes on the wire.
pub fn encoded_len(publish: &Publish) -> usize {
    protocol::encode(&ClientMessage::Publish(publish.clone())).len()
}

#[cfg(test)]
mod tests;
