//! Boundary tests of the native client against the real server in-process, with the fault
//! proxy of `cargo xtask chaos` between them where a test needs a bad network.
//!
//! Every wait is for an event or a status, with a deadline ([`harness::WAIT`]); the few
//! timing assertions are bounds that only a broken client can miss.

#[path = "../../../xtask/src/faultproxy.rs"]
mod faultproxy;
#[path = "client/harness.rs"]
mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use client::resilience::BreakerTransition;
use client::resilience::WaitCause;
use client::resilience::queue::QueueError;
use client::{ClientEvent, Credentials, PublishError, SubscriptionItem, TokenError};
use faultproxy::{FaultProxy, Mode};
use harness::{TestServer, WAIT, connect, connected, fast_config, wait_event, wait_status};
use protocol::{ConnectionState, ErrorCode, Token};
use serde_json::json;

/// A loopback address nothing listens on (bound, then released).
fn dead_url() -> String {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    format!("ws://{addr}/ws")
}

#[tokio::test]
async fn publishes_and_receives_its_own_messages_in_order() {
    let server = TestServer::start(|_| {}).await;
    let client = connect(fast_config(&server.url(), 1), server.token("alice"));
    let mut room = client.subscribe("room:1").await.unwrap();
    connected(&client).await;
    for n in 1..=5u64 {
        let ack = client.publish("room:1", json!({ "n": n })).await.unwrap();
        assert_eq!((ack.offset, ack.duplicate), (n, false));
    }
    for n in 1..=5u64 {
        let m = tokio::time::timeout(WAIT, room.next_message())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((m.offset, m.data["n"].as_u64()), (n, Some(n)));
    }
    client.close().await;
}

#[tokio::test]
async fn backoff_schedule_doubles_with_jitter() {
    let url = dead_url();
    let mut delays = Vec::new();
    for seed in [1, 2] {
        let mut config = fast_config(&url, seed);
        config.resilience.initial_retry_delay = Duration::from_millis(40);
        config.resilience.max_retry_delay = Duration::from_millis(320);
        let client = connect(config, Token::new("unused"));
        let mut events = client.events();
        let mut seen = Vec::new();
        let mut last_failure = Instant::now();
        while seen.len() < 6 {
            let (delay, cause) = wait_event(&mut events, "a scheduled attempt", |e| match e {
                ClientEvent::AttemptScheduled { delay, cause, .. } => Some((*delay, *cause)),
                _ => None,
            })
            .await;
            assert_eq!(cause, WaitCause::Backoff);
            let scheduled_at = Instant::now();
            wait_event(&mut events, "the attempt to fail", |e| {
                matches!(e, ClientEvent::RetryFailed { .. }).then_some(())
            })
            .await;
            // The attempt really waited (a lower bound; the upper one is the machine's).
            assert!(scheduled_at.elapsed() + Duration::from_millis(5) >= delay);
            let _ = last_failure;
            last_failure = Instant::now();
            seen.push(delay);
        }
        // Equal jitter: the n-th delay lies in [d/2, d] for d = 40 ms doubling to 320 ms.
        for (n, delay) in seen.iter().enumerate() {
            let d = Duration::from_millis((40u64 << n).min(320));
            assert!(
                *delay >= d / 2 && *delay <= d,
                "delay {n} = {delay:?}, bound {d:?}"
            );
        }
        delays.push(seen);
        client.close().await;
    }
    assert_ne!(delays[0], delays[1], "two seeds give two schedules");
}

