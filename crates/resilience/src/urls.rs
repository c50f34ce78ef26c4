//! [`UrlRing`]: the server URLs of one client (CONTRACT §5.9) and which one the next attempt
//! uses.
//!
//! Several `tether serve` nodes on one database are one service (CONTRACT §12), so a client
//! given their URLs moves on when one of them lets it down:
//!
//! - after a **failed attempt** (refused, timed out, closed before `welcome`), the next attempt
//!   goes to the next URL, round-robin;
//! - after a **lost connection** too: the node that dropped it is the one most likely to be
//!   restarting, shedding or gone, and any other node has the same history, offsets and
//!   deduplication, so the resume (`since`/`epoch`) loses nothing there;
//! - a `welcome` keeps the URL that answered, so the connection after a long stable run starts
//!   where it was.
//!
//! The waits are unchanged: the backoff, the breaker and the server's advice still decide
//! *when*; this ring decides only *where*. One breaker covers all URLs, as it counts the
//! service's failures, not a node's.
use crate::connection::Event;

/// The URLs and the index of the one in use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UrlRing {
    urls: Vec<String>,
    current: usize,
}

impl UrlRing {
    /// A ring over `urls` (may be empty: the driver then has its one URL), starting at the
    /// first.
    pub fn new(urls: Vec<String>) -> Self {
        Self { urls, current: 0 }
    }

    /// The URL the next (or current) attempt uses; `None` when the ring is empty.
    pub fn current(&self) -> Option<&str> {
        self.urls.get(self.current).map(String::as_str)
    }

    /// The index of [`UrlRing::current`] (0 when empty).
    pub fn index(&self) -> usize {
        self.current
    }

    /// All URLs, in rotation order.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Moves to the next URL.
    pub fn advance(&mut self) {
        if !self.urls.is_empty() {
            self.current = (self.current + 1) % self.urls.len();
        }
    }

    /// Applies the rule of the module docs to one connection event. Returns whether the URL
    /// changed.
    pub fn on_event(&mut self, event: &Event) -> bool {
        match event {
            Event::RetryFailed { .. } | Event::ConnectionLost { .. } if self.urls.len() > 1 => {
                self.advance();
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::connection::Failure;

    fn failed() -> Event {
        Event::RetryFailed {
            attempt: 1,
            reason: Failure::Timeout,
            failures: 1,
            remaining: 9,
        }
    }

    #[test]
    fn failures_and_losses_rotate_round_robin_and_welcome_stays() {
        let mut ring = UrlRing::new(vec!["ws://a".into(), "ws://b".into(), "ws://c".into()]);
        assert_eq!(ring.current(), Some("ws://a"));
        assert!(ring.on_event(&failed()));
        assert_eq!(ring.current(), Some("ws://b"));
        let connected = Event::Connected {
            attempt: 2,
            connection_id: "c".into(),
            heartbeat: Duration::from_secs(30),
            max_message_bytes: 1,
        };
        assert!(!ring.on_event(&connected));
        assert_eq!(ring.current(), Some("ws://b"));
        let lost = Event::ConnectionLost {
            reason: Failure::DeadLink {
                silent_for: Duration::from_secs(75),
            },
            connected_for: Duration::from_secs(100),
        };
        assert!(ring.on_event(&lost));
        assert!(ring.on_event(&failed()));
        assert_eq!((ring.current(), ring.index()), (Some("ws://a"), 0));
    }

    #[test]
    fn one_url_or_none_never_moves() {
        let mut one = UrlRing::new(vec!["ws://a".into()]);
        assert!(!one.on_event(&failed()));
        assert_eq!(one.current(), Some("ws://a"));
        let mut none = UrlRing::default();
        assert!(!none.on_event(&failed()));
        none.advance();
        assert_eq!((none.current(), none.index()), (None, 0));
    }
}
