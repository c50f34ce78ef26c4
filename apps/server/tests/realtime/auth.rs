//! The handshake: hello within the connection timeout, bad tokens, frames before hello.
use std::time::Duration;

use base64::Engine as _;
use protocol::{ErrorCode, ServerMessage};
use serde_json::json;
use server::auth::{AuthConfig, Authenticator, IssueRequest, fingerprint, unix_now};

use crate::harness::{TestServer, logs};

fn issue(auth: &Authenticator, sub: &str, ttl: u64, now: i64) -> String {
    let star = protocol::ChannelGlob::parse("*").unwrap();
    let request = IssueRequest {
        sub: sub.into(),
        subscribe: vec![star.clone()],
        publish: vec![star],
        ttl: Duration::from_secs(ttl),
        admin: false,
    };
    auth.issue(request, now).unwrap().0
}

fn alg_none(sub: &str) -> String {
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let header = b64(json!({"alg":"none","typ":"JWT"}));
    let claims = b64(
        json!({"sub":sub,"exp":unix_now() + 3600,"channels":{"subscribe":["*"],"publish":["*"]}}),
    );
    format!("{header}.{claims}.")
}

/// Presents `token` and expects `AUTH_FAILURE` then 4401, plus an `auth_failure` line that
/// names the fingerprint and never the token.
async fn refused(server: &TestServer, token: &str, reason: &str) {
    let mut c = server.connect().await;
    c.send_json(json!({"type":"hello","token":token})).await;
    let (code, before) = c.until_close().await;
    assert_eq!(code, Some(4401), "{reason}");
    assert!(
        matches!(before.as_slice(), [ServerMessage::Error(e)] if e.code == ErrorCode::AuthFailure),
        "{before:?}"
    );
    let print = fingerprint(token);
    let line = logs::wait_for("auth_failure", |l| {
        l["data"]["token_fingerprint"] == print.as_str()
    })
    .await;
    assert_eq!(line["level"], "warn");
    assert_eq!(line["data"]["reason"], reason);
    assert!(line["connectionId"].is_string());
    assert!(!logs::raw().contains(token), "a token leaked into the logs");
}

#[tokio::test]
async fn expired_forged_and_alg_none_tokens_close_4401() {
    let server = TestServer::start().await;
    let expired = issue(&server.auth, "late", 10, unix_now() - 100);
    refused(&server, &expired, "expired").await;
    let other = Authenticator::new(&AuthConfig::with_secret(
        "some-other-secret-0123456789abcdef0123456789",
    ));
    let forged = issue(&other, "mallory", 3600, unix_now());
    refused(&server, &forged, "bad_signature").await;
    refused(&server, &alg_none("mallory"), "wrong_algorithm").await;
    refused(&server, "not-a-jwt", "malformed").await;
}

#[tokio::test]
async fn no_hello_closes_4408() {
    let server =
        TestServer::start_with(|c| c.connection_timeout = Duration::from_millis(300)).await;
    let mut c = server.connect().await;
    let (code, _) = c.until_close().await;
    assert_eq!(code, Some(4408));
}

#[tokio::test]
async fn any_other_frame_before_hello_is_auth_failure_4401() {
    let server = TestServer::start().await;
    for first in [
        json!({"type":"ping","id":1}),
        json!({"type":"subscribe","channel":"a"}),
        json!({"nonsense":true}),
    ] {
        let mut c = server.connect().await;
        c.send_json(first.clone()).await;
        let (code, before) = c.until_close().await;
        assert_eq!(code, Some(4401), "{first}");
        assert!(
            matches!(before.as_slice(), [ServerMessage::Error(e)] if e.code == ErrorCode::AuthFailure),
            "{first}: {before:?}"
        );
    }
}
