//! The JSON bodies of `GET /health` and `GET /health/ready` (CONTRACT §3).

use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Serialize};

/// Overall or per-check health, ordered from best to worst so that the worst of several is
/// their maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Everything works within its thresholds.
    Healthy,
    /// Serving, but something is slow or impaired; still answered with `200`.
    Degraded,
    /// Not able to serve (store unreachable, draining); answered with `503`.
    Unhealthy,
}

impl Status {
    /// The worse of the two.
    #[must_use]
    pub fn worst(self, other: Status) -> Status {
        self.max(other)
    }

    /// The HTTP status code `/health` answers with: `200` unless unhealthy, then `503`.
    #[must_use]
    pub fn http_status(self) -> u16 {
        match self {
            Status::Healthy | Status::Degraded => 200,
            Status::Unhealthy => 503,
        }
    }

    /// The wire spelling: `healthy`, `degraded` or `unhealthy`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Degraded => "degraded",
            Status::Unhealthy => "unhealthy",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One named check in the report's `checks` map.
///
/// `latency_ms` is present when the check measured something (the store probe, the ping
/// round trip); a check without a meaningful duration (a circuit breaker, draining) leaves it
/// out rather than report a made-up number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// This check's verdict.
    pub status: Status,
    /// How long the check took or what it measured, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Why the check is not healthy (or other detail); never a secret or an internal path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Check {
    /// A check with `status` and nothing else.
    #[must_use]
    pub fn new(status: Status) -> Check {
        Check {
            status,
            latency_ms: None,
            message: None,
        }
    }

    /// A healthy check.
    #[must_use]
    pub fn healthy() -> Check {
        Check::new(Status::Healthy)
    }

    /// A degraded check explained by `message`.
    #[must_use]
    pub fn degraded(message: impl Into<String>) -> Check {
        Check::new(Status::Degraded).with_message(message)
    }

    /// An unhealthy check explained by `message`.
    #[must_use]
    pub fn unhealthy(message: impl Into<String>) -> Check {
        Check::new(Status::Unhealthy).with_message(message)
    }

    /// The same check with a measured latency in milliseconds.
    #[must_use]
    pub fn with_latency_ms(mut self, latency_ms: f64) -> Check {
        self.latency_ms = Some(latency_ms);
        self
    }

    /// The same check with an explanation.
    #[must_use]
    pub fn with_message(mut self, message: impl Into<String>) -> Check {
        self.message = Some(message.into());
        self
    }
}

/// The body of `GET /health`. Clients must ignore fields they do not know; these are the
/// required ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    /// The worst of the checks.
    pub status: Status,
    /// Seconds since the process started.
    pub uptime: f64,
    /// Open WebSocket connections on this process.
    pub connections: u64,
    /// Median WebSocket Ping → Pong round trip over the last 60 s, in milliseconds; 0 with no
    /// samples.
    pub latency: f64,
    /// The server's version.
    pub version: String,
    /// Named checks (`store`, `latency`, `drain`, and any extra dependency), in name order.
    pub checks: BTreeMap<String, Check>,
}

impl HealthReport {
    /// The HTTP status code to answer with (`200`, or `503` when unhealthy).
    #[must_use]
    pub fn http_status(&self) -> u16 {
        self.status.http_status()
    }
}

/// Whether the process accepts new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Readiness {
    /// Accepting: the store is reachable and the server is not draining.
    Ready,
    /// Not accepting; the report says why.
    NotReady,
}

/// The body of `GET /health/ready`: `{"status":"ready"}` or
/// `{"status":"not_ready","reasons":["draining"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadinessReport {
    /// Ready or not.
    pub status: Readiness,
    /// Why not, one short phrase per cause; empty (and omitted) when ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

impl ReadinessReport {
    /// Whether new connections are accepted.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.status == Readiness::Ready
    }

    /// The HTTP status code to answer with: `200` when ready, else `503`.
    #[must_use]
    pub fn http_status(&self) -> u16 {
        if self.is_ready() { 200 } else { 503 }
    }
}
