//! Each message type of CONTRACT §5 and its error paths, one connection at a time.
use std::time::Duration;

use futures_util::SinkExt as _;
use protocol::{ErrorCode, ServerMessage};
use serde_json::json;

use crate::harness::{Incoming, TestServer};

#[tokio::test]
async fn hello_welcome_ping_pong() {
    let server = TestServer::start().await;
    let (mut a, welcome_a) = server.client("alice").await;
    let (_b, welcome_b) = server.client("alice").await;
    assert!(!welcome_a.connection_id.is_empty());
    assert_ne!(welcome_a.connection_id, welcome_b.connection_id);
    assert_eq!(welcome_a.heartbeat_ms, 30_000);
    assert_eq!(welcome_a.max_message_bytes, 65_536);
    assert!(welcome_a.token_expires_at > welcome_a.server_time);

    a.send_json(json!({"type":"ping","id":7})).await;
    match a.recv().await {
        ServerMessage::Pong(p) => assert_eq!(p.id, 7),
        other => panic!("expected pong, got {other:?}"),
    }
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn welcome_uses_the_tether_subprotocol_when_offered() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let server = TestServer::start().await;
    let mut request = server.ws_url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "tether.v1".parse().unwrap());
    let (_ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        response.headers().get("sec-websocket-protocol").unwrap(),
        "tether.v1"
    );
}

