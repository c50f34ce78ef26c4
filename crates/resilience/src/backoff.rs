//! [`Backoff`]: exponential retry delays with jitter that never collapses, and the attempt budget.
//!
//! The un-jittered delay before retry `n` (1-based) is `initial × 2^(n-1)`, capped at `max`:
//! 1 s, 2 s, 4 s, 8 s, 16 s, 30 s, 30 s, … with the defaults of CONTRACT §8.
//!
//! # Jitter: "equal jitter", uniformly within `[d/2, d]`
//!
//! The delay actually waited is drawn uniformly from `[d/2, d]` where `d` is the un-jittered
//! delay. Why this and not the alternatives the anchors list:
//!
//! - Socket.IO's ±50 % randomisation collapses at the cap (it clamps *after* jittering, so
//!   every client waits exactly the maximum); here the cap applies to `d` *before* jittering,
//!   so at the cap the delay still spreads over `[15 s, 30 s]`.
//! - Full jitter (`[0, d]`) can draw a delay of zero, hammering a server that just went away,
//!   and lets the first retry land at once for a whole crowd; equal jitter keeps half of `d`
//!   as a floor while still spreading a crowd over a window `d/2` wide on every attempt —
//!   including the first retry after a healthy connection (`[500 ms, 1000 ms]`).
//! - Decorrelated jitter (`min(cap, rand(base, prev × 3))`) spreads well but its per-attempt
//!   bounds depend on the previous draw; with a budget of only 10 attempts the simple per-attempt
//!   bounds of equal jitter are easier to state, test and reason about in the crowd simulation.
//! - `maxRetryDelay` stays a true maximum: no client ever waits longer than 30 s between tries.
//!
//! The RNG is a ChaCha8 seeded from the configuration, owned by the machine, so a schedule is
//! reproducible from its seed in tests.
//!
//! # The budget
//!
//! [`Backoff::record_failure`] counts failed attempts; once `max_attempts` (10) have failed the
//! budget is spent and the connection machine goes to `FAILED`. [`Backoff::reset`] (after a
//! successful connection, an explicit retry or the network coming back) refills it.
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The numbers a [`Backoff`] works with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    /// The un-jittered delay before the first retry (`initialRetryDelay`, 1000 ms).
    pub initial: Duration,
    /// The cap on the un-jittered delay (`maxRetryDelay`, 30000 ms).
    pub max: Duration,
    /// Failed attempts before giving up (`maxRetryAttempts`, 10).
    pub max_attempts: u32,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(protocol::defaults::INITIAL_RETRY_DELAY_MS),
            max: Duration::from_millis(protocol::defaults::MAX_RETRY_DELAY_MS),
            max_attempts: protocol::defaults::MAX_RETRY_ATTEMPTS,
        }
    }
}

