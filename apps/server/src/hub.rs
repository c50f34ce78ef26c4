//! The hub: per-channel fan-out of committed messages, in strict offset order.
//!
//! One task owns the store's commit announcements ([`StoreEvent`]), which arrive in commit
//! order with strictly increasing, gap-free offsets per channel. For every message that has
//! live subscribers the frame is encoded **once** and the same [`Utf8Bytes`] (a shared,
//! reference-counted buffer) is pushed onto each subscriber's bounded [`Outbound`] queue. A full
//! queue cuts that subscriber (slow consumer); the others are unaffected.
//!
//! **Hand-over from replay to live, without loss or repeat.** A subscriber first registers in
//! *catching-up* mode: the hub records it but pushes nothing. The session then replays from
//! the store everything after the client's `since`, page by page, paced by its socket. When a
//! page comes back short it calls [`Hub::try_go_live`] with the last offset it wrote: under the
//! hub's lock, if the hub has not yet fanned out anything on that channel beyond that offset,
//! the subscriber turns live and receives every later offset; otherwise the session reads the
//! missing range from the store and tries again. Everything the hub has seen is already
//! committed (events follow COMMIT), so the store read always covers the gap. Each subscriber
//! also carries the next offset it expects, so an announcement the hub processes late can
//! never be delivered twice.
//!
//! **Purges.** A purge (`DELETE …/messages`) pushes its `subscribed` notice to every
//! subscriber, live *and* catching up, tagged with the new epoch; the slot remembers that
//! epoch, and [`Hub::try_go_live`] refuses a subscriber whose replay is still on an older
//! epoch, so no replay of the old history can turn live past new-epoch offsets.
//!
//! **Locking.** Frames are encoded before the lock is taken (a first short lock only asks
//! which messages have live subscribers); the lock is held for the pushes alone.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use protocol::{ServerMessage, Subscribed, encode};
use tokio::sync::mpsc;

use crate::outbound::{Delivery, DeliveryKind, Outbound, epoch_tag};
use crate::store::{StoreEvent, StoredMessage};

/// A connection's identity inside the hub (a process-local counter, cheaper than its id).
pub type ConnKey = u64;

/// The fan-out registry. Clone freely; all clones share one registry.
#[derive(Debug, Clone, Default)]
pub struct Hub {
    // One std mutex over the registry: held for a registry edit or one batch's pushes (pushes
    // never wait, encoding happens before), never across an await.
    channels: Arc<Mutex<HashMap<Arc<str>, Slot>>>,
}

#[derive(Debug, Default)]
struct Slot {
    /// The channel's name, shared by every [`Delivery`] on it.
    name: Arc<str>,
    /// Highest offset the hub has fanned out on this channel since the slot exists (or since
    /// the last purge).
    seen: u64,
    /// The [`epoch_tag`] of the last purge seen while the slot exists (0: none).
    epoch: u64,
    subs: Vec<Sub>,
}

#[derive(Debug)]
struct Sub {
    conn: ConnKey,
    /// The session's number for this subscription, carried by every [`Delivery`].
    generation: u64,
    live: bool,
    /// The next offset this subscriber should get; smaller ones are skipped.
    next: u64,
    out: Arc<Outbound>,
}

/// What [`Hub::try_go_live`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoLive {
    /// The subscriber is live from `upto + 1`.
    Live,
    /// The hub has already fanned out up to this offset, or the channel was purged since the
    /// replay's epoch was read: replay (again) first.
    Behind(u64),
    /// The subscription is gone (unsubscribed, replaced, or cut).
    Gone,
}

