//! Admission limits under attack (CONTRACT §4): the per-IP upgrade bucket (burst 20, 10/s) with
//! `429` + whole-second `Retry-After`, which spoofed `X-Forwarded-For` cannot escape; the
//! per-IP concurrent cap; the authentication-failure threshold (20 in 60 s) that logs
//! `suspicious_activity` and cools the IP down on `/ws` and `/v1/*` — and never on `/health*`.
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{TestServer, logs, refusal_code, retry_after, trust_loopback, within};

#[tokio::test]
async fn the_default_upgrade_bucket_limits_one_ip_with_retry_after() {
    let server = TestServer::start().await;
    let started = Instant::now();
    // 60 attempts at once: however slow the machine, they arrive faster than 10/s.
    let attempts = futures_util::future::join_all((0..60).map(|_| server.upgrade(&[]))).await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut admitted = 0u32;
    let mut refusal = None;
    for attempt in attempts {
        match attempt {
            Ok(_) => admitted += 1,
            Err(r) => {
                refusal.get_or_insert(r);
            }
        }
    }
    let refusal = refusal.expect("60 quick upgrades from one IP meet the limit");
    assert_eq!(refusal.status(), 429);
    assert_eq!(refusal_code(&refusal), "RATE_LIMIT");
    assert!(retry_after(&refusal) >= 1);
    // Burst 20 plus 10 per second of the attempt's duration (and one for rounding).
    let allowed = 20.0 + 10.0 * elapsed + 1.0;
    assert!(
        f64::from(admitted) <= allowed,
        "{admitted} admitted in {elapsed:.2} s"
    );
    let line = logs::wait_for("rate_limited", |l| {
        l["data"]["limit"] == "upgrade" && l["data"]["client_ip"] == "127.0.0.1"
    })
    .await;
    assert_eq!(line["level"], "warn");
    // The probes are never limited.
    for _ in 0..30 {
        assert_eq!(
            server.http("GET", "/health/live", &[], None).await.status,
            200
        );
    }
    assert_eq!(server.http("GET", "/health", &[], None).await.status, 200);
    assert_eq!(
        server.http("GET", "/health/ready", &[], None).await.status,
        200
    );
}

