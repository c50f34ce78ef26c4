//! Tests of the health rules: every rule, every boundary, and the golden JSON bodies.

use super::*;

fn inputs() -> HealthInputs {
    HealthInputs {
        uptime: Duration::from_millis(12_500),
        connections: 3,
        latency: Duration::from_millis(41),
        version: "0.1.0".to_owned(),
        draining: false,
        store: StoreProbe::Reachable {
            latency: Duration::from_micros(800),
        },
        extra: BTreeMap::new(),
    }
}

fn with_latency_micros(micros: u64) -> HealthReport {
    evaluate(
        HealthInputs {
            latency: Duration::from_micros(micros),
            ..inputs()
        },
        &Thresholds::default(),
    )
}

fn with_store(store: StoreProbe) -> HealthReport {
    evaluate(HealthInputs { store, ..inputs() }, &Thresholds::default())
}

fn reachable_micros(micros: u64) -> StoreProbe {
    StoreProbe::Reachable {
        latency: Duration::from_micros(micros),
    }
}

#[test]
fn all_good_is_healthy_with_200() {
    let report = evaluate(inputs(), &Thresholds::default());
    assert_eq!(report.status, Status::Healthy);
    assert_eq!(report.http_status(), 200);
    assert_eq!(report.uptime, 12.5);
    assert_eq!(report.connections, 3);
    assert_eq!(report.latency, 41.0);
    assert_eq!(report.version, "0.1.0");
    assert_eq!(report.checks["store"].latency_ms, Some(0.8));
    assert!(report.checks.values().all(|c| c.status == Status::Healthy));
}

#[test]
fn latency_boundaries_compare_strictly() {
    for (micros, expected) in [
        (0, Status::Healthy),
        (199_900, Status::Healthy),
        (199_999, Status::Healthy),
        (200_000, Status::Healthy),
        (200_001, Status::Degraded),
        (200_100, Status::Degraded),
        (10_000_000, Status::Degraded),
    ] {
        let report = with_latency_micros(micros);
        assert_eq!(report.status, expected, "latency {micros} µs");
        assert_eq!(
            report.checks["latency"].status, expected,
            "latency {micros} µs"
        );
        assert_eq!(report.http_status(), 200, "degraded still answers 200");
    }
}

#[test]
fn latency_check_explains_and_reports_the_value() {
    let report = with_latency_micros(250_500);
    let check = &report.checks["latency"];
    assert_eq!(check.latency_ms, Some(250.5));
    assert_eq!(
        check.message.as_deref(),
        Some("median round trip 250.5 ms exceeds 200 ms")
    );
    assert_eq!(report.latency, 250.5);
}

#[test]
fn no_samples_is_zero_latency_and_healthy() {
    let report = with_latency_micros(0);
    assert_eq!(report.latency, 0.0);
    assert_eq!(report.status, Status::Healthy);
}

#[test]
fn unreachable_store_is_unhealthy_with_503() {
    let report = with_store(StoreProbe::Unreachable {
        latency: Duration::from_millis(1000),
        error: "timed out".to_owned(),
    });
    assert_eq!(report.status, Status::Unhealthy);
    assert_eq!(report.http_status(), 503);
    let store = &report.checks["store"];
    assert_eq!(store.status, Status::Unhealthy);
    assert_eq!(store.message.as_deref(), Some("unreachable: timed out"));
    assert_eq!(store.latency_ms, Some(1000.0));
}

#[test]
fn store_slowness_boundaries_compare_strictly() {
    for (micros, expected) in [
        (99_900, Status::Healthy),
        (100_000, Status::Healthy),
        (100_001, Status::Degraded),
        (100_100, Status::Degraded),
    ] {
        let report = with_store(reachable_micros(micros));
        assert_eq!(report.status, expected, "store probe {micros} µs");
        assert_eq!(
            report.checks["store"].status, expected,
            "store probe {micros} µs"
        );
    }
    let slow = with_store(reachable_micros(150_000));
    assert_eq!(
        slow.checks["store"].message.as_deref(),
        Some("slow: probe took 150 ms, above 100 ms")
    );
}

#[test]
fn the_slow_store_threshold_is_configurable() {
    let strict = Thresholds {
        store_slow: Duration::from_millis(5),
        ..Thresholds::default()
    };
    let probe = |ms| HealthInputs {
        store: StoreProbe::Reachable {
            latency: Duration::from_millis(ms),
        },
        ..inputs()
    };
    assert_eq!(evaluate(probe(5), &strict).status, Status::Healthy);
    assert_eq!(evaluate(probe(6), &strict).status, Status::Degraded);
    let lenient = Thresholds {
        store_slow: Duration::from_secs(1),
        ..Thresholds::default()
    };
    assert_eq!(evaluate(probe(900), &lenient).status, Status::Healthy);
}

#[test]
fn the_latency_threshold_is_configurable() {
    let tight = Thresholds {
        latency: Duration::from_millis(50),
        ..Thresholds::default()
    };
    assert_eq!(evaluate(inputs(), &tight).status, Status::Healthy);
    let slow = HealthInputs {
        latency: Duration::from_millis(51),
        ..inputs()
    };
    assert_eq!(evaluate(slow, &tight).status, Status::Degraded);
}

#[test]
fn draining_is_unhealthy_with_503() {
    let report = evaluate(
        HealthInputs {
            draining: true,
            ..inputs()
        },
        &Thresholds::default(),
    );
    assert_eq!(report.status, Status::Unhealthy);
    assert_eq!(report.http_status(), 503);
    assert_eq!(report.checks["drain"].status, Status::Unhealthy);
}

