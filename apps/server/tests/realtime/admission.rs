//! Connection admission (CONTRACT §4): answers and log events before the upgrade.
use std::time::Duration;

use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::{self, http};

use crate::harness::{TestServer, logs, within};

/// Attempts an upgrade with extra headers: `Ok` when it succeeded, else the refusal.
async fn upgrade(
    server: &TestServer,
    headers: &[(&'static str, &str)],
) -> Result<(), http::Response<Option<Vec<u8>>>> {
    let mut request = server.ws_url().into_client_request().unwrap();
    for (k, v) in headers {
        request.headers_mut().insert(*k, v.parse().unwrap());
    }
    match within("an upgrade", tokio_tungstenite::connect_async(request)).await {
        Ok(_) => Ok(()),
        Err(tungstenite::Error::Http(response)) => Err(*response),
        Err(e) => panic!("unexpected upgrade error {e}"),
    }
}

fn body_code(r: &http::Response<Option<Vec<u8>>>) -> String {
    let body: serde_json::Value =
        serde_json::from_slice(r.body().as_deref().unwrap_or_default()).unwrap();
    body["error"]["code"].as_str().unwrap().to_owned()
}

fn retry_after(r: &http::Response<Option<Vec<u8>>>) -> u64 {
    r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn foreign_origins_are_refused_403_and_logged() {
    let server = TestServer::start().await;
    assert!(
        upgrade(&server, &[("Origin", "http://localhost:3000")])
            .await
            .is_ok()
    );
    assert!(
        upgrade(&server, &[]).await.is_ok(),
        "no Origin: a non-browser client"
    );
    let refused = upgrade(&server, &[("Origin", "http://evil.example")])
        .await
        .unwrap_err();
    assert_eq!(refused.status(), 403);
    let line = logs::wait_for("cors_rejected", |l| {
        l["data"]["origin"] == "http://evil.example"
    })
    .await;
    assert_eq!(line["level"], "warn");
}

#[tokio::test]
async fn upgrade_bursts_are_limited_per_client_ip_with_retry_after() {
    let server = TestServer::start_with(|c| {
        c.limits.upgrade.burst = 3;
        c.limits.upgrade.per_sec = 0.1;
        c.trusted_proxies = vec![server::config::Cidr::parse("127.0.0.1/32").unwrap()];
    })
    .await;
    let from = |ip: &'static str| [("X-Forwarded-For", ip)];
    for _ in 0..3 {
        assert!(upgrade(&server, &from("198.51.100.1")).await.is_ok());
    }
    let limited = upgrade(&server, &from("198.51.100.1")).await.unwrap_err();
    assert_eq!(limited.status(), 429);
    assert!(retry_after(&limited) >= 1);
    assert_eq!(body_code(&limited), "RATE_LIMIT");
    logs::wait_for("rate_limited", |l| l["data"]["client_ip"] == "198.51.100.1").await;
    // Another client behind the same proxy is its own bucket.
    assert!(upgrade(&server, &from("198.51.100.2")).await.is_ok());
    // /health is never rate limited.
    assert_eq!(
        server
            .http(
                "GET",
                "/health",
                &[("X-Forwarded-For", "198.51.100.1")],
                None
            )
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn the_connection_limits_answer_503_with_retry_after() {
    let server = TestServer::start_with(|c| c.limits.max_connections = 2).await;
    let (_a, _) = server.client("a").await;
    let (_b, _) = server.client("b").await;
    let full = upgrade(&server, &[]).await.unwrap_err();
    assert_eq!(full.status(), 503);
    assert!(retry_after(&full) >= 1);
    logs::wait_for("admission_refused", |l| {
        l["data"]["reason"] == "connection limit"
    })
    .await;

    let per_ip = TestServer::start_with(|c| c.limits.max_connections_per_ip = 1).await;
    let (_c, _) = per_ip.client("c").await;
    assert_eq!(upgrade(&per_ip, &[]).await.unwrap_err().status(), 503);
}

#[tokio::test]
async fn repeated_auth_failures_cool_an_ip_down_but_not_health() {
    let server = TestServer::start_with(|c| c.limits.auth_failures.threshold = 3).await;
    for _ in 0..3 {
        let mut c = server.connect().await;
        c.send_json(json!({"type":"hello","token":"garbage"})).await;
        let (code, _) = c.until_close().await;
        assert_eq!(code, Some(4401));
    }
    logs::wait_for("suspicious_activity", |l| {
        l["data"]["client_ip"] == "127.0.0.1"
    })
    .await;
    let refused = upgrade(&server, &[]).await.unwrap_err();
    assert_eq!(refused.status(), 429);
    assert!(retry_after(&refused) >= 50);
    let api = server
        .http("GET", "/v1/channels/a/messages", &[], None)
        .await;
    assert_eq!(api.status, 429);
    assert!(api.header("retry-after").is_some());
    assert_eq!(server.http("GET", "/health", &[], None).await.status, 200);
    assert_eq!(
        server.http("GET", "/health/ready", &[], None).await.status,
        200
    );
}

#[tokio::test]
async fn production_refuses_plain_transport_unless_a_trusted_proxy_says_https() {
    let server = TestServer::start_with(|c| {
        c.environment = server::config::Environment::Production;
        c.trusted_proxies = vec![server::config::Cidr::parse("127.0.0.1/32").unwrap()];
    })
    .await;
    let plain = upgrade(&server, &[]).await.unwrap_err();
    assert_eq!(plain.status(), 403);
    logs::wait_for("insecure_transport_rejected", |_| true).await;
    assert_eq!(
        server
            .http("GET", "/v1/channels/a/messages", &[], None)
            .await
            .status,
        403
    );
    assert_eq!(server.http("GET", "/health", &[], None).await.status, 200);
    assert!(
        upgrade(&server, &[("X-Forwarded-Proto", "https")])
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn draining_refuses_new_connections_and_readiness() {
    let server = TestServer::start_with(|c| c.drain = Duration::from_millis(1500)).await;
    let (mut c, _) = server.client("stay").await;
    let addr = server.addr;
    let url = server.ws_url();
    let stopping = tokio::spawn(server.stop());
    let (code, before) = c.until_close().await;
    assert_eq!(code, Some(1012));
    assert!(matches!(
        before.last(),
        Some(protocol::ServerMessage::Reconnect(_))
    ));
    // Still inside the drain window: not ready, and no new connections.
    let ready = crate::harness::http(addr, "GET", "/health/ready", &[], None).await;
    assert_eq!(ready.status, 503);
    let health = crate::harness::http(addr, "GET", "/health", &[], None).await;
    assert_eq!(
        (health.status, health.json()["status"].clone()),
        (503, json!("unhealthy"))
    );
    match tokio_tungstenite::connect_async(url).await {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
    within("the drain", stopping).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_per_sub_cap_refuses_the_extra_connection_with_4429() {
    let server = TestServer::start_with(|c| c.limits.max_connections_per_sub = Some(1)).await;
    let (_first, _) = server.client("solo").await;
    let mut second = server.connect().await;
    second
        .send_json(json!({"type":"hello","token":server.token("solo")}))
        .await;
    let (code, before) = second.until_close().await;
    assert_eq!(code, Some(4429));
    assert!(
        matches!(before.as_slice(), [protocol::ServerMessage::Error(e)] if e.code == protocol::ErrorCode::RateLimit && e.retry_after_ms.is_some()),
        "{before:?}"
    );
    // Another sub is not affected.
    let (_other, _) = server.client("someone").await;
}