#[tokio::test]
async fn connection_timeout_fails_an_attempt_that_never_gets_welcome() {
    let server = TestServer::start(|_| {}).await;
    let proxy = FaultProxy::start(server.addr).await.unwrap();
    proxy.set_mode(Mode::BlackHole);
    let mut config = fast_config(&format!("ws://{}/ws", proxy.addr()), 3);
    config.resilience.connection_timeout = Duration::from_millis(300);
    let client = connect(config, server.token("slow"));
    let mut events = client.events();
    let started = Instant::now();
    let code = wait_event(&mut events, "a failed attempt", |e| match e {
        ClientEvent::RetryFailed { code, .. } => Some(*code),
        _ => None,
    })
    .await;
    assert_eq!(code, ErrorCode::ConnectionTimeout);
    assert!(started.elapsed() >= Duration::from_millis(290));
    // The network heals: the next attempt connects.
    proxy.set_mode(Mode::Pass);
    connected(&client).await;
    client.close().await;
}

#[tokio::test]
async fn auth_failure_without_a_provider_goes_to_failed() {
    let server = TestServer::start(|_| {}).await;
    let client = connect(fast_config(&server.url(), 4), Token::new("not-a-jwt"));
    wait_status(&client, "FAILED", |s| s.state == ConnectionState::Failed).await;
    assert_eq!(
        client.status().attempt,
        1,
        "no retry without a way to a new token"
    );
    client.close().await;
}

#[tokio::test]
async fn auth_failure_with_a_provider_fetches_a_new_token() {
    let server = TestServer::start(|_| {}).await;
    let good = server.token("bob");
    let calls = Arc::new(AtomicU32::new(0));
    let provider = {
        let calls = Arc::clone(&calls);
        move || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            let good = good.clone();
            async move {
                // The first token is refused by the server (4401).
                Ok::<_, TokenError>(if n == 0 {
                    Token::new("expired.or.bad")
                } else {
                    good
                })
            }
        }
    };
    let client = connect(
        fast_config(&server.url(), 5),
        Credentials::provider(provider),
    );
    connected(&client).await;
    assert!(calls.load(Ordering::SeqCst) >= 2);
    client.close().await;

    // A provider that says no more tokens: FAILED.
    let denied = || async { Err::<Token, _>(TokenError::Denied("logged out".into())) };
    let first = Arc::new(AtomicU32::new(0));
    let provider = {
        let first = Arc::clone(&first);
        move || {
            let n = first.fetch_add(1, Ordering::SeqCst);
            let fut = denied();
            async move {
                if n == 0 {
                    Ok(Token::new("bad"))
                } else {
                    fut.await
                }
            }
        }
    };
    let client = connect(
        fast_config(&server.url(), 6),
        Credentials::provider(provider),
    );
    wait_status(&client, "FAILED", |s| s.state == ConnectionState::Failed).await;
    client.close().await;
}

#[tokio::test]
async fn service_restart_waits_the_advised_time() {
    let mut server = TestServer::start(|c| c.drain = Duration::from_millis(800)).await;
    let client = connect(fast_config(&server.url(), 7), server.token("carol"));
    connected(&client).await;
    let mut events = client.events();
    server.shutdown().await;
    let after_ms = wait_event(&mut events, "the reconnect advice", |e| match e {
        ClientEvent::ReconnectAdvised { after_ms } => Some(*after_ms),
        _ => None,
    })
    .await;
    // The advised close is not a failed attempt: the next thing is the advised schedule.
    let (delay, cause) = wait_event(&mut events, "the advised schedule", |e| match e {
        ClientEvent::AttemptScheduled { delay, cause, .. } => Some((*delay, *cause)),
        ClientEvent::RetryFailed { .. } => panic!("the advised close counted as a failure"),
        _ => None,
    })
    .await;
    assert_eq!(cause, WaitCause::ServerAdvice);
    let advised = Duration::from_millis(after_ms);
    assert!(delay >= advised, "{delay:?} < {advised:?}");
    assert!(delay <= advised + advised / 10 + Duration::from_millis(5));
    server.restart().await;
    connected(&client).await;
    client.close().await;
}

