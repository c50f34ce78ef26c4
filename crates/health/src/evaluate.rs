//! The rules: how the measured inputs become a [`HealthReport`] and a [`ReadinessReport`].
//!
//! The overall status is the worst of the named checks:
//!
//! | check | healthy | degraded | unhealthy |
//! |---|---|---|---|
//! | `latency` | median ping RTT ≤ threshold (200 ms) | RTT strictly above it | — |
//! | `store` | reachable, probe ≤ slow threshold | probe strictly above it | unreachable |
//! | `drain` | not draining | — | draining |
//! | extra (e.g. an upstream's breaker) | as reported | as reported | as reported |
//!
//! An extra check may say `unhealthy`, which makes the whole process `unhealthy` (`503`, so
//! a load balancer stops sending traffic); a dependency the server can live without should
//! therefore report `degraded` at worst. [`CircuitState`] maps a breaker that way.

use std::{collections::BTreeMap, time::Duration};

use crate::report::{Check, HealthReport, Readiness, ReadinessReport, Status};

/// The names of the built-in checks in [`HealthReport::checks`].
pub mod check_names {
    /// The durable store probe.
    pub const STORE: &str = "store";
    /// The median WebSocket ping round trip against the latency threshold.
    pub const LATENCY: &str = "latency";
    /// Whether the server is draining for shutdown.
    pub const DRAIN: &str = "drain";
}

/// The thresholds of the rules. Both compare strictly: a value equal to the threshold is
/// still healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Above this median round trip the server is degraded (CONTRACT §3: 200 ms).
    pub latency: Duration,
    /// Above this store probe time the store check is degraded.
    pub store_slow: Duration,
}

impl Thresholds {
    /// The latency threshold of the original rules and CONTRACT §3 (200 ms), the same one
    /// the clients use for their latency-spike alert.
    pub const LATENCY: Duration = Duration::from_millis(protocol::defaults::LATENCY_THRESHOLD_MS);
    /// The default slow-store threshold: a local probe (`SELECT 1`) takes well under a
    /// millisecond, so 100 ms means the store is struggling, not merely busy.
    pub const STORE_SLOW: Duration = Duration::from_millis(100);
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            latency: Thresholds::LATENCY,
            store_slow: Thresholds::STORE_SLOW,
        }
    }
}

/// The result of one probe of the durable store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreProbe {
    /// The probe succeeded after `latency`.
    Reachable {
        /// How long the probe took.
        latency: Duration,
    },
    /// The probe failed or timed out.
    Unreachable {
        /// How long until it failed.
        latency: Duration,
        /// A short, secret-free cause; it is shown in the public report.
        error: String,
    },
}

impl StoreProbe {
    /// Whether the store answered.
    #[must_use]
    pub fn is_reachable(&self) -> bool {
        matches!(self, StoreProbe::Reachable { .. })
    }

    /// How long the probe took.
    #[must_use]
    pub fn latency(&self) -> Duration {
        match self {
            StoreProbe::Reachable { latency } | StoreProbe::Unreachable { latency, .. } => *latency,
        }
    }
}

/// The state of a circuit breaker guarding a dependency, as an extra check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CircuitState {
    /// Calls go through: healthy.
    Closed,
    /// One trial call is allowed: degraded until it succeeds.
    HalfOpen,
    /// Calls fail fast: degraded (the server still serves what does not need the dependency).
    Open,
}

impl From<CircuitState> for Check {
    fn from(state: CircuitState) -> Check {
        match state {
            CircuitState::Closed => Check::healthy(),
            CircuitState::HalfOpen => Check::degraded("circuit half-open: trying one call"),
            CircuitState::Open => Check::degraded("circuit open: calls fail fast"),
        }
    }
}

/// Everything the server measured for one `/health` answer.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthInputs {
    /// Time since the process started.
    pub uptime: Duration,
    /// Open WebSocket connections.
    pub connections: u64,
    /// Median ping round trip over the window ([`crate::LatencyWindow::median`]); zero with no
    /// samples.
    pub latency: Duration,
    /// The server's version, e.g. `env!("CARGO_PKG_VERSION")`.
    pub version: String,
    /// Whether the server is draining for shutdown.
    pub draining: bool,
    /// The latest store probe.
    pub store: StoreProbe,
    /// Further named checks (e.g. `"upstream"` from a [`CircuitState`]). A name that clashes
    /// with a built-in one (see [`check_names`]) still counts toward the status, but the
    /// built-in check keeps the name in the report.
    pub extra: BTreeMap<String, Check>,
}

/// Builds the `/health` report: each rule becomes a named check and the overall status is
/// the worst of them.
#[must_use]
pub fn evaluate(inputs: HealthInputs, thresholds: &Thresholds) -> HealthReport {
    let latency = if inputs.latency > thresholds.latency {
        Check::degraded(format!(
            "median round trip {} ms exceeds {} ms",
            millis(inputs.latency),
            millis(thresholds.latency)
        ))
    } else {
        Check::healthy()
    }
    .with_latency_ms(millis(inputs.latency));

    let store = match &inputs.store {
        StoreProbe::Unreachable { error, .. } => Check::unhealthy(format!("unreachable: {error}")),
        StoreProbe::Reachable { latency } if *latency > thresholds.store_slow => {
            Check::degraded(format!(
                "slow: probe took {} ms, above {} ms",
                millis(*latency),
                millis(thresholds.store_slow)
            ))
        }
        StoreProbe::Reachable { .. } => Check::healthy(),
    }
    .with_latency_ms(millis(inputs.store.latency()));

    let drain = if inputs.draining {
        Check::unhealthy("draining: not accepting new connections")
    } else {
        Check::healthy()
    };

    let status = [&latency, &store, &drain]
        .into_iter()
        .chain(inputs.extra.values())
        .fold(Status::Healthy, |worst, check| worst.worst(check.status));

    let mut checks = inputs.extra;
    checks.insert(check_names::LATENCY.to_owned(), latency);
    checks.insert(check_names::STORE.to_owned(), store);
    checks.insert(check_names::DRAIN.to_owned(), drain);

    HealthReport {
        status,
        uptime: seconds(inputs.uptime),
        connections: inputs.connections,
        latency: millis(inputs.latency),
        version: inputs.version,
        checks,
    }
}

/// The `/health/ready` answer: ready when the store is reachable and the server is not
/// draining. A slow store is still ready (it is `degraded` in `/health`).
#[must_use]
pub fn readiness(store: &StoreProbe, draining: bool) -> ReadinessReport {
    let mut reasons = Vec::new();
    if let StoreProbe::Unreachable { error, .. } = store {
        reasons.push(format!("store unreachable: {error}"));
    }
    if draining {
        reasons.push("draining".to_owned());
    }
    ReadinessReport {
        status: if reasons.is_empty() {
            Readiness::Ready
        } else {
            Readiness::NotReady
        },
        reasons,
    }
}

/// Milliseconds with microsecond precision, so reports show `0.8`, not `0.8000000000000000444`.
fn millis(duration: Duration) -> f64 {
    // Precision: u128 microseconds below 2^53 (285 years) convert exactly.
    duration.as_micros() as f64 / 1000.0
}

/// Seconds with millisecond precision.
fn seconds(duration: Duration) -> f64 {
    duration.as_millis() as f64 / 1000.0
}

#[cfg(test)]
mod tests;
