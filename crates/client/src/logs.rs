//! The client's contract log events (CONTRACT §7), written through `tracing` with
//! `component = "client"`: `connection_state_changed`, `connection_quality`, `retry_failed`,
//! `latency_spike`, plus the alert and breaker lines. Field names follow TEAM.md: `event`,
//! `component`, `connection_id`; everything else lands in `data`. No token ever appears here.
use std::time::{Duration, Instant};

use protocol::ConnectionState;
use resilience::BreakerTransition;
use resilience::Failure;
use resilience::alerts::AlertEvent;
use resilience::metrics::QualitySnapshot;

/// Runs `log` inside a span carrying `connection_id` when there is one, so the line gets a
/// top-level `connectionId` only when a connection is concerned (CONTRACT §7).
fn on_connection(connection_id: Option<&str>, log: impl FnOnce()) {
    match connection_id {
        Some(id) => tracing::info_span!("client_connection", connection_id = %id).in_scope(log),
        None => log(),
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `connection_state_changed` (info).
pub(crate) fn state_changed(
    from: ConnectionState,
    to: ConnectionState,
    attempt: u32,
    connection_id: Option<&str>,
) {
    on_connection(connection_id, || {
        tracing::info!(
            component = "client",
            event = "connection_state_changed",
            from = from.as_str(),
            to = to.as_str(),
            label = to.label(),
            attempt,
        );
    });
}

/// `retry_failed` (warn).
pub(crate) fn retry_failed(attempt: u32, reason: &Failure, failures: u32, remaining: u32) {
    tracing::warn!(
        component = "client",
        event = "retry_failed",
        attempt,
        code = reason.error_code().as_str(),
        reason = %reason,
        failures,
        remaining,
    );
}

/// `connection_failed` (error): the attempts are spent, or no token can be had.
pub(crate) fn gave_up(failures: u32, reason: &Failure) {
    tracing::error!(
        component = "client",
        event = "connection_failed",
        failures,
        code = reason.error_code().as_str(),
        reason = %reason,
    );
}

/// `latency_spike` (warn): an RTT above the threshold.
pub(crate) fn latency_spike(rtt: Duration, threshold: Duration, connection_id: Option<&str>) {
    on_connection(connection_id, || {
        tracing::warn!(
            component = "client",
            event = "latency_spike",
            rtt_ms = ms(rtt),
            threshold_ms = ms(threshold),
        );
    });
}

/// `connection_quality` (info), every quality interval (60 s).
pub(crate) fn quality(s: &QualitySnapshot, connection_id: Option<&str>) {
    let alerts: Vec<&str> = s.alerts.iter().map(|a| a.as_str()).collect();
    on_connection(connection_id, || {
        tracing::info!(
            component = "client",
            event = "connection_quality",
            state = s.state.as_str(),
            rtt_ms = s.rtt_ms,
            rtt_median_ms = s.rtt_median_ms,
            rtt_p95_ms = s.rtt_p95_ms,
            delivery_rate = s.delivery_rate,
            sent = s.sent,
            acked = s.acked,
            failed_messages = s.failed_messages,
            queue_length = s.queue_length,
            failed_attempts = s.failed_attempts,
            reconnects = s.reconnects,
            reconnection_success_rate = s.reconnection_success_rate,
            downtime_total_ms = s.downtime_total_ms,
            alerts = ?alerts,
        );
    });
}

/// `alert_raised` (warn) / `alert_cleared` (info).
pub(crate) fn alert(event: &AlertEvent) {
    match event {
        AlertEvent::Begin {
            kind,
            value,
            threshold,
        } => tracing::warn!(
            component = "client",
            event = "alert_raised",
            alert = kind.as_str(),
            value,
            threshold,
        ),
        AlertEvent::End { kind } => tracing::info!(
            component = "client",
            event = "alert_cleared",
            alert = kind.as_str(),
        ),
    }
}

/// `circuit_breaker_opened` (warn) / `circuit_breaker_closed` (info).
pub(crate) fn breaker(transition: &BreakerTransition, now: Instant) {
    match transition {
        BreakerTransition::Opened { until } => tracing::warn!(
            component = "client",
            event = "circuit_breaker_opened",
            half_open_in_ms = ms(until.saturating_duration_since(now)),
        ),
        BreakerTransition::Closed => {
            tracing::info!(component = "client", event = "circuit_breaker_closed")
        }
    }
}

/// `subscription_not_recovered` (warn): messages were missed for good.
pub(crate) fn not_recovered(channel: &str, epoch: &str, replay_from: u64) {
    tracing::warn!(
        component = "client",
        event = "subscription_not_recovered",
        channel,
        epoch,
        replay_from,
    );
}
