//! Admission, rate and size limits: message size, connection caps, token buckets, the
//! auth-failure and abuse cool-downs, the outbound queue.

use std::time::Duration;

use protocol::defaults;

use super::{Check, given};
use crate::cli::Settings;

/// A token bucket: `burst` tokens, refilled at `per_sec`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Bucket size.
    pub burst: u32,
    /// Refill rate per second.
    pub per_sec: f64,
}

/// Authentication-failure cool-down (CONTRACT §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthFailureLimit {
    /// Failures within `window` that trigger the cool-down.
    pub threshold: u32,
    /// Counting window.
    pub window: Duration,
    /// How long the IP is then refused with 429.
    pub cooldown: Duration,
}

/// Admission, rate and size limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest WebSocket message / HTTP publish body (65536).
    pub max_message_bytes: usize,
    /// Open WebSocket connections on this process (10000).
    pub max_connections: usize,
    /// Concurrent connections per client IP (1000).
    pub max_connections_per_ip: usize,
    /// Concurrent connections per `sub` (no cap).
    pub max_connections_per_sub: Option<usize>,
    /// Upgrade attempts per client IP (burst 20, 10/s).
    pub upgrade: RateLimit,
    /// Publishes per connection (burst 1000, 500/s).
    pub publish: RateLimit,
    /// Auth failures per IP (20 in 60 s → 60 s cool-down).
    pub auth_failures: AuthFailureLimit,
    /// Outbound frames queued per connection before the slow-consumer cut-off (1024).
    pub outbound_queue: usize,
    /// Rate-limit refusals per IP within the auth-failure window before the cool-down (600; 0: off).
    pub abuse_rate_limited: u32,
    /// Protocol errors per IP within the auth-failure window before the cool-down (200; 0: off).
    pub abuse_protocol_errors: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: defaults::MAX_MESSAGE_BYTES,
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            max_connections_per_sub: None,
            upgrade: RateLimit {
                burst: 20,
                per_sec: 10.0,
            },
            publish: RateLimit {
                burst: 1_000,
                per_sec: 500.0,
            },
            auth_failures: AuthFailureLimit {
                threshold: 20,
                window: Duration::from_secs(60),
                cooldown: Duration::from_secs(60),
            },
            outbound_queue: 1_024,
            abuse_rate_limited: 600,
            abuse_protocol_errors: 200,
        }
    }
}

/// `TETHER_MAX_MESSAGE_BYTES`, the connection caps, the buckets and the cool-downs.
pub(super) fn load(c: &mut Check, s: &Settings) -> Limits {
    let d = Limits::default();
    Limits {
        max_message_bytes: c.num(
            "TETHER_MAX_MESSAGE_BYTES",
            s.max_message_bytes.as_ref(),
            d.max_message_bytes,
            256,
        ),
        max_connections: c.num(
            "TETHER_MAX_CONNECTIONS",
            s.max_connections.as_ref(),
            d.max_connections,
            1,
        ),
        max_connections_per_ip: c.num(
            "TETHER_MAX_CONNECTIONS_PER_IP",
            s.max_connections_per_ip.as_ref(),
            d.max_connections_per_ip,
            1,
        ),
        max_connections_per_sub: given(s.max_connections_per_sub.as_ref()).map(|_| {
            c.num(
                "TETHER_MAX_CONNECTIONS_PER_SUB",
                s.max_connections_per_sub.as_ref(),
                1,
                1,
            )
        }),
        upgrade: RateLimit {
            burst: c.num(
                "TETHER_UPGRADE_BURST",
                s.upgrade_burst.as_ref(),
                d.upgrade.burst,
                1,
            ),
            per_sec: c.num(
                "TETHER_UPGRADE_PER_SEC",
                s.upgrade_per_sec.as_ref(),
                d.upgrade.per_sec,
                0.001,
            ),
        },
        publish: RateLimit {
            burst: c.num(
                "TETHER_PUBLISH_BURST",
                s.publish_burst.as_ref(),
                d.publish.burst,
                1,
            ),
            per_sec: c.num(
                "TETHER_PUBLISH_PER_SEC",
                s.publish_per_sec.as_ref(),
                d.publish.per_sec,
                0.001,
            ),
        },
        auth_failures: AuthFailureLimit {
            threshold: c.num(
                "TETHER_AUTH_FAILURE_THRESHOLD",
                s.auth_failure_threshold.as_ref(),
                d.auth_failures.threshold,
                1,
            ),
            window: c.millis(
                "TETHER_AUTH_FAILURE_WINDOW_MS",
                s.auth_failure_window_ms.as_ref(),
                as_ms(d.auth_failures.window),
                1,
            ),
            cooldown: c.millis(
                "TETHER_AUTH_FAILURE_COOLDOWN_MS",
                s.auth_failure_cooldown_ms.as_ref(),
                as_ms(d.auth_failures.cooldown),
                0,
            ),
        },
        outbound_queue: c.num(
            "TETHER_OUTBOUND_QUEUE",
            s.outbound_queue.as_ref(),
            d.outbound_queue,
            1,
        ),
        abuse_rate_limited: c.num(
            "TETHER_ABUSE_RATE_LIMITED",
            s.abuse_rate_limited.as_ref(),
            d.abuse_rate_limited,
            0,
        ),
        abuse_protocol_errors: c.num(
            "TETHER_ABUSE_PROTOCOL_ERRORS",
            s.abuse_protocol_errors.as_ref(),
            d.abuse_protocol_errors,
            0,
        ),
    }
}

/// A default duration as the milliseconds [`Check::millis`] takes.
fn as_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
