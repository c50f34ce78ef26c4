//! The server's Prometheus metrics (CONTRACT §11): one process-wide registry, the functions the
//! instrumented code calls (one line each at the call site), and the text rendering for
//! `GET /metrics` ([`endpoint`]).
//!
//! API summary:
//! - Call sites: [`connection_opened`], [`connection_closed`]`(code)`, [`upgrade_refused`],
//!   [`published`]`(outcome)`, [`publish_refused`], [`delivered`]`(n)`, [`publish_acked`],
//!   [`time_commit`]`(future)`, [`ws_rtt`], [`slow_consumer`], [`auth_failure`],
//!   [`rate_limited`], [`reconnect_advice`], [`client_report`] (from [`crate::fleet`]),
//!   [`call_started`]/[`call_ended`], [`call_resumed`], [`agent_link_failed`],
//!   [`span_dropped`] (from [`crate::telemetry`]).
//! - [`set_node`]: the `node` label of `tether_build_info` (a random `n_` + 8 hex until set).
//! - [`render`]`(Format)`: the exposition text; [`Format::negotiate`] picks Prometheus 0.0.4
//!   or OpenMetrics 1.0 from an `Accept` header.
//! - [`get`]: the registry and handles, for the fleet view and tests.
//!
//! Process-wide on purpose, like Prometheus' default registry: the store's writer, the hub and
//! the sessions count without being handed an object, and one process serves one `/metrics`.
//! In-process tests that run several servers read differences, not absolute values.
//!
//! Hot path: counters and gauges are `prometheus-client`'s atomics; labelled children used per
//! message are resolved once at start ([`Metrics::publishes_stored`] …), so a publish never
//! touches a family's lock; histograms are [`AtomicHistogram`] (no lock at all).

pub mod endpoint;
pub mod histogram;

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use histogram::AtomicHistogram;

use crate::admission::Refusal;
use crate::store::{PublishOutcome, StoreError};

/// Label pairs of a labelled family.
pub type Labels = Vec<(&'static str, String)>;

/// Every metric of the server, registered in [`Metrics::registry`].
#[derive(Debug)]
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// `tether_connections`: open WebSocket connections (upgraded, not yet closed).
    pub connections: Gauge,
    /// `tether_connections_opened_total`.
    pub connections_opened: Counter,
    /// `tether_connections_closed_total{code}`.
    pub connections_closed: Family<Labels, Counter>,
    /// `tether_upgrades_refused_total{reason}`: `origin`, `insecure_transport`, `rate_limited`,
    /// `unavailable`.
    pub upgrades_refused: Family<Labels, Counter>,
    /// `tether_publishes_total{outcome="stored"}`.
    pub publishes_stored: Counter,
    /// `tether_publishes_total{outcome="duplicate"}`.
    pub publishes_duplicate: Counter,
    /// `tether_publishes_total{outcome="refused"}`.
    pub publishes_refused: Counter,
    /// `tether_deliveries_total`: message frames handed to subscribers (live and replayed).
    pub deliveries: Counter,
    /// `tether_publish_ack_seconds`: publish received → ack ready.
    pub publish_ack: AtomicHistogram,
    /// `tether_store_commit_seconds`: one group-commit transaction, begin to COMMIT.
    pub store_commit: AtomicHistogram,
    /// `tether_ws_rtt_seconds`: the server's WebSocket Ping → Pong.
    pub ws_rtt: AtomicHistogram,
    /// `tether_slow_consumers_total`.
    pub slow_consumers: Counter,
    /// `tether_auth_failures_total`.
    pub auth_failures: Counter,
    /// `tether_rate_limited_total`: every `rate_limited` refusal (upgrades, API, publishes).
    pub rate_limited: Counter,
    /// `tether_reconnect_advice_total{reason}`: `shutdown`, `shed`.
    pub reconnect_advice: Family<Labels, Counter>,
    /// `tether_client_rtt_seconds`: each report's p95 (else its last sample).
    pub client_rtt: AtomicHistogram,
    /// `tether_client_reconnects_total`: reconnections clients reported (increments only).
    pub client_reconnects: Counter,
    /// `tether_client_reports_total`: reports folded in.
    pub client_reports: Counter,
    /// `tether_calls_active`.
    pub calls_active: Gauge,
    /// `tether_call_resumes_total`.
    pub call_resumes: Counter,
    /// `tether_agent_link_failures_total`.
    pub agent_link_failures: Counter,
    /// `tether_trace_spans_dropped_total`: spans dropped because the export queue was full.
    pub spans_dropped: Counter,
    /// `tether_build_info{version,node}`: always 1.
    pub build_info: Family<Labels, Gauge>,
}

