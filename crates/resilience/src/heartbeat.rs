//! [`Heartbeat`]: client pings, pong matching, round-trip times and dead-link detection.
//!
//! While a connection is up the machine asks for a `ping` every `interval` (the `heartbeat_ms`
//! of the `welcome`; the first one at once, so an RTT is known right after connecting). Ping
//! ids increase from 1. A `pong` is matched by id against the pings still unanswered; a pong
//! with an unknown or already-answered id is ignored (it yields no RTT, though it still counts
//! as life). Answering ping `n` also retires the older unanswered pings, which were lost.
//!
//! # Dead link: nothing inbound for 2.5 × `interval`, with an unanswered ping
//!
//! Any inbound frame counts as life ([`Heartbeat::handle_inbound`]), not only pongs: a busy
//! connection delivering messages is alive even if a pong is slow. The link is declared dead
//! when nothing has arrived for `dead_after` (default 2.5 × `interval`, 75 s — the same bound
//! the server applies to its side, CONTRACT §5.2) **and** a ping has been unanswered for at
//! least `interval / 2`. Why this bound:
//!
//! - With a ping every 30 s a healthy link answers two pings within 75 s, so one lost pong or
//!   one slow network hiccup does not kill the connection.
//! - Browsers throttle timers of background tabs (Chrome's intensive throttling runs them once
//!   a minute); a throttled tab may send its ping up to ~60 s late. 75 s of silence stays
//!   above that, and the second condition means a tab that wakes up after a long freeze first
//!   sends a ping and waits for its answer instead of declaring a healthy link dead only
//!   because it was not asking.
//! - A shorter bound would detect a dead link sooner but would disagree with the server's
//!   own 2.5× rule and fire falsely in throttled tabs (socket.io#4040, ably-js#373).
//!
//! RTT statistics (last, median, p95) cover a sliding window of the last `window` samples
//! (20: ten minutes at the default interval). An RTT above `latency_threshold` (200 ms) yields
//! a [`HeartbeatEvent::LatencySpike`].
use std::collections::VecDeque;
use std::time::Duration;

use protocol::Ping;

use crate::Instant;

/// The numbers a [`Heartbeat`] works with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeartbeatConfig {
    /// Ping interval until the `welcome` says otherwise (30 s).
    pub interval: Duration,
    /// Silence that marks the link dead, as a multiple of the interval: `num / den` (5 / 2).
    pub dead_after_num: u32,
    /// Denominator of the dead-link factor.
    pub dead_after_den: u32,
    /// An RTT above this is a latency spike (200 ms).
    pub latency_threshold: Duration,
    /// RTT samples kept for median and p95 (20).
    pub window: usize,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(protocol::defaults::HEARTBEAT_INTERVAL_MS),
            dead_after_num: protocol::defaults::DEAD_LINK_HEARTBEATS_NUM as u32,
            dead_after_den: protocol::defaults::DEAD_LINK_HEARTBEATS_DEN as u32,
            latency_threshold: Duration::from_millis(protocol::defaults::LATENCY_THRESHOLD_MS),
            window: 20,
        }
    }
}

/// What the heartbeat asks for or reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeartbeatEvent {
    /// Send this `ping` now.
    Ping(Ping),
    /// A pong matched: a new RTT sample.
    Rtt {
        /// The round trip of this ping.
        rtt: Duration,
    },
    /// The RTT just measured is above the latency threshold.
    LatencySpike {
        /// The round trip.
        rtt: Duration,
        /// The threshold it exceeded.
        threshold: Duration,
    },
    /// Nothing arrived for the dead-link bound: close the socket and reconnect.
    Dead {
        /// How long the link has been silent.
        silent_for: Duration,
    },
}

/// RTT statistics over the sliding window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RttStats {
    /// The most recent sample.
    pub last: Option<Duration>,
    /// Median of the window (nearest rank).
    pub median: Option<Duration>,
    /// 95th percentile of the window (nearest rank).
    pub p95: Option<Duration>,
    /// Samples in the window.
    pub samples: usize,
}

