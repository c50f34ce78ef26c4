//! [`ReportTimer`]: when the client sends its quality `report` (CONTRACT §5.8), and
//! [`report_from`], what it says.
//!
//! - Every `report_interval` (60 s) while connected, on the machine's virtual clock: the first
//!   one interval after `welcome`, then one interval after the previous report.
//! - Once right after each **re**connect (not after the first connection, which has nothing to
//!   tell yet): the server learns at once what the outage cost (attempts, downtime).
//! - Nothing while not connected: a report is never queued, it describes the link it goes on.
//!
//! The figures are the [`QualitySnapshot`]'s: RTT last/median/p95 of the heartbeat window,
//! successful reconnects, failed attempts, total downtime, queue length and delivery rate.
use std::time::Duration;

use protocol::{Report, RttSummary};

use crate::Instant;
use crate::metrics::QualitySnapshot;

/// The report schedule of one client.
#[derive(Clone, Debug)]
pub struct ReportTimer {
    interval: Option<Duration>,
    /// When the next report is due (`None` while not connected, or reports are off).
    next: Option<Instant>,
}

impl ReportTimer {
    /// Reports every `interval`; `None`: never.
    pub fn new(interval: Option<Duration>) -> Self {
        Self {
            interval,
            next: None,
        }
    }

    /// `welcome` arrived. Returns whether a report is due right now (after a reconnect).
    pub fn on_connected(&mut self, now: Instant, reconnect: bool) -> bool {
        let Some(interval) = self.interval else {
            return false;
        };
        self.next = Some(now + interval);
        reconnect
    }

    /// The connection is gone (or was never there): no report until the next `welcome`.
    pub fn on_disconnected(&mut self) {
        self.next = None;
    }

    /// Whether a report is due at `now`; if so the next one is scheduled an interval later
    /// (from `now`: after a frozen tab, one report, not a burst).
    pub fn due(&mut self, now: Instant) -> bool {
        match (self.next, self.interval) {
            (Some(at), Some(interval)) if now >= at => {
                self.next = Some(now + interval);
                true
            }
            _ => false,
        }
    }

    /// When [`ReportTimer::due`] next returns `true`.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next
    }
}

/// The `report` frame for a quality sample.
#[allow(clippy::cast_precision_loss)] // milliseconds far below 2^52
pub fn report_from(s: &QualitySnapshot) -> Report {
    let ms = |v: Option<u64>| v.map(|v| v as f64);
    let rtt = RttSummary {
        last: ms(s.rtt_ms),
        p50: ms(s.rtt_median_ms),
        p95: ms(s.rtt_p95_ms),
    };
    Report {
        rtt_ms: (rtt != RttSummary::default()).then_some(rtt),
        reconnects: Some(s.reconnects),
        failed_attempts: Some(s.failed_attempts),
        downtime_ms: Some(s.downtime_total_ms),
        queue: Some(u64::try_from(s.queue_length).unwrap_or(u64::MAX)),
        delivery_rate: s.delivery_rate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_interval_while_connected_and_at_once_after_a_reconnect() {
        let t0 = crate::t0();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut r = ReportTimer::new(Some(Duration::from_secs(60)));
        assert_eq!(r.poll_timeout(), None);
        assert!(!r.due(s(1_000)), "nothing before a welcome");
        assert!(
            !r.on_connected(s(0), false),
            "no report after the first welcome"
        );
        assert!(!r.due(s(59)));
        assert!(r.due(s(60)));
        assert!(!r.due(s(60)), "once per interval");
        assert_eq!(r.poll_timeout(), Some(s(120)));
        // A frozen tab wakes at 500 s: one report, the next one interval later.
        assert!(r.due(s(500)));
        assert_eq!(r.poll_timeout(), Some(s(560)));
        r.on_disconnected();
        assert_eq!(r.poll_timeout(), None);
        assert!(!r.due(s(600)));
        assert!(r.on_connected(s(700), true), "right after a reconnect");
        assert_eq!(r.poll_timeout(), Some(s(760)));
    }

    #[test]
    fn off_means_never() {
        let t0 = crate::t0();
        let mut r = ReportTimer::new(None);
        assert!(!r.on_connected(t0, true));
        assert_eq!(r.poll_timeout(), None);
        assert!(!r.due(t0 + Duration::from_secs(3600)));
    }
}
