//! End-to-end timelines for [`Session`] on a virtual clock.
use std::fmt::Write as _;

use expect_test::expect;
use protocol::{Ack, ErrorCode, Nack, Pong, Subscribed, Welcome};
use serde_json::json;

use super::*;
use crate::alerts::AlertKind;

const WALL: Timestamp = Timestamp::from_unix_millis(1_795_788_000_000);

struct Sim {
    s: Session,
    t0: Instant,
    now: Instant,
    log: String,
}

impl Sim {
    fn new() -> Self {
        let t0 = crate::t0();
        Self::from(Session::new(Config::new(42), t0, WALL), t0)
    }

    fn from(s: Session, t0: Instant) -> Self {
        Self {
            s,
            t0,
            now: t0,
            log: String::new(),
        }
    }

    fn at(&mut self, ms: u64) -> Instant {
        let end = self.t0 + Duration::from_millis(ms);
        while let Some(due) = self.s.poll_timeout() {
            if due > end {
                break;
            }
            self.now = self.now.max(due);
            self.s.handle_timeout(self.now);
            self.drain();
        }
        self.now = self.now.max(end);
        self.now
    }

    fn input(&mut self, ms: u64, input: Input) {
        let now = self.at(ms);
        self.s.handle_input(now, input);
        self.drain();
    }

    fn text(&mut self, ms: u64, text: &str) {
        let now = self.at(ms);
        self.s.handle_text(now, text);
        self.drain();
    }

    fn msg(&mut self, ms: u64, msg: ServerMessage) {
        let now = self.at(ms);
        self.s.handle_message(now, msg);
        self.drain();
    }

    fn drain(&mut self) {
        let t = self.now.saturating_duration_since(self.t0).as_millis();
        while let Some(o) = self.s.poll_output() {
            let line = match o {
                Output::Send(m) => format!("> {}", protocol::encode(&m)),
                other => format!("> {other:?}"),
            };
            writeln!(self.log, "{t:<6} {line}").unwrap();
        }
        while let Some(e) = self.s.poll_event() {
            let line = match e {
                SessionEvent::Connection(Event::StateChanged { from, to }) => {
                    format!("state {from} -> {to}")
                }
                // Noise for these timelines.
                SessionEvent::Connection(
                    Event::AttemptStarted { .. } | Event::Rtt { .. } | Event::Connected { .. },
                ) => continue,
                SessionEvent::Connection(Event::AttemptScheduled { attempt, delay, .. }) => {
                    format!("scheduled #{attempt} in {}ms", delay.as_millis())
                }
                SessionEvent::Quality(q) => format!(
                    "quality {}",
                    serde_json::to_string(&q).expect("snapshot serializes")
                ),
                SessionEvent::Message(d) => format!("message {} #{}", d.channel, d.offset),
                other => format!("{other:?}"),
            };
            writeln!(self.log, "{t:<6} {line}").unwrap();
        }
    }

    fn take(&mut self) -> String {
        std::mem::take(&mut self.log)
    }
}

fn welcome(id: &str) -> ServerMessage {
    ServerMessage::Welcome(Welcome {
        connection_id: id.into(),
        heartbeat_ms: 30_000,
        max_message_bytes: 65_536,
        server_time: WALL,
        token_expires_at: WALL.add_millis(3_600_000),
    })
}

fn ack(id: &str, offset: u64, duplicate: bool) -> ServerMessage {
    ServerMessage::Ack(Ack {
        id: id.into(),
        channel: "room:1".into(),
        offset,
        duplicate,
    })
}

fn delivery(offset: u64) -> String {
    format!(
        r#"{{"type":"message","channel":"room:1","offset":{offset},"id":"x{offset}","data":{offset},"published_at":"2026-11-27T14:00:00.000Z"}}"#
    )
}