#[tokio::test]
async fn spoofed_forwarding_headers_from_an_untrusted_peer_do_not_escape_the_bucket() {
    // No trusted proxies: the peer's own X-Forwarded-For is not believed.
    let server = TestServer::start_with(|c| {
        c.limits.upgrade.burst = 5;
        c.limits.upgrade.per_sec = 0.01;
    })
    .await;
    let mut refused = 0;
    for i in 0..20 {
        let spoof = format!("198.51.100.{i}");
        if let Err(r) = server
            .upgrade(&[("X-Forwarded-For", &spoof), ("X-Real-IP", &spoof)])
            .await
        {
            assert_eq!(r.status(), 429);
            refused += 1;
        }
    }
    assert_eq!(refused, 15, "each spoofed address got its own bucket");
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_nearest_untrusted_hop_is_the_client() {
    let server = TestServer::start_with(|c| {
        trust_loopback(c);
        c.limits.upgrade.burst = 3;
        c.limits.upgrade.per_sec = 0.01;
    })
    .await;
    // The attacker controls the left part of the chain; the proxy appends the real peer.
    for i in 0..3 {
        let chain = format!("10.9.9.{i}, 198.51.100.7");
        assert!(server.upgrade(&[("X-Forwarded-For", &chain)]).await.is_ok());
    }
    let chain = "1.1.1.1, 198.51.100.7";
    assert_eq!(
        server
            .upgrade(&[("X-Forwarded-For", chain)])
            .await
            .err()
            .expect("the same client")
            .status(),
        429
    );
    // Trusted hops on the right are skipped; two headers are one list.
    let refused = server
        .upgrade(&[
            ("X-Forwarded-For", "203.0.113.1"),
            ("X-Forwarded-For", "198.51.100.7, 127.0.0.1"),
        ])
        .await;
    assert_eq!(refused.err().expect("the same client").status(), 429);
    // A different client behind the same proxy has its own bucket.
    assert!(
        server
            .upgrade(&[("X-Forwarded-For", "198.51.100.8")])
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn the_per_ip_concurrent_cap_holds_and_frees_on_close() {
    let server = TestServer::start_with(|c| {
        trust_loopback(c);
        c.limits.max_connections_per_ip = 3;
        c.limits.upgrade.burst = 10_000;
        c.limits.upgrade.per_sec = 10_000.0;
    })
    .await;
    let from = |ip: &'static str| [("X-Forwarded-For", ip)];
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(
            server
                .upgrade(&from("198.51.100.1"))
                .await
                .unwrap_or_else(|r| panic!("{}: {}", "under the cap", r.status())),
        );
    }
    let full = server
        .upgrade(&from("198.51.100.1"))
        .await
        .err()
        .expect("at the cap");
    assert_eq!(full.status(), 503);
    assert!(retry_after(&full) >= 1);
    logs::wait_for("admission_refused", |l| {
        l["data"]["reason"] == "per-ip connection limit" && l["data"]["client_ip"] == "198.51.100.1"
    })
    .await;
    assert!(server.upgrade(&from("198.51.100.2")).await.is_ok());
    // Closing one frees its place.
    let mut first = open.remove(0);
    let _ = first.ws.close(None).await;
    drop(first);
    within("a freed place", async {
        loop {
            if server.upgrade(&from("198.51.100.1")).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn twenty_auth_failures_cool_the_ip_down_on_ws_and_v1_but_never_on_health() {
    let server = TestServer::start_with(|c| {
        trust_loopback(c);
        c.limits.upgrade.burst = 10_000;
        c.limits.upgrade.per_sec = 10_000.0;
    })
    .await;
    let attacker = [("X-Forwarded-For", "203.0.113.9")];
    // 15 failures over WebSocket, 5 over HTTP: one count per client IP (default threshold 20).
    for i in 0..15 {
        let mut c = server
            .upgrade(&attacker)
            .await
            .unwrap_or_else(|r| panic!("{}: {}", "not cooled down yet", r.status()));
        c.send_json(json!({"type":"hello","token":format!("guess-{i}")}))
            .await;
        assert_eq!(c.until_close().await.0, Some(4401));
    }
    for i in 0..4 {
        let bearer = format!("Bearer guess-http-{i}");
        let answer = server
            .http(
                "GET",
                "/v1/channels/room/messages",
                &[attacker[0], ("Authorization", &bearer)],
                None,
            )
            .await;
        assert_eq!(answer.status, 401);
    }
    // 19 so far: still admitted.
    assert!(server.upgrade(&attacker).await.is_ok());
    let answer = server
        .http(
            "GET",
            "/v1/channels/room/messages",
            &[attacker[0], ("Authorization", "Bearer guess-20")],
            None,
        )
        .await;
    assert_eq!(answer.status, 401);
    let line = logs::wait_for("suspicious_activity", |l| {
        l["data"]["client_ip"] == "203.0.113.9"
    })
    .await;
    assert_eq!(line["level"], "warn");

    let refused = server.upgrade(&attacker).await.err().expect("cooled down");
    assert_eq!(refused.status(), 429);
    assert_eq!(refusal_code(&refused), "RATE_LIMIT");
    assert!(
        (50..=60).contains(&retry_after(&refused)),
        "{}",
        retry_after(&refused)
    );
    // Even with a valid token, /v1/* is refused during the cool-down.
    let bearer = format!("Bearer {}", server.token("alice"));
    for (method, body) in [("GET", None), ("POST", Some(r#"{"id":"a","data":1}"#))] {
        let answer = server
            .http(
                method,
                "/v1/channels/room/messages",
                &[attacker[0], ("Authorization", &bearer)],
                body,
            )
            .await;
        assert_eq!(answer.status, 429, "{method}");
        assert!(answer.header("retry-after").is_some());
    }
    for path in ["/health", "/health/live", "/health/ready"] {
        assert_eq!(
            server.http("GET", path, &attacker, None).await.status,
            200,
            "{path}"
        );
    }
    // Another client is not affected.
    assert!(
        server
            .upgrade(&[("X-Forwarded-For", "203.0.113.10")])
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn one_token_spread_over_many_addresses_meets_the_http_rate_per_token() {
    let server = TestServer::start_with(|c| {
        trust_loopback(c);
        c.limits.publish.burst = 3;
        c.limits.publish.per_sec = 0.01;
    })
    .await;
    let bearer = format!("Bearer {}", server.token("backend"));
    let mut statuses = Vec::new();
    for i in 1..=5 {
        let ip = format!("198.51.100.{i}");
        let answer = server
            .http(
                "GET",
                "/v1/channels/room/messages",
                &[("X-Forwarded-For", &ip), ("Authorization", &bearer)],
                None,
            )
            .await;
        if answer.status == 429 {
            assert_eq!(answer.json()["error"]["code"], "RATE_LIMIT");
            assert!(
                answer
                    .header("retry-after")
                    .is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s >= 1))
            );
        }
        statuses.push(answer.status);
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 429, 429],
        "five addresses, one token"
    );
    logs::wait_for("rate_limited", |l| {
        l["data"]["limit"] == "http_token" && l["data"]["sub"] == "backend"
    })
    .await;
    // Another token from one of those addresses is its own bucket.
    let other = format!("Bearer {}", server.token("other"));
    let answer = server
        .http(
            "GET",
            "/v1/channels/room/messages",
            &[
                ("X-Forwarded-For", "198.51.100.1"),
                ("Authorization", &other),
            ],
            None,
        )
        .await;
    assert_eq!(answer.status, 200);
}