/// The heartbeat of one connection.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    config: HeartbeatConfig,
    /// The interval in force (from the `welcome`).
    interval: Duration,
    running: bool,
    next_ping_at: Instant,
    last_inbound: Instant,
    next_id: u64,
    /// Unanswered pings, oldest first.
    outstanding: VecDeque<(u64, Instant)>,
    /// RTT window, oldest first (kept across reconnects: it describes the network).
    samples: VecDeque<Duration>,
    events: VecDeque<HeartbeatEvent>,
}

/// More unanswered pings than this are forgotten, oldest first.
const MAX_OUTSTANDING: usize = 16;

impl Heartbeat {
    /// A stopped heartbeat. `now` only seeds its internal instants.
    pub fn new(config: HeartbeatConfig, now: Instant) -> Self {
        Self {
            config,
            interval: config.interval,
            running: false,
            next_ping_at: now,
            last_inbound: now,
            next_id: 1,
            outstanding: VecDeque::new(),
            samples: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Starts pinging every `interval` (`None` or zero: the configured default), first at once.
    pub fn start(&mut self, now: Instant, interval: Option<Duration>) {
        self.interval = interval
            .filter(|i| !i.is_zero())
            .unwrap_or(self.config.interval);
        self.running = true;
        self.last_inbound = now;
        self.next_ping_at = now;
        self.outstanding.clear();
        self.handle_timeout(now);
    }

    /// Stops pinging (the socket closed). Pending events stay to be polled.
    pub fn stop(&mut self) {
        self.running = false;
        self.outstanding.clear();
    }

    /// Whether the heartbeat is running.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// The interval in force.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The silence after which the link counts as dead (2.5 × the interval by default).
    pub fn dead_after(&self) -> Duration {
        self.interval * self.config.dead_after_num / self.config.dead_after_den.max(1)
    }

    /// Any frame arrived: the link is alive.
    pub fn handle_inbound(&mut self, now: Instant) {
        if now > self.last_inbound {
            self.last_inbound = now;
        }
    }

    /// A `pong` arrived. Returns the RTT when its id matched an unanswered ping.
    pub fn handle_pong(&mut self, now: Instant, id: u64) -> Option<Duration> {
        self.handle_inbound(now);
        let pos = self.outstanding.iter().position(|&(pid, _)| pid == id)?;
        let (_, sent) = self.outstanding[pos];
        // This ping and every older unanswered one are settled.
        self.outstanding.drain(..=pos);
        let rtt = now.saturating_duration_since(sent);
        self.samples.push_back(rtt);
        while self.samples.len() > self.config.window.max(1) {
            self.samples.pop_front();
        }
        self.events.push_back(HeartbeatEvent::Rtt { rtt });
        if rtt > self.config.latency_threshold {
            self.events.push_back(HeartbeatEvent::LatencySpike {
                rtt,
                threshold: self.config.latency_threshold,
            });
        }
        Some(rtt)
    }

    /// Sends a due ping and checks for a dead link. Early or spurious calls are no-ops.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.running {
            return;
        }
        if now >= self.next_ping_at {
            let id = self.next_id;
            self.next_id += 1;
            self.outstanding.push_back((id, now));
            if self.outstanding.len() > MAX_OUTSTANDING {
                self.outstanding.pop_front();
            }
            // From `now`, not from the missed deadline: after a frozen tab, one ping, not a burst.
            self.next_ping_at = now + self.interval;
            self.events.push_back(HeartbeatEvent::Ping(Ping { id }));
        }
        if now >= self.dead_deadline() {
            self.running = false;
            self.outstanding.clear();
            self.events.push_back(HeartbeatEvent::Dead {
                silent_for: now.saturating_duration_since(self.last_inbound),
            });
        }
    }