impl BackoffConfig {
    /// The un-jittered delay `d` before retry `retry` (1-based; 0 is treated as 1).
    pub fn base_delay(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(63);
        let factor = 1u128 << exp;
        let ms = (self.initial.as_millis().saturating_mul(factor)).min(self.max.as_millis());
        Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    /// The inclusive bounds `[d/2, d]` the jittered delay before retry `retry` lies within.
    pub fn bounds(&self, retry: u32) -> (Duration, Duration) {
        let d = self.base_delay(retry);
        (d / 2, d)
    }
}

/// Retry delays and the attempt budget of one connection.
#[derive(Clone, Debug)]
pub struct Backoff {
    config: BackoffConfig,
    rng: ChaCha8Rng,
    /// Retries scheduled in the current run (drives the delay's growth).
    step: u32,
    /// Failed attempts since the budget was last refilled.
    failures: u32,
}

impl Backoff {
    /// A fresh backoff whose jitter comes from a ChaCha8 RNG seeded with `seed`.
    pub fn new(config: BackoffConfig, seed: u64) -> Self {
        Self {
            config,
            rng: ChaCha8Rng::seed_from_u64(seed),
            step: 0,
            failures: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BackoffConfig {
        &self.config
    }

    /// Draws the delay before the next retry and advances the step: within `[d/2, d]` for the
    /// retry's un-jittered delay `d` (see the module docs).
    pub fn next_delay(&mut self) -> Duration {
        self.step = self.step.saturating_add(1);
        self.jittered(self.step)
    }

    /// Draws a delay within the bounds of retry `retry` without moving the step.
    pub fn jittered(&mut self, retry: u32) -> Duration {
        let (lo, hi) = self.config.bounds(retry);
        let (lo, hi) = (duration_ms(lo), duration_ms(hi));
        Duration::from_millis(self.rng.random_range(lo..=hi))
    }

    /// Draws a uniform extra wait within `[0, max]` (used to spread server-advised waits).
    pub fn spread(&mut self, max: Duration) -> Duration {
        Duration::from_millis(self.rng.random_range(0..=duration_ms(max)))
    }

    /// Counts one failed attempt. Returns `true` while budget remains, `false` once spent.
    pub fn record_failure(&mut self) -> bool {
        self.failures = self
            .failures
            .saturating_add(1)
            .min(self.config.max_attempts);
        !self.is_exhausted()
    }

    /// Whether `max_attempts` attempts have failed since the last reset.
    pub fn is_exhausted(&self) -> bool {
        self.failures >= self.config.max_attempts
    }

    /// Failed attempts since the budget was last refilled.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Attempts left in the budget.
    pub fn remaining(&self) -> u32 {
        self.config.max_attempts - self.failures
    }

    /// The retry step of the last drawn delay (0 when none since the last reset).
    pub fn step(&self) -> u32 {
        self.step
    }

    /// Refills the budget and restarts the delays at `initial`.
    pub fn reset(&mut self) {
        self.step = 0;
        self.failures = 0;
    }

    /// Takes `steps` doublings off the next delay (the flap guard's decay), never below the
    /// initial delay; keeps the count of failed attempts.
    pub fn decay_step(&mut self, steps: u32) {
        self.step = self.step.saturating_sub(steps);
    }

    /// Restarts the delays at `initial` but keeps the count of failed attempts.
    pub fn reset_step(&mut self) {
        self.step = 0;
    }

    /// Refills the budget but keeps the delay step (a connection that did not stay up long
    /// enough to count as healthy keeps growing the delay, so a flapping server is not hammered).
    pub fn reset_budget(&mut self) {
        self.failures = 0;
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(d: Duration) -> u128 {
        d.as_millis()
    }

    #[test]
    fn base_delays_double_to_the_cap() {
        let c = BackoffConfig::default();
        let delays: Vec<_> = (1..=8).map(|n| ms(c.base_delay(n))).collect();
        assert_eq!(delays, [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        assert_eq!(ms(c.base_delay(0)), 1000);
        assert_eq!(ms(c.base_delay(u32::MAX)), 30000);
    }

    #[test]
    fn schedule_is_reproducible_from_the_seed() {
        let draw = |seed| {
            let mut b = Backoff::new(BackoffConfig::default(), seed);
            (0..10).map(|_| ms(b.next_delay())).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        expect_test::expect![[r#"
            [
                579,
                1168,
                3409,
                6907,
                12810,
                20390,
                16245,
                27740,
                20467,
                29850,
            ]
        "#]]
        .assert_debug_eq(&draw(7));
    }

    #[test]
    fn budget_is_ten_failed_attempts() {
        let mut b = Backoff::new(BackoffConfig::default(), 1);
        for n in 1..10 {
            assert!(b.record_failure(), "attempt {n} leaves budget");
            assert_eq!(b.remaining(), 10 - n);
        }
        assert!(!b.record_failure());
        assert!(b.is_exhausted());
        assert!(!b.record_failure(), "stays spent, never over-counts");
        assert_eq!(b.failures(), 10);
        b.reset();
        assert_eq!((b.failures(), b.step(), b.remaining()), (0, 0, 10));
    }

    #[test]
    fn reset_budget_keeps_the_step() {
        let mut b = Backoff::new(BackoffConfig::default(), 1);
        b.next_delay();
        b.next_delay();
        b.record_failure();
        b.reset_budget();
        assert_eq!((b.failures(), b.step()), (0, 2));
        b.reset_step();
        assert_eq!(b.step(), 0);
    }

    #[test]
    fn jitter_spreads_at_the_cap_and_on_the_first_retry() {
        // 1000 different clients (seeds): their first retry and a retry at the cap must both
        // spread over most of the documented window, never collapse onto one value.
        for retry in [1u32, 6, 10] {
            let (lo, hi) = BackoffConfig::default().bounds(retry);
            let draws: Vec<u128> = (0..1000u64)
                .map(|seed| ms(Backoff::new(BackoffConfig::default(), seed).jittered(retry)))
                .collect();
            let min = *draws.iter().min().unwrap();
            let max = *draws.iter().max().unwrap();
            let width = ms(hi) - ms(lo);
            assert!(min >= ms(lo) && max <= ms(hi));
            assert!(
                max - min >= width * 9 / 10,
                "retry {retry}: spread {min}..{max} too narrow"
            );
            let distinct: std::collections::BTreeSet<_> = draws.iter().collect();
            assert!(
                distinct.len() > 300,
                "retry {retry}: only {} values",
                distinct.len()
            );
        }
    }

    proptest! {
        #[test]
        fn every_delay_lies_within_its_bounds(seed: u64, n in 1usize..40) {
            let config = BackoffConfig::default();
            let mut b = Backoff::new(config, seed);
            for retry in 1..=n as u32 {
                let d = b.next_delay();
                let (lo, hi) = config.bounds(retry);
                prop_assert!(lo <= d && d <= hi, "retry {retry}: {d:?} not in [{lo:?}, {hi:?}]");
                prop_assert!(d >= Duration::from_millis(500));
                prop_assert!(d <= Duration::from_millis(30_000));
            }
        }

        #[test]
        fn bounds_hold_for_any_config(initial in 1u64..100_000, max in 1u64..1_000_000, retry in 0u32..200, seed: u64) {
            let config = BackoffConfig { initial: Duration::from_millis(initial), max: Duration::from_millis(max), max_attempts: 10 };
            let d = Backoff::new(config, seed).jittered(retry);
            let (lo, hi) = config.bounds(retry);
            prop_assert!(lo <= d && d <= hi);
            prop_assert!(hi <= Duration::from_millis(max.max(initial).min(max)));
        }

        #[test]
        fn budget_never_exceeded(failures in 0u32..100) {
            let mut b = Backoff::new(BackoffConfig::default(), 0);
            let mut allowed = 0;
            for _ in 0..failures {
                if b.record_failure() { allowed += 1; }
            }
            prop_assert!(b.failures() <= 10);
            prop_assert!(allowed <= 9);
            prop_assert_eq!(b.is_exhausted(), failures >= 10);
        }
    }
}
