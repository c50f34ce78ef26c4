//! [`LatencyWindow`]: the median of round-trip samples over a sliding time window.
//!
//! `/health` reports the median WebSocket Ping → Pong round trip over the last 60 s. The
//! server records each sample with the time it arrived and asks for the median with the
//! current time; the window never reads a clock itself.

use std::{
    collections::VecDeque,
    ops::Add,
    time::{Duration, Instant},
};

/// Round-trip samples with the time each arrived, bounded in age and in count.
///
/// `T` is the timestamp type: `std::time::Instant` in the server, anything ordered that can
/// add a `Duration` in tests (a `Duration` since some origin works well).
///
/// A sample taken at `t` is in the window at `now` while `now - t <= span` (a sample exactly
/// `span` old still counts). At most `capacity` samples are kept; beyond that the oldest go,
/// so a burst of connections cannot grow memory without bound.
#[derive(Debug, Clone)]
pub struct LatencyWindow<T = Instant> {
    /// How far back samples count.
    span: Duration,
    /// The most samples kept.
    capacity: usize,
    /// In arrival order, which is time order unless the caller records out of order.
    samples: VecDeque<(T, Duration)>,
}

impl<T> LatencyWindow<T> {
    /// The window of CONTRACT §3: the last 60 s.
    pub const DEFAULT_SPAN: Duration = Duration::from_secs(60);
    /// Default bound on the samples kept: a full server (10 000 connections, one ping each per
    /// 30 s) yields about 20 000 a minute, so the median then covers the latest ~30 s.
    pub const DEFAULT_CAPACITY: usize = 10_000;

    /// An empty window over `span` keeping at most `capacity` samples (at least one).
    #[must_use]
    pub fn new(span: Duration, capacity: usize) -> Self {
        LatencyWindow {
            span,
            capacity: capacity.max(1),
            samples: VecDeque::new(),
        }
    }

    /// How many samples are held (some may have aged out since the last `record`/`prune`).
    #[must_use]
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no samples are held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

impl<T: Copy + PartialOrd + Add<Duration, Output = T>> LatencyWindow<T> {
    /// Adds the round trip `rtt` measured at `at`, dropping samples too old for the window at
    /// `at` and, past the capacity, the oldest ones.
    pub fn record(&mut self, at: T, rtt: Duration) {
        self.prune(at);
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back((at, rtt));
    }

    /// Drops the samples that are out of the window at `now`.
    pub fn prune(&mut self, now: T) {
        while let Some(&(at, _)) = self.samples.front() {
            if self.in_window(at, now) {
                break;
            }
            self.samples.pop_front();
        }
    }

    /// The median round trip of the samples in the window at `now`; zero when there are none.
    /// With an even count it is the mean of the two middle samples.
    #[must_use]
    pub fn median(&self, now: T) -> Duration {
        let mut current: Vec<Duration> = self
            .samples
            .iter()
            .filter(|(at, _)| self.in_window(*at, now))
            .map(|(_, rtt)| *rtt)
            .collect();
        let count = current.len();
        if count == 0 {
            return Duration::ZERO;
        }
        let (_, &mut upper, _) = current.select_nth_unstable(count / 2);
        if count % 2 == 1 {
            return upper;
        }
        let lower = current[..count / 2]
            .iter()
            .copied()
            .max()
            .expect("invariant: an even, non-zero count leaves samples below the middle");
        // `lower <= upper` by selection, so this neither overflows nor underflows.
        lower + (upper - lower) / 2
    }

