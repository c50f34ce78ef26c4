//! [`Link`]: a server-side outbound link (the Twilio gateway's agent WebSocket), composed from
//! the same [`Backoff`] and [`Breaker`] every client uses — no second retry policy.
//!
//! One `Link` per call; one [`Breaker`] shared by every link to the same upstream, passed in
//! by `&mut` on each call (the driver keeps it behind a lock), so failures of all calls add up
//! and an open breaker holds every call's next attempt until it turns half-open.
//!
//! - [`Link::start`]: the call wants the link → [`LinkOutput::Open`] now, or later when the
//!   breaker is open.
//! - [`Link::handle_opened`] / [`Link::handle_failed`] (the attempt's outcome),
//!   [`Link::handle_closed`] (an up link ended: code 1000 is the agent hanging up, anything
//!   else a drop that is retried), [`Link::handle_timeout`] when [`Link::poll_timeout`] is due.
//! - Drain [`Link::poll_output`] after every call: `Open` (open a socket), `Up`, `Lost`,
//!   `Hangup`, `GaveUp` (the attempt budget is spent).
//!
//! ```
//! use resilience::{BackoffConfig, Breaker, BreakerConfig, Instant, Link, LinkOutput};
//! let mut breaker = Breaker::new(BreakerConfig::default());
//! let mut link = Link::new(BackoffConfig::default(), 7);
//! let now = Instant::now();
//! link.start(now, &mut breaker);
//! assert_eq!(link.poll_output(), Some(LinkOutput::Open));
//! link.handle_opened(now, &mut breaker);
//! assert_eq!(link.poll_output(), Some(LinkOutput::Up));
//! link.handle_closed(now, 1006, &mut breaker);
//! assert_eq!(link.poll_output(), Some(LinkOutput::Lost));
//! let retry_at = link.poll_timeout().expect("a retry is scheduled");
//! link.handle_timeout(retry_at, &mut breaker);
//! assert_eq!(link.poll_output(), Some(LinkOutput::Open));
//! ```

use std::collections::VecDeque;

use crate::breaker::Refused;
use crate::{Backoff, BackoffConfig, Breaker, Instant};

/// Where the link stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Not wanted yet.
    Idle,
    /// An attempt is in flight.
    Connecting,
    /// Open.
    Up,
    /// Waiting until the instant to try again (backoff, or the breaker's half-open time).
    Waiting {
        /// When the next attempt may start.
        until: Instant,
    },
    /// Over: the agent hung up, the budget is spent, or the owner closed it.
    Done,
}

/// What the driver must do or know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkOutput {
    /// Open a socket to the upstream now.
    Open,
    /// The link is up (first time, or restored after a loss).
    Up,
    /// The link was up and is gone; a retry is scheduled.
    Lost,
    /// The upstream closed with 1000: it ended the call.
    Hangup,
    /// Attempts spent: the link will not be retried.
    GaveUp,
}

/// One outbound link's decisions.
#[derive(Clone, Debug)]
pub struct Link {
    backoff: Backoff,
    state: LinkState,
    /// Whether the link was ever up (a later `Up` is a restore).
    was_up: bool,
    outputs: VecDeque<LinkOutput>,
}

impl Link {
    /// A link whose retry jitter comes from `seed`.
    pub fn new(config: BackoffConfig, seed: u64) -> Self {
        Self {
            backoff: Backoff::new(config, seed),
            state: LinkState::Idle,
            was_up: false,
            outputs: VecDeque::new(),
        }
    }

    /// The state.
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// Failed attempts since the link was last up.
    pub fn failures(&self) -> u32 {
        self.backoff.failures()
    }

    /// The owner wants the link: attempt now unless the breaker says wait.
    pub fn start(&mut self, now: Instant, breaker: &mut Breaker) {
        if self.state == LinkState::Idle {
            self.attempt(now, breaker);
        }
    }

    /// The attempt's socket opened.
    pub fn handle_opened(&mut self, now: Instant, breaker: &mut Breaker) {
        if self.state != LinkState::Connecting {
            return;
        }
        breaker.record_success(now);
        self.backoff.reset();
        self.state = LinkState::Up;
        self.was_up = true;
        self.outputs.push_back(LinkOutput::Up);
    }

    /// The attempt failed (refused, timed out, handshake error).
    pub fn handle_failed(&mut self, now: Instant, breaker: &mut Breaker) {
        if self.state != LinkState::Connecting {
            return;
        }
        breaker.record_failure(now);
        if self.backoff.record_failure() {
            self.wait(now, breaker);
        } else {
            self.state = LinkState::Done;
            self.outputs.push_back(LinkOutput::GaveUp);
        }
    }

    /// The open link ended with close `code` (1006 when it had none).
    pub fn handle_closed(&mut self, now: Instant, code: u16, breaker: &mut Breaker) {
        match self.state {
            LinkState::Up if code == 1000 => {
                self.state = LinkState::Done;
                self.outputs.push_back(LinkOutput::Hangup);
            }
            LinkState::Up => {
                self.outputs.push_back(LinkOutput::Lost);
                self.wait(now, breaker);
            }
            // A socket that closes before it counted as open is a failed attempt.
            LinkState::Connecting => self.handle_failed(now, breaker),
            _ => {}
        }
    }

    /// The owner is done with the link (the call ended): nothing more is attempted.
    pub fn close(&mut self, breaker: &mut Breaker) {
        if self.state == LinkState::Connecting {
            // The attempt's outcome will never be reported: free a half-open trial.
            breaker.release_trial();
        }
        self.state = LinkState::Done;
    }

