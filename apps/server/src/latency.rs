//! WebSocket Ping → Pong round trips, kept for `/health` `latency` (CONTRACT §3): the median
//! of the samples of the last 60 s, 0 with none.
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How far back `/health` looks.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Most samples kept; with many connections the oldest go first (the median of the newest few
/// thousand is as good an estimate and bounds the memory and the sort).
const MAX_SAMPLES: usize = 4_096;

/// Shared by every session (they record) and `/health` (it reads).
#[derive(Debug, Default)]
pub struct LatencyTracker {
    // A std mutex: held for a push or one sort, never across an await.
    samples: Mutex<VecDeque<(Instant, Duration)>>,
}

impl LatencyTracker {
    /// Records one round trip measured at `now`.
    pub fn record(&self, now: Instant, rtt: Duration) {
        let mut samples = self.samples.lock().expect("latency lock is never poisoned");
        if samples.len() == MAX_SAMPLES {
            samples.pop_front();
        }
        samples.push_back((now, rtt));
    }

    /// Median round trip in milliseconds over the window ending at `now`; 0 with no samples.
    pub fn median_ms(&self, now: Instant) -> f64 {
        let mut samples = self.samples.lock().expect("latency lock is never poisoned");
        while samples
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > WINDOW)
        {
            samples.pop_front();
        }
        let mut values: Vec<f64> = samples
            .iter()
            .map(|(_, d)| d.as_secs_f64() * 1_000.0)
            .collect();
        drop(samples);
        if values.is_empty() {
            return 0.0;
        }
        values.sort_by(f64::total_cmp);
        let mid = values.len() / 2;
        if values.len() % 2 == 1 {
            values[mid]
        } else {
            (values[mid - 1] + values[mid]) / 2.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_recent_samples() {
        let t = LatencyTracker::default();
        let t0 = Instant::now();
        assert_eq!(t.median_ms(t0), 0.0);
        t.record(t0, Duration::from_millis(500));
        let later = t0 + Duration::from_secs(61);
        for ms in [10, 30, 20] {
            t.record(later, Duration::from_millis(ms));
        }
        assert!((t.median_ms(later) - 20.0).abs() < 1e-9);
        t.record(later, Duration::from_millis(40));
        assert!((t.median_ms(later) - 25.0).abs() < 1e-9);
        assert_eq!(t.median_ms(later + Duration::from_secs(120)), 0.0);
    }
}
