//! Unusual patterns (issue 7 §5): protocol errors, rate-limit hits and authentication failures
//! counted per IP and per `sub`; past a threshold `suspicious_activity` (warn) and a cool-down
//! of the IP on `/ws` and `/v1/*` — never on `/health*` — and the counts in `/health`.
use serde_json::json;

use crate::harness::{TestServer, logs, retry_after, trust_loopback};

#[tokio::test]
async fn a_stream_of_bad_frames_flags_and_cools_down_the_ip() {
    let server = TestServer::start_with(|c| {
        trust_loopback(c);
        c.limits.abuse_protocol_errors = 10;
        c.limits.upgrade.burst = 1_000;
    })
    .await;
    let attacker = [("X-Forwarded-For", "198.51.100.66")];
    let mut c = server
        .upgrade(&attacker)
        .await
        .unwrap_or_else(|r| panic!("{}: {}", "admitted", r.status()));
    c.hello(&server.token("garbler")).await;
    for i in 0..10 {
        c.send_text(&format!("{{not json {i}")).await;
    }
    let line = logs::wait_for("suspicious_activity", |l| {
        l["data"]["client_ip"] == "198.51.100.66" && l["data"]["pattern"] == "protocol_errors"
    })
    .await;
    assert_eq!(line["level"], "warn");
    let refused = server.upgrade(&attacker).await.err().expect("cooled down");
    assert_eq!(refused.status(), 429);
    assert!(retry_after(&refused) >= 50);
    let api = server
        .http("GET", "/v1/channels/room/messages", &attacker, None)
        .await;
    assert_eq!(api.status, 429);
    for path in ["/health", "/health/live", "/health/ready"] {
        assert_eq!(
            server.http("GET", path, &attacker, None).await.status,
            200,
            "{path}"
        );
    }
    let health = server.http("GET", "/health", &[], None).await.json();
    assert!(
        health["abuse"]["protocol_errors"].as_u64() >= Some(10),
        "{health}"
    );
    assert!(health["abuse"]["flagged"].as_u64() >= Some(1), "{health}");
    assert_eq!(health["checks"]["abuse"]["status"], "healthy");
    assert_eq!(
        health["status"], "healthy",
        "an attack does not turn the probes"
    );
    // Others are unaffected.
    assert!(
        server
            .upgrade(&[("X-Forwarded-For", "198.51.100.67")])
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn ignoring_rate_limits_turns_into_a_cool_down() {
    let server = TestServer::start_with(|c| {
        trust_loopback(c);
        c.limits.upgrade.burst = 2;
        c.limits.upgrade.per_sec = 1.0;
        c.limits.abuse_rate_limited = 5;
    })
    .await;
    let attacker = [("X-Forwarded-For", "198.51.100.77")];
    let mut retry = Vec::new();
    for _ in 0..12 {
        if let Err(r) = server.upgrade(&attacker).await {
            retry.push(retry_after(&r));
        }
    }
    logs::wait_for("suspicious_activity", |l| {
        l["data"]["client_ip"] == "198.51.100.77" && l["data"]["pattern"] == "rate_limited"
    })
    .await;
    // First the bucket's short advice, then the cool-down's.
    assert!(retry.first().is_some_and(|s| *s <= 2), "{retry:?}");
    assert!(retry.last().is_some_and(|s| *s >= 50), "{retry:?}");
    // The cool-down covers /v1/* too, whose own bucket is untouched.
    let api = server
        .http("GET", "/v1/channels/room/messages", &attacker, None)
        .await;
    assert_eq!(api.status, 429);
    assert_eq!(
        server
            .http("GET", "/health/live", &attacker, None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn failed_refreshes_count_per_ip_and_per_sub() {
    let server = TestServer::start_with(|c| {
        trust_loopback(c);
        c.limits.auth_failures.threshold = 3;
        c.limits.upgrade.burst = 1_000;
    })
    .await;
    // One sub from three addresses, one bad refresh each: no IP reaches 3, the sub does.
    for ip in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
        let mut c = server
            .upgrade(&[("X-Forwarded-For", ip)])
            .await
            .unwrap_or_else(|r| panic!("{}: {}", "admitted", r.status()));
        c.hello(&server.token("shared")).await;
        c.send_json(json!({"type":"refresh","token":"forged"}))
            .await;
        c.sync(1).await;
    }
    let line = logs::wait_for("suspicious_activity", |l| {
        l["data"]["sub"] == "shared" && l["data"]["scope"] == "sub"
    })
    .await;
    assert_eq!(line["data"]["pattern"], "auth_failures");
    assert!(
        server
            .upgrade(&[("X-Forwarded-For", "203.0.113.1")])
            .await
            .is_ok()
    );
    // Three bad refreshes from one IP cool it down, like three bad hellos would.
    let mut c = server
        .upgrade(&[("X-Forwarded-For", "203.0.113.9")])
        .await
        .unwrap_or_else(|r| panic!("{}: {}", "admitted", r.status()));
    c.hello(&server.token("guesser")).await;
    for i in 0..3 {
        c.send_json(json!({"type":"refresh","token":format!("guess-{i}")}))
            .await;
    }
    c.sync(2).await;
    logs::wait_for("suspicious_activity", |l| {
        l["data"]["client_ip"] == "203.0.113.9"
    })
    .await;
    let refused = server
        .upgrade(&[("X-Forwarded-For", "203.0.113.9")])
        .await
        .err()
        .expect("cooled down");
    assert_eq!(refused.status(), 429);
}

#[tokio::test]
async fn a_flood_of_refusals_does_not_flood_the_logs() {
    let server = TestServer::start_with(|c| {
        trust_loopback(c);
        c.limits.upgrade.burst = 1;
        c.limits.upgrade.per_sec = 0.01;
        c.limits.abuse_rate_limited = 0;
    })
    .await;
    let flooder = [("X-Forwarded-For", "198.51.100.99")];
    let evil_origin = [
        ("X-Forwarded-For", "198.51.100.98"),
        ("Origin", "https://evil.example"),
    ];
    for _ in 0..250 {
        let _ = server.upgrade(&flooder).await;
        let _ = server.upgrade(&evil_origin).await;
    }
    // The first lines of each are there…
    logs::wait_for("rate_limited", |l| {
        l["data"]["client_ip"] == "198.51.100.99"
    })
    .await;
    logs::wait_for("cors_rejected", |l| {
        l["data"]["client_ip"] == "198.51.100.98"
    })
    .await;
    // …but not one per refusal: the first 5, then every 100th.
    let count = |event: &str, ip: &str| {
        logs::lines()
            .iter()
            .filter(|l| l["event"] == event && l["data"]["client_ip"] == ip)
            .count()
    };
    let limited = count("rate_limited", "198.51.100.99");
    let rejected = count("cors_rejected", "198.51.100.98");
    assert!(
        (5..=8).contains(&limited),
        "{limited} rate_limited lines for 249 refusals"
    );
    assert!(
        (5..=8).contains(&rejected),
        "{rejected} cors_rejected lines for 250 refusals"
    );
}
