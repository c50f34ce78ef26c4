//! [`Alerts`]: the four alert thresholds of CONTRACT §8, as begin/end events.
//!
//! | alert | begins when | ends when |
//! |---|---|---|
//! | [`AlertKind::HighLatency`] | an RTT sample above 200 ms | an RTT sample at or below 200 ms, or the connection ends |
//! | [`AlertKind::ReconnectAttempts`] | more than 3 attempts in one outage | connected again, or not wanted |
//! | [`AlertKind::FailedMessages`] | more than 5 messages failed within the last 5 min | the 5-minute count is 5 or fewer |
//! | [`AlertKind::Downtime`] | down (wanted but not connected) for over 30 s | connected again, or not wanted |
//!
//! Each alert begins once and ends once: no repeated `Begin` while it is in force. A begin is
//! a `warn` line for the logs; an end is `info`.
use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;

use crate::Instant;

/// Which alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Latency above the threshold.
    HighLatency,
    /// More than 3 reconnection attempts in one outage.
    ReconnectAttempts,
    /// More than 5 failed messages.
    FailedMessages,
    /// Down for over 30 s.
    Downtime,
}

impl AlertKind {
    /// Every alert.
    pub const ALL: [AlertKind; 4] = [
        Self::HighLatency,
        Self::ReconnectAttempts,
        Self::FailedMessages,
        Self::Downtime,
    ];

    /// The snake_case name, for logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::HighLatency => "high_latency",
            Self::ReconnectAttempts => "reconnect_attempts",
            Self::FailedMessages => "failed_messages",
            Self::Downtime => "downtime",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// An alert began or ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertEvent {
    /// The alert is now in force.
    Begin {
        /// Which alert.
        kind: AlertKind,
        /// The measured value (ms for latency and downtime, a count otherwise).
        value: u64,
        /// The threshold it exceeded.
        threshold: u64,
    },
    /// The alert is no longer in force.
    End {
        /// Which alert.
        kind: AlertKind,
    },
}

/// The thresholds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlertConfig {
    /// RTT above this (200 ms).
    pub latency: Duration,
    /// More attempts than this in one outage (3).
    pub reconnect_attempts: u32,
    /// More failed messages than this within `failed_window` (5).
    pub failed_messages: u32,
    /// The window failed messages are counted in (5 min).
    pub failed_window: Duration,
    /// Down longer than this (30 s).
    pub downtime: Duration,
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self::from(&crate::Config::new(0))
    }
}

impl From<&crate::Config> for AlertConfig {
    fn from(c: &crate::Config) -> Self {
        Self {
            latency: c.latency_threshold,
            reconnect_attempts: c.alert_reconnect_attempts,
            failed_messages: c.alert_failed_messages,
            failed_window: c.alert_failed_window,
            downtime: c.alert_downtime,
        }
    }
}

/// What the alerts look at after each step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AlertInputs {
    /// A new RTT sample taken in this step, if any.
    pub new_rtt: Option<Duration>,
    /// Whether the connection is up (a latency alert ends when it is not).
    pub connected: bool,
    /// Attempts in the current outage.
    pub outage_attempts: u32,
    /// Since when the client has been down (wanted, not connected).
    pub down_since: Option<Instant>,
}

/// The alert machine.
#[derive(Clone, Debug, Default)]
pub struct Alerts {
    config: AlertConfig,
    active: [bool; 4],
    failures: VecDeque<Instant>,
    events: VecDeque<AlertEvent>,
}

impl Alerts {
    /// No alert in force.
    pub fn new(config: AlertConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// A message failed for good at `now`.
    pub fn on_message_failed(&mut self, now: Instant) {
        self.failures.push_back(now);
    }

    /// Re-evaluates every alert at `now`. Early or repeated calls change nothing.
    pub fn evaluate(&mut self, now: Instant, inputs: &AlertInputs) {
        let c = self.config;
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);

        match inputs.new_rtt {
            Some(rtt) if rtt > c.latency => {
                self.set(AlertKind::HighLatency, true, ms(rtt), ms(c.latency))
            }
            Some(_) => self.set(AlertKind::HighLatency, false, 0, 0),
            None if !inputs.connected => self.set(AlertKind::HighLatency, false, 0, 0),
            None => {}
        }

        let attempts = inputs.outage_attempts;
        self.set(
            AlertKind::ReconnectAttempts,
            attempts > c.reconnect_attempts,
            u64::from(attempts),
            u64::from(c.reconnect_attempts),
        );

        while let Some(&first) = self.failures.front() {
            if now.saturating_duration_since(first) >= c.failed_window {
                self.failures.pop_front();
            } else {
                break;
            }
        }
        let failed = self.failures.len() as u64;
        self.set(
            AlertKind::FailedMessages,
            failed > u64::from(c.failed_messages),
            failed,
            u64::from(c.failed_messages),
        );

        let down = inputs
            .down_since
            .map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
        self.set(
            AlertKind::Downtime,
            down > c.downtime,
            ms(down),
            ms(c.downtime),
        );
    }

