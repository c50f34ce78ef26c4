//! The timing settings: heartbeat, drain window, hello deadline, latency threshold and the
//! `token_expiring` notice. Defaults are the contract's, from `protocol::defaults`.

use std::time::Duration;

use protocol::defaults;

use super::Check;
use crate::cli::Settings;

/// The default drain window on shutdown (a server-only setting, so not in `protocol`).
pub const DEFAULT_DRAIN_MS: u64 = 5_000;

/// What [`load`] parsed.
pub(super) struct Timing {
    pub heartbeat: Duration,
    pub drain: Duration,
    pub connection_timeout: Duration,
    pub latency_threshold: Duration,
    pub token_expiry_notice: Duration,
}

/// `TETHER_HEARTBEAT_MS`, `TETHER_DRAIN_MS`, `TETHER_CONNECTION_TIMEOUT_MS`,
/// `TETHER_LATENCY_THRESHOLD_MS`, `TETHER_TOKEN_EXPIRY_NOTICE_MS`.
pub(super) fn load(c: &mut Check, s: &Settings) -> Timing {
    Timing {
        heartbeat: c.millis(
            "TETHER_HEARTBEAT_MS",
            s.heartbeat_ms.as_ref(),
            defaults::HEARTBEAT_INTERVAL_MS,
            100,
        ),
        drain: c.millis("TETHER_DRAIN_MS", s.drain_ms.as_ref(), DEFAULT_DRAIN_MS, 0),
        connection_timeout: c.millis(
            "TETHER_CONNECTION_TIMEOUT_MS",
            s.connection_timeout_ms.as_ref(),
            defaults::CONNECTION_TIMEOUT_MS,
            1,
        ),
        latency_threshold: c.millis(
            "TETHER_LATENCY_THRESHOLD_MS",
            s.latency_threshold_ms.as_ref(),
            defaults::LATENCY_THRESHOLD_MS,
            1,
        ),
        token_expiry_notice: c.millis(
            "TETHER_TOKEN_EXPIRY_NOTICE_MS",
            s.token_expiry_notice_ms.as_ref(),
            defaults::TOKEN_EXPIRING_LEAD_MS,
            0,
        ),
    }
}