impl Metrics {
    fn new() -> Self {
        let mut r = Registry::default();
        let connections = Gauge::default();
        r.register(
            "tether_connections",
            "Open WebSocket connections",
            connections.clone(),
        );
        let connections_opened = Counter::default();
        r.register(
            "tether_connections_opened",
            "WebSocket connections upgraded",
            connections_opened.clone(),
        );
        let connections_closed = Family::<Labels, Counter>::default();
        r.register(
            "tether_connections_closed",
            "WebSocket connections closed, by close code",
            connections_closed.clone(),
        );
        let upgrades_refused = Family::<Labels, Counter>::default();
        r.register(
            "tether_upgrades_refused",
            "WebSocket upgrades refused before the handshake, by reason",
            upgrades_refused.clone(),
        );
        let publishes = Family::<Labels, Counter>::default();
        r.register(
            "tether_publishes",
            "Publishes (WebSocket and HTTP), by outcome",
            publishes.clone(),
        );
        let outcome = |o: &str| publishes.get_or_create_owned(&vec![("outcome", o.to_owned())]);
        let (publishes_stored, publishes_duplicate, publishes_refused) =
            (outcome("stored"), outcome("duplicate"), outcome("refused"));
        let deliveries = Counter::default();
        r.register(
            "tether_deliveries",
            "Message frames handed to subscribers, live and replayed",
            deliveries.clone(),
        );
        let publish_ack = AtomicHistogram::latency();
        r.register(
            "tether_publish_ack_seconds",
            "Publish received to ack ready",
            publish_ack.clone(),
        );
        let store_commit = AtomicHistogram::latency();
        r.register(
            "tether_store_commit_seconds",
            "One group-commit transaction, begin to COMMIT",
            store_commit.clone(),
        );
        let ws_rtt = AtomicHistogram::latency();
        r.register(
            "tether_ws_rtt_seconds",
            "Server WebSocket Ping to Pong round trips",
            ws_rtt.clone(),
        );
        let slow_consumers = Counter::default();
        r.register(
            "tether_slow_consumers",
            "Connections cut for not reading fast enough",
            slow_consumers.clone(),
        );
        let auth_failures = Counter::default();
        r.register(
            "tether_auth_failures",
            "Refused tokens (hello, refresh, HTTP)",
            auth_failures.clone(),
        );
        let rate_limited = Counter::default();
        r.register(
            "tether_rate_limited",
            "Requests, upgrades and publishes refused by a rate limit",
            rate_limited.clone(),
        );
        let reconnect_advice = Family::<Labels, Counter>::default();
        r.register(
            "tether_reconnect_advice",
            "reconnect frames sent, by reason",
            reconnect_advice.clone(),
        );
        let client_rtt = AtomicHistogram::latency();
        r.register(
            "tether_client_rtt_seconds",
            "Round trips reported by clients (each report's p95, else its last sample)",
            client_rtt.clone(),
        );
        let client_reconnects = Counter::default();
        r.register(
            "tether_client_reconnects",
            "Reconnections reported by clients",
            client_reconnects.clone(),
        );
        let client_reports = Counter::default();
        r.register(
            "tether_client_reports",
            "Client quality reports received",
            client_reports.clone(),
        );
        let calls_active = Gauge::default();
        r.register(
            "tether_calls_active",
            "Twilio calls in progress",
            calls_active.clone(),
        );
        let call_resumes = Counter::default();
        r.register(
            "tether_call_resumes",
            "Twilio media streams re-established for a call",
            call_resumes.clone(),
        );
        let agent_link_failures = Counter::default();
        r.register(
            "tether_agent_link_failures",
            "Voice agent links lost or refused",
            agent_link_failures.clone(),
        );
        let spans_dropped = Counter::default();
        r.register(
            "tether_trace_spans_dropped",
            "Trace spans dropped because the export queue was full",
            spans_dropped.clone(),
        );
        let build_info = Family::<Labels, Gauge>::default();
        r.register(
            "tether_build_info",
            "Version and node name of this process (always 1)",
            build_info.clone(),
        );
        build_info
            .get_or_create(&build_labels(&random_node()))
            .set(1);
        Self {
            registry: r,
            connections,
            connections_opened,
            connections_closed,
            upgrades_refused,
            publishes_stored,
            publishes_duplicate,
            publishes_refused,
            deliveries,
            publish_ack,
            store_commit,
            ws_rtt,
            slow_consumers,
            auth_failures,
            rate_limited,
            reconnect_advice,
            client_rtt,
            client_reconnects,
            client_reports,
            calls_active,
            call_resumes,
            agent_link_failures,
            spans_dropped,
            build_info,
        }
    }
}

fn build_labels(node: &str) -> Labels {
    vec![
        ("version", env!("CARGO_PKG_VERSION").to_owned()),
        ("node", node.to_owned()),
    ]
}

