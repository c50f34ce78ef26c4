//! What a session machine needs from the configuration ([`Policy`]), built once per server
//! and shared by every connection.
use std::time::Duration;

use crate::auth::Authenticator;
use crate::config::{Config, RateLimit};

/// What a session needs from the configuration, built once per server.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Ping interval (`heartbeat_ms` in `welcome`); the dead link is 2.5 of it.
    pub heartbeat: Duration,
    /// How long a connection may take to send `hello`.
    pub hello_timeout: Duration,
    /// `token_expiring` goes out this long before `exp`.
    pub expiry_notice: Duration,
    /// A round trip above this logs `latency_spike`.
    pub latency_threshold: Duration,
    /// `max_message_bytes` in `welcome`.
    pub max_message_bytes: u64,
    /// The per-connection publish rate (CONTRACT §5.4).
    pub publish: RateLimit,
    /// Token verification.
    pub auth: Authenticator,
}

impl Policy {
    /// The session policy of `config`.
    #[must_use]
    pub fn from_config(config: &Config) -> Self {
        Self {
            heartbeat: config.heartbeat,
            hello_timeout: config.connection_timeout,
            expiry_notice: config.token_expiry_notice,
            latency_threshold: config.latency_threshold,
            max_message_bytes: config.limits.max_message_bytes as u64,
            publish: config.limits.publish,
            auth: Authenticator::new(&config.auth),
        }
    }

    /// Silence after which the link is dead.
    #[must_use]
    pub fn dead_after(&self) -> Duration {
        self.heartbeat * 5 / 2
    }
}
