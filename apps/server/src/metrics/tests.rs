//! Unit tests of the registry and its rendering (values are read as differences: the registry
//! is shared with the other tests of this binary).
use std::time::Duration;

use super::*;

/// Every metric name of CONTRACT §11, as it must appear in the exposition.
pub const CONTRACT_NAMES: [&str; 20] = [
    "tether_connections",
    "tether_connections_opened_total",
    "tether_connections_closed_total",
    "tether_upgrades_refused_total",
    "tether_publishes_total",
    "tether_deliveries_total",
    "tether_publish_ack_seconds",
    "tether_store_commit_seconds",
    "tether_ws_rtt_seconds",
    "tether_slow_consumers_total",
    "tether_auth_failures_total",
    "tether_rate_limited_total",
    "tether_reconnect_advice_total",
    "tether_client_rtt_seconds",
    "tether_client_reconnects_total",
    "tether_calls_active",
    "tether_call_resumes_total",
    "tether_agent_link_failures_total",
    "tether_build_info",
    "tether_trace_spans_dropped_total",
];

#[test]
fn both_formats_name_every_contract_metric_with_its_type() {
    // Families show only once a child exists.
    connection_closed(1000);
    connection_opened();
    let _ = upgrade_refused(Refusal::TooMany(Duration::from_secs(1)));
    reconnect_advice(protocol::ReconnectReason::Shed);
    for format in [Format::Prometheus, Format::OpenMetrics] {
        let text = render(format);
        for name in CONTRACT_NAMES {
            let typ = if name.ends_with("_seconds") {
                "histogram"
            } else if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            // OpenMetrics names a counter's family without the `_total`.
            let family = match format {
                Format::OpenMetrics => name.trim_end_matches("_total"),
                Format::Prometheus => name,
            };
            assert!(
                text.contains(&format!("# TYPE {family} {typ}\n")),
                "{format:?}: {name} as {typ} missing in\n{text}"
            );
        }
        assert!(text.contains("tether_publish_ack_seconds_bucket{le=\"0.2\"}"));
        assert!(text.contains("tether_build_info{version=\"0.1.0\",node=\"n_"));
    }
    assert!(render(Format::OpenMetrics).ends_with("# EOF\n"));
}

#[test]
fn refusal_reasons_and_publish_outcomes_are_labelled() {
    let m = get();
    let before = |r: &str| family_value(&m.upgrades_refused, "reason", r);
    let (o, i, r, u) = (
        before("origin"),
        before("insecure_transport"),
        before("rate_limited"),
        before("unavailable"),
    );
    let _ = upgrade_refused(Refusal::Forbidden("origin not allowed"));
    let _ = upgrade_refused(Refusal::Forbidden("TLS is required"));
    let _ = upgrade_refused(Refusal::TooMany(Duration::from_secs(1)));
    let _ = upgrade_refused(Refusal::Unavailable(Duration::from_secs(1)));
    assert_eq!(before("origin"), o + 1);
    assert_eq!(before("insecure_transport"), i + 1);
    assert_eq!(before("rate_limited"), r + 1);
    assert_eq!(before("unavailable"), u + 1);

    let (s, d) = (m.publishes_stored.get(), m.publishes_duplicate.get());
    published(&Ok(PublishOutcome::Stored { offset: 1 }));
    published(&Ok(PublishOutcome::Duplicate { offset: 1 }));
    published(&Ok(PublishOutcome::Conflict { offset: 1 }));
    assert!(m.publishes_stored.get() > s);
    assert!(m.publishes_duplicate.get() > d);
}

#[test]
fn negotiation_and_content_types() {
    assert_eq!(Format::negotiate(None), Format::Prometheus);
    assert_eq!(
        Format::negotiate(Some("text/plain;version=0.0.4")),
        Format::Prometheus
    );
    assert_eq!(
        Format::negotiate(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
        )),
        Format::OpenMetrics
    );
    assert!(
        Format::Prometheus
            .content_type()
            .starts_with("text/plain; version=0.0.4")
    );
    assert!(
        Format::OpenMetrics
            .content_type()
            .starts_with("application/openmetrics-text")
    );
}

#[test]
fn the_node_label_follows_set_node() {
    set_node("n_testnode");
    let text = render(Format::Prometheus);
    assert!(text.contains("node=\"n_testnode\""), "{text}");
    assert_eq!(text.matches("tether_build_info{").count(), 1);
}