    /// Whether a sample taken at `at` still counts at `now`. Written as `at + span >= now`
    /// so a sample from the future (a caller recording out of order) counts and nothing
    /// subtracts past zero.
    fn in_window(&self, at: T, now: T) -> bool {
        at + self.span >= now
    }
}

impl<T> Default for LatencyWindow<T> {
    fn default() -> Self {
        LatencyWindow::new(Self::DEFAULT_SPAN, Self::DEFAULT_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn empty_window_reports_zero() {
        let window = LatencyWindow::<Duration>::default();
        assert_eq!(window.median(secs(100)), Duration::ZERO);
        assert!(window.is_empty());
    }

    #[test]
    fn median_of_an_odd_count_is_the_middle_sample() {
        let mut window = LatencyWindow::<Duration>::default();
        for (t, rtt) in [(1, 300), (2, 10), (3, 50), (4, 40), (5, 1000)] {
            window.record(secs(t), ms(rtt));
        }
        assert_eq!(window.median(secs(5)), ms(50));
    }

    #[test]
    fn median_of_an_even_count_is_the_mean_of_the_middle_two() {
        let mut window = LatencyWindow::<Duration>::default();
        for (t, rtt) in [(1, 10), (2, 40), (3, 20), (4, 1000)] {
            window.record(secs(t), ms(rtt));
        }
        assert_eq!(window.median(secs(4)), ms(30));
        let mut odd_pair = LatencyWindow::<Duration>::default();
        odd_pair.record(secs(1), Duration::from_nanos(1));
        odd_pair.record(secs(1), Duration::from_nanos(2));
        assert_eq!(odd_pair.median(secs(1)), Duration::from_nanos(1));
        let mut high = LatencyWindow::<Duration>::default();
        high.record(secs(1), Duration::from_nanos(3));
        high.record(secs(1), Duration::from_nanos(5));
        assert_eq!(high.median(secs(1)), Duration::from_nanos(4));
    }

    #[test]
    fn a_sample_exactly_span_old_counts_and_one_nanosecond_more_does_not() {
        let mut window = LatencyWindow::<Duration>::default();
        window.record(secs(10), ms(500));
        window.record(secs(20), ms(100));
        window.record(secs(30), ms(100));
        // At 70 s the 10 s sample is exactly 60 s old: [500, 100, 100] → 100.
        assert_eq!(window.median(secs(70)), ms(100));
        // Ages out just after; [100, 100].
        assert_eq!(window.median(secs(70) + Duration::from_nanos(1)), ms(100));
        // At 80 s only the 20 s and 30 s samples remain; at 91 s none do.
        assert_eq!(window.median(secs(80)), ms(100));
        assert_eq!(window.median(secs(91)), Duration::ZERO);
    }

    #[test]
    fn old_samples_stop_counting_before_they_are_pruned() {
        let mut window = LatencyWindow::<Duration>::default();
        window.record(secs(0), ms(900));
        window.record(secs(50), ms(20));
        assert_eq!(window.len(), 2);
        assert_eq!(window.median(secs(61)), ms(20));
        window.prune(secs(61));
        assert_eq!(window.len(), 1);
    }

    #[test]
    fn recording_prunes_what_the_window_no_longer_holds() {
        let mut window = LatencyWindow::<Duration>::default();
        for t in 0..100 {
            window.record(secs(t), ms(t));
        }
        // At 99 s the window holds samples from 39 s on.
        assert_eq!(window.len(), 61);
        assert_eq!(window.median(secs(99)), ms(69));
    }

    #[test]
    fn capacity_drops_the_oldest_samples() {
        let mut window = LatencyWindow::<Duration>::new(secs(60), 3);
        for (t, rtt) in [(1, 1000), (2, 1000), (3, 10), (4, 20), (5, 30)] {
            window.record(secs(t), ms(rtt));
        }
        assert_eq!(window.len(), 3);
        assert_eq!(window.median(secs(5)), ms(20));
        let mut tiny = LatencyWindow::<Duration>::new(secs(60), 0);
        tiny.record(secs(1), ms(7));
        assert_eq!(
            tiny.median(secs(1)),
            ms(7),
            "capacity 0 still keeps one sample"
        );
    }

    #[test]
    fn out_of_order_samples_are_judged_by_their_own_time() {
        let mut window = LatencyWindow::<Duration>::default();
        window.record(secs(100), ms(10));
        window.record(secs(30), ms(999)); // recorded late, already out of the window at 100 s
        window.record(secs(101), ms(30));
        assert_eq!(window.median(secs(101)), ms(20));
        // A sample from the future (clock skew between callers) counts.
        window.record(secs(200), ms(50));
        assert_eq!(window.median(secs(150)), ms(50));
    }

    #[test]
    fn works_with_std_instant() {
        // The server's timestamp type. Only the test reads the clock, to get a base instant.
        #[allow(clippy::disallowed_methods)]
        let base = Instant::now();
        let mut window = LatencyWindow::<Instant>::default();
        window.record(base, ms(41));
        window.record(base + secs(1), ms(45));
        window.record(base + secs(2), ms(40));
        assert_eq!(window.median(base + secs(2)), ms(41));
        assert_eq!(window.median(base + secs(63)), Duration::ZERO);
    }
}
