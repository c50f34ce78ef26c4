//! The bounded outbound queue of one connection: live frames the hub fans out wait here until
//! the session writes them to the socket.
//!
//! Pushing never waits: the hub must not stall on one reader. When the queue is full the
//! connection is a slow consumer; the queue flips to *cut*, drops what it held, and wakes the
//! session, which closes with 1013 (`slow_consumer_disconnected`). Replays never pass through
//! here: they are written straight from the store, paced by the socket (see `session`).
//!
//! Every frame is a [`Delivery`] tagged with the subscription it is for (channel and the
//! session's generation number of that subscription), so the session drops frames queued for
//! a subscription that has since been ended or replaced instead of writing them after the
//! `unsubscribed` or the new `subscribed`.
//!
//! Hand-rolled instead of a tokio `mpsc`: an idle connection's queue holds no allocation (an
//! empty `VecDeque`), which matters at 10,000 idle connections.
use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash as _, Hasher as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;

/// One frame for one subscription of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The channel.
    pub channel: Arc<str>,
    /// The session's number for the subscription this frame belongs to.
    pub generation: u64,
    /// What the frame is.
    pub kind: DeliveryKind,
    /// The encoded frame, shared by every subscriber.
    pub frame: Utf8Bytes,
}

/// What a [`Delivery`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryKind {
    /// A `message` frame at this offset.
    Message(u64),
    /// The `subscribed` notice of a purge; the new epoch's [`epoch_tag`].
    Purged(u64),
}

/// A short, stable tag of an epoch string, so a subscription remembers which epoch it is on
/// in 8 bytes instead of a heap string (epochs are random; a collision would need 2^32 purges
/// of one channel).
#[must_use]
pub fn epoch_tag(epoch: &str) -> u64 {
    // `DefaultHasher::new()` uses fixed keys: the same epoch gives the same tag everywhere.
    let mut h = DefaultHasher::new();
    epoch.hash(&mut h);
    h.finish()
}

/// The queue was full: the connection has been cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

/// One connection's queue, shared by the hub (producer) and the session (consumer).
#[derive(Debug)]
pub struct Outbound {
    // A std mutex: held only for a push or a pop, never across an await.
    queue: Mutex<VecDeque<Delivery>>,
    capacity: usize,
    // Wakes the session when a frame arrives (a stored permit covers the race with `recv`).
    ready: Notify,
    // Set once when the queue overflows; `cut_notice` wakes a session blocked on a write.
    cut: AtomicBool,
    cut_notice: Notify,
}

impl Outbound {
    /// An empty queue holding at most `capacity` frames.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            ready: Notify::new(),
            cut: AtomicBool::new(false),
            cut_notice: Notify::new(),
        }
    }

    /// Queues a frame, or cuts the connection when the queue is full.
    pub fn push(&self, frame: Delivery) -> Result<(), Overflow> {
        if self.cut.load(Ordering::Acquire) {
            return Err(Overflow);
        }
        let mut queue = self.queue.lock().expect("outbound lock is never poisoned");
        if queue.len() >= self.capacity {
            queue.clear();
            queue.shrink_to_fit();
            drop(queue);
            self.cut.store(true, Ordering::Release);
            self.cut_notice.notify_one();
            return Err(Overflow);
        }
        queue.push_back(frame);
        drop(queue);
        self.ready.notify_one();
        Ok(())
    }

    /// Frames waiting now.
    pub fn len(&self) -> usize {
        self.queue
            .lock()
            .expect("outbound lock is never poisoned")
            .len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the connection was cut for being slow.
    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::Acquire)
    }

    /// The next frame, waiting for one. Single consumer.
    pub async fn recv(&self) -> Delivery {
        loop {
            if let Some(frame) = self.try_pop() {
                return frame;
            }
            self.ready.notified().await;
        }
    }

    /// The next frame, if one is waiting.
    pub fn try_pop(&self) -> Option<Delivery> {
        let mut queue = self.queue.lock().expect("outbound lock is never poisoned");
        let frame = queue.pop_front();
        if queue.is_empty() && queue.capacity() > 64 {
            // Give a burst's memory back so an idle connection stays small.
            queue.shrink_to_fit();
        }
        frame
    }

    /// Resolves once the queue has been cut (at once if it already was).
    pub async fn cut(&self) {
        while !self.is_cut() {
            self.cut_notice.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &'static str) -> Delivery {
        Delivery {
            channel: Arc::from("c"),
            generation: 1,
            kind: DeliveryKind::Message(1),
            frame: Utf8Bytes::from_static(text),
        }
    }

    #[tokio::test]
    async fn delivers_in_order_then_cuts_when_full() {
        let q = Outbound::new(2);
        q.push(frame("a")).unwrap();
        q.push(frame("b")).unwrap();
        assert_eq!(q.recv().await.frame.as_str(), "a");
        q.push(frame("c")).unwrap();
        assert_eq!(q.push(frame("d")), Err(Overflow));
        assert!(q.is_cut());
        assert!(q.is_empty());
        q.cut().await;
        assert_eq!(q.push(frame("e")), Err(Overflow));
    }

    #[test]
    fn epoch_tags_are_stable_and_distinct() {
        assert_eq!(epoch_tag("e_1"), epoch_tag("e_1"));
        assert_ne!(epoch_tag("e_1"), epoch_tag("e_2"));
    }
}