    /// When an alert may change with no input: the downtime bound passing, or a failed
    /// message leaving the window.
    #[must_use]
    pub fn poll_timeout(&self, down_since: Option<Instant>) -> Option<Instant> {
        let downtime = down_since
            .filter(|_| !self.is_active(AlertKind::Downtime))
            .map(|s| s + self.config.downtime + Duration::from_millis(1));
        let window = self
            .failures
            .front()
            .filter(|_| self.is_active(AlertKind::FailedMessages))
            .map(|&f| f + self.config.failed_window);
        match (downtime, window) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<AlertEvent> {
        self.events.pop_front()
    }

    /// Whether `kind` is in force.
    pub fn is_active(&self, kind: AlertKind) -> bool {
        self.active[kind.index()]
    }

    /// The alerts in force.
    pub fn active(&self) -> Vec<AlertKind> {
        AlertKind::ALL
            .into_iter()
            .filter(|k| self.is_active(*k))
            .collect()
    }

    fn set(&mut self, kind: AlertKind, on: bool, value: u64, threshold: u64) {
        let slot = &mut self.active[kind.index()];
        if on && !*slot {
            *slot = true;
            self.events.push_back(AlertEvent::Begin {
                kind,
                value,
                threshold,
            });
        } else if !on && *slot {
            *slot = false;
            self.events.push_back(AlertEvent::End { kind });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    fn events(a: &mut Alerts) -> Vec<AlertEvent> {
        std::iter::from_fn(|| a.poll_event()).collect()
    }

    #[test]
    fn latency_begins_above_200_ms_and_ends_at_or_below() {
        let t0 = crate::t0();
        let mut a = Alerts::new(AlertConfig::default());
        let rtt = |ms| AlertInputs {
            new_rtt: Some(Duration::from_millis(ms)),
            connected: true,
            ..AlertInputs::default()
        };
        a.evaluate(t0, &rtt(200));
        assert!(events(&mut a).is_empty());
        a.evaluate(t0, &rtt(201));
        a.evaluate(t0, &rtt(350));
        a.evaluate(
            t0,
            &AlertInputs {
                connected: true,
                ..AlertInputs::default()
            },
        );
        assert!(a.is_active(AlertKind::HighLatency), "no sample: unchanged");
        a.evaluate(t0, &rtt(120));
        assert_eq!(
            events(&mut a),
            [
                AlertEvent::Begin {
                    kind: AlertKind::HighLatency,
                    value: 201,
                    threshold: 200
                },
                AlertEvent::End {
                    kind: AlertKind::HighLatency
                },
            ]
        );
    }

    #[test]
    fn more_than_three_attempts() {
        let t0 = crate::t0();
        let mut a = Alerts::new(AlertConfig::default());
        for n in 0..=3 {
            a.evaluate(
                t0,
                &AlertInputs {
                    outage_attempts: n,
                    ..AlertInputs::default()
                },
            );
        }
        assert!(events(&mut a).is_empty());
        a.evaluate(
            t0,
            &AlertInputs {
                outage_attempts: 4,
                ..AlertInputs::default()
            },
        );
        a.evaluate(
            t0,
            &AlertInputs {
                outage_attempts: 5,
                ..AlertInputs::default()
            },
        );
        a.evaluate(
            t0,
            &AlertInputs {
                connected: true,
                ..AlertInputs::default()
            },
        );
        assert_eq!(
            events(&mut a),
            [
                AlertEvent::Begin {
                    kind: AlertKind::ReconnectAttempts,
                    value: 4,
                    threshold: 3
                },
                AlertEvent::End {
                    kind: AlertKind::ReconnectAttempts
                },
            ]
        );
    }

    #[test]
    fn more_than_five_failed_messages_within_the_window() {
        let t0 = crate::t0();
        let mut a = Alerts::new(AlertConfig::default());
        let idle = AlertInputs {
            connected: true,
            ..AlertInputs::default()
        };
        for s in 0..5 {
            a.on_message_failed(at(t0, s * 1000));
        }
        a.evaluate(at(t0, 5_000), &idle);
        assert!(events(&mut a).is_empty(), "five is not more than five");
        a.on_message_failed(at(t0, 5_000));
        a.evaluate(at(t0, 5_000), &idle);
        assert_eq!(
            events(&mut a),
            [AlertEvent::Begin {
                kind: AlertKind::FailedMessages,
                value: 6,
                threshold: 5
            }]
        );
        // The first failure leaves the 5-minute window at 300 s.
        assert_eq!(a.poll_timeout(None), Some(at(t0, 300_000)));
        a.evaluate(at(t0, 300_000), &idle);
        assert_eq!(
            events(&mut a),
            [AlertEvent::End {
                kind: AlertKind::FailedMessages
            }]
        );
    }

    #[test]
    fn downtime_over_thirty_seconds() {
        let t0 = crate::t0();
        let mut a = Alerts::new(AlertConfig::default());
        let down = AlertInputs {
            down_since: Some(t0),
            ..AlertInputs::default()
        };
        assert_eq!(a.poll_timeout(Some(t0)), Some(at(t0, 30_001)));
        a.evaluate(at(t0, 30_000), &down);
        assert!(events(&mut a).is_empty(), "exactly 30 s is not over 30 s");
        a.evaluate(at(t0, 30_001), &down);
        assert_eq!(
            a.poll_timeout(Some(t0)),
            None,
            "in force: nothing more to wait for"
        );
        a.evaluate(
            at(t0, 40_000),
            &AlertInputs {
                connected: true,
                ..AlertInputs::default()
            },
        );
        assert_eq!(
            events(&mut a),
            [
                AlertEvent::Begin {
                    kind: AlertKind::Downtime,
                    value: 30_001,
                    threshold: 30_000
                },
                AlertEvent::End {
                    kind: AlertKind::Downtime
                },
            ]
        );
        assert!(a.active().is_empty());
    }
}