#[tokio::test]
async fn breaker_opens_after_five_failures_and_half_opens_for_one_trial() {
    let server = TestServer::start(|_| {}).await;
    let proxy = FaultProxy::start(server.addr).await.unwrap();
    proxy.set_mode(Mode::Refuse);
    let mut config = fast_config(&format!("ws://{}/ws", proxy.addr()), 8);
    config.resilience.breaker_threshold = 5;
    config.resilience.breaker_window = Duration::from_secs(60);
    config.resilience.breaker_open = Duration::from_millis(600);
    let client = connect(config, server.token("dave"));
    let mut events = client.events();
    // The breaker reports opening while counting the failure that opened it.
    let until = wait_event(&mut events, "the breaker to open", |e| match e {
        ClientEvent::Breaker(BreakerTransition::Opened { until }) => Some(*until),
        _ => None,
    })
    .await;
    let failures = wait_event(&mut events, "the failure that opened it", |e| match e {
        ClientEvent::RetryFailed { failures, .. } => Some(*failures),
        _ => None,
    })
    .await;
    assert_eq!(failures, 5, "opens on the fifth failure");
    let (delay, cause) = wait_event(&mut events, "the wait for half-open", |e| match e {
        ClientEvent::AttemptScheduled { delay, cause, .. } => Some((*delay, *cause)),
        _ => None,
    })
    .await;
    assert_eq!(cause, WaitCause::Breaker);
    assert!(delay <= Duration::from_millis(600) && delay >= Duration::from_millis(500));
    // The half-open trial fails: the breaker opens again at once.
    wait_event(&mut events, "the trial to fail", |e| {
        matches!(e, ClientEvent::RetryFailed { .. }).then_some(())
    })
    .await;
    wait_event(&mut events, "the breaker to re-open", |e| {
        matches!(e, ClientEvent::Breaker(BreakerTransition::Opened { .. })).then_some(())
    })
    .await;
    assert!(std::time::Instant::now() + Duration::from_millis(1) >= until);
    // The network heals: the next trial connects and closes the breaker.
    proxy.set_mode(Mode::Pass);
    wait_event(&mut events, "the breaker to close", |e| {
        matches!(e, ClientEvent::Breaker(BreakerTransition::Closed)).then_some(())
    })
    .await;
    connected(&client).await;
    client.close().await;
}

#[tokio::test]
async fn a_full_queue_refuses_new_publishes() {
    let mut config = fast_config(&dead_url(), 9);
    config.resilience.queue_capacity = 3;
    let client = connect(config, Token::new("unused"));
    for n in 0..3 {
        let c = client.clone();
        tokio::spawn(async move { c.publish("room:1", json!(n)).await });
    }
    wait_status(&client, "3 queued", |s| s.queue_length == 3).await;
    let refused = client.publish("room:1", json!(3)).await;
    assert_eq!(
        refused,
        Err(PublishError::Queue(QueueError::Full { capacity: 3 }))
    );
    let too_big = client.publish("room:1", json!("x".repeat(70_000))).await;
    assert!(matches!(
        too_big,
        Err(PublishError::Queue(QueueError::TooLarge { .. }))
    ));
    client.close().await;
}

