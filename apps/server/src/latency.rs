//! WebSocket Ping → Pong round trips shared by every session, for `/health` `latency`
//! (CONTRACT §3): a lock around the `health` crate's [`LatencyWindow`] (the median over the
//! last 60 s, 0 with no samples).
use std::sync::Mutex;
use std::time::{Duration, Instant};

use health::LatencyWindow;

/// Shared by every session (they record) and `/health` (it reads).
#[derive(Debug)]
pub struct LatencyTracker {
    // A std mutex: held for one push or one median, never across an await.
    window: Mutex<LatencyWindow<Instant>>,
}

impl Default for LatencyTracker {
    fn default() -> Self {
        Self {
            window: Mutex::new(LatencyWindow::new(
                LatencyWindow::<Instant>::DEFAULT_SPAN,
                LatencyWindow::<Instant>::DEFAULT_CAPACITY,
            )),
        }
    }
}

impl LatencyTracker {
    /// Records one round trip measured at `now`.
    pub fn record(&self, now: Instant, rtt: Duration) {
        self.lock().record(now, rtt);
    }

    /// The median round trip over the window ending at `now`; zero with no samples.
    pub fn median(&self, now: Instant) -> Duration {
        let mut window = self.lock();
        window.prune(now);
        window.median(now)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LatencyWindow<Instant>> {
        self.window.lock().expect("latency lock is never poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_recent_samples() {
        let t = LatencyTracker::default();
        let t0 = Instant::now();
        assert_eq!(t.median(t0), Duration::ZERO);
        t.record(t0, Duration::from_millis(500));
        let later = t0 + Duration::from_secs(61);
        for ms in [10, 30, 20] {
            t.record(later, Duration::from_millis(ms));
        }
        assert_eq!(t.median(later), Duration::from_millis(20));
        assert_eq!(t.median(later + Duration::from_secs(120)), Duration::ZERO);
    }
}
