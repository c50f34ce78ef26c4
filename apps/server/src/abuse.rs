//! Unusual patterns (issue 7 §5): authentication failures, rate-limit hits and protocol errors
//! counted per client IP and per `sub` over a sliding window (the auth-failure window, 60 s by
//! default).
//!
//! - [`AbuseMonitor::record`] counts one [`Offence`]. When an IP passes the threshold for rate-
//!   limit hits or protocol errors, or a `sub` passes any threshold, it logs
//!   `suspicious_activity` (warn) once per window and returns [`Verdict::CoolDown`] for an IP;
//!   [`crate::admission::Admission`] then refuses that IP on `/ws` and `/v1/*` with `429` for the
//!   cool-down — never on `/health*`. Authentication failures per IP keep their own threshold
//!   and cool-down in the admission (CONTRACT §4); here they are counted for the figures and
//!   per `sub`.
//! - [`AbuseMonitor::snapshot`] gives the counts of the window for `/health` (`abuse`) and logs.
//!
//! - [`AbuseMonitor::log_sample`] keeps a flood of cheap refusals (an upgrade refused by the rate
//!   limit, a foreign `Origin`) from flooding the logs: per IP and event, the first
//!   [`LOG_FIRST`] lines of a window are written, then every [`LOG_EVERY`]th, with the count.
//!
//! A threshold of 0 turns that trigger off. The maps are pruned when large, so a scan from
//! many addresses cannot grow them without bound.
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Maps this large are pruned of entries with nothing in the window.
const PRUNE_AT: usize = 4_096;
/// Events kept per key and kind; enough to pass any sane threshold.
const MAX_EVENTS: usize = 10_000;
/// Refusal log lines of one kind per IP written in full each window.
pub const LOG_FIRST: u64 = 5;
/// After those, one line per this many refusals.
pub const LOG_EVERY: u64 = 100;

/// What a client did wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offence {
    /// A token that failed verification (hello, refresh or HTTP bearer).
    AuthFailure,
    /// A request refused by a rate limit (upgrade, HTTP, publish, per-`sub` cap).
    RateLimited,
    /// A frame that is not a well-formed message: undecodable, binary, not UTF-8, too large.
    ProtocolError,
}

impl Offence {
    const ALL: [Self; 3] = [Self::AuthFailure, Self::RateLimited, Self::ProtocolError];

    /// The snake_case name used in logs and `/health`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthFailure => "auth_failures",
            Self::RateLimited => "rate_limited",
            Self::ProtocolError => "protocol_errors",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::AuthFailure => 0,
            Self::RateLimited => 1,
            Self::ProtocolError => 2,
        }
    }
}

/// Thresholds within one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbuseLimits {
    /// The sliding window.
    pub window: Duration,
    /// Auth failures (per `sub` here; per IP in the admission).
    pub auth_failures: u32,
    /// Rate-limit hits.
    pub rate_limited: u32,
    /// Protocol errors.
    pub protocol_errors: u32,
}

impl AbuseLimits {
    fn threshold(&self, offence: Offence) -> u32 {
        match offence {
            Offence::AuthFailure => self.auth_failures,
            Offence::RateLimited => self.rate_limited,
            Offence::ProtocolError => self.protocol_errors,
        }
    }
}

/// What the caller should do about the IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing.
    Fine,
    /// Refuse the IP for the cool-down.
    CoolDown,
}

/// The counts of the current window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Snapshot {
    /// Auth failures in the window, all clients.
    pub auth_failures: usize,
    /// Rate-limit hits in the window, all clients.
    pub rate_limited: usize,
    /// Protocol errors in the window, all clients.
    pub protocol_errors: usize,
    /// Client IPs with an offence in the window.
    pub ips: usize,
    /// Client IPs and subs flagged as suspicious in the window.
    pub flagged: usize,
    /// The window, in milliseconds.
    pub window_ms: u64,
}

