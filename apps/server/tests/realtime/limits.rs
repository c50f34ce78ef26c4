//! Sizes, encodings, rates, heartbeats and slow consumers.
use std::time::Duration;

use futures_util::SinkExt as _;
use protocol::{ErrorCode, ServerMessage};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::harness::{TestServer, logs};

#[tokio::test]
async fn a_70_kb_frame_closes_1009() {
    let server = TestServer::start().await;
    let (mut c, _) = server.client("big").await;
    let data = "x".repeat(70_000);
    c.publish("big", "room", json!(data)).await;
    let (code, _) = c.until_close().await;
    assert_eq!(code, Some(1009));
}

#[tokio::test]
async fn invalid_utf8_text_closes_1007() {
    let server = TestServer::start().await;
    let (mut c, _) = server.client("bytes").await;
    let frame = Frame::message(vec![0x7b, 0xff, 0xfe, 0x7d], OpCode::Data(Data::Text), true);
    c.ws.send(Message::Frame(frame)).await.unwrap();
    let (code, _) = c.until_close().await;
    assert_eq!(code, Some(1007));
}

#[tokio::test]
async fn publish_rate_limit_nacks_then_closes_4429_under_sustained_excess() {
    let server = TestServer::start_with(|c| {
        c.limits.publish.burst = 5;
        c.limits.publish.per_sec = 1.0;
    })
    .await;
    let (mut c, welcome) = server.client("flood").await;
    for i in 0..6 {
        c.publish(&format!("m{i}"), "flood", json!(i)).await;
    }
    let mut acks = 0;
    let mut nack = None;
    while nack.is_none() {
        match c.recv().await {
            ServerMessage::Ack(_) => acks += 1,
            ServerMessage::Nack(n) => nack = Some(n),
            other => panic!("unexpected {other:?}"),
        }
    }
    let nack = nack.unwrap();
    assert_eq!(nack.code, ErrorCode::RateLimit);
    assert!(
        nack.retry_after_ms.is_some_and(|ms| ms > 0 && ms <= 1_000),
        "{nack:?}"
    );
    logs::wait_for("rate_limited", |l| {
        l["connectionId"] == welcome.connection_id.as_str()
    })
    .await;

    // Keep hammering, ignoring the advice: an error RATE_LIMIT, then 4429.
    for i in 0..400 {
        c.publish(&format!("x{i}"), "flood", json!(i)).await;
    }
    let (code, before) = c.until_close().await;
    assert_eq!(code, Some(4429));
    let last = before.last().expect("an error frame before the close");
    assert!(
        matches!(last, ServerMessage::Error(e) if e.code == ErrorCode::RateLimit && e.retry_after_ms.is_some()),
        "{last:?}"
    );
    let _ = acks;
}

#[tokio::test]
async fn a_silent_connection_is_closed_1001_and_pongs_feed_health_latency() {
    let server = TestServer::start_with(|c| c.heartbeat = Duration::from_millis(200)).await;
    // A client that reads answers the server's Pings (tungstenite replies automatically).
    let (mut live, _) = server.client("live").await;
    let reader = tokio::spawn(async move {
        let _ = live.until_close().await;
    });
    // A client that neither reads nor writes: nothing arrives from it.
    let (_silent, welcome) = server.client("silent").await;
    let closed = logs::wait_for("connection_closed", |l| {
        l["connectionId"] == welcome.connection_id.as_str()
    })
    .await;
    assert_eq!(closed["data"]["code"], 1001);
    // The reading client's round trips show up in /health.
    crate::harness::within("a latency sample", async {
        loop {
            let body = server.http("GET", "/health", &[], None).await.json();
            if body["latency"].as_f64().is_some_and(|l| l > 0.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    reader.abort();
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_1013_and_others_are_unaffected() {
    // Room for a few commit batches, far less than the socket buffers plus the stream.
    let server = TestServer::start_with(|c| c.limits.outbound_queue = 128).await;
    let (mut slow, slow_welcome) = server.client("slow").await;
    let (mut fast, _) = server.client("fast").await;
    let (mut publisher, _) = server.client("pub").await;
    slow.subscribe("firehose", None).await;
    fast.subscribe("firehose", None).await;
    // Big messages fill the socket buffers quickly; then the bounded queue overflows.
    let blob = "y".repeat(16 * 1024);
    let total = 1000;
    let fast_reader = tokio::spawn(async move {
        let (got, _) = fast.messages(total).await;
        got
    });
    for i in 0..total {
        publisher
            .publish(&format!("m{i}"), "firehose", json!(blob))
            .await;
        if i % 16 == 15 {
            // Small windows: a commit batch never outgrows the queue of a reader that keeps up.
            let mut acked = 0;
            while acked < 16 {
                if matches!(publisher.recv().await, ServerMessage::Ack(_)) {
                    acked += 1;
                }
            }
        }
    }
    logs::wait_for("slow_consumer_disconnected", |l| {
        l["connectionId"] == slow_welcome.connection_id.as_str()
    })
    .await;
    let (code, before) = slow.until_close().await;
    assert_eq!(code, Some(1013));
    let got = before
        .iter()
        .filter(|m| matches!(m, ServerMessage::Message(_)))
        .count();
    assert!(
        got < total,
        "the slow client was cut before the end ({got})"
    );
    let fast_got = crate::harness::within("the fast reader", fast_reader)
        .await
        .unwrap();
    let offsets: Vec<u64> = fast_got.iter().map(|m| m.offset).collect();
    assert_eq!(offsets, (1..=total as u64).collect::<Vec<_>>());
}

#[tokio::test]
async fn the_default_publish_burst_of_1000_is_acked_whole_and_the_next_is_refused() {
    // The contract's bucket (burst 1000), with refill slowed to nearly nothing so that the
    // test counts the burst itself and not what trickled back in while sending.
    let default = server::config::Limits::default().publish;
    assert_eq!(default.burst, 1_000, "the default burst is the contract's");
    let server = TestServer::start_with(|c| {
        c.limits.publish.burst = default.burst;
        c.limits.publish.per_sec = 0.001;
    })
    .await;
    let (mut c, _) = server.client("burst").await;
    let burst = 1_000;
    for i in 0..=burst {
        c.publish(&format!("b{i}"), "burst", json!(i)).await;
    }
    // Acks follow the group commit while a refusal is immediate, so they may interleave:
    // count every answer, one per publish.
    let mut acks = 0;
    let mut nacks = Vec::new();
    while acks + nacks.len() < burst + 1 {
        match c.recv().await {
            ServerMessage::Ack(_) => acks += 1,
            ServerMessage::Nack(n) => nacks.push(n),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        acks, burst,
        "every publish within the burst is acked ({nacks:?})"
    );
    let [nack] = nacks.as_slice() else {
        panic!("exactly one refusal expected: {nacks:?}");
    };
    assert_eq!(nack.code, ErrorCode::RateLimit);
    assert_eq!(
        nack.id,
        format!("b{burst}"),
        "the refused one is the first past the burst"
    );
}
