//! Channel rights (CONTRACT §5.1, §5.3, §5.5, §3): a token's globs are the whole of what it may
//! do — near-miss channel names, case changes, glob characters and percent-encoded paths get
//! no further, on WebSocket and HTTP alike, and a refresh to fewer rights ends what they no
//! longer allow.
use std::time::Duration;

use protocol::{ErrorCode, ServerMessage};
use serde_json::json;
use server::auth::IssueRequest;

use crate::harness::TestServer;

fn token(server: &TestServer, sub: &str, subscribe: &[&str], publish: &[&str]) -> String {
    let globs = |list: &[&str]| {
        list.iter()
            .map(|g| protocol::ChannelGlob::parse(g).expect("a valid glob"))
            .collect()
    };
    let request = IssueRequest {
        sub: sub.into(),
        subscribe: globs(subscribe),
        publish: globs(publish),
        ttl: Duration::from_secs(3600),
        admin: false,
    };
    server
        .auth
        .issue(request, server::auth::unix_now())
        .expect("signing works")
        .0
}

#[tokio::test]
async fn near_miss_channels_are_forbidden_over_websocket() {
    let server = TestServer::start().await;
    let mut c = server.connect().await;
    c.hello(&token(&server, "limited", &["room:*"], &["room:1"]))
        .await;
    for allowed in ["room:1", "room:2", "room:"] {
        c.send_json(json!({"type":"subscribe","channel":allowed}))
            .await;
        assert!(
            matches!(c.recv().await, ServerMessage::Subscribed(_)),
            "{allowed}"
        );
    }
    for denied in [
        "room", "roomx:1", "ROOM:1", "Room:1", "xroom:1", "other", "r",
    ] {
        c.send_json(json!({"type":"subscribe","channel":denied}))
            .await;
        match c.recv().await {
            ServerMessage::Error(e) => {
                assert_eq!(e.code, ErrorCode::Forbidden, "{denied}");
                assert_eq!(e.channel.as_deref(), Some(denied));
            }
            other => panic!("{denied}: {other:?}"),
        }
    }
    // Glob characters and invalid names are not channels at all.
    for bad in ["*", "room:*", "../room:1", "room:1/..", " room:1", ""] {
        c.send_json(json!({"type":"subscribe","channel":bad})).await;
        match c.recv().await {
            ServerMessage::Error(e) => assert!(
                matches!(e.code, ErrorCode::BadRequest | ErrorCode::Forbidden),
                "{bad}: {e:?}"
            ),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    for (i, denied) in ["room:2", "room", "ROOM:1", "*"].iter().enumerate() {
        c.send_json(json!({"type":"publish","id":format!("p{i}"),"channel":denied,"data":1}))
            .await;
        match c.recv().await {
            ServerMessage::Nack(n) => assert!(
                matches!(n.code, ErrorCode::Forbidden | ErrorCode::BadRequest),
                "{denied}: {n:?}"
            ),
            other => panic!("{denied}: {other:?}"),
        }
    }
    c.send_json(json!({"type":"publish","id":"ok","channel":"room:1","data":1}))
        .await;
    let mut acked = false;
    while !acked {
        match c.recv().await {
            ServerMessage::Ack(a) => acked = a.channel == "room:1",
            ServerMessage::Message(_) => {}
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_token_without_channels_has_no_rights() {
    let server = TestServer::start().await;
    let star = server
        .auth
        .sign(&protocol::Claims {
            sub: "bare".into(),
            exp: server::auth::unix_now() + 3600,
            iat: None,
            nbf: None,
            iss: None,
            aud: None,
            channels: None,
            admin: false,
        })
        .unwrap();
    let mut c = server.connect().await;
    c.hello(&star).await;
    c.send_json(json!({"type":"subscribe","channel":"any"}))
        .await;
    assert!(matches!(c.recv().await, ServerMessage::Error(e) if e.code == ErrorCode::Forbidden));
    let bearer = format!("Bearer {star}");
    let answer = server
        .http(
            "POST",
            "/v1/channels/any/messages",
            &[("Authorization", &bearer)],
            Some(r#"{"id":"x","data":1}"#),
        )
        .await;
    assert_eq!(answer.status, 403);
}

#[tokio::test]
async fn http_paths_cannot_smuggle_another_channel() {
    let server = TestServer::start().await;
    let bearer = format!(
        "Bearer {}",
        token(&server, "backend", &["room:1"], &["room:1"])
    );
    let auth = [("Authorization", bearer.as_str())];
    let body = Some(r#"{"id":"x","data":1}"#);
    let ok = server
        .http("POST", "/v1/channels/room:1/messages", &auth, body)
        .await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    // Percent-encoding decodes to the same name: still the right channel, still allowed.
    let encoded = server
        .http("POST", "/v1/channels/room%3A1/messages", &auth, body)
        .await;
    assert!(matches!(encoded.status, 200 | 201), "{}", encoded.body);
    for path in [
        "/v1/channels/room:2/messages",
        "/v1/channels/room%3A2/messages",
        "/v1/channels/ROOM:1/messages",
        "/v1/channels/room:1%2F..%2Froom:2/messages",
        "/v1/channels/..%2Froom:2/messages",
        "/v1/channels/room:1/../room:2/messages",
        "/v1/channels/%2A/messages",
    ] {
        for method in ["POST", "GET"] {
            let answer = server
                .http(method, path, &auth, body.filter(|_| method == "POST"))
                .await;
            assert!(
                matches!(answer.status, 400 | 403 | 404),
                "{method} {path}: {} {}",
                answer.status,
                answer.body
            );
        }
    }
}

#[tokio::test]
async fn a_refresh_to_fewer_rights_ends_the_subscriptions_it_no_longer_allows() {
    let server = TestServer::start().await;
    let mut c = server.connect().await;
    c.hello(&token(&server, "shrinking", &["a", "b"], &[]))
        .await;
    for ch in ["a", "b"] {
        c.send_json(json!({"type":"subscribe","channel":ch})).await;
        assert!(matches!(c.recv().await, ServerMessage::Subscribed(_)));
    }
    c.send_json(json!({"type":"refresh","token":token(&server, "shrinking", &["a"], &[])}))
        .await;
    assert!(matches!(c.recv().await, ServerMessage::Refreshed(_)));
    match c.recv().await {
        ServerMessage::Error(e) => {
            assert_eq!(e.code, ErrorCode::Forbidden);
            assert_eq!(e.channel.as_deref(), Some("b"));
        }
        other => panic!("{other:?}"),
    }
    // Publishing to b by someone else no longer reaches this connection; a still does.
    let mut publisher = server.connect().await;
    publisher
        .hello(&token(&server, "pub", &[], &["a", "b"]))
        .await;
    for ch in ["b", "a"] {
        publisher
            .send_json(json!({"type":"publish","id":ch,"channel":ch,"data":ch}))
            .await;
        assert!(matches!(publisher.recv().await, ServerMessage::Ack(_)));
    }
    match c.recv().await {
        ServerMessage::Message(m) => assert_eq!(m.channel, "a", "b leaked after the refresh"),
        other => panic!("{other:?}"),
    }
}