#[test]
fn offline_publishes_are_sent_after_connecting_and_resent_with_the_same_id() {
    let mut sim = Sim::new();
    // Published before any connection: queued, nothing sent.
    let now = sim.at(0);
    sim.s
        .publish(now, "p1", "room:1", json!({"text": "hi"}))
        .unwrap();
    sim.s.subscribe(now, "room:1", Some(0)).unwrap();
    sim.drain();
    sim.input(0, Input::Connect);
    sim.input(5, Input::SocketOpened);
    sim.msg(10, welcome("c1"));
    sim.msg(
        20,
        ServerMessage::Subscribed(Subscribed {
            channel: "room:1".into(),
            epoch: "e1".into(),
            offset: 1,
            recovered: true,
            replayed: 1,
        }),
    );
    sim.text(21, &delivery(1));
    sim.text(22, &delivery(1)); // a repeat: never reaches the app
    // The connection drops before p1 is acknowledged.
    sim.input(
        30,
        Input::Closed {
            code: protocol::CloseCode(1006),
            reason: String::new(),
        },
    );
    let log = sim.take();
    expect![[r#"
        0      PersistRequested
        0      PersistRequested
        0      > OpenSocket { attempt: 1 }
        0      state DISCONNECTED -> CONNECTING
        5      > SendHello
        10     > {"type":"ping","id":1}
        10     > {"type":"subscribe","channel":"room:1","since":0}
        10     > {"type":"publish","id":"p1","channel":"room:1","data":{"text":"hi"}}
        10     state CONNECTING -> CONNECTED
        10     PersistRequested
        20     Subscription(Subscribed { channel: "room:1", epoch: "e1", offset: 1, replayed: 1 })
        20     PersistRequested
        21     message room:1 #1
        21     PersistRequested
        30     Connection(ConnectionLost { reason: Closed { code: CloseCode(1006), reason: "" }, connected_for: 20ms })
        30     state CONNECTED -> RECONNECTING
        30     scheduled #1 in 841ms
    "#]]
    .assert_eq(&log);

    // Reconnected: resubscribe from offset 1 in epoch e1, and p1 again with its id.
    let t = 30 + 841;
    sim.input(t, Input::SocketOpened);
    sim.msg(t + 5, welcome("c2"));
    sim.msg(t + 6, ack("p1", 2, true));
    let log = sim.take();
    expect![[r#"
        871    > OpenSocket { attempt: 1 }
        871    > SendHello
        876    > {"type":"ping","id":2}
        876    > {"type":"subscribe","channel":"room:1","since":1,"epoch":"e1"}
        876    > {"type":"report","reconnects":1,"failed_attempts":0,"downtime_ms":856,"queue":1,"delivery_rate":0.0}
        876    > {"type":"publish","id":"p1","channel":"room:1","data":{"text":"hi"}}
        876    state RECONNECTING -> CONNECTED
        876    PersistRequested
        877    Queue(Acked { id: "p1", channel: "room:1", offset: 2, duplicate: true })
        877    PersistRequested
    "#]]
    .assert_eq(&log);
    assert!(sim.s.queue().is_empty());
    let q = sim.s.quality(sim.now);
    assert_eq!((q.sent, q.acked, q.delivery_rate), (1, 1, Some(1.0)));
    assert_eq!((q.reconnects, q.reconnection_success_rate), (1, Some(1.0)));
    assert_eq!(q.downtime_total_ms, 10 + (t + 5 - 30));
}

#[test]
fn a_client_restart_restores_queue_and_positions() {
    let mut sim = Sim::new();
    let now = sim.at(0);
    sim.s.subscribe(now, "room:1", Some(7)).unwrap();
    sim.s.publish(now, "p1", "room:1", json!(1)).unwrap();
    sim.s.publish(now, "p2", "room:1", json!(2)).unwrap();
    let saved = sim.s.persist();
    expect![[r#"{"version":1,"queue":{"entries":[{"channel":"room:1","data":1,"enqueued_at":"2026-11-27T14:00:00.000Z","id":"p1","sends":0},{"channel":"room:1","data":2,"enqueued_at":"2026-11-27T14:00:00.000Z","id":"p2","sends":0}],"paused_until":null,"stats":{"acked":0,"duplicates":0,"enqueued":2,"failed":0,"sent":0},"version":1},"subscriptions":{"channels":{"room:1":{"epoch":null,"offset":7}},"version":1}}"#]].assert_eq(&saved);

    // A new process, an hour later.
    let t1 = sim.t0 + Duration::from_secs(3_600);
    let restored =
        Session::restore(Config::new(43), t1, WALL.add_millis(3_600_000), &saved).unwrap();
    let mut sim = Sim::from(restored, t1);
    sim.input(0, Input::Connect);
    sim.input(1, Input::SocketOpened);
    sim.msg(2, welcome("c9"));
    let sent: Vec<String> = sim
        .take()
        .lines()
        .filter(|l| l.contains("\"subscribe\"") || l.contains("\"publish\""))
        .map(|l| l.trim().to_owned())
        .collect();
    expect![[r#"
        [
            "2      > {\"type\":\"subscribe\",\"channel\":\"room:1\",\"since\":7}",
            "2      > {\"type\":\"publish\",\"id\":\"p1\",\"channel\":\"room:1\",\"data\":1}",
            "2      > {\"type\":\"publish\",\"id\":\"p2\",\"channel\":\"room:1\",\"data\":2}",
        ]
    "#]]
    .assert_debug_eq(&sent);
    assert!(matches!(
        Session::restore(Config::new(1), t1, WALL, "{}"),
        Err(RestoreError::Json(_))
    ));
}

#[test]
fn refusals_full_queue_and_nacks() {
    let mut config = Config::new(1);
    config.queue_capacity = 2;
    let t0 = crate::t0();
    let mut sim = Sim::from(Session::new(config, t0, WALL), t0);
    let now = sim.at(0);
    sim.s.publish(now, "a", "room:1", json!(1)).unwrap();
    sim.s.publish(now, "b", "room:1", json!(2)).unwrap();
    assert_eq!(
        sim.s.publish(now, "c", "room:1", json!(3)),
        Err(QueueError::Full { capacity: 2 })
    );
    sim.input(0, Input::Connect);
    sim.msg(1, welcome("c"));
    sim.take();
    sim.msg(
        2,
        ServerMessage::Nack(Nack {
            id: "a".into(),
            code: ErrorCode::Forbidden,
            message: "no right".into(),
            retry_after_ms: None,
        }),
    );
    sim.msg(
        3,
        ServerMessage::Nack(Nack {
            id: "b".into(),
            code: ErrorCode::RateLimit,
            message: "slow".into(),
            retry_after_ms: Some(500),
        }),
    );
    sim.at(600);
    expect![[r#"
        2      Queue(Failed { id: "a", channel: "room:1", reason: Refused { code: Forbidden, message: "no right" } })
        2      PersistRequested
        3      Queue(RetryLater { id: "b", code: RateLimit, at: Timestamp(1795788000503) })
        3      PersistRequested
        503    > {"type":"publish","id":"b","channel":"room:1","data":2}
        503    PersistRequested
    "#]]
    .assert_eq(&sim.take());
}

#[test]
fn a_gap_asks_the_server_to_replay() {
    let mut sim = Sim::new();
    let now = sim.at(0);
    sim.s.subscribe(now, "room:1", Some(0)).unwrap();
    sim.input(0, Input::Connect);
    sim.msg(1, welcome("c"));
    sim.text(2, &delivery(1));
    sim.take();
    sim.text(3, &delivery(3));
    expect![[r#"
        3      > {"type":"subscribe","channel":"room:1","since":1}
        3      Subscription(Gap { channel: "room:1", expected: 2, got: 3 })
    "#]]
    .assert_eq(&sim.take());
}

#[test]
fn quality_every_minute_and_downtime_alert() {
    let mut sim = Sim::new();
    sim.input(0, Input::Connect);
    sim.input(
        10,
        Input::TransportError {
            reason: "refused".into(),
        },
    );
    sim.take();
    sim.at(60_000);
    let log = sim.take();
    let interesting: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Alert") || l.contains("quality"))
        .collect();
    expect![[r#"
        [
            "15657  Alert(Begin { kind: ReconnectAttempts, value: 4, threshold: 3 })",
            "30001  Alert(Begin { kind: Downtime, value: 30001, threshold: 30000 })",
            "60000  quality {\"state\":\"CONNECTING\",\"rtt_ms\":null,\"rtt_median_ms\":null,\"rtt_p95_ms\":null,\"delivery_rate\":null,\"sent\":0,\"acked\":0,\"failed_messages\":0,\"queue_length\":0,\"attempts\":5,\"failed_attempts\":5,\"outage_attempts\":5,\"reconnects\":0,\"reconnection_success_rate\":null,\"downtime_total_ms\":60000,\"current_downtime_ms\":60000,\"alerts\":[\"reconnect_attempts\",\"downtime\"]}",
        ]
    "#]]
    .assert_debug_eq(&interesting);
    assert_eq!(
        sim.s.quality(sim.now).alerts,
        [AlertKind::ReconnectAttempts, AlertKind::Downtime]
    );
}

#[test]
fn latency_alert_follows_pongs() {
    let mut sim = Sim::new();
    sim.input(0, Input::Connect);
    sim.msg(10, welcome("c"));
    sim.take();
    sim.msg(
        260,
        ServerMessage::Pong(Pong {
            id: 1,
            server_time: WALL,
        }),
    );
    sim.at(30_010);
    sim.msg(
        30_100,
        ServerMessage::Pong(Pong {
            id: 2,
            server_time: WALL,
        }),
    );
    expect![[r#"
        260    Connection(LatencySpike { rtt: 250ms, threshold: 200ms })
        260    Alert(Begin { kind: HighLatency, value: 250, threshold: 200 })
        30010  > {"type":"ping","id":2}
        30100  Alert(End { kind: HighLatency })
    "#]]
    .assert_eq(&sim.take());
}

#[test]
fn token_lifecycle_and_server_errors_reach_the_app() {
    let mut sim = Sim::new();
    sim.input(0, Input::Connect);
    sim.msg(10, welcome("c"));
    sim.take();
    sim.text(
        20,
        r#"{"type":"token_expiring","expires_at":"2026-11-27T15:00:00.000Z"}"#,
    );
    assert!(sim.s.refresh_token(Token::new("new")));
    sim.drain();
    sim.text(
        30,
        r#"{"type":"refreshed","token_expires_at":"2026-11-27T16:00:00.000Z"}"#,
    );
    sim.text(
        40,
        r#"{"type":"error","code":"FORBIDDEN","channel":"room:9","message":"no"}"#,
    );
    sim.text(50, "not json");
    let log = sim.take();
    expect![[r#"
        20     TokenExpiring { expires_at: Timestamp(1795791600000) }
        20     > {"type":"refresh","token":"new"}
        30     TokenRefreshed { token_expires_at: Timestamp(1795795200000) }
        40     ServerError(ErrorFrame { code: Forbidden, message: "no", channel: Some("room:9"), retry_after_ms: None })
        50     Undecodable { error: "invalid JSON: expected ident at line 1 column 2" }
    "#]]
    .assert_eq(&log);
}

#[test]
fn a_message_too_large_for_the_server_is_never_resent() {
    let mut sim = Sim::new();
    sim.input(0, Input::Connect);
    sim.msg(10, welcome("c"));
    let now = sim.at(20);
    sim.s
        .publish(now, "huge", "room:1", json!("x".repeat(500)))
        .unwrap();
    sim.s.publish(now, "tiny", "room:1", json!(1)).unwrap();
    sim.drain();
    sim.take();
    sim.input(
        30,
        Input::Closed {
            code: protocol::CloseCode::MESSAGE_TOO_BIG,
            reason: "too big".into(),
        },
    );
    let log = sim.take();
    assert!(
        log.contains(r#"Queue(Failed { id: "huge", channel: "room:1", reason: TooLarge })"#),
        "{log}"
    );
    assert_eq!(
        sim.s
            .queue()
            .entries()
            .map(|e| e.id.as_str())
            .collect::<Vec<_>>(),
        ["tiny"]
    );
}

#[test]
fn an_idle_session_has_no_timer_and_no_quality_samples() {
    let mut sim = Sim::new();
    assert_eq!(sim.s.poll_timeout(), None);
    sim.at(600_000);
    assert_eq!(sim.take(), "");
    sim.input(600_000, Input::Connect);
    sim.msg(600_010, welcome("c"));
    sim.take();
    sim.at(660_000);
    assert!(
        sim.take().contains("660000 quality"),
        "first sample a minute after connecting"
    );
    sim.input(700_000, Input::Close);
    assert!(sim.s.poll_timeout().is_none());
}

mod properties {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Act {
        Publish,
        Ack(usize, bool),
        Nack(usize, u8),
        Drop,
        Reconnect,
        Deliver(u64),
        DeliverNext,
        Reset,
        Advance(u32),
    }

    fn arb_act() -> impl Strategy<Value = Act> {
        prop_oneof![
            4 => Just(Act::Publish),
            3 => (0usize..50, any::<bool>()).prop_map(|(i, d)| Act::Ack(i, d)),
            1 => (0usize..50, 0u8..4).prop_map(|(i, c)| Act::Nack(i, c)),
            1 => Just(Act::Drop),
            2 => Just(Act::Reconnect),
            2 => (1u64..60).prop_map(Act::Deliver),
            4 => Just(Act::DeliverNext),
            1 => Just(Act::Reset),
            1 => (0u32..120_000).prop_map(Act::Advance),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// The composed machine, against a server that acks, nacks, drops, repeats and
        /// resets at random: every accepted publish is accounted for exactly once (queued,
        /// acked or failed), only sent ids are acked, the queue stays bounded, and the app
        /// sees each channel's offsets in order without repeats (a reset restarts them).
        #[test]
        fn nothing_lost_nothing_repeated(seed: u64, acts in proptest::collection::vec(arb_act(), 1..200)) {
            let t0 = crate::t0();
            let mut config = Config::new(seed);
            config.queue_capacity = 10;
            let mut s = Session::new(config, t0, WALL);
            let mut now = t0;
            s.subscribe(now, "room:1", Some(0)).unwrap();
            s.connect(now);
            let mut connected_sent: Vec<String> = Vec::new(); // ids sent on this connection
            let mut ever_sent = BTreeSet::new();
            let mut accepted = BTreeSet::new();
            let mut settled: BTreeMap<String, &str> = BTreeMap::new();
            let mut expected_offset: Option<u64> = Some(1);
            let mut next = 0u32;
            for act in acts {
                let connected = s.state() == ConnectionState::Connected;
                match act {
                    Act::Publish => {
                        let id = format!("p{next}");
                        next += 1;
                        if s.publish(now, id.clone(), "room:1", json!(next)).is_ok() {
                            accepted.insert(id);
                        }
                    }
                    Act::Ack(i, dup) if connected && !connected_sent.is_empty() => {
                        let id = connected_sent[i % connected_sent.len()].clone();
                        s.handle_message(now, ack(&id, 1, dup));
                    }
                    Act::Nack(i, c) if connected && !connected_sent.is_empty() => {
                        let id = connected_sent[i % connected_sent.len()].clone();
                        let code = [ErrorCode::Forbidden, ErrorCode::BadRequest, ErrorCode::RateLimit, ErrorCode::ServerError][c as usize];
                        s.handle_message(now, ServerMessage::Nack(Nack { id, code, message: String::new(), retry_after_ms: Some(100) }));
                    }
                    Act::Drop if connected => {
                        s.handle_input(now, Input::Closed { code: protocol::CloseCode(1006), reason: String::new() });
                    }
                    Act::Reconnect if !connected => {
                        // Run timers until a socket is asked for, then complete the handshake.
                        for _ in 0..50 {
                            let mut opened = false;
                            while let Some(o) = s.poll_output() {
                                opened |= matches!(o, Output::OpenSocket { .. });
                                if let Output::Send(ClientMessage::Publish(p)) = o { ever_sent.insert(p.id); }
                            }
                            if opened { break; }
                            match s.poll_timeout() {
                                Some(at) => { now = now.max(at); s.handle_timeout(now); }
                                None => { s.retry(now); }
                            }
                        }
                        connected_sent.clear();
                        s.handle_input(now, Input::SocketOpened);
                        s.handle_message(now, welcome("c"));
                    }
                    Act::Deliver(o) if connected => {
                        s.handle_text(now, &delivery(o));
                    }
                    Act::DeliverNext if connected => {
                        // What an in-order server sends next.
                        s.handle_text(now, &delivery(expected_offset.unwrap_or(1)));
                    }
                    Act::Reset if connected => {
                        s.handle_message(now, ServerMessage::Subscribed(Subscribed {
                            channel: "room:1".into(), epoch: "e2".into(), offset: 40, recovered: false, replayed: 10,
                        }));
                    }
                    Act::Advance(ms) => {
                        now += Duration::from_millis(u64::from(ms));
                        s.handle_timeout(now);
                    }
                    _ => {}
                }
                while let Some(o) = s.poll_output() {
                    if let Output::Send(ClientMessage::Publish(p)) = o {
                        ever_sent.insert(p.id.clone());
                        connected_sent.push(p.id);
                    }
                }
                while let Some(e) = s.poll_event() {
                    match e {
                        SessionEvent::Queue(QueueEvent::Acked { id, .. }) => {
                            prop_assert!(ever_sent.contains(&id), "acked {id} never sent");
                            prop_assert!(settled.insert(id, "acked").is_none());
                        }
                        SessionEvent::Queue(QueueEvent::Failed { id, .. }) => {
                            prop_assert!(settled.insert(id, "failed").is_none());
                        }
                        SessionEvent::Subscription(SubscriptionEvent::Reset { replay_from, .. }) => {
                            expected_offset = Some(replay_from);
                        }
                        SessionEvent::Message(d) => {
                            prop_assert_eq!(Some(d.offset), expected_offset, "out of order or repeated");
                            expected_offset = Some(d.offset + 1);
                        }
                        _ => {}
                    }
                }
                prop_assert!(s.queue().len() <= 10);
                let queued: BTreeSet<String> = s.queue().entries().map(|e| e.id.clone()).collect();
                for id in &accepted {
                    prop_assert!(queued.contains(id) != settled.contains_key(id), "{id} lost or counted twice");
                }
            }
        }
    }
}

mod nodes;
