//! The HTTP endpoints of CONTRACT §3.
use std::time::Duration;

use serde_json::json;

use crate::harness::TestServer;

#[tokio::test]
async fn health_live_and_ready() {
    let server = TestServer::start().await;
    let (_c, _) = server.client("h").await;
    let health = server.http("GET", "/health", &[], None).await;
    assert_eq!(health.status, 200);
    assert!(
        health
            .header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let body = health.json();
    assert_eq!(body["status"], "healthy");
    assert!(body["uptime"].is_number());
    assert_eq!(body["connections"], 1);
    assert_eq!(body["latency"], 0.0);
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["checks"]["store"]["status"], "healthy");
    assert!(body["checks"]["store"]["latency_ms"].is_number());

    let live = server.http("GET", "/health/live", &[], None).await;
    assert_eq!((live.status, live.json()), (200, json!({"status":"alive"})));
    let ready = server.http("GET", "/health/ready", &[], None).await;
    assert_eq!(ready.status, 200);
}

#[tokio::test]
async fn unknown_paths_are_json_404() {
    let server = TestServer::start().await;
    let r = server.http("GET", "/nope", &[], None).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "NOT_FOUND");
}

#[tokio::test]
async fn dev_token_only_for_loopback_without_forwarding() {
    let server = TestServer::start().await;
    let ok = server.http("GET", "/dev/token?sub=dev1", &[], None).await;
    assert_eq!(ok.status, 200);
    let token = ok.json()["token"].as_str().unwrap().to_owned();
    let claims = server.auth.verify(&token).unwrap();
    assert_eq!(claims.sub, "dev1");
    assert!(claims.can_subscribe("any:thing") && claims.can_publish("x"));
    // The token works on the WebSocket.
    let mut c = server.connect().await;
    c.hello(&token).await;

    for headers in [
        vec![("Host", "example.com")],
        vec![("X-Forwarded-For", "203.0.113.5")],
        vec![("Forwarded", "for=203.0.113.5")],
    ] {
        let r = server.http("GET", "/dev/token?sub=x", &headers, None).await;
        assert_eq!(r.status, 404, "{headers:?}");
        assert_eq!(r.json()["error"]["code"], "NOT_FOUND");
    }
    let production = TestServer::start_with(|c| {
        c.environment = server::config::Environment::Production;
    })
    .await;
    let r = production.http("GET", "/dev/token?sub=x", &[], None).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn server_side_publish_and_history() {
    let server = TestServer::start().await;
    let (mut ws, _) = server.client("listener").await;
    ws.subscribe("news", None).await;
    let token = server.token_with("svc", &["news"], &["news"], Duration::from_secs(600));
    let auth = format!("Bearer {token}");
    let headers = [("Authorization", auth.as_str())];

    let body = r#"{"id":"n1","data":{"headline":"hi"}}"#;
    let created = server
        .http("POST", "/v1/channels/news/messages", &headers, Some(body))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        created.json(),
        json!({"channel":"news","offset":1,"duplicate":false})
    );
    let again = server
        .http("POST", "/v1/channels/news/messages", &headers, Some(body))
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(
        again.json(),
        json!({"channel":"news","offset":1,"duplicate":true})
    );
    let (got, _) = ws.messages(1).await;
    assert_eq!(got[0].data, json!({"headline":"hi"}));

    let conflict = server
        .http(
            "POST",
            "/v1/channels/news/messages",
            &headers,
            Some(r#"{"id":"n1","data":2}"#),
        )
        .await;
    assert_eq!(
        (conflict.status, conflict.json()["error"]["code"].clone()),
        (400, json!("BAD_REQUEST"))
    );

    for i in 2..=5 {
        let b = format!(r#"{{"id":"n{i}","data":{i}}}"#);
        let r = server
            .http("POST", "/v1/channels/news/messages", &headers, Some(&b))
            .await;
        assert_eq!(r.status, 201);
    }
    let page = server
        .http(
            "GET",
            "/v1/channels/news/messages?since=2&limit=2",
            &headers,
            None,
        )
        .await;
    assert_eq!(page.status, 200);
    let page = page.json();
    assert_eq!(page["channel"], "news");
    assert!(page["epoch"].as_str().is_some_and(|e| !e.is_empty()));
    let msgs = page["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0]["type"], "message");
    assert_eq!(msgs[0]["offset"], 3);
    assert_eq!(msgs[1]["offset"], 4);
    let all = server
        .http("GET", "/v1/channels/news/messages", &headers, None)
        .await
        .json();
    assert_eq!(all["messages"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn http_errors_are_json_with_the_contract_codes() {
    let server = TestServer::start().await;
    let read_only = server.token_with("ro", &["news"], &[], Duration::from_secs(600));
    let writer = server.token_with("rw", &["*"], &["*"], Duration::from_secs(600));
    let bearer = |t: &str| format!("Bearer {t}");
    let (ro, rw) = (bearer(&read_only), bearer(&writer));
    let body = r#"{"id":"a","data":1}"#;
    let path = "/v1/channels/news/messages";
    // (headers, method, body, status, code)
    type Case<'a> = (
        Vec<(&'a str, &'a str)>,
        &'a str,
        Option<String>,
        u16,
        &'a str,
    );
    let cases: Vec<Case<'_>> = vec![
        (vec![], "POST", Some(body.into()), 401, "AUTH_FAILURE"),
        (
            vec![("Authorization", "Bearer nope")],
            "POST",
            Some(body.into()),
            401,
            "AUTH_FAILURE",
        ),
        (
            vec![("Authorization", ro.as_str())],
            "POST",
            Some(body.into()),
            403,
            "FORBIDDEN",
        ),
        (
            vec![("Authorization", rw.as_str())],
            "POST",
            Some("{".into()),
            400,
            "BAD_REQUEST",
        ),
        (
            vec![("Authorization", rw.as_str())],
            "POST",
            Some(r#"{"data":1}"#.into()),
            400,
            "BAD_REQUEST",
        ),
        (
            vec![("Authorization", rw.as_str())],
            "POST",
            Some(format!(r#"{{"id":"big","data":"{}"}}"#, "z".repeat(70_000))),
            413,
            "BAD_REQUEST",
        ),
        (vec![("Authorization", rw.as_str())], "GET", None, 200, ""),
        (vec![], "GET", None, 401, "AUTH_FAILURE"),
    ];
    for (headers, method, body, status, code) in cases {
        let r = server.http(method, path, &headers, body.as_deref()).await;
        assert_eq!(r.status, status, "{method} {headers:?}: {}", r.body);
        if !code.is_empty() {
            assert_eq!(r.json()["error"]["code"], code);
            assert!(r.json()["error"]["message"].is_string());
        }
    }
    let bad_name = server
        .http(
            "POST",
            "/v1/channels/-bad/messages",
            &[("Authorization", rw.as_str())],
            Some(body),
        )
        .await;
    assert_eq!(
        (bad_name.status, bad_name.json()["error"]["code"].clone()),
        (400, json!("BAD_REQUEST"))
    );
    let bad_since = server
        .http(
            "GET",
            "/v1/channels/news/messages?since=x",
            &[("Authorization", rw.as_str())],
            None,
        )
        .await;
    assert_eq!(bad_since.status, 400);
}

#[tokio::test]
async fn cors_headers_only_for_allowed_origins() {
    let server = TestServer::start().await;
    let allowed = server
        .http(
            "GET",
            "/health",
            &[("Origin", "http://localhost:3000")],
            None,
        )
        .await;
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    let other = server
        .http("GET", "/health", &[("Origin", "http://evil.example")], None)
        .await;
    assert_eq!(other.header("access-control-allow-origin"), None);
    let preflight = server
        .http(
            "OPTIONS",
            "/v1/channels/a/messages",
            &[
                ("Origin", "http://127.0.0.1:3000"),
                ("Access-Control-Request-Method", "POST"),
                (
                    "Access-Control-Request-Headers",
                    "authorization,content-type",
                ),
            ],
            None,
        )
        .await;
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("http://127.0.0.1:3000")
    );
    assert_ne!(preflight.header("access-control-allow-origin"), Some("*"));
}

#[tokio::test]
async fn the_web_dir_is_served_at_the_root() {
    let web = tempfile::tempdir().unwrap();
    std::fs::write(web.path().join("index.html"), "<h1>tether</h1>").unwrap();
    let dir = web.path().to_owned();
    let server = TestServer::start_with(move |c| c.web_dir = Some(dir)).await;
    let index = server.http("GET", "/", &[], None).await;
    assert_eq!(index.status, 200);
    assert!(index.body.contains("tether"));
    let missing = server.http("GET", "/missing.js", &[], None).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], "NOT_FOUND");
    assert_eq!(
        server.http("GET", "/health/live", &[], None).await.status,
        200
    );
}
