//! The operator actions against the real in-process server (issue 6 §4): `POST /v1/admin/shed`
//! and `DELETE /v1/channels/{channel}/messages`, with and without the `admin` claim, and the
//! `tether admin` commands against it. Every wait is bounded (the harness's `within`).

#[path = "realtime/harness.rs"]
mod harness;

use std::time::Duration;

use harness::{Client, Incoming, TestServer};
use protocol::{ReconnectReason, ServerMessage};
use server::auth::IssueRequest;

/// A token with every channel right and the given `admin` claim.
fn token(server: &TestServer, sub: &str, admin: bool) -> String {
    let all = vec![protocol::ChannelGlob::parse("*").expect("a glob")];
    let request = IssueRequest {
        sub: sub.to_owned(),
        subscribe: all.clone(),
        publish: all,
        ttl: Duration::from_secs(3600),
        admin,
    };
    server
        .auth
        .issue(request, server::auth::unix_now())
        .expect("signing works")
        .0
}

async fn call(
    server: &TestServer,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> harness::HttpResponse {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|b| vec![("Authorization", b)])
        .unwrap_or_default();
    server.http(method, path, &headers, body).await
}

fn error_code(response: &harness::HttpResponse) -> String {
    response.json()["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// `n` welcomed clients whose session loops run (a ping round trip after `welcome`).
async fn clients(server: &TestServer, n: usize) -> Vec<Client> {
    let mut all = Vec::new();
    for i in 0..n {
        let (mut c, _) = server.client(&format!("u{i}")).await;
        c.sync(1).await;
        all.push(c);
    }
    all
}

/// Reads to the close: `Some(after_ms)` when the client got `reconnect` reason `shed` and then
/// close 1012.
async fn shed_advice(client: &mut Client) -> Option<u64> {
    let (code, before) = client.until_close().await;
    assert_eq!(code, Some(1012), "frames before the close: {before:?}");
    before.iter().find_map(|m| match m {
        ServerMessage::Reconnect(r) if r.reason == ReconnectReason::Shed => Some(r.after_ms),
        _ => None,
    })
}

#[tokio::test]
async fn operator_actions_need_an_admin_token() {
    let server = TestServer::start().await;
    let plain = token(&server, "user", false);
    let body = Some(r#"{"fraction":1.0}"#);
    for (method, path, body) in [
        ("POST", "/v1/admin/shed", body),
        ("DELETE", "/v1/channels/room:1/messages", None),
    ] {
        let none = call(&server, method, path, None, body).await;
        assert_eq!(none.status, 401, "{method} {path}: {}", none.body);
        assert_eq!(error_code(&none), "AUTH_FAILURE");
        let bad = call(&server, method, path, Some("not.a.jwt"), body).await;
        assert_eq!(bad.status, 401, "{method} {path}: {}", bad.body);
        assert_eq!(error_code(&bad), "AUTH_FAILURE");
        let forbidden = call(&server, method, path, Some(&plain), body).await;
        assert_eq!(forbidden.status, 403, "{method} {path}: {}", forbidden.body);
        assert_eq!(error_code(&forbidden), "FORBIDDEN");
    }
    server.stop().await.expect("a clean stop");
}

#[tokio::test]
async fn shed_all_of_three_advises_and_closes_each_with_1012() {
    let server = TestServer::start().await;
    let admin = token(&server, "ops", true);
    let mut all = clients(&server, 3).await;
    let body = r#"{"fraction":1.0,"after_ms_max":5000}"#;
    let answer = call(&server, "POST", "/v1/admin/shed", Some(&admin), Some(body)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.json(),
        serde_json::json!({"shed": 3, "connections": 3})
    );
    for c in &mut all {
        let after = shed_advice(c).await.expect("reconnect reason shed");
        assert!(after < 5000, "after_ms {after}");
    }
    let logged = harness::logs::wait_for("connections_shed", |l| {
        l["event"] == "connections_shed" && l["data"]["shed"] == 3
    })
    .await;
    assert_eq!(logged["component"], "server");
    assert_eq!(logged["level"], "info");
    server.stop().await.expect("a clean stop");
}

#[tokio::test]
async fn shed_half_of_four_closes_two_and_keeps_two() {
    let server = TestServer::start().await;
    let admin = token(&server, "ops", true);
    let mut all = clients(&server, 4).await;
    let answer = call(
        &server,
        "POST",
        "/v1/admin/shed",
        Some(&admin),
        Some(r#"{"fraction":0.5}"#),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.json(),
        serde_json::json!({"shed": 2, "connections": 4})
    );
    // A ping answered means the connection is still open; a shed one reads reconnect + 1012.
    let (mut kept, mut shed) = (0, 0);
    for c in &mut all {
        c.send_json(serde_json::json!({"type":"ping","id":7})).await;
        match c.next().await {
            Incoming::Msg(ServerMessage::Pong(_)) => kept += 1,
            Incoming::Msg(ServerMessage::Reconnect(r)) => {
                assert_eq!(r.reason, ReconnectReason::Shed);
                let (code, _) = c.until_close().await;
                assert_eq!(code, Some(1012));
                shed += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((kept, shed), (2, 2));
    server.stop().await.expect("a clean stop");
}

#[tokio::test]
async fn shed_refuses_bad_bodies() {
    let server = TestServer::start().await;
    let admin = token(&server, "ops", true);
    for body in [
        "not json",
        "{}",
        r#"{"fraction":"half"}"#,
        r#"{"fraction":1.5}"#,
        r#"{"fraction":-0.1}"#,
        r#"{"fraction":0.5,"after_ms_max":-1}"#,
        r#"{"fraction":0.5,"after_ms_max":999999999}"#,
        r#"{"fraction":0.5,"extra":1}"#,
    ] {
        let answer = call(&server, "POST", "/v1/admin/shed", Some(&admin), Some(body)).await;
        assert_eq!(answer.status, 400, "{body}: {}", answer.body);
        assert_eq!(error_code(&answer), "BAD_REQUEST", "{body}");
    }
    let empty = call(
        &server,
        "POST",
        "/v1/admin/shed",
        Some(&admin),
        Some(r#"{"fraction":0.0}"#),
    )
    .await;
    assert_eq!(empty.status, 200, "{}", empty.body);
    assert_eq!(
        empty.json(),
        serde_json::json!({"shed": 0, "connections": 0})
    );
    server.stop().await.expect("a clean stop");
}

#[tokio::test]
async fn purge_empties_history_and_changes_the_epoch() {
    let server = TestServer::start().await;
    let admin = token(&server, "ops", true);
    let (mut c, _) = server.client("u").await;
    let old = c.subscribe("room:1", Some(0)).await;
    for i in 0..3 {
        c.publish(&format!("m{i}"), "room:1", serde_json::json!(i))
            .await;
    }
    let (got, _) = c.messages(3).await;
    assert_eq!(got.len(), 3);

    let answer = call(
        &server,
        "DELETE",
        "/v1/channels/room:1/messages",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let body = answer.json();
    assert_eq!(body["channel"], "room:1");
    let epoch = body["epoch"].as_str().expect("an epoch").to_owned();
    assert_ne!(epoch, old.epoch);

    let history = call(
        &server,
        "GET",
        "/v1/channels/room:1/messages?since=0",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(history.status, 200, "{}", history.body);
    assert_eq!(history.json()["epoch"], epoch.as_str());
    assert_eq!(history.json()["messages"], serde_json::json!([]));

    // The live subscriber learns it in order with its deliveries, then gets offset 1 again.
    match c.recv().await {
        ServerMessage::Subscribed(s) => {
            assert!(!s.recovered, "{s:?}");
            assert_eq!(
                (s.epoch.as_str(), s.offset, s.replayed),
                (epoch.as_str(), 0, 0)
            );
        }
        other => panic!("expected the purge notice, got {other:?}"),
    }
    c.publish("after", "room:1", serde_json::json!("after"))
        .await;
    let (got, _) = c.messages(1).await;
    assert_eq!((got[0].offset, got[0].id.as_str()), (1, "after"));

    // A client coming back with the old epoch learns its offsets are void.
    let (mut back, _) = server.client("u2").await;
    back.send_json(
        serde_json::json!({"type":"subscribe","channel":"room:1","since":3,"epoch":old.epoch}),
    )
    .await;
    match back.recv().await {
        ServerMessage::Subscribed(s) => {
            assert!(!s.recovered, "{s:?}");
            assert_eq!(s.epoch, epoch);
            assert_eq!(s.offset, 1);
        }
        other => panic!("expected subscribed, got {other:?}"),
    }
    harness::logs::wait_for("channel_purged", |l| {
        l["event"] == "channel_purged" && l["data"]["channel"] == "room:1"
    })
    .await;

    // Unknown and malformed channels.
    let missing = call(
        &server,
        "DELETE",
        "/v1/channels/never:used/messages",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    assert_eq!(error_code(&missing), "NOT_FOUND");
    let bad = call(
        &server,
        "DELETE",
        "/v1/channels/bad%20name/messages",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    server.stop().await.expect("a clean stop");
}

/// Runs the `tether` binary off the async runtime.
async fn tether(args: Vec<String>, token: Option<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tether"));
        cmd.args(&args).env_remove("TETHER_TOKEN");
        if let Some(t) = token {
            cmd.env("TETHER_TOKEN", t);
        }
        cmd.output().expect("tether runs")
    })
    .await
    .expect("no panic")
}

#[tokio::test]
async fn the_admin_commands_call_the_endpoints() {
    let server = TestServer::start().await;
    let admin = token(&server, "ops", true);
    let url = format!("http://{}", server.addr);
    let (mut c, _) = server.client("u").await;
    c.subscribe("room:2", None).await;
    c.sync(1).await;

    let purge = tether(
        vec![
            "admin".into(),
            "purge".into(),
            "--channel".into(),
            "room:2".into(),
            "--url".into(),
            url.clone(),
        ],
        Some(admin.clone()),
    )
    .await;
    assert!(purge.status.success(), "{purge:?}");
    let out: serde_json::Value = serde_json::from_slice(&purge.stdout).expect("JSON on stdout");
    assert_eq!(out["channel"], "room:2");

    let shed = tether(
        vec![
            "admin".into(),
            "shed".into(),
            "--fraction".into(),
            "1".into(),
            "--url".into(),
            url.clone(),
        ],
        Some(admin.clone()),
    )
    .await;
    assert!(shed.status.success(), "{shed:?}");
    let out: serde_json::Value = serde_json::from_slice(&shed.stdout).expect("JSON on stdout");
    assert_eq!(out, serde_json::json!({"shed": 1, "connections": 1}));
    assert!(shed_advice(&mut c).await.is_some());

    let refused = tether(
        vec![
            "admin".into(),
            "shed".into(),
            "--fraction".into(),
            "1".into(),
            "--url".into(),
            url.clone(),
        ],
        Some(token(&server, "user", false)),
    )
    .await;
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(refused.stdout.is_empty());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("FORBIDDEN"));

    let no_token = tether(
        vec![
            "admin".into(),
            "purge".into(),
            "--channel".into(),
            "room:2".into(),
            "--url".into(),
            url,
        ],
        None,
    )
    .await;
    assert_eq!(no_token.status.code(), Some(2), "{no_token:?}");
    server.stop().await.expect("a clean stop");
}
