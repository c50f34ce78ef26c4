//! Delivery guarantees: replay after a drop, the replay→live hand-over under load, fan-out to
//! many clients, racing retries, and a large resubscribe.
use std::collections::HashMap;

use protocol::ServerMessage;
use serde_json::json;

use crate::harness::{Client, TestServer, within};

/// Publishes `ids` on `channel` and waits for every ack; returns the offsets.
async fn publish_all(c: &mut Client, channel: &str, ids: impl Iterator<Item = String>) -> Vec<u64> {
    let mut sent = 0;
    for id in ids {
        c.publish(&id, channel, json!({"id": id})).await;
        sent += 1;
    }
    let mut offsets = Vec::with_capacity(sent);
    while offsets.len() < sent {
        match c.recv().await {
            ServerMessage::Ack(a) => offsets.push(a.offset),
            ServerMessage::Message(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    offsets
}

#[tokio::test]
async fn a_dropped_subscriber_resumes_with_since_and_gets_exactly_the_missing_ones() {
    let server = TestServer::start().await;
    let (mut sub, _) = server.client("reader").await;
    sub.subscribe("resume", None).await;
    let (mut publisher, _) = server.client("writer").await;
    let writer = tokio::spawn(async move {
        publish_all(&mut publisher, "resume", (0..1000).map(|i| format!("m{i}"))).await
    });
    // Read part of the stream, then drop the connection in the middle.
    let (first, _) = sub.messages(300).await;
    let last = first.last().unwrap().offset;
    assert_eq!(
        first.iter().map(|m| m.offset).collect::<Vec<_>>(),
        (1..=last).collect::<Vec<_>>()
    );
    drop(sub);
    within("the writer", writer).await.unwrap();

    let (mut again, _) = server.client("reader").await;
    let s = again.subscribe("resume", Some(last)).await;
    assert!(s.recovered);
    assert_eq!(s.offset, 1000);
    assert_eq!(s.replayed, 1000 - last);
    let (rest, _) = again.messages((1000 - last) as usize).await;
    assert_eq!(
        rest.iter().map(|m| m.offset).collect::<Vec<_>>(),
        (last + 1..=1000).collect::<Vec<_>>()
    );
    assert!(
        again.sync(1).await.is_empty(),
        "nothing repeated after the end"
    );
}

#[tokio::test]
async fn a_replay_racing_live_publishes_has_no_gap_and_no_repeat() {
    let server = TestServer::start().await;
    let (mut publisher, _) = server.client("writer").await;
    publish_all(&mut publisher, "race", (0..1500).map(|i| format!("a{i}"))).await;
    let writer = tokio::spawn(async move {
        publish_all(&mut publisher, "race", (0..1500).map(|i| format!("b{i}"))).await
    });
    let (mut sub, _) = server.client("reader").await;
    sub.subscribe("race", Some(0)).await;
    let (got, _) = sub.messages(3000).await;
    assert_eq!(
        got.iter().map(|m| m.offset).collect::<Vec<_>>(),
        (1..=3000).collect::<Vec<_>>()
    );
    within("the writer", writer).await.unwrap();
    assert!(sub.sync(1).await.is_empty());
}

#[tokio::test]
async fn two_hundred_clients_fifty_publishes_each_exactly_once_in_order() {
    const CLIENTS: usize = 200;
    const PUBLISHES: usize = 50;
    const CHANNELS: usize = 10;
    let server = TestServer::start().await;
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let (mut c, _) = server.client(&format!("user{i}")).await;
        c.subscribe(&format!("load:{}", i % CHANNELS), None).await;
        clients.push(c);
    }
    let per_channel = CLIENTS / CHANNELS * PUBLISHES;
    let mut tasks = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let channel = format!("load:{}", i % CHANNELS);
            for n in 0..PUBLISHES {
                c.publish(&format!("c{i}-{n}"), &channel, json!(n)).await;
            }
            let mut acks = 0;
            let mut offsets = Vec::with_capacity(per_channel);
            while acks < PUBLISHES || offsets.len() < per_channel {
                match c.recv().await {
                    ServerMessage::Ack(a) => {
                        assert!(!a.duplicate);
                        acks += 1;
                    }
                    ServerMessage::Message(m) => offsets.push(m.offset),
                    other => panic!("unexpected {other:?}"),
                }
            }
            (i % CHANNELS, offsets)
        }));
    }
    let mut seen: HashMap<usize, usize> = HashMap::new();
    for task in tasks {
        let (channel, offsets) = within("a load client", task).await.unwrap();
        assert_eq!(
            offsets,
            (1..=per_channel as u64).collect::<Vec<_>>(),
            "every message once, in offset order, on load:{channel}"
        );
        *seen.entry(channel).or_default() += 1;
    }
    assert_eq!(seen.len(), CHANNELS);
}

#[tokio::test]
async fn a_retry_on_a_second_connection_while_the_first_is_stored_gets_one_offset() {
    let server = TestServer::start().await;
    let (mut first, _) = server.client("same-user").await;
    let (mut second, _) = server.client("same-user").await;
    let (mut watcher, _) = server.client("watch").await;
    watcher.subscribe("retry", None).await;
    for round in 0..20 {
        let id = format!("r{round}");
        // Both sent before either ack: the store sees them racing.
        first.publish(&id, "retry", json!(round)).await;
        second.publish(&id, "retry", json!(round)).await;
        let (a, b) = (first.recv().await, second.recv().await);
        let (ServerMessage::Ack(a), ServerMessage::Ack(b)) = (a, b) else {
            panic!("two acks expected");
        };
        assert_eq!(a.offset, b.offset, "one offset for one id");
        assert!(
            a.duplicate ^ b.duplicate,
            "exactly one is the duplicate: {a:?} {b:?}"
        );
    }
    let (got, _) = watcher.messages(20).await;
    assert_eq!(
        got.iter().map(|m| m.offset).collect::<Vec<_>>(),
        (1..=20).collect::<Vec<_>>()
    );
    assert!(watcher.sync(1).await.is_empty());
}

#[tokio::test]
async fn resubscribing_over_ten_thousand_retained_messages_is_not_cut_off() {
    // A tiny outbound queue proves the replay does not pass through it.
    let server = TestServer::start_with(|c| c.limits.outbound_queue = 8).await;
    let (mut publisher, _) = server.client("bulk").await;
    for chunk in 0..10 {
        publish_all(
            &mut publisher,
            "bulk",
            (0..1000).map(move |i| format!("m{chunk}-{i}")),
        )
        .await;
    }
    let (mut sub, _) = server.client("reader").await;
    let s = sub.subscribe("bulk", Some(0)).await;
    assert_eq!((s.offset, s.replayed, s.recovered), (10_000, 10_000, true));
    let mut next = 1u64;
    while next <= 10_000 {
        match sub.recv().await {
            ServerMessage::Message(m) => {
                assert_eq!(m.offset, next);
                next += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(sub.sync(1).await.is_empty());
}