impl Hub {
    /// An empty hub.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the task that fans out the store's announcements. It ends when the store drops
    /// its sender (the store closed).
    pub fn spawn(&self, mut events: mpsc::Receiver<StoreEvent>) -> tokio::task::JoinHandle<()> {
        let hub = self.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                match event {
                    StoreEvent::Committed(batch) => hub.dispatch(&batch),
                    StoreEvent::Purged(info) => hub.purged(&info.name, &info.epoch),
                }
            }
        })
    }

    /// Registers (or re-registers, replacing) `conn` on `channel` in catching-up mode, as the
    /// session's subscription number `generation`.
    pub fn register(&self, channel: &str, conn: ConnKey, generation: u64, out: Arc<Outbound>) {
        let mut channels = self.lock();
        let name: Arc<str> = Arc::from(channel);
        let slot = channels.entry(name.clone()).or_insert_with(|| Slot {
            name,
            ..Slot::default()
        });
        slot.subs.retain(|s| s.conn != conn);
        slot.subs.push(Sub {
            conn,
            generation,
            live: false,
            next: 0,
            out,
        });
    }

    /// Turns `conn` live on `channel` if the hub has fanned out nothing beyond `upto` and
    /// no purge happened after the replay's epoch (`epoch`, an [`epoch_tag`]) was read.
    pub fn try_go_live(&self, channel: &str, conn: ConnKey, upto: u64, epoch: u64) -> GoLive {
        let mut channels = self.lock();
        let Some(slot) = channels.get_mut(channel) else {
            return GoLive::Gone;
        };
        if slot.seen > upto || (slot.epoch != 0 && slot.epoch != epoch) {
            return GoLive::Behind(slot.seen);
        }
        match slot.subs.iter_mut().find(|s| s.conn == conn) {
            Some(sub) => {
                sub.live = true;
                sub.next = upto + 1;
                GoLive::Live
            }
            None => GoLive::Gone,
        }
    }

    /// Removes `conn` from `channel`.
    pub fn unregister(&self, channel: &str, conn: ConnKey) {
        let mut channels = self.lock();
        if let Some(slot) = channels.get_mut(channel) {
            slot.subs.retain(|s| s.conn != conn);
            if slot.subs.is_empty() {
                channels.remove(channel);
            }
        }
    }

    /// Subscriptions (live or catching up) across all channels.
    #[must_use]
    pub fn subscription_count(&self) -> usize {
        self.lock().values().map(|s| s.subs.len()).sum()
    }

    /// Fans out one committed batch.
    pub fn dispatch(&self, batch: &[StoredMessage]) {
        // Encode outside the lock, once per message that has a live subscriber now. A
        // subscriber that turns live between the two locks gets a frame encoded under the
        // lock (rare), so nobody misses one.
        let wanted: Vec<bool> = {
            let channels = self.lock();
            batch
                .iter()
                .map(|m| {
                    channels
                        .get(&*m.channel)
                        .is_some_and(|s| s.subs.iter().any(|s| s.live))
                })
                .collect()
        };
        let mut frames: Vec<Option<Utf8Bytes>> = batch
            .iter()
            .zip(wanted)
            .map(|(m, wanted)| wanted.then(|| encode_message(m)))
            .collect();
        let mut channels = self.lock();
        for (msg, frame) in batch.iter().zip(frames.iter_mut()) {
            let Some(slot) = channels.get_mut(&*msg.channel) else {
                continue;
            };
            slot.seen = slot.seen.max(msg.offset);
            let mut cut_any = false;
            for sub in slot.subs.iter_mut().filter(|s| s.live) {
                if msg.offset < sub.next {
                    continue;
                }
                sub.next = msg.offset + 1;
                let frame = frame.get_or_insert_with(|| encode_message(msg)).clone();
                let delivery = Delivery {
                    channel: slot.name.clone(),
                    generation: sub.generation,
                    kind: DeliveryKind::Message(msg.offset),
                    frame,
                };
                if sub.out.push(delivery).is_err() {
                    cut_any = true;
                } else {
                    crate::metrics::delivered(1);
                }
            }
            if cut_any {
                slot.subs.retain(|s| !s.out.is_cut());
                if slot.subs.is_empty() {
                    channels.remove(&*msg.channel);
                }
            }
        }
    }

    /// A channel's history was reset (`DELETE /v1/channels/{channel}/messages`): offsets
    /// restart at 1 under a new epoch. Every subscriber, live or still replaying, is told in
    /// order with its deliveries by a `subscribed` frame with the new epoch, offset 0 and
    /// `recovered: false`, so a client forgets its offsets instead of taking offset 1 for a
    /// repeat (a replaying session restarts its replay on the new epoch).
    pub fn purged(&self, channel: &str, epoch: &str) {
        let notice = Utf8Bytes::from(encode(&ServerMessage::Subscribed(Subscribed {
            channel: channel.to_owned(),
            epoch: epoch.to_owned(),
            offset: 0,
            recovered: false,
            replayed: 0,
        })));
        let tag = epoch_tag(epoch);
        let mut channels = self.lock();
        if let Some(slot) = channels.get_mut(channel) {
            slot.seen = 0;
            slot.epoch = tag;
            for sub in &mut slot.subs {
                sub.next = 1;
                // A full queue is cut (slow consumer) like any other push.
                let _ = sub.out.push(Delivery {
                    channel: slot.name.clone(),
                    generation: sub.generation,
                    kind: DeliveryKind::Purged(tag),
                    frame: notice.clone(),
                });
            }
            slot.subs.retain(|s| !s.out.is_cut());
            if slot.subs.is_empty() {
                channels.remove(channel);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Slot>> {
        self.channels.lock().expect("hub lock is never poisoned")
    }
}

/// The `message` frame of a stored message, as shared text.
#[must_use]
pub fn encode_message(msg: &StoredMessage) -> Utf8Bytes {
    Utf8Bytes::from(encode(&ServerMessage::Message(msg.to_delivery())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::Timestamp;

    fn msg(channel: &Arc<str>, offset: u64) -> StoredMessage {
        StoredMessage {
            channel: channel.clone(),
            offset,
            id: format!("m{offset}"),
            sub: "u".into(),
            data: serde_json::json!(offset),
            published_at: Timestamp::from_unix_millis(0),
        }
    }

    fn offsets(out: &Outbound) -> Vec<u64> {
        let mut got = Vec::new();
        while let Some(d) = out.try_pop() {
            let v: serde_json::Value = serde_json::from_str(d.frame.as_str()).unwrap();
            got.push(v["offset"].as_u64().unwrap());
        }
        got
    }

    #[test]
    fn catch_up_then_live_without_gap_or_repeat() {
        let hub = Hub::new();
        let ch: Arc<str> = Arc::from("room:1");
        let out = Arc::new(Outbound::new(100));
        hub.register("room:1", 1, 7, out.clone());
        // Announced while the subscriber replays: not pushed, and go-live is refused.
        hub.dispatch(&[msg(&ch, 1), msg(&ch, 2)]);
        assert!(out.is_empty());
        assert_eq!(hub.try_go_live("room:1", 1, 0, 0), GoLive::Behind(2));
        assert_eq!(hub.try_go_live("room:1", 1, 2, 0), GoLive::Live);
        // A late duplicate announcement of an old offset is skipped.
        hub.dispatch(&[msg(&ch, 2), msg(&ch, 3), msg(&ch, 4)]);
        assert_eq!(offsets(&out), vec![3, 4]);
    }

    #[test]
    fn one_encoding_shared_and_slow_consumer_cut_alone() {
        let hub = Hub::new();
        let ch: Arc<str> = Arc::from("c");
        let fast = Arc::new(Outbound::new(10));
        let slow = Arc::new(Outbound::new(1));
        for (conn, out) in [(1, &fast), (2, &slow)] {
            hub.register("c", conn, conn, out.clone());
            assert_eq!(hub.try_go_live("c", conn, 0, 0), GoLive::Live);
        }
        hub.dispatch(&[msg(&ch, 1), msg(&ch, 2), msg(&ch, 3)]);
        assert!(slow.is_cut());
        assert_eq!(offsets(&fast), vec![1, 2, 3]);
        assert_eq!(hub.subscription_count(), 1);
        hub.unregister("c", 1);
        assert_eq!(hub.subscription_count(), 0);
        assert_eq!(hub.try_go_live("c", 1, 0, 0), GoLive::Gone);
    }

    #[test]
    fn a_purge_tells_replaying_subscribers_too_and_blocks_an_old_epoch_going_live() {
        let hub = Hub::new();
        let ch: Arc<str> = Arc::from("p");
        let replaying = Arc::new(Outbound::new(10));
        let live = Arc::new(Outbound::new(10));
        hub.register("p", 1, 3, replaying.clone());
        hub.register("p", 2, 4, live.clone());
        let old = epoch_tag("e_old");
        assert_eq!(hub.try_go_live("p", 2, 0, old), GoLive::Live);
        hub.dispatch(&[msg(&ch, 1)]);
        hub.purged("p", "e_new");
        for (out, generation) in [(&replaying, 3), (&live, 4)] {
            let notices: Vec<Delivery> = std::iter::from_fn(|| out.try_pop()).collect();
            let last = notices.last().expect("a notice");
            assert_eq!(last.kind, DeliveryKind::Purged(epoch_tag("e_new")));
            assert_eq!(last.generation, generation);
            let v: serde_json::Value = serde_json::from_str(last.frame.as_str()).unwrap();
            assert_eq!(v["type"], "subscribed");
            assert_eq!(v["epoch"], "e_new");
            assert_eq!(v["offset"], 0);
            assert_eq!(v["recovered"], false);
        }
        // The replay read the old epoch up to offset 1: it may not turn live on the new one.
        assert_eq!(hub.try_go_live("p", 1, 1, old), GoLive::Behind(0));
        assert_eq!(hub.try_go_live("p", 1, 0, epoch_tag("e_new")), GoLive::Live);
        hub.dispatch(&[msg(&ch, 1)]);
        assert_eq!(offsets(&replaying), vec![1]);
        assert_eq!(offsets(&live), vec![1]);
    }
}
