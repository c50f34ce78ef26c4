//! Timelines for what issue 10 §4, 12 §4, 13 §3 and 14 §3 added to the [`Session`]: several
//! URLs, quality reports, per-channel backpressure, the end cause of a subscription, and the
//! flap guard's decay.
use super::*;

fn lost(sim: &mut Sim, ms: u64) {
    sim.input(
        ms,
        Input::Closed {
            code: protocol::CloseCode(1006),
            reason: String::new(),
        },
    );
}

fn refused(sim: &mut Sim, ms: u64) {
    sim.input(
        ms,
        Input::TransportError {
            reason: "connection refused".into(),
        },
    );
}

fn subscribed(channel: &str, offset: u64) -> ServerMessage {
    ServerMessage::Subscribed(Subscribed {
        channel: channel.into(),
        epoch: "e1".into(),
        offset,
        recovered: true,
        replayed: 0,
    })
}

/// Runs to the scheduled attempt and returns its time (ms since t0).
fn next_attempt(sim: &mut Sim) -> u64 {
    let at = sim.s.poll_timeout().expect("an attempt is scheduled");
    let ms = at.saturating_duration_since(sim.t0).as_millis() as u64;
    sim.at(ms);
    ms
}

#[test]
fn a_failed_attempt_moves_to_the_next_url_and_the_resume_carries_since_and_epoch() {
    let config = Config::new(42).with_urls(["ws://a/ws", "ws://b/ws"]);
    let t0 = crate::t0();
    let mut sim = Sim::from(Session::new(config, t0, WALL), t0);
    let now = sim.at(0);
    sim.s.subscribe(now, "room:1", Some(0)).unwrap();
    sim.input(0, Input::Connect);
    let mut urls = vec![sim.s.url().unwrap().to_owned()];
    sim.input(5, Input::SocketOpened);
    sim.msg(10, welcome("c1"));
    sim.msg(11, subscribed("room:1", 3));
    for o in 1..=3 {
        sim.text(12, &delivery(o));
    }
    // Node a dies: the connection is lost, the next attempt goes to b.
    lost(&mut sim, 1_000);
    urls.push(sim.s.url().unwrap().to_owned());
    let t = next_attempt(&mut sim);
    // b refuses once (it is starting): back to a, which refuses too, then b answers.
    refused(&mut sim, t);
    urls.push(sim.s.url().unwrap().to_owned());
    let t = next_attempt(&mut sim);
    refused(&mut sim, t);
    urls.push(sim.s.url().unwrap().to_owned());
    let t = next_attempt(&mut sim);
    sim.take();
    sim.input(t + 5, Input::SocketOpened);
    sim.msg(t + 10, welcome("c2"));
    assert_eq!(urls, ["ws://a/ws", "ws://b/ws", "ws://a/ws", "ws://b/ws"]);
    assert_eq!(sim.s.url(), Some("ws://b/ws"), "a welcome keeps its URL");
    expect![[r#"
        6652   > SendHello
        6657   > {"type":"ping","id":2}
        6657   > {"type":"subscribe","channel":"room:1","since":3,"epoch":"e1"}
        6657   > {"type":"report","reconnects":1,"failed_attempts":2,"downtime_ms":5667,"queue":0}
        6657   state RECONNECTING -> CONNECTED
    "#]]
    .assert_eq(&sim.take());
}

#[test]
fn reports_every_minute_while_connected_and_right_after_a_reconnect() {
    let mut sim = Sim::new();
    sim.input(0, Input::Connect);
    sim.input(5, Input::SocketOpened);
    sim.msg(10, welcome("c1"));
    sim.msg(
        30_010,
        ServerMessage::Pong(Pong {
            id: 1,
            server_time: WALL,
        }),
    );
    let now = sim.at(30_020);
    sim.s.publish(now, "p1", "room:1", json!(1)).unwrap();
    sim.msg(30_030, ack("p1", 1, false));
    sim.at(60_010);
    // Lost at 61 s: no report while down; one at once after the welcome.
    lost(&mut sim, 61_000);
    let t = next_attempt(&mut sim);
    sim.input(t, Input::SocketOpened);
    sim.msg(t + 10, welcome("c2"));
    sim.at(t + 10 + 60_000);
    let reports: Vec<String> = sim
        .take()
        .lines()
        .filter(|l| l.contains(r#""type":"report""#))
        .map(str::to_owned)
        .collect();
    expect![[r#"
        [
            "60010  > {\"type\":\"report\",\"rtt_ms\":{\"last\":30000.0,\"p50\":30000.0,\"p95\":30000.0},\"reconnects\":0,\"failed_attempts\":0,\"downtime_ms\":10,\"queue\":0,\"delivery_rate\":1.0}",
            "61851  > {\"type\":\"report\",\"rtt_ms\":{\"last\":30000.0,\"p50\":30000.0,\"p95\":30000.0},\"reconnects\":1,\"failed_attempts\":0,\"downtime_ms\":861,\"queue\":0,\"delivery_rate\":1.0}",
            "121851 > {\"type\":\"report\",\"rtt_ms\":{\"last\":30000.0,\"p50\":30000.0,\"p95\":30000.0},\"reconnects\":1,\"failed_attempts\":0,\"downtime_ms\":861,\"queue\":0,\"delivery_rate\":1.0}",
        ]
    "#]]
    .assert_debug_eq(&reports);
    // Every report decodes as the server reads it.
    for line in &reports {
        let json = &line[line.find('{').unwrap()..];
        assert!(protocol::decode_client(json).is_ok(), "{json}");
    }
}

#[test]
fn a_full_app_buffer_pauses_the_channel_and_the_resume_replays_from_the_last_handed_over() {
    let mut sim = Sim::new();
    let now = sim.at(0);
    sim.s.subscribe(now, "room:1", Some(0)).unwrap();
    sim.input(0, Input::Connect);
    sim.input(5, Input::SocketOpened);
    sim.msg(10, welcome("c1"));
    sim.msg(11, subscribed("room:1", 0));
    sim.text(20, &delivery(1));
    sim.take();
    // The app's buffer is full after offset 1.
    sim.s.pause("room:1");
    assert!(sim.s.is_paused("room:1"));
    sim.text(21, &delivery(2));
    sim.text(22, &delivery(3));
    let now = sim.at(30);
    sim.s.resume(now, "room:1");
    sim.drain();
    sim.text(31, &delivery(2));
    sim.text(32, &delivery(3));
    expect![[r#"
        30     > {"type":"subscribe","channel":"room:1","since":1,"epoch":"e1"}
        31     message room:1 #2
        31     PersistRequested
        32     message room:1 #3
        32     PersistRequested
    "#]]
    .assert_eq(&sim.take());
    // Pausing an unknown channel does nothing; resuming one not paused sends nothing.
    sim.s.pause("room:9");
    assert!(!sim.s.is_paused("room:9"));
    let now = sim.at(40);
    sim.s.resume(now, "room:1");
    sim.drain();
    assert_eq!(sim.take(), "");
}

#[test]
fn a_subscription_ends_with_its_cause_and_passing_errors_keep_it() {
    let mut sim = Sim::new();
    let now = sim.at(0);
    sim.s.subscribe(now, "room:1", None).unwrap();
    sim.s.subscribe(now, "room:2", None).unwrap();
    sim.s.subscribe(now, "room:3", None).unwrap();
    sim.input(0, Input::Connect);
    sim.input(5, Input::SocketOpened);
    sim.msg(10, welcome("c1"));
    sim.take();
    let error = |code, channel: &str| {
        ServerMessage::Error(ErrorFrame {
            code,
            message: "m".into(),
            channel: Some(channel.into()),
            retry_after_ms: None,
        })
    };
    sim.msg(20, error(ErrorCode::Forbidden, "room:1"));
    sim.msg(21, error(ErrorCode::RateLimit, "room:2"));
    sim.msg(
        22,
        ServerMessage::Unsubscribed(protocol::Unsubscribed {
            channel: "room:3".into(),
        }),
    );
    let ended: Vec<String> = sim
        .take()
        .lines()
        .filter(|l| l.contains("Ended"))
        .map(str::to_owned)
        .collect();
    expect![[r#"
        [
            "20     Subscription(Ended { channel: \"room:1\", cause: Refused { code: Forbidden, message: \"m\" } })",
            "22     Subscription(Ended { channel: \"room:3\", cause: Unsubscribed })",
        ]
    "#]]
    .assert_debug_eq(&ended);
    assert!(sim.s.subscriptions().contains("room:2"));
}

/// The chaos drill's pattern (issue 14 §3): connections up 8 s, then the server is gone for
/// 1.5 s, four times in a row. Returns the reconnect delay of each outage (loss → welcome).
fn short_outages(config: Config) -> Vec<u64> {
    let t0 = crate::t0();
    let mut sim = Sim::from(Session::new(config, t0, WALL), t0);
    sim.input(0, Input::Connect);
    sim.input(5, Input::SocketOpened);
    sim.msg(10, welcome("c0"));
    let mut up_at = 10;
    let mut delays = Vec::new();
    for n in 1..=4 {
        let loss = up_at + 8_000;
        lost(&mut sim, loss);
        loop {
            let t = next_attempt(&mut sim);
            if t < loss + 1_500 {
                refused(&mut sim, t);
            } else {
                sim.input(t + 5, Input::SocketOpened);
                sim.msg(t + 10, welcome(&format!("c{n}")));
                up_at = t + 10;
                delays.push(up_at - loss);
                break;
            }
        }
    }
    delays
}

#[test]
fn the_flap_guard_decays_with_uptime_instead_of_waiting_thirty_seconds() {
    let mut old = Config::new(42);
    old.backoff_decay = Duration::MAX;
    let before = short_outages(old);
    let after = short_outages(Config::new(42));
    expect![[r#"
        (
            [
                2802,
                2865,
                6520,
                10319,
            ],
            [
                2802,
                2351,
                1804,
                2468,
            ],
        )
    "#]]
    .assert_debug_eq(&(&before, &after));
    // Without the decay the delay grows by an outage's two retries each time (8 s up is
    // under 30 s); with it, 8 s up takes four doublings off and each outage starts again at
    // 1 s: the 1 s and 2 s retries (lands in [1.5 s, 3 s] after the loss, past the 1.5 s
    // outage) plus the handshake.
    assert!(after[1..].iter().all(|&d| d <= 3_010), "{after:?}");
    assert!(
        before[3] > 8_000,
        "the old rule's growing waits: {before:?}"
    );
}
