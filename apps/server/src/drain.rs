//! Graceful shutdown (CONTRACT §5.6): stop admitting, readiness 503, advise every client to
//! reconnect after a random delay spread over the drain window, close 1012, and wait for the
//! sessions at most the drain window.
//!
//! axum's `on_upgrade` spawns each socket on its own, so the server tracks sessions itself:
//! every session runs inside [`Drain::tracker`] and watches [`Drain::draining`].
use std::time::Duration;

use rand::Rng as _;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;

/// Shared shutdown state.
#[derive(Debug, Clone)]
pub struct Drain {
    // Fired once on SIGTERM/SIGINT (or the test's shutdown future): sessions send `reconnect`
    // and close; admission refuses; readiness turns 503.
    token: CancellationToken,
    // Every WebSocket session, so shutdown can wait for them to finish their close.
    tracker: TaskTracker,
    window: Duration,
}

impl Drain {
    /// Not draining yet; `window` is the drain window.
    #[must_use]
    pub fn new(window: Duration) -> Self {
        Self {
            token: CancellationToken::new(),
            tracker: TaskTracker::new(),
            window,
        }
    }

    /// Starts draining (idempotent) and logs `server_draining` once.
    pub fn start(&self, connections: usize) {
        if self.token.is_cancelled() {
            return;
        }
        tracing::info!(
            component = "server",
            event = "server_draining",
            drain_ms = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX),
            connections,
        );
        self.token.cancel();
    }

    /// Whether shutdown has begun.
    #[must_use]
    pub fn is_draining(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves when shutdown begins.
    pub fn draining(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    /// The tracker sessions are spawned into.
    #[must_use]
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// A reconnect delay for one client: uniformly random over the drain window, so clients
    /// do not all return at the same moment.
    #[must_use]
    pub fn advice_ms(&self) -> u64 {
        let window = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX);
        if window == 0 {
            return 0;
        }
        rand::rng().random_range(0..window)
    }

    /// Waits until every session has finished, at most the drain window (plus a moment for the
    /// last close frames). Returns whether all finished in time.
    pub async fn wait_sessions(&self) -> bool {
        self.tracker.close();
        let limit = self.window + Duration::from_millis(500);
        tokio::time::timeout(limit, self.tracker.wait())
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advice_is_spread_within_the_window() {
        let d = Drain::new(Duration::from_millis(5000));
        let advice: Vec<u64> = (0..200).map(|_| d.advice_ms()).collect();
        assert!(advice.iter().all(|&a| a < 5000));
        let min = advice.iter().min().copied().unwrap();
        let max = advice.iter().max().copied().unwrap();
        assert!(max - min > 1000, "spread {min}..{max}");
        assert_eq!(Drain::new(Duration::ZERO).advice_ms(), 0);
    }
}