#[test]
fn extra_checks_count_worst_of() {
    let with_extra = |checks: &[(&str, Check)]| {
        evaluate(
            HealthInputs {
                extra: checks
                    .iter()
                    .map(|(name, check)| ((*name).to_owned(), check.clone()))
                    .collect(),
                ..inputs()
            },
            &Thresholds::default(),
        )
    };
    assert_eq!(
        with_extra(&[("upstream", CircuitState::Closed.into())]).status,
        Status::Healthy
    );
    assert_eq!(
        with_extra(&[("upstream", CircuitState::Open.into())]).status,
        Status::Degraded
    );
    assert_eq!(
        with_extra(&[("upstream", CircuitState::HalfOpen.into())]).status,
        Status::Degraded
    );
    let both = with_extra(&[
        ("twilio", CircuitState::Open.into()),
        ("ngrok", Check::unhealthy("tunnel down")),
    ]);
    assert_eq!(both.status, Status::Unhealthy);
    assert_eq!(both.checks["twilio"].status, Status::Degraded);
    assert_eq!(both.checks["ngrok"].message.as_deref(), Some("tunnel down"));
}

#[test]
fn worst_of_combines_rules() {
    // Slow latency and a slow store: degraded. Add draining: unhealthy.
    let degraded = HealthInputs {
        latency: Duration::from_millis(300),
        store: reachable_micros(200_000),
        ..inputs()
    };
    assert_eq!(
        evaluate(degraded.clone(), &Thresholds::default()).status,
        Status::Degraded
    );
    let unhealthy = HealthInputs {
        draining: true,
        ..degraded
    };
    assert_eq!(
        evaluate(unhealthy, &Thresholds::default()).status,
        Status::Unhealthy
    );
}

#[test]
fn an_extra_check_cannot_hide_a_builtin_one() {
    let report = evaluate(
        HealthInputs {
            extra: BTreeMap::from([("store".to_owned(), Check::unhealthy("other store"))]),
            ..inputs()
        },
        &Thresholds::default(),
    );
    assert_eq!(report.status, Status::Unhealthy, "the extra still counts");
    assert_eq!(
        report.checks["store"].status,
        Status::Healthy,
        "the built-in keeps the name"
    );
    assert_eq!(report.checks.len(), 3);
}

#[test]
fn status_order_and_spelling() {
    assert!(Status::Healthy < Status::Degraded && Status::Degraded < Status::Unhealthy);
    assert_eq!(Status::Healthy.worst(Status::Degraded), Status::Degraded);
    assert_eq!(Status::Unhealthy.worst(Status::Degraded), Status::Unhealthy);
    for status in [Status::Healthy, Status::Degraded, Status::Unhealthy] {
        let json = serde_json::to_string(&status).expect("a unit enum serializes");
        assert_eq!(json, format!("\"{}\"", status.as_str()));
        assert_eq!(status.to_string(), status.as_str());
    }
}

#[test]
fn readiness_needs_a_reachable_store_and_no_drain() {
    let ok = readiness(&reachable_micros(800), false);
    assert!(ok.is_ready());
    assert_eq!(ok.http_status(), 200);

    let slow = readiness(&reachable_micros(5_000_000), false);
    assert!(slow.is_ready(), "a slow store is degraded, not unready");

    let draining = readiness(&reachable_micros(800), true);
    assert_eq!(draining.http_status(), 503);
    assert_eq!(draining.reasons, ["draining"]);

    let down = StoreProbe::Unreachable {
        latency: Duration::ZERO,
        error: "connection refused".to_owned(),
    };
    let both = readiness(&down, true);
    assert_eq!(both.status, Readiness::NotReady);
    assert_eq!(
        both.reasons,
        ["store unreachable: connection refused", "draining"]
    );
}

#[test]
fn golden_contract_example_round_trips() {
    let golden = include_str!("../../golden/contract-example.json").trim_end();
    let report: HealthReport = serde_json::from_str(golden).expect("the contract's example parses");
    assert_eq!(report.status, Status::Healthy);
    assert_eq!(report.checks["store"].latency_ms, Some(0.8));
    assert_eq!(serde_json::to_string(&report).expect("serializes"), golden);
}

#[test]
fn golden_evaluated_report() {
    let report = evaluate(
        HealthInputs {
            latency: Duration::from_micros(212_300),
            extra: BTreeMap::from([("upstream".to_owned(), CircuitState::Open.into())]),
            ..inputs()
        },
        &Thresholds::default(),
    );
    let golden = include_str!("../../golden/degraded.json").trim_end();
    let pretty = serde_json::to_string_pretty(&report).expect("serializes");
    assert_eq!(
        pretty, golden,
        "update golden/degraded.json if this change is intended"
    );
    let back: HealthReport = serde_json::from_str(golden).expect("golden parses");
    assert_eq!(back, report);
}

#[test]
fn golden_readiness_bodies() {
    let ready = serde_json::to_string(&readiness(&reachable_micros(1), false)).expect("serializes");
    assert_eq!(ready, r#"{"status":"ready"}"#);
    let draining =
        serde_json::to_string(&readiness(&reachable_micros(1), true)).expect("serializes");
    assert_eq!(draining, r#"{"status":"not_ready","reasons":["draining"]}"#);
}

#[test]
fn unknown_fields_are_ignored_when_reading_a_report() {
    let json = r#"{"status":"degraded","uptime":1.0,"connections":0,"latency":0.0,"version":"9",
        "node":"a","checks":{"x":{"status":"degraded","extra":1}}}"#;
    let report: HealthReport = serde_json::from_str(json).expect("extra fields are allowed");
    assert_eq!(report.checks["x"], Check::new(Status::Degraded));
}