    /// Call when [`Link::poll_timeout`] is reached (early calls do nothing).
    pub fn handle_timeout(&mut self, now: Instant, breaker: &mut Breaker) {
        if let LinkState::Waiting { until } = self.state
            && now >= until
        {
            self.attempt(now, breaker);
        }
    }

    /// When [`Link::handle_timeout`] is next due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            LinkState::Waiting { until } => Some(until),
            _ => None,
        }
    }

    /// The next thing to do or know.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<LinkOutput> {
        self.outputs.pop_front()
    }

    /// Whether the link was ever up.
    pub fn was_up(&self) -> bool {
        self.was_up
    }

    fn attempt(&mut self, now: Instant, breaker: &mut Breaker) {
        match breaker.try_acquire(now) {
            Ok(()) => {
                self.state = LinkState::Connecting;
                self.outputs.push_back(LinkOutput::Open);
            }
            Err(Refused::Open { until }) => self.state = LinkState::Waiting { until },
            // Another call holds the half-open trial: look again after one backoff step.
            Err(Refused::TrialInFlight) => {
                let until = now + self.backoff.jittered(1);
                self.state = LinkState::Waiting { until };
            }
        }
    }

    fn wait(&mut self, now: Instant, breaker: &mut Breaker) {
        let mut until = now + self.backoff.next_delay();
        if let Some(ready) = breaker.ready_at(now) {
            until = until.max(ready);
        }
        self.state = LinkState::Waiting { until };
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::BreakerConfig;

    fn config() -> BackoffConfig {
        BackoffConfig {
            initial: Duration::from_millis(200),
            max: Duration::from_millis(2000),
            max_attempts: 4,
        }
    }

    fn drain(link: &mut Link) -> Vec<LinkOutput> {
        std::iter::from_fn(|| link.poll_output()).collect()
    }

    #[test]
    fn drop_is_retried_with_backoff_and_restored() {
        let t0 = crate::t0();
        let mut breaker = Breaker::new(BreakerConfig::default());
        let mut link = Link::new(config(), 1);
        link.start(t0, &mut breaker);
        link.handle_opened(t0, &mut breaker);
        assert_eq!(drain(&mut link), [LinkOutput::Open, LinkOutput::Up]);
        link.handle_closed(t0, 1006, &mut breaker);
        assert_eq!(drain(&mut link), [LinkOutput::Lost]);
        let first = link.poll_timeout().expect("retry scheduled");
        let wait = first - t0;
        assert!(wait >= Duration::from_millis(100) && wait <= Duration::from_millis(200));
        // Early timeouts do nothing.
        link.handle_timeout(t0, &mut breaker);
        assert!(drain(&mut link).is_empty());
        link.handle_timeout(first, &mut breaker);
        assert_eq!(drain(&mut link), [LinkOutput::Open]);
        link.handle_failed(first, &mut breaker);
        let second = link.poll_timeout().expect("retry scheduled");
        let wait = second - first;
        assert!(wait >= Duration::from_millis(200) && wait <= Duration::from_millis(400));
        link.handle_timeout(second, &mut breaker);
        link.handle_opened(second, &mut breaker);
        assert_eq!(drain(&mut link), [LinkOutput::Open, LinkOutput::Up]);
        assert_eq!(link.failures(), 0);
        assert!(link.was_up());
    }

    #[test]
    fn close_1000_is_a_hangup_and_budget_gives_up() {
        let t0 = crate::t0();
        let mut breaker = Breaker::new(BreakerConfig::default());
        let mut link = Link::new(config(), 2);
        link.start(t0, &mut breaker);
        link.handle_opened(t0, &mut breaker);
        link.handle_closed(t0, 1000, &mut breaker);
        assert_eq!(
            drain(&mut link),
            [LinkOutput::Open, LinkOutput::Up, LinkOutput::Hangup]
        );
        assert_eq!(link.state(), LinkState::Done);

        let mut link = Link::new(config(), 3);
        let mut now = t0;
        link.start(now, &mut breaker);
        for _ in 0..4 {
            assert_eq!(link.poll_output(), Some(LinkOutput::Open));
            link.handle_failed(now, &mut breaker);
            if let Some(t) = link.poll_timeout() {
                now = t;
                link.handle_timeout(now, &mut breaker);
            }
        }
        assert_eq!(drain(&mut link), [LinkOutput::GaveUp]);
    }

    #[test]
    fn shared_breaker_opens_across_links_and_holds_attempts() {
        let t0 = crate::t0();
        let bc = BreakerConfig {
            threshold: 3,
            window: Duration::from_secs(60),
            open_for: Duration::from_secs(30),
        };
        let mut breaker = Breaker::new(bc);
        for seed in 0..3 {
            let mut link = Link::new(config(), seed);
            link.start(t0, &mut breaker);
            assert_eq!(link.poll_output(), Some(LinkOutput::Open));
            link.handle_failed(t0, &mut breaker);
        }
        // A new call's link waits for the half-open time instead of attempting.
        let mut link = Link::new(config(), 9);
        link.start(t0, &mut breaker);
        assert!(drain(&mut link).is_empty());
        assert_eq!(link.poll_timeout(), Some(t0 + Duration::from_secs(30)));
        link.handle_timeout(t0 + Duration::from_secs(30), &mut breaker);
        assert_eq!(drain(&mut link), [LinkOutput::Open]);
        // The trial is in flight: another link backs off instead of a second trial.
        let mut other = Link::new(config(), 10);
        other.start(t0 + Duration::from_secs(30), &mut breaker);
        assert!(drain(&mut other).is_empty());
        link.handle_opened(t0 + Duration::from_secs(30), &mut breaker);
        assert!(matches!(
            breaker.state(t0 + Duration::from_secs(30)),
            crate::BreakerState::Closed
        ));
    }
}