#[tokio::test]
async fn lost_acks_are_resent_with_the_same_id_and_stored_once() {
    let server = TestServer::start(|_| {}).await;
    let proxy = FaultProxy::start(server.addr).await.unwrap();
    let client = connect(
        fast_config(&format!("ws://{}/ws", proxy.addr()), 10),
        server.token("erin"),
    );
    let mut room = client.subscribe("room:x").await.unwrap();
    connected(&client).await;
    let first = client.publish("room:x", json!("before")).await.unwrap();
    assert_eq!(first.offset, 1);
    // Acks (and deliveries) are held back long enough to be lost in a reset.
    proxy.set_mode(Mode::Latency {
        up: Duration::ZERO,
        down: Duration::from_secs(30),
    });
    let mut pending = Vec::new();
    for n in 0..5 {
        let c = client.clone();
        pending.push(tokio::spawn(
            async move { c.publish("room:x", json!(n)).await },
        ));
    }
    // The server stored all five; the client has seen none of the acks.
    let deadline = Instant::now() + WAIT;
    while server.history("room:x").await.len() < 6 {
        assert!(
            Instant::now() < deadline,
            "the server never stored the five"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.set_mode(Mode::Pass);
    proxy.reset_all();
    let mut acks = Vec::new();
    for p in pending {
        acks.push(
            tokio::time::timeout(WAIT, p)
                .await
                .unwrap()
                .unwrap()
                .unwrap(),
        );
    }
    assert!(
        acks.iter().all(|a| a.duplicate),
        "resent after the reset: {acks:?}"
    );
    let history = server.history("room:x").await;
    assert_eq!(history.len(), 6, "stored exactly once: {history:?}");
    let mut ids: Vec<_> = history.iter().map(|(_, id)| id.clone()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 6);
    // The subscriber sees 1..=6, each once, in order.
    for offset in 1..=6 {
        let m = tokio::time::timeout(WAIT, room.next_message())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.offset, offset);
    }
    client.close().await;
}

#[tokio::test]
async fn the_outbox_survives_a_client_restart() {
    let server = TestServer::start(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox.json");
    let proxy = FaultProxy::start(server.addr).await.unwrap();
    proxy.set_mode(Mode::Refuse);
    let url = format!("ws://{}/ws", proxy.addr());
    let first = connect(
        fast_config(&url, 11).with_outbox(&outbox),
        server.token("fred"),
    );
    let mut waiting = Vec::new();
    for n in 0..3 {
        let c = first.clone();
        waiting.push(tokio::spawn(async move {
            c.publish_with_id(format!("outbox-{n}"), "room:o", json!(n))
                .await
        }));
    }
    wait_status(&first, "3 queued", |s| s.queue_length == 3).await;
    first.close().await;
    for w in waiting {
        assert_eq!(w.await.unwrap(), Err(PublishError::Closed));
    }
    assert!(outbox.exists());

    proxy.set_mode(Mode::Pass);
    let second = connect(
        fast_config(&url, 12).with_outbox(&outbox),
        server.token("fred"),
    );
    let mut events = second.events();
    let mut acked = Vec::new();
    while acked.len() < 3 {
        let id = wait_event(&mut events, "an ack of a restored publish", |e| match e {
            ClientEvent::Acked { id, .. } => Some(id.clone()),
            _ => None,
        })
        .await;
        acked.push(id);
    }
    acked.sort();
    assert_eq!(acked, ["outbox-0", "outbox-1", "outbox-2"]);
    let history = server.history("room:o").await;
    let ids: Vec<_> = history.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids, ["outbox-0", "outbox-1", "outbox-2"]);
    wait_status(&second, "an empty queue", |s| s.queue_length == 0).await;
    second.close().await;
}

#[tokio::test]
async fn a_half_open_link_is_detected_within_two_and_a_half_heartbeats() {
    let heartbeat = Duration::from_millis(400);
    let server = TestServer::start(|c| c.heartbeat = heartbeat).await;
    let proxy = FaultProxy::start(server.addr).await.unwrap();
    let client = connect(
        fast_config(&format!("ws://{}/ws", proxy.addr()), 13),
        server.token("gina"),
    );
    connected(&client).await;
    let mut events = client.events();
    proxy.set_mode(Mode::BlackHole);
    let cut = Instant::now();
    let (code, reason) = wait_event(&mut events, "the dead link", |e| match e {
        ClientEvent::ConnectionLost { code, reason, .. } => Some((*code, reason.clone())),
        _ => None,
    })
    .await;
    let took = cut.elapsed();
    assert_eq!(code, ErrorCode::NetworkFailure, "{reason}");
    assert!(reason.starts_with("no frame for"), "{reason}");
    // 2.5 intervals from the last frame, which came before the cut; slack for a busy machine.
    assert!(
        took <= heartbeat * 5 / 2 + Duration::from_millis(250),
        "took {took:?}"
    );
    proxy.set_mode(Mode::Pass);
    connected(&client).await;
    client.close().await;
}

#[tokio::test]
async fn resubscribes_after_a_reconnect_without_repeats_or_gaps() {
    let server = TestServer::start(|_| {}).await;
    let proxy = FaultProxy::start(server.addr).await.unwrap();
    let publisher = connect(fast_config(&server.url(), 14), server.token("pub"));
    let reader = connect(
        fast_config(&format!("ws://{}/ws", proxy.addr()), 15),
        server.token("sub"),
    );
    // From the start of the channel, so no message races the subscription.
    let mut room = reader.subscribe_since("room:r", Some(0)).await.unwrap();
    connected(&reader).await;
    connected(&publisher).await;
    let mut next = 1;
    for round in 0..3 {
        for _ in 0..10 {
            publisher.publish("room:r", json!(round)).await.unwrap();
        }
        proxy.reset_all();
        for _ in 0..10 {
            match tokio::time::timeout(WAIT, room.recv())
                .await
                .unwrap()
                .unwrap()
            {
                SubscriptionItem::Message(m) => {
                    assert_eq!(m.offset, next);
                    next += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    publisher.close().await;
    reader.close().await;
}

#[tokio::test]
async fn a_slow_reader_is_resumed_from_the_last_offset_it_got() {
    let server = TestServer::start(|_| {}).await;
    let mut config = fast_config(&server.url(), 16);
    // Tiny buffer: most messages arrive while it is full and are left to a replay.
    config.subscription_buffer = 4;
    let client = connect(config, server.token("slow-reader"));
    let mut room = client.subscribe_since("room:slow", Some(0)).await.unwrap();
    connected(&client).await;
    for n in 0..40 {
        client.publish("room:slow", json!(n)).await.unwrap();
    }
    for offset in 1..=40 {
        let m = tokio::time::timeout(WAIT, room.next_message())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.offset, offset);
    }
    client.close().await;
}

#[tokio::test]
async fn token_expiring_is_answered_with_a_refresh() {
    let server = TestServer::start(|c| c.token_expiry_notice = Duration::from_secs(3600)).await;
    let short = server.token_for("hana", Duration::from_secs(120));
    let fresh = server.token("hana");
    let first = Arc::new(AtomicU32::new(0));
    let provider = {
        let first = Arc::clone(&first);
        move || {
            let token = if first.fetch_add(1, Ordering::SeqCst) == 0 {
                short.clone()
            } else {
                fresh.clone()
            };
            async move { Ok::<_, TokenError>(token) }
        }
    };
    let client = connect(
        fast_config(&server.url(), 17),
        Credentials::provider(provider),
    );
    let mut events = client.events();
    wait_event(&mut events, "refreshed", |e| {
        matches!(e, ClientEvent::TokenRefreshed).then_some(())
    })
    .await;
    // Refreshed in place: still the first connection.
    assert_eq!(client.status().reconnects, 0);
    assert_eq!(client.status().state, ConnectionState::Connected);
    client.close().await;
}

#[tokio::test]
async fn probe_prints_one_json_line_per_second() {
    let server = TestServer::start(|_| {}).await;
    let options = client::probe::ProbeOptions {
        url: server.url(),
        channel: Some("room:p".into()),
        json: true,
        duration: Some(Duration::from_secs(2)),
    };
    let mut out = Vec::new();
    tokio::time::timeout(
        WAIT,
        client::probe::run(options, Credentials::Token(server.token("probe")), &mut out),
    )
    .await
    .unwrap()
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 2, "{text}");
    let last = lines.last().unwrap();
    assert_eq!(last["state"], "CONNECTED", "{text}");
    assert_eq!(last["channel"]["name"], "room:p");
}
