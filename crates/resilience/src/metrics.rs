//! [`Metrics`]: the connection-quality figures every client keeps (CONTRACT §8), and the
//! [`QualitySnapshot`] behind the `connection_quality` log line (every 60 s).
//!
//! - RTT: last, median and p95 over the heartbeat's window ([`crate::RttStats`]).
//! - Delivery rate: publishes acknowledged ÷ publishes sent (each counted once however often
//!   it was resent), from the queue's totals.
//! - Failed attempts: attempts that counted toward the budget.
//! - Reconnection success rate: attempts made while `RECONNECTING` that reached `welcome` ÷
//!   all attempts made while `RECONNECTING`.
//! - Downtime: time the app wanted a connection and did not have one (`CONNECTING`,
//!   `RECONNECTING`, `FAILED`, or `DISCONNECTED` because the network is offline); total and
//!   current outage. Time after the app closed the connection is not downtime.
//!
//! The machine is fed the connection's events ([`Metrics::on_event`]) and its state after every
//! step ([`Metrics::on_state`]); it never reads a clock.
use std::time::Duration;

use protocol::ConnectionState;
use serde::Serialize;

use crate::Instant;
use crate::alerts::AlertKind;
use crate::connection::Event;
use crate::heartbeat::RttStats;
use crate::queue::QueueStats;

/// Counters and downtime of one client.
#[derive(Clone, Debug)]
pub struct Metrics {
    attempts: u64,
    failed_attempts: u64,
    connections: u64,
    reconnect_attempts: u64,
    reconnects: u64,
    /// Attempts in the current outage (0 while connected).
    outage_attempts: u32,
    down_since: Option<Instant>,
    downtime_total: Duration,
    state: ConnectionState,
}

/// One `connection_quality` sample: everything a UI or a log line shows about the link.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QualitySnapshot {
    /// The connection state.
    pub state: ConnectionState,
    /// Last RTT, ms.
    pub rtt_ms: Option<u64>,
    /// Median RTT over the window, ms.
    pub rtt_median_ms: Option<u64>,
    /// 95th percentile RTT over the window, ms.
    pub rtt_p95_ms: Option<u64>,
    /// Acknowledged ÷ sent publishes (`None` before the first send).
    pub delivery_rate: Option<f64>,
    /// Publishes sent (each once).
    pub sent: u64,
    /// Publishes acknowledged.
    pub acked: u64,
    /// Publishes failed for good.
    pub failed_messages: u64,
    /// Publishes waiting in the queue (in flight included).
    pub queue_length: usize,
    /// Connection attempts started.
    pub attempts: u64,
    /// Attempts that failed.
    pub failed_attempts: u64,
    /// Attempts in the current outage.
    pub outage_attempts: u32,
    /// Successful reconnections (connections after the first).
    pub reconnects: u64,
    /// Successful ÷ started attempts while reconnecting (`None` before any).
    pub reconnection_success_rate: Option<f64>,
    /// Downtime of closed outages plus the current one, ms.
    pub downtime_total_ms: u64,
    /// The current outage so far, ms (0 while connected).
    pub current_downtime_ms: u64,
    /// Alerts in force.
    pub alerts: Vec<AlertKind>,
}

impl Metrics {
    /// Zeroed metrics for a client that is `DISCONNECTED` and not yet asked to connect.
    pub fn new() -> Self {
        Self {
            attempts: 0,
            failed_attempts: 0,
            connections: 0,
            reconnect_attempts: 0,
            reconnects: 0,
            outage_attempts: 0,
            down_since: None,
            downtime_total: Duration::ZERO,
            state: ConnectionState::Disconnected,
        }
    }

    /// Counts what the connection machine reported.
    pub fn on_event(&mut self, event: &Event) {
        match event {
            Event::AttemptStarted { .. } => {
                self.attempts += 1;
                self.outage_attempts = self.outage_attempts.saturating_add(1);
                if self.state == ConnectionState::Reconnecting {
                    self.reconnect_attempts += 1;
                }
            }
            Event::RetryFailed { .. } => self.failed_attempts += 1,
            Event::Connected { .. } => {
                if self.connections > 0 {
                    self.reconnects += 1;
                }
                self.connections += 1;
                self.outage_attempts = 0;
            }
            _ => {}
        }
    }

    /// The state after a step and whether the app wants a connection: opens or closes an
    /// outage. Call after every step (cheap when nothing changed).
    pub fn on_state(&mut self, now: Instant, state: ConnectionState, wanted: bool) {
        self.state = state;
        let down = wanted && state != ConnectionState::Connected;
        match (down, self.down_since) {
            (true, None) => self.down_since = Some(now),
            (false, Some(since)) => {
                self.downtime_total += now.saturating_duration_since(since);
                self.down_since = None;
                if !wanted {
                    self.outage_attempts = 0;
                }
            }
            _ => {}
        }
    }