/// `n_` + 8 hex, the contract's format for a node name nobody chose.
fn random_node() -> String {
    format!("n_{:08x}", rand::random::<u32>())
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

/// Names this process in `tether_build_info` (the `--node-id` of CONTRACT §12).
pub fn set_node(node: &str) {
    let m = get();
    m.build_info.clear();
    m.build_info.get_or_create(&build_labels(node)).set(1);
}

/// A WebSocket connection was upgraded.
pub fn connection_opened() {
    let m = get();
    m.connections_opened.inc();
    m.connections.inc();
}

/// A WebSocket connection ended with `code` (1006 when it was just lost).
pub fn connection_closed(code: u16) {
    let m = get();
    m.connections.dec();
    m.connections_closed
        .get_or_create(&vec![("code", code.to_string())])
        .inc();
}

/// Counts a refused upgrade and hands the refusal back, so the call site stays one line:
/// `Err(r) => return crate::metrics::upgrade_refused(r).into_response()`.
pub fn upgrade_refused(refusal: Refusal) -> Refusal {
    let reason = match &refusal {
        Refusal::Forbidden(why) if why.contains("TLS") => "insecure_transport",
        Refusal::Forbidden(_) => "origin",
        Refusal::TooMany(_) => "rate_limited",
        Refusal::Unavailable(_) => "unavailable",
    };
    get()
        .upgrades_refused
        .get_or_create(&vec![("reason", reason.to_owned())])
        .inc();
    refusal
}

/// Counts a store outcome: `stored` or `duplicate` (a conflict or a store error is counted
/// when its `nack` is built, by [`publish_refused`]).
pub fn published(outcome: &Result<PublishOutcome, StoreError>) {
    let m = get();
    match outcome {
        Ok(PublishOutcome::Stored { .. }) => m.publishes_stored.inc(),
        Ok(PublishOutcome::Duplicate { .. }) => m.publishes_duplicate.inc(),
        Ok(PublishOutcome::Conflict { .. }) | Err(_) => 0,
    };
}

/// A publish was refused (`nack`, or an HTTP publish answered with an error).
pub fn publish_refused() {
    get().publishes_refused.inc();
}

/// `n` message frames were handed to subscribers.
pub fn delivered(n: u64) {
    if n > 0 {
        get().deliveries.inc_by(n);
    }
}

/// A publish received at `received` has its answer now.
pub fn publish_acked(received: Instant) {
    get().publish_ack.observe_duration(received.elapsed());
}

/// Runs one store transaction and records how long it took.
pub async fn time_commit<T>(transaction: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = transaction.await;
    get().store_commit.observe_duration(started.elapsed());
    out
}

/// One server Ping → Pong round trip.
pub fn ws_rtt(rtt: Duration) {
    get().ws_rtt.observe_duration(rtt);
}

/// A slow consumer was cut.
pub fn slow_consumer() {
    get().slow_consumers.inc();
}

/// A token was refused.
pub fn auth_failure() {
    get().auth_failures.inc();
}

/// Something was refused by a rate limit (any of the `rate_limited` log lines).
pub fn rate_limited() {
    get().rate_limited.inc();
}

/// A `reconnect` frame was sent with `reason`.
pub fn reconnect_advice(reason: protocol::ReconnectReason) {
    let reason = match reason {
        protocol::ReconnectReason::Shutdown => "shutdown",
        protocol::ReconnectReason::Shed => "shed",
        protocol::ReconnectReason::Other => "other",
    };
    get()
        .reconnect_advice
        .get_or_create(&vec![("reason", reason.to_owned())])
        .inc();
}

/// Folds one accepted client report: its RTT (seconds) and the reconnections since the
/// previous report of the same client.
pub fn client_report(rtt_seconds: Option<f64>, new_reconnects: u64) {
    let m = get();
    m.client_reports.inc();
    if let Some(rtt) = rtt_seconds {
        m.client_rtt.observe(rtt);
    }
    if new_reconnects > 0 {
        m.client_reconnects.inc_by(new_reconnects);
    }
}

/// A Twilio call began (the `twilio` area calls it).
pub fn call_started() {
    get().calls_active.inc();
}

/// A Twilio call ended.
pub fn call_ended() {
    get().calls_active.dec();
}

/// A call's media stream was re-established.
pub fn call_resumed() {
    get().call_resumes.inc();
}

/// The voice agent link dropped or could not be opened.
pub fn agent_link_failed() {
    get().agent_link_failures.inc();
}

/// A span was dropped at a full export queue.
pub fn span_dropped() {
    get().spans_dropped.inc();
}

/// Sum of a labelled family's children whose label `key` is `value` (tests, fleet view).
#[must_use]
pub fn family_value(family: &Family<Labels, Counter>, key: &'static str, value: &str) -> u64 {
    family.get_or_create(&vec![(key, value.to_owned())]).get()
}

/// The two text formats of `GET /metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text exposition 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the `Accept` header asks for it, else Prometheus text.
    #[must_use]
    pub fn negotiate(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Self::OpenMetrics,
            _ => Self::Prometheus,
        }
    }

    /// The `Content-Type` of the format.
    #[must_use]
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The exposition text of every metric.
#[must_use]
pub fn render(format: Format) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let registry = &get().registry;
    // Writing into a String cannot fail.
    let _ = match format {
        Format::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut out, registry)
        }
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, registry),
    };
    out
}

#[cfg(test)]
mod tests;