/// The monitor, shared by every request and session.
#[derive(Debug)]
pub struct AbuseMonitor {
    limits: AbuseLimits,
    // A std mutex: held for a few map operations, never across an await.
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    ips: HashMap<IpAddr, Counts>,
    subs: HashMap<String, Counts>,
    totals: Counts,
    // (IP, event) → (window start, lines asked for in it).
    log_samples: HashMap<(IpAddr, &'static str), (Instant, u64)>,
}

#[derive(Debug, Default)]
struct Counts {
    events: [VecDeque<Instant>; 3],
    flagged_at: Option<Instant>,
}

impl Counts {
    fn push(&mut self, offence: Offence, now: Instant, window: Duration) -> usize {
        let events = &mut self.events[offence.index()];
        while events
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > window)
        {
            events.pop_front();
        }
        if events.len() >= MAX_EVENTS {
            events.pop_front();
        }
        events.push_back(now);
        events.len()
    }

    fn count(&self, offence: Offence, now: Instant, window: Duration) -> usize {
        self.events[offence.index()]
            .iter()
            .filter(|t| now.saturating_duration_since(**t) <= window)
            .count()
    }

    fn idle(&self, now: Instant, window: Duration) -> bool {
        self.events.iter().all(|e| {
            e.back()
                .is_none_or(|t| now.saturating_duration_since(*t) > window)
        })
    }

    fn flagged(&self, now: Instant, window: Duration) -> bool {
        self.flagged_at
            .is_some_and(|t| now.saturating_duration_since(t) <= window)
    }
}

impl AbuseMonitor {
    /// A monitor with `limits`.
    #[must_use]
    pub fn new(limits: AbuseLimits) -> Self {
        Self {
            limits,
            state: Mutex::new(State::default()),
        }
    }

    /// Counts `offence` from `ip` (and `sub`, once known). Logs `suspicious_activity` when a
    /// threshold is passed; [`Verdict::CoolDown`] when the IP should be refused.
    pub fn record(&self, ip: IpAddr, sub: Option<&str>, offence: Offence, now: Instant) -> Verdict {
        let window = self.limits.window;
        let threshold = self.limits.threshold(offence) as usize;
        let mut state = self.state.lock().expect("abuse lock is never poisoned");
        state.totals.push(offence, now, window);
        if state.ips.len() >= PRUNE_AT {
            state.ips.retain(|_, c| !c.idle(now, window));
        }
        if state.subs.len() >= PRUNE_AT {
            state.subs.retain(|_, c| !c.idle(now, window));
        }
        let ip_counts = state.ips.entry(ip).or_default();
        let by_ip = ip_counts.push(offence, now, window);
        // Auth failures per IP are the admission's (CONTRACT §4); the others cool down here.
        let ip_trips = offence != Offence::AuthFailure
            && threshold > 0
            && by_ip >= threshold
            && !ip_counts.flagged(now, window);
        if ip_trips {
            ip_counts.flagged_at = Some(now);
        }
        let mut sub_trips = None;
        if let Some(sub) = sub {
            let sub_counts = state.subs.entry(sub.to_owned()).or_default();
            let by_sub = sub_counts.push(offence, now, window);
            if threshold > 0 && by_sub >= threshold && !sub_counts.flagged(now, window) {
                sub_counts.flagged_at = Some(now);
                sub_trips = Some(by_sub);
            }
        }
        drop(state);
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        if ip_trips {
            tracing::warn!(
                component = "server",
                event = "suspicious_activity",
                client_ip = %ip,
                sub = sub.unwrap_or(""),
                pattern = offence.as_str(),
                count = by_ip,
                threshold,
                window_ms,
            );
        }
        if let Some(count) = sub_trips {
            tracing::warn!(
                component = "server",
                event = "suspicious_activity",
                client_ip = %ip,
                sub = sub.unwrap_or(""),
                pattern = offence.as_str(),
                scope = "sub",
                count,
                threshold,
                window_ms,
            );
        }
        if ip_trips {
            Verdict::CoolDown
        } else {
            Verdict::Fine
        }
    }

    /// Whether to write the `event` log line for a refusal of `ip` now: `Some(n)` — write it,
    /// with `n` the refusals of that kind from that IP in the window so far — or `None`.
    pub fn log_sample(&self, ip: IpAddr, event: &'static str, now: Instant) -> Option<u64> {
        let window = self.limits.window;
        let mut state = self.state.lock().expect("abuse lock is never poisoned");
        if state.log_samples.len() >= PRUNE_AT {
            state
                .log_samples
                .retain(|_, (start, _)| now.saturating_duration_since(*start) <= window);
        }
        let entry = state.log_samples.entry((ip, event)).or_insert((now, 0));
        if now.saturating_duration_since(entry.0) > window {
            *entry = (now, 0);
        }
        entry.1 += 1;
        let n = entry.1;
        (n <= LOG_FIRST || n.is_multiple_of(LOG_EVERY)).then_some(n)
    }

