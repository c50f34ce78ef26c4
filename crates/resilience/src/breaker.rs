//! [`Breaker`]: the circuit breaker on connection attempts (CONTRACT §8).
//!
//! - **Closed**: attempts go ahead; each failure is remembered for `window` (60 s, sliding).
//!   When `threshold` (5) failures lie within the window, the breaker **opens**.
//! - **Open**: no attempt until `open_for` (30 s) after opening; then it is **half-open**.
//! - **Half-open**: exactly one trial attempt is allowed ([`Breaker::try_acquire`] grants it
//!   once); its success closes the breaker, its failure re-opens it for another `open_for`.
//!
//! The breaker never reads the clock: every call takes `now`. The move from open to half-open
//! happens lazily when a call sees that `open_for` has passed, so there is no timer to drive.
use std::collections::VecDeque;
use std::time::Duration;

use crate::Instant;

/// The numbers a [`Breaker`] works with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Failures within `window` that open the breaker (5).
    pub threshold: u32,
    /// The sliding window failures are counted in (60 s).
    pub window: Duration,
    /// How long the breaker stays open before it turns half-open (30 s).
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            threshold: protocol::defaults::BREAKER_FAILURE_THRESHOLD,
            window: Duration::from_millis(protocol::defaults::BREAKER_WINDOW_MS),
            open_for: Duration::from_millis(protocol::defaults::BREAKER_OPEN_MS),
        }
    }
}

/// Where the breaker stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Attempts allowed.
    Closed,
    /// No attempt before `until`, when it turns half-open.
    Open {
        /// When the breaker turns half-open.
        until: Instant,
    },
    /// One trial attempt allowed; `trial_in_flight` once it has been granted.
    HalfOpen {
        /// Whether the single trial has been handed out and not yet reported.
        trial_in_flight: bool,
    },
}

/// A change of the breaker's state, for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerTransition {
    /// The breaker opened (or re-opened after a failed trial) until `until`.
    Opened {
        /// When it turns half-open.
        until: Instant,
    },
    /// The breaker closed after a successful attempt.
    Closed,
}

/// The circuit breaker.
#[derive(Clone, Debug)]
pub struct Breaker {
    config: BreakerConfig,
    /// Failure times within the window, oldest first (only while closed).
    failures: VecDeque<Instant>,
    state: BreakerState,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            failures: VecDeque::new(),
            state: BreakerState::Closed,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The state at `now` (an open breaker whose time is up reads as half-open).
    pub fn state(&mut self, now: Instant) -> BreakerState {
        self.advance(now);
        self.state
    }

    /// The earliest instant an attempt may start: `now` unless open (then its half-open time),
    /// or `None` while the half-open trial is in flight (wait for its outcome).
    pub fn ready_at(&mut self, now: Instant) -> Option<Instant> {
        match self.state(now) {
            BreakerState::Closed
            | BreakerState::HalfOpen {
                trial_in_flight: false,
            } => Some(now),
            BreakerState::Open { until } => Some(until),
            BreakerState::HalfOpen {
                trial_in_flight: true,
            } => None,
        }
    }

    /// Asks to start an attempt at `now`. Closed: granted. Half-open: granted once (the trial),
    /// refused while the trial is in flight. Open: refused with the half-open time.
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Refused> {
        match self.state(now) {
            BreakerState::Closed => Ok(()),
            BreakerState::HalfOpen {
                trial_in_flight: false,
            } => {
                self.state = BreakerState::HalfOpen {
                    trial_in_flight: true,
                };
                Ok(())
            }
            BreakerState::HalfOpen {
                trial_in_flight: true,
            } => Err(Refused::TrialInFlight),
            BreakerState::Open { until } => Err(Refused::Open { until }),
        }
    }

    /// Records a failed attempt. Returns the transition when it opened the breaker.
    pub fn record_failure(&mut self, now: Instant) -> Option<BreakerTransition> {
        match self.state(now) {
            BreakerState::Closed => {
                self.failures.push_back(now);
                self.prune(now);
                if self.failures.len() >= self.config.threshold as usize {
                    Some(self.open(now))
                } else {
                    None
                }
            }
            // A failed trial re-opens. (A failure reported while open cannot come from an
            // attempt this breaker allowed; it still restarts the wait, the safe choice.)
            BreakerState::HalfOpen { .. } | BreakerState::Open { .. } => Some(self.open(now)),
        }
    }

    /// Records a successful connection: the breaker closes and forgets past failures.
    pub fn record_success(&mut self, now: Instant) -> Option<BreakerTransition> {
        let was_closed = matches!(self.state(now), BreakerState::Closed);
        self.reset();
        (!was_closed).then_some(BreakerTransition::Closed)
    }

    /// The half-open trial ended with neither success nor failure (a close the server advised,
    /// the app closing, the network going offline): the next attempt may be the trial.
    pub fn release_trial(&mut self) {
        if let BreakerState::HalfOpen {
            trial_in_flight: true,
        } = self.state
        {
            self.state = BreakerState::HalfOpen {
                trial_in_flight: false,
            };
        }
    }

    /// Closes the breaker and forgets all failures (an explicit retry, the network back online).
    pub fn reset(&mut self) {
        self.failures.clear();
        self.state = BreakerState::Closed;
    }

    /// Failures currently counted in the window (closed state only).
    pub fn failures_in_window(&mut self, now: Instant) -> usize {
        self.prune(now);
        self.failures.len()
    }

    fn open(&mut self, now: Instant) -> BreakerTransition {
        self.failures.clear();
        let until = now + self.config.open_for;
        self.state = BreakerState::Open { until };
        BreakerTransition::Opened { until }
    }

    fn advance(&mut self, now: Instant) {
        if let BreakerState::Open { until } = self.state
            && now >= until
        {
            self.state = BreakerState::HalfOpen {
                trial_in_flight: false,
            };
        }
    }

