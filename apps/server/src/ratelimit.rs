//! A token bucket: `burst` tokens, refilled continuously at `per_sec`.
//!
//! Used for the per-connection publish limit (CONTRACT §5.4), the per-IP upgrade limit and the
//! HTTP request limit (§4). Time is an argument, so the bucket is a pure value that tests drive
//! with made-up instants.
use std::time::{Duration, Instant};

use crate::config::RateLimit;

/// One bucket. Not shared: callers keep it in their task or behind their own lock.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    burst: f64,
    per_sec: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    #[must_use]
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        let burst = f64::from(limit.burst.max(1));
        Self {
            tokens: burst,
            burst,
            per_sec: limit.per_sec.max(0.001),
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        self.last = now;
    }

    /// Takes one token, or says how long until one is available.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let missing = 1.0 - self.tokens;
            Err(Duration::from_secs_f64(missing / self.per_sec))
        }
    }

    /// Whether the bucket has refilled completely (an idle client; its entry may be dropped).
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// Whole seconds for `Retry-After`: rounded up, at least 1 (CONTRACT §3).
#[must_use]
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_millis()
        .div_ceil(1000)
        .max(1)
        .try_into()
        .unwrap_or(u64::MAX)
}

/// Milliseconds for `retry_after_ms`: rounded up, at least 1.
#[must_use]
pub fn retry_after_ms(wait: Duration) -> u64 {
    let micros = wait.as_micros().div_ceil(1000).max(1);
    micros.try_into().unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(
            RateLimit {
                burst: 3,
                per_sec: 10.0,
            },
            t0,
        );
        assert!(b.try_take(t0).is_ok());
        assert!(b.try_take(t0).is_ok());
        assert!(b.try_take(t0).is_ok());
        let wait = b.try_take(t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100) && wait > Duration::from_millis(90));
        assert!(b.try_take(t0 + Duration::from_millis(100)).is_ok());
        assert!(b.is_full(t0 + Duration::from_secs(10)));
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_ms(Duration::from_micros(1500)), 2);
    }
}