    /// The next instant [`Heartbeat::handle_timeout`] has work, while running.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.running
            .then(|| self.next_ping_at.min(self.dead_deadline()))
    }

    /// The next event, if any. Drain after every `handle_*`.
    pub fn poll_event(&mut self) -> Option<HeartbeatEvent> {
        self.events.pop_front()
    }

    /// RTT statistics over the window.
    pub fn stats(&self) -> RttStats {
        let mut sorted: Vec<Duration> = self.samples.iter().copied().collect();
        sorted.sort_unstable();
        RttStats {
            last: self.samples.back().copied(),
            median: percentile(&sorted, 50),
            p95: percentile(&sorted, 95),
            samples: sorted.len(),
        }
    }

    fn dead_deadline(&self) -> Instant {
        let grace = self.interval / 2;
        let silent = self.last_inbound + self.dead_after();
        let probe = match self.outstanding.front() {
            Some(&(_, sent)) => sent + grace,
            None => self.next_ping_at + grace,
        };
        silent.max(probe)
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: usize) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    fn drain(h: &mut Heartbeat) -> Vec<HeartbeatEvent> {
        std::iter::from_fn(|| h.poll_event()).collect()
    }

    #[test]
    fn pings_every_interval_with_increasing_ids() {
        let t0 = crate::t0();
        let mut h = Heartbeat::new(HeartbeatConfig::default(), t0);
        assert_eq!(h.poll_timeout(), None, "stopped");
        h.start(t0, Some(Duration::from_secs(30)));
        assert_eq!(drain(&mut h), [HeartbeatEvent::Ping(Ping { id: 1 })]);
        assert_eq!(h.poll_timeout(), Some(ms(t0, 30_000)));
        h.handle_timeout(ms(t0, 29_999));
        assert!(drain(&mut h).is_empty(), "early call is a no-op");
        h.handle_pong(ms(t0, 50), 1);
        h.handle_timeout(ms(t0, 30_000));
        h.handle_pong(ms(t0, 30_040), 2);
        h.handle_timeout(ms(t0, 60_000));
        let evs = drain(&mut h);
        expect_test::expect![[r#"
            [
                Rtt {
                    rtt: 50ms,
                },
                Ping(
                    Ping {
                        id: 2,
                    },
                ),
                Rtt {
                    rtt: 40ms,
                },
                Ping(
                    Ping {
                        id: 3,
                    },
                ),
            ]
        "#]]
        .assert_debug_eq(&evs);
    }

    #[test]
    fn unknown_and_stale_pongs_are_ignored() {
        let t0 = crate::t0();
        let mut h = Heartbeat::new(HeartbeatConfig::default(), t0);
        h.start(t0, None);
        assert_eq!(h.handle_pong(ms(t0, 10), 99), None, "unknown id");
        assert_eq!(
            h.handle_pong(ms(t0, 20), 1),
            Some(Duration::from_millis(20))
        );
        assert_eq!(h.handle_pong(ms(t0, 30), 1), None, "answered already");
        assert_eq!(h.stats().samples, 1);
    }

    #[test]
    fn answering_a_newer_ping_retires_older_ones() {
        let t0 = crate::t0();
        let mut h = Heartbeat::new(HeartbeatConfig::default(), t0);
        h.start(t0, Some(Duration::from_secs(1)));
        h.handle_timeout(ms(t0, 1000));
        h.handle_timeout(ms(t0, 2000));
        assert_eq!(
            h.handle_pong(ms(t0, 2100), 3),
            Some(Duration::from_millis(100))
        );
        assert_eq!(h.handle_pong(ms(t0, 2200), 1), None, "ping 1 was lost");
    }

    #[test]
    fn latency_spike_above_the_threshold_only() {
        let t0 = crate::t0();
        let mut h = Heartbeat::new(HeartbeatConfig::default(), t0);
        h.start(t0, Some(Duration::from_secs(1)));
        h.handle_pong(ms(t0, 200), 1);
        drain(&mut h);
        h.handle_timeout(ms(t0, 1000));
        h.handle_pong(ms(t0, 1201), 2);
        let evs = drain(&mut h);
        assert!(evs.contains(&HeartbeatEvent::LatencySpike {
            rtt: Duration::from_millis(201),
            threshold: Duration::from_millis(200)
        }));
        assert!(!evs.iter().any(
            |e| matches!(e, HeartbeatEvent::LatencySpike { rtt, .. } if rtt.as_millis() == 200)
        ));
    }

    #[test]
    fn dead_after_two_and_a_half_silent_intervals() {
        let t0 = crate::t0();
        let mut h = Heartbeat::new(HeartbeatConfig::default(), t0);
        h.start(t0, Some(Duration::from_secs(30)));
        assert_eq!(h.dead_after(), Duration::from_secs(75));
        h.handle_pong(ms(t0, 100), 1);
        // Last life at 100 ms; pings at 30.1 s, 60.1 s go unanswered.
        let mut now = t0;
        let mut events = Vec::new();
        while let Some(at) = h.poll_timeout() {
            now = at;
            h.handle_timeout(now);
            events.extend(drain(&mut h));
        }
        assert_eq!(now, ms(t0, 75_100));
        assert_eq!(
            events.last(),
            Some(&HeartbeatEvent::Dead {
                silent_for: Duration::from_secs(75)
            })
        );
        assert!(!h.is_running());
    }

    #[test]
    fn any_inbound_frame_counts_as_life() {
        let t0 = crate::t0();
        let mut h = Heartbeat::new(HeartbeatConfig::default(), t0);
        h.start(t0, Some(Duration::from_secs(30)));
        for s in (10..200).step_by(10) {
            h.handle_inbound(ms(t0, s * 1000));
            h.handle_timeout(ms(t0, s * 1000));
        }
        assert!(h.is_running());
        assert!(
            !drain(&mut h)
                .iter()
                .any(|e| matches!(e, HeartbeatEvent::Dead { .. }))
        );
    }

    #[test]
    fn a_frozen_tab_pings_before_declaring_the_link_dead() {
        // Timers did not fire for 120 s (background tab); the link itself is fine.
        let t0 = crate::t0();
        let mut h = Heartbeat::new(HeartbeatConfig::default(), t0);
        h.start(t0, Some(Duration::from_secs(30)));
        h.handle_pong(ms(t0, 50), 1);
        drain(&mut h);
        h.handle_timeout(ms(t0, 120_000));
        assert_eq!(drain(&mut h), [HeartbeatEvent::Ping(Ping { id: 2 })]);
        assert!(h.is_running());
        h.handle_pong(ms(t0, 120_050), 2);
        assert!(h.is_running());
    }

    #[test]
    fn percentiles_over_the_window() {
        let t0 = crate::t0();
        let mut h = Heartbeat::new(HeartbeatConfig::default(), t0);
        h.start(t0, Some(Duration::from_secs(1)));
        // 25 samples of 1..=25 ms; the window keeps the last 20 (6..=25).
        for i in 1..=25u64 {
            let sent = ms(t0, (i - 1) * 1000);
            h.handle_pong(sent + Duration::from_millis(i), i);
            h.handle_timeout(ms(t0, i * 1000));
        }
        let s = h.stats();
        assert_eq!(s.samples, 20);
        assert_eq!(s.last, Some(Duration::from_millis(25)));
        assert_eq!(s.median, Some(Duration::from_millis(15)));
        assert_eq!(s.p95, Some(Duration::from_millis(24)));
    }

    proptest! {
        #[test]
        fn percentile_is_a_sample_and_ordered(mut xs in proptest::collection::vec(0u64..10_000, 1..100)) {
            xs.sort_unstable();
            let d: Vec<Duration> = xs.iter().map(|&x| Duration::from_millis(x)).collect();
            let med = percentile(&d, 50).unwrap();
            let p95 = percentile(&d, 95).unwrap();
            prop_assert!(d.contains(&med) && d.contains(&p95));
            prop_assert!(med <= p95);
        }
    }
}