    fn prune(&mut self, now: Instant) {
        while let Some(&first) = self.failures.front() {
            if now.saturating_duration_since(first) >= self.config.window {
                self.failures.pop_front();
            } else {
                break;
            }
        }
    }
}

/// Why [`Breaker::try_acquire`] refused an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Open: wait until `until`.
    Open {
        /// When it turns half-open.
        until: Instant,
    },
    /// Half-open and the one trial is already out.
    TrialInFlight,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(base: Instant, s: u64) -> Instant {
        base + Duration::from_secs(s)
    }

    #[test]
    fn opens_after_five_failures_within_sixty_seconds() {
        let t0 = crate::t0();
        let mut b = Breaker::new(BreakerConfig::default());
        for s in [0, 10, 20, 30] {
            assert_eq!(b.record_failure(secs(t0, s)), None);
        }
        assert_eq!(
            b.record_failure(secs(t0, 59)),
            Some(BreakerTransition::Opened {
                until: secs(t0, 89)
            })
        );
        assert_eq!(
            b.try_acquire(secs(t0, 60)),
            Err(Refused::Open {
                until: secs(t0, 89)
            })
        );
        assert_eq!(b.ready_at(secs(t0, 60)), Some(secs(t0, 89)));
    }

    #[test]
    fn failures_older_than_the_window_do_not_count() {
        let t0 = crate::t0();
        let mut b = Breaker::new(BreakerConfig::default());
        for s in [0, 20, 40, 59] {
            assert_eq!(b.record_failure(secs(t0, s)), None);
        }
        // The failure at 0 s has left the 60 s window by 60 s: four in the window, not five.
        assert_eq!(b.record_failure(secs(t0, 60)), None);
        assert_eq!(b.failures_in_window(secs(t0, 60)), 4);
        assert_eq!(b.state(secs(t0, 60)), BreakerState::Closed);
        assert!(b.record_failure(secs(t0, 61)).is_some());
    }

    #[test]
    fn half_open_allows_exactly_one_trial_then_closes_on_success() {
        let t0 = crate::t0();
        let mut b = Breaker::new(BreakerConfig::default());
        for s in 0..5 {
            b.record_failure(secs(t0, s));
        }
        // Opened at 4 s; half-open at 34 s.
        assert!(b.try_acquire(secs(t0, 33)).is_err());
        assert_eq!(b.try_acquire(secs(t0, 34)), Ok(()));
        assert_eq!(b.try_acquire(secs(t0, 34)), Err(Refused::TrialInFlight));
        assert_eq!(b.ready_at(secs(t0, 35)), None);
        assert_eq!(
            b.record_success(secs(t0, 35)),
            Some(BreakerTransition::Closed)
        );
        assert_eq!(b.state(secs(t0, 35)), BreakerState::Closed);
        assert_eq!(b.try_acquire(secs(t0, 35)), Ok(()));
        assert_eq!(b.record_success(secs(t0, 36)), None, "already closed");
    }

    #[test]
    fn a_failed_trial_reopens() {
        let t0 = crate::t0();
        let mut b = Breaker::new(BreakerConfig::default());
        for s in 0..5 {
            b.record_failure(secs(t0, s));
        }
        assert_eq!(b.try_acquire(secs(t0, 40)), Ok(()));
        assert_eq!(
            b.record_failure(secs(t0, 41)),
            Some(BreakerTransition::Opened {
                until: secs(t0, 71)
            })
        );
        assert!(b.try_acquire(secs(t0, 70)).is_err());
        assert_eq!(b.try_acquire(secs(t0, 71)), Ok(()));
    }

    #[test]
    fn a_trial_without_an_outcome_can_be_granted_again() {
        let t0 = crate::t0();
        let mut b = Breaker::new(BreakerConfig::default());
        for s in 0..5 {
            b.record_failure(secs(t0, s));
        }
        assert_eq!(b.try_acquire(secs(t0, 34)), Ok(()));
        b.release_trial();
        assert_eq!(b.try_acquire(secs(t0, 35)), Ok(()));
        assert_eq!(b.try_acquire(secs(t0, 35)), Err(Refused::TrialInFlight));
        b.reset();
        b.release_trial();
        assert_eq!(
            b.state(secs(t0, 36)),
            BreakerState::Closed,
            "no-op when closed"
        );
    }

    #[derive(Clone, Debug)]
    enum Op {
        Acquire,
        Fail,
        Succeed,
    }

    proptest! {
        /// Whatever happens, at most one attempt is granted per half-open period, and nothing
        /// is granted while open.
        #[test]
        fn never_more_than_one_trial_while_half_open(
            ops in proptest::collection::vec((0u64..20_000, prop_oneof![Just(Op::Acquire), Just(Op::Fail), Just(Op::Succeed)]), 1..200)
        ) {
            let t0 = crate::t0();
            let mut b = Breaker::new(BreakerConfig::default());
            let mut now = t0;
            let mut granted_since_half_open = 0;
            for (step_ms, op) in ops {
                now += Duration::from_millis(step_ms);
                let before = b.state(now);
                match op {
                    Op::Acquire => {
                        let ok = b.try_acquire(now).is_ok();
                        match before {
                            BreakerState::Open { .. } => prop_assert!(!ok),
                            BreakerState::HalfOpen { .. } => {
                                if ok { granted_since_half_open += 1; }
                                prop_assert!(granted_since_half_open <= 1);
                            }
                            BreakerState::Closed => prop_assert!(ok),
                        }
                    }
                    Op::Fail => { b.record_failure(now); granted_since_half_open = 0; }
                    Op::Succeed => { b.record_success(now); granted_since_half_open = 0; }
                }
            }
        }
    }
}
