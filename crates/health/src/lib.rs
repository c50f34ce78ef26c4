//! `health`: the `/health` model of CONTRACT §3 and the pure rules that decide it.
//!
//! The server measures (uptime, open connections, ping round trips, a store probe, whether it
//! is draining, any extra dependency such as an upstream's circuit breaker); this crate
//! decides. It reads no clock and does no IO: every input, `now` included, is an argument, so
//! the rules are the same wherever they run and each boundary has a test.
//!
//! - [`report`]: the JSON bodies, [`HealthReport`] and [`ReadinessReport`], and [`Status`].
//! - [`evaluate`]: [`evaluate()`] (the worst-of rule over named checks) and [`readiness()`].
//! - [`latency`]: [`LatencyWindow`], the median round trip over the last 60 s.
//!
//! ```
//! use std::time::Duration;
//! use health::{evaluate, HealthInputs, LatencyWindow, Status, StoreProbe, Thresholds};
//!
//! // Time is a plain value here; the server passes `Instant`s.
//! let mut window = LatencyWindow::<Duration>::default();
//! window.record(Duration::from_secs(1), Duration::from_millis(40));
//! window.record(Duration::from_secs(2), Duration::from_millis(250));
//! window.record(Duration::from_secs(3), Duration::from_millis(42));
//!
//! let report = evaluate(
//!     HealthInputs {
//!         uptime: Duration::from_millis(12_500),
//!         connections: 3,
//!         latency: window.median(Duration::from_secs(4)),
//!         version: "0.1.0".to_owned(),
//!         draining: false,
//!         store: StoreProbe::Reachable { latency: Duration::from_micros(800) },
//!         extra: Default::default(),
//!     },
//!     &Thresholds::default(),
//! );
//! assert_eq!(report.status, Status::Healthy);
//! assert_eq!(report.latency, 42.0);
//! assert_eq!(report.http_status(), 200);
//! ```
#![warn(missing_docs)]
#![warn(clippy::disallowed_methods)]

pub mod evaluate;
pub mod latency;
pub mod report;

pub use evaluate::{
    CircuitState, HealthInputs, StoreProbe, Thresholds, check_names, evaluate, readiness,
};
pub use latency::LatencyWindow;
pub use report::{Check, HealthReport, Readiness, ReadinessReport, Status};