    /// The counts of the window ending `now`.
    #[must_use]
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let window = self.limits.window;
        let state = self.state.lock().expect("abuse lock is never poisoned");
        let [auth_failures, rate_limited, protocol_errors] =
            Offence::ALL.map(|o| state.totals.count(o, now, window));
        Snapshot {
            auth_failures,
            rate_limited,
            protocol_errors,
            ips: state.ips.values().filter(|c| !c.idle(now, window)).count(),
            flagged: state
                .ips
                .values()
                .chain(state.subs.values())
                .filter(|c| c.flagged(now, window))
                .count(),
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// The `abuse` check of `/health`: always healthy (an attack must not turn the probes), its
/// message the window's counts.
#[must_use]
pub fn health_check(s: &Snapshot) -> health::Check {
    let mut check = health::Check::new(health::Status::Healthy);
    check.message = Some(format!(
        "last {} s: {} auth failures, {} rate-limited, {} protocol errors from {} IPs; {} flagged",
        s.window_ms / 1_000,
        s.auth_failures,
        s.rate_limited,
        s.protocol_errors,
        s.ips,
        s.flagged
    ));
    check
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> AbuseLimits {
        AbuseLimits {
            window: Duration::from_secs(60),
            auth_failures: 3,
            rate_limited: 4,
            protocol_errors: 2,
        }
    }

    #[test]
    fn an_ip_past_a_threshold_is_cooled_down_once_per_window() {
        let m = AbuseMonitor::new(limits());
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(
            m.record(ip, None, Offence::ProtocolError, t0),
            Verdict::Fine
        );
        assert_eq!(
            m.record(ip, None, Offence::ProtocolError, t0),
            Verdict::CoolDown
        );
        assert_eq!(
            m.record(ip, None, Offence::ProtocolError, t0),
            Verdict::Fine
        );
        // Out of the window, the count starts again.
        let later = t0 + Duration::from_secs(61);
        assert_eq!(
            m.record(ip, None, Offence::ProtocolError, later),
            Verdict::Fine
        );
        assert_eq!(
            m.record(ip, None, Offence::ProtocolError, later),
            Verdict::CoolDown
        );
        let snap = m.snapshot(later);
        assert_eq!(snap.protocol_errors, 2);
        assert_eq!((snap.ips, snap.flagged), (1, 1));
    }

    #[test]
    fn auth_failures_never_cool_an_ip_here_but_count_per_sub() {
        let m = AbuseMonitor::new(limits());
        let t0 = Instant::now();
        for i in 0..10u8 {
            let ip = IpAddr::from([203, 0, 113, i]);
            assert_eq!(
                m.record(ip, Some("alice"), Offence::AuthFailure, t0),
                Verdict::Fine
            );
        }
        let snap = m.snapshot(t0);
        assert_eq!((snap.auth_failures, snap.ips, snap.flagged), (10, 10, 1));
    }

    #[test]
    fn refusal_logs_are_sampled_per_ip_and_event() {
        let m = AbuseMonitor::new(limits());
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        let t0 = Instant::now();
        let written: Vec<u64> = (0..250)
            .filter_map(|_| m.log_sample(ip, "rate_limited", t0))
            .collect();
        assert_eq!(written, vec![1, 2, 3, 4, 5, 100, 200]);
        // Another event or IP has its own sample; a new window starts again.
        assert_eq!(m.log_sample(ip, "cors_rejected", t0), Some(1));
        let other: IpAddr = "198.51.100.2".parse().unwrap();
        assert_eq!(m.log_sample(other, "rate_limited", t0), Some(1));
        let later = t0 + Duration::from_secs(61);
        assert_eq!(m.log_sample(ip, "rate_limited", later), Some(1));
    }

    #[test]
    fn a_zero_threshold_is_off() {
        let m = AbuseMonitor::new(AbuseLimits {
            protocol_errors: 0,
            ..limits()
        });
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..100 {
            assert_eq!(
                m.record(ip, None, Offence::ProtocolError, t0),
                Verdict::Fine
            );
        }
    }
}
