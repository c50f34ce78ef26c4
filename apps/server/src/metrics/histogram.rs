//! [`AtomicHistogram`]: a fixed-bucket histogram whose `observe` is a handful of relaxed atomic
//! adds, encoded through `prometheus-client`'s [`EncodeMetric`].
//!
//! Hand-written on purpose (see `docs/adr/0003-obs-metrics-prometheus-client.md`):
//! `prometheus_client::metrics::histogram::Histogram` takes a mutex on every observation, and
//! the publish path observes one value per message on every core. Here a value lands in one
//! bucket counter; the sum is kept in integer nanoseconds-equivalent units (the value × 1e9,
//! rounded) so it is an `AtomicU64` add as well. A scrape reads the counters one by one: a
//! scrape racing observations may see a bucket and the count a few observations apart, which
//! Prometheus tolerates (the same holds for the official Go client's lock-free histograms).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Buckets for WebSocket-scale latencies, in seconds: 0.5 ms … 10 s. A loopback ack takes
/// well under a millisecond, a healthy internet round trip 20–200 ms (200 ms is the contract's
/// latency threshold, so it is a bucket edge), and a dying link seconds.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0,
    10.0,
];

/// Sum scale: values are added as `round(v × SCALE)`, so a sum in seconds keeps nanoseconds.
const SCALE: f64 = 1e9;

/// A histogram with the upper bounds given at construction (plus `+Inf`). Clone freely: the
/// clones share the counters.
#[derive(Debug, Clone)]
pub struct AtomicHistogram {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    bounds: Vec<f64>,
    // One counter per bound, plus the last for values above every bound.
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_scaled: AtomicU64,
}

impl AtomicHistogram {
    /// A histogram over `bounds` (ascending upper bounds).
    #[must_use]
    pub fn new(bounds: &[f64]) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "ascending bounds");
        Self {
            inner: Arc::new(Inner {
                bounds: bounds.to_vec(),
                buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                count: AtomicU64::new(0),
                sum_scaled: AtomicU64::new(0),
            }),
        }
    }

    /// The latency histogram of this server ([`LATENCY_BUCKETS`]).
    #[must_use]
    pub fn latency() -> Self {
        Self::new(&LATENCY_BUCKETS)
    }

    /// Records one value. Negative and non-finite values are ignored (a clock step backwards,
    /// a hostile client report): they would corrupt the sum.
    pub fn observe(&self, v: f64) {
        if !v.is_finite() || v < 0.0 {
            return;
        }
        let i = self.inner.bounds.partition_point(|b| *b < v);
        self.inner.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.inner.count.fetch_add(1, Ordering::Relaxed);
        // Saturating conversion: a value beyond u64 range (centuries) adds u64::MAX.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let scaled = (v * SCALE).round() as u64;
        self.inner.sum_scaled.fetch_add(scaled, Ordering::Relaxed);
    }

    /// Records a duration in seconds.
    pub fn observe_duration(&self, d: std::time::Duration) {
        self.observe(d.as_secs_f64());
    }

    /// `(sum, count, per-bucket counts with their upper bounds)`; the last bucket is `+Inf`.
    #[must_use]
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets = self
            .inner
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.inner.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect();
        #[allow(clippy::cast_precision_loss)]
        let sum = self.inner.sum_scaled.load(Ordering::Relaxed) as f64 / SCALE;
        (sum, self.inner.count.load(Ordering::Relaxed), buckets)
    }

    /// The value below which `q` (0–1) of the observations lie, as the upper bound of the
    /// bucket holding that rank (`None` without observations). The same estimate a
    /// `histogram_quantile` over these buckets gives, coarser; for the fleet view.
    #[must_use]
    pub fn quantile_upper_bound(&self, q: f64) -> Option<f64> {
        let (_, count, buckets) = self.snapshot();
        if count == 0 {
            return None;
        }
        #[allow(clippy::cast_precision_loss, clippy::cast_sign_loss)]
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bound, n) in buckets {
            seen += n;
            if seen >= rank {
                return Some(bound);
            }
        }
        Some(f64::INFINITY)
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_first_bucket_at_or_above_them() {
        let h = AtomicHistogram::new(&[0.1, 0.2, 0.5]);
        for v in [0.05, 0.1, 0.15, 0.2, 0.4, 3.0] {
            h.observe(v);
        }
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 6);
        assert!((sum - 3.9).abs() < 1e-9, "{sum}");
        let counts: Vec<u64> = buckets.iter().map(|b| b.1).collect();
        // le=0.1 holds 0.05 and 0.1 (Prometheus buckets are inclusive upper bounds).
        assert_eq!(counts, vec![2, 2, 1, 1]);
        assert_eq!(buckets[3].0, f64::INFINITY);
    }

    #[test]
    fn hostile_values_are_ignored() {
        let h = AtomicHistogram::latency();
        for v in [f64::NAN, f64::INFINITY, -1.0, f64::NEG_INFINITY] {
            h.observe(v);
        }
        assert_eq!(h.snapshot().1, 0);
        assert_eq!(h.quantile_upper_bound(0.95), None);
    }

    #[test]
    fn quantile_is_the_bucket_bound_of_the_rank() {
        let h = AtomicHistogram::new(&[0.01, 0.1, 1.0]);
        for _ in 0..90 {
            h.observe(0.005);
        }
        for _ in 0..10 {
            h.observe(0.5);
        }
        assert_eq!(h.quantile_upper_bound(0.5), Some(0.01));
        assert_eq!(h.quantile_upper_bound(0.95), Some(1.0));
    }

    #[test]
    fn concurrent_observations_are_all_counted() {
        let h = AtomicHistogram::latency();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for i in 0..10_000u32 {
                        h.observe(f64::from(i % 100) / 1_000.0);
                    }
                });
            }
        });
        let (_, count, buckets) = h.snapshot();
        assert_eq!(count, 40_000);
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 40_000);
    }
}