#[tokio::test]
async fn publish_acks_and_delivers_to_every_subscriber_including_the_publisher() {
    let server = TestServer::start().await;
    let (mut sub, _) = server.client("reader").await;
    let (mut publisher, _) = server.client("writer").await;
    let s = sub.subscribe("room:1", None).await;
    assert_eq!((s.offset, s.replayed, s.recovered), (0, 0, true));
    assert!(!s.epoch.is_empty());
    let p = publisher.subscribe("room:1", None).await;
    assert_eq!(p.epoch, s.epoch);

    publisher
        .publish("m1", "room:1", json!({"text":"hi"}))
        .await;
    let mut acked = false;
    let mut delivered = false;
    while !(acked && delivered) {
        match publisher.recv().await {
            ServerMessage::Ack(ack) => {
                assert_eq!(
                    (ack.id.as_str(), ack.offset, ack.duplicate),
                    ("m1", 1, false)
                );
                assert_eq!(ack.channel, "room:1");
                acked = true;
            }
            ServerMessage::Message(m) => {
                assert_eq!(m.offset, 1);
                delivered = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    match sub.recv().await {
        ServerMessage::Message(m) => {
            assert_eq!(
                (m.channel.as_str(), m.offset, m.id.as_str()),
                ("room:1", 1, "m1")
            );
            assert_eq!(m.data, json!({"text":"hi"}));
        }
        other => panic!("expected message, got {other:?}"),
    }
}

#[tokio::test]
async fn subscribe_with_since_replays_then_goes_live() {
    let server = TestServer::start().await;
    let (mut publisher, _) = server.client("w").await;
    for i in 1..=5 {
        publisher
            .publish(&format!("m{i}"), "replay", json!(i))
            .await;
    }
    for _ in 1..=5 {
        assert!(matches!(publisher.recv().await, ServerMessage::Ack(_)));
    }
    let (mut sub, _) = server.client("r").await;
    let s = sub.subscribe("replay", Some(2)).await;
    assert_eq!((s.offset, s.replayed, s.recovered), (5, 3, true));
    let (got, _) = sub.messages(3).await;
    assert_eq!(
        got.iter().map(|m| m.offset).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    publisher.publish("m6", "replay", json!(6)).await;
    let (live, _) = sub.messages(1).await;
    assert_eq!(live[0].offset, 6);

    // Everything retained; an unknown epoch; `since` beyond the latest offset.
    let (mut again, _) = server.client("r").await;
    let all = again.subscribe("replay", Some(0)).await;
    assert_eq!((all.replayed, all.recovered), (6, true));
    again
        .send_json(json!({"type":"subscribe","channel":"replay","since":4,"epoch":"other"}))
        .await;
    let mut replaced = None;
    while replaced.is_none() {
        if let ServerMessage::Subscribed(s) = again.recv().await {
            replaced = Some(s);
        }
    }
    let replaced = replaced.unwrap();
    assert!(!replaced.recovered);
    assert_eq!(
        replaced.replayed, 6,
        "replay restarts at the oldest retained"
    );
    let (mut beyond, _) = server.client("r").await;
    let b = beyond.subscribe("replay", Some(99)).await;
    assert!(!b.recovered);
    assert_eq!(b.replayed, 6);
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let server = TestServer::start().await;
    let (mut a, _) = server.client("a").await;
    let (mut b, _) = server.client("b").await;
    a.subscribe("u", None).await;
    b.subscribe("u", None).await;
    a.send_json(json!({"type":"unsubscribe","channel":"u"}))
        .await;
    match a.recv().await {
        ServerMessage::Unsubscribed(u) => assert_eq!(u.channel, "u"),
        other => panic!("expected unsubscribed, got {other:?}"),
    }
    b.publish("x", "u", json!(1)).await;
    let (got, _) = b.messages(1).await;
    assert_eq!(got[0].offset, 1);
    // The hub pushed to every live subscriber in the same step, so anything for `a` would be
    // queued before this ping's answer.
    let before = a.sync(1).await;
    assert!(before.is_empty(), "nothing after unsubscribe: {before:?}");
}

#[tokio::test]
async fn refused_frames_keep_the_connection_open() {
    let server = TestServer::start().await;
    let token = server.token_with(
        "limited",
        &["room:*"],
        &["room:1"],
        Duration::from_secs(600),
    );
    let mut c = server.connect().await;
    c.hello(&token).await;

    c.send_text("{not json").await;
    expect_error(&mut c, ErrorCode::BadRequest, None).await;
    c.send_json(json!({"type":"teleport"})).await;
    expect_error(&mut c, ErrorCode::BadRequest, None).await;
    c.send_json(json!({"type":"ping","id":"seven"})).await;
    expect_error(&mut c, ErrorCode::BadRequest, None).await;
    c.send_json(json!({"type":"hello","token":token})).await;
    expect_error(&mut c, ErrorCode::BadRequest, None).await;
    c.ws.send(tokio_tungstenite::tungstenite::Message::binary(vec![
        1, 2, 3,
    ]))
    .await
    .unwrap();
    expect_error(&mut c, ErrorCode::BadRequest, None).await;

    c.send_json(json!({"type":"subscribe","channel":"lobby"}))
        .await;
    expect_error(&mut c, ErrorCode::Forbidden, Some("lobby")).await;
    c.send_json(json!({"type":"subscribe","channel":"bad name!"}))
        .await;
    expect_error(&mut c, ErrorCode::BadRequest, Some("bad name!")).await;

    c.publish("p1", "room:2", json!(1)).await;
    expect_nack(&mut c, "p1", ErrorCode::Forbidden).await;
    c.publish("p2", "-bad", json!(1)).await;
    expect_nack(&mut c, "p2", ErrorCode::BadRequest).await;

    // Still usable.
    assert!(c.sync(9).await.is_empty());
    c.publish("p3", "room:1", json!(1)).await;
    assert!(matches!(c.recv().await, ServerMessage::Ack(a) if a.offset == 1));
}

async fn expect_error(c: &mut crate::harness::Client, code: ErrorCode, channel: Option<&str>) {
    match c.recv().await {
        ServerMessage::Error(e) => {
            assert_eq!(e.code, code, "{e:?}");
            assert_eq!(e.channel.as_deref(), channel, "{e:?}");
        }
        other => panic!("expected error {code}, got {other:?}"),
    }
}

async fn expect_nack(c: &mut crate::harness::Client, id: &str, code: ErrorCode) {
    match c.recv().await {
        ServerMessage::Nack(n) => {
            assert_eq!((n.id.as_str(), n.code), (id, code), "{n:?}");
        }
        other => panic!("expected nack {code}, got {other:?}"),
    }
}

#[tokio::test]
async fn duplicates_ack_the_first_offset_and_conflicts_are_refused() {
    let server = TestServer::start().await;
    let (mut p, _) = server.client("dup").await;
    let (mut watcher, _) = server.client("watch").await;
    watcher.subscribe("d", None).await;
    p.publish("same", "d", json!({"a":1,"b":2})).await;
    p.publish("same", "d", json!({"b":2,"a":1})).await;
    p.publish("same", "d", json!({"a":2})).await;
    p.publish("next", "d", json!(3)).await;
    let first = p.recv().await;
    let second = p.recv().await;
    assert!(
        matches!(first, ServerMessage::Ack(ref a) if a.offset == 1 && !a.duplicate),
        "{first:?}"
    );
    assert!(
        matches!(second, ServerMessage::Ack(ref a) if a.offset == 1 && a.duplicate),
        "{second:?}"
    );
    expect_nack(&mut p, "same", ErrorCode::BadRequest).await;
    assert!(matches!(p.recv().await, ServerMessage::Ack(a) if a.offset == 2));
    let (got, _) = watcher.messages(2).await;
    assert_eq!(got.iter().map(|m| m.offset).collect::<Vec<_>>(), vec![1, 2]);
    assert!(
        watcher.sync(1).await.is_empty(),
        "the duplicate is delivered once"
    );
}

#[tokio::test]
async fn refresh_keeps_the_connection_and_rechecks_rights() {
    let server = TestServer::start().await;
    let mut c = server.connect().await;
    c.hello(&server.token("ref")).await;
    c.subscribe("keep:1", None).await;
    c.subscribe("lose:1", None).await;

    // Another sub, a forged token: refused, the current token stays.
    let other = server.token("someone-else");
    c.send_json(json!({"type":"refresh","token":other})).await;
    expect_error(&mut c, ErrorCode::AuthFailure, None).await;
    c.send_json(json!({"type":"refresh","token":"a.b.c"})).await;
    expect_error(&mut c, ErrorCode::AuthFailure, None).await;

    let narrower = server.token_with("ref", &["keep:*"], &[], Duration::from_secs(7200));
    c.send_json(json!({"type":"refresh","token":narrower}))
        .await;
    match c.recv().await {
        ServerMessage::Refreshed(r) => assert!(r.token_expires_at.unix_millis() > 0),
        other => panic!("expected refreshed, got {other:?}"),
    }
    expect_error(&mut c, ErrorCode::Forbidden, Some("lose:1")).await;
    // Publishing is no longer allowed either.
    c.publish("x", "keep:1", json!(1)).await;
    expect_nack(&mut c, "x", ErrorCode::Forbidden).await;
}

#[tokio::test]
async fn token_expiring_then_expiry_closes_4401() {
    let server = TestServer::start_with(|c| {
        c.token_expiry_notice = Duration::from_secs(3600);
    })
    .await;
    let mut c = server.connect().await;
    let token = server.token_with("short", &["*"], &["*"], Duration::from_secs(2));
    let welcome = c.hello(&token).await;
    match c.recv().await {
        ServerMessage::TokenExpiring(t) => assert_eq!(t.expires_at, welcome.token_expires_at),
        other => panic!("expected token_expiring, got {other:?}"),
    }
    let (code, before) = c.until_close().await;
    assert_eq!(code, Some(4401));
    assert!(
        matches!(before.last(), Some(ServerMessage::Error(e)) if e.code == ErrorCode::AuthFailure),
        "{before:?}"
    );
}

#[tokio::test]
async fn client_close_is_logged_with_code_and_duration() {
    let server = TestServer::start().await;
    let (mut c, welcome) = server.client("bye").await;
    c.ws.close(None).await.unwrap();
    let line = crate::harness::logs::wait_for("connection_closed", |l| {
        l["connectionId"] == welcome.connection_id.as_str()
    })
    .await;
    assert_eq!(line["level"], "info");
    assert_eq!(line["component"], "websocket");
    assert!(line["data"]["code"].is_u64());
    assert!(line["data"]["duration_ms"].is_u64());
    assert!(matches!(c.next().await, Incoming::Closed(_)));
}