    /// Since when the client has been down, if it is.
    pub fn down_since(&self) -> Option<Instant> {
        self.down_since
    }

    /// The current outage so far.
    pub fn current_downtime(&self, now: Instant) -> Duration {
        self.down_since
            .map_or(Duration::ZERO, |s| now.saturating_duration_since(s))
    }

    /// Attempts in the current outage.
    pub fn outage_attempts(&self) -> u32 {
        self.outage_attempts
    }

    /// Everything at `now`, with the RTT window, the queue's totals and the alerts in force.
    pub fn snapshot(
        &self,
        now: Instant,
        rtt: RttStats,
        queue: QueueStats,
        queue_length: usize,
        alerts: Vec<AlertKind>,
    ) -> QualitySnapshot {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let current = self.current_downtime(now);
        QualitySnapshot {
            state: self.state,
            rtt_ms: rtt.last.map(ms),
            rtt_median_ms: rtt.median.map(ms),
            rtt_p95_ms: rtt.p95.map(ms),
            delivery_rate: ratio(queue.acked, queue.sent),
            sent: queue.sent,
            acked: queue.acked,
            failed_messages: queue.failed,
            queue_length,
            attempts: self.attempts,
            failed_attempts: self.failed_attempts,
            outage_attempts: self.outage_attempts,
            reconnects: self.reconnects,
            reconnection_success_rate: ratio(self.reconnects, self.reconnect_attempts),
            downtime_total_ms: ms(self.downtime_total + current),
            current_downtime_ms: ms(current),
            alerts,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[allow(clippy::cast_precision_loss)] // counters far below 2^52
fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::Failure;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn downtime_counts_only_while_wanted_and_not_connected() {
        let t0 = crate::t0();
        let mut m = Metrics::new();
        m.on_state(t0, ConnectionState::Disconnected, false);
        m.on_state(at(t0, 1_000), ConnectionState::Connecting, true);
        m.on_state(at(t0, 1_500), ConnectionState::Connected, true);
        m.on_state(at(t0, 10_000), ConnectionState::Reconnecting, true);
        assert_eq!(m.current_downtime(at(t0, 12_000)), Duration::from_secs(2));
        m.on_state(at(t0, 13_000), ConnectionState::Connected, true);
        m.on_state(at(t0, 20_000), ConnectionState::Disconnected, false);
        let s = m.snapshot(
            at(t0, 99_000),
            RttStats::default(),
            QueueStats::default(),
            0,
            vec![],
        );
        assert_eq!((s.downtime_total_ms, s.current_downtime_ms), (3_500, 0));
        // Offline while wanted is downtime.
        m.on_state(at(t0, 100_000), ConnectionState::Disconnected, true);
        let s = m.snapshot(
            at(t0, 104_000),
            RttStats::default(),
            QueueStats::default(),
            0,
            vec![],
        );
        assert_eq!((s.downtime_total_ms, s.current_downtime_ms), (7_500, 4_000));
    }

    #[test]
    fn rates_and_counters() {
        let t0 = crate::t0();
        let mut m = Metrics::new();
        let connected = Event::Connected {
            attempt: 1,
            connection_id: "c".into(),
            heartbeat: Duration::from_secs(30),
            max_message_bytes: 1,
        };
        m.on_state(t0, ConnectionState::Connecting, true);
        m.on_event(&Event::AttemptStarted { attempt: 1 });
        m.on_event(&connected);
        m.on_state(t0, ConnectionState::Reconnecting, true);
        for n in 1..=3 {
            m.on_event(&Event::AttemptStarted { attempt: n });
        }
        m.on_event(&Event::RetryFailed {
            attempt: 1,
            reason: Failure::Timeout,
            failures: 1,
            remaining: 9,
        });
        assert_eq!(m.outage_attempts(), 3);
        m.on_event(&connected);
        let q = QueueStats {
            sent: 4,
            acked: 3,
            failed: 1,
            ..QueueStats::default()
        };
        let s = m.snapshot(t0, RttStats::default(), q, 2, vec![]);
        expect_test::expect![[r#"{"state":"RECONNECTING","rtt_ms":null,"rtt_median_ms":null,"rtt_p95_ms":null,"delivery_rate":0.75,"sent":4,"acked":3,"failed_messages":1,"queue_length":2,"attempts":4,"failed_attempts":1,"outage_attempts":0,"reconnects":1,"reconnection_success_rate":0.3333333333333333,"downtime_total_ms":0,"current_downtime_ms":0,"alerts":[]}"#]]
        .assert_eq(&serde_json::to_string(&s).unwrap());
    }
}
