//! Tests for [`OutboundQueue`]: every rule, a persist/restore round trip, and invariants.
use std::collections::{BTreeMap, BTreeSet};

use expect_test::expect;
use proptest::prelude::*;
use serde_json::json;

use super::*;

fn publish(id: &str) -> Publish {
    Publish {
        id: id.into(),
        channel: "room:1".into(),
        data: json!({"n": id}),
    }
}

fn ack(id: &str, offset: u64, duplicate: bool) -> Ack {
    Ack {
        id: id.into(),
        channel: "room:1".into(),
        offset,
        duplicate,
    }
}

fn nack(id: &str, code: ErrorCode, retry_after_ms: Option<u64>) -> Nack {
    Nack {
        id: id.into(),
        code,
        message: "no".into(),
        retry_after_ms,
    }
}

const T: Timestamp = Timestamp::from_unix_millis(1_795_788_000_000);

fn events(q: &mut OutboundQueue) -> Vec<QueueEvent> {
    std::iter::from_fn(|| q.poll_event()).collect()
}

fn small(capacity: usize) -> OutboundQueue {
    OutboundQueue::new(QueueConfig {
        capacity,
        ..QueueConfig::default()
    })
}

#[test]
fn full_queue_refuses_with_an_error_and_keeps_everything() {
    let mut q = small(2);
    q.push(T, publish("a")).unwrap();
    q.push(T, publish("b")).unwrap();
    assert_eq!(
        q.push(T, publish("c")),
        Err(QueueError::Full { capacity: 2 })
    );
    assert_eq!(q.len(), 2);
    assert_eq!(
        QueueError::Full { capacity: 2 }.to_string(),
        "the outbound queue is full (2 messages)"
    );
}

#[test]
fn oversized_messages_are_refused_at_once() {
    let mut q = OutboundQueue::new(QueueConfig::default());
    let big = Publish {
        id: "big".into(),
        channel: "room:1".into(),
        data: json!("x".repeat(70_000)),
    };
    let err = q.push(T, big.clone()).unwrap_err();
    assert!(matches!(err, QueueError::TooLarge { max: 65_536, bytes } if bytes > 70_000));
    // The server's limit from `welcome` applies to later publishes.
    q.set_max_message_bytes(100);
    assert!(matches!(
        q.push(T, publish(&"x".repeat(90))),
        Err(QueueError::TooLarge { .. })
    ));
    assert!(q.is_empty());
}

#[test]
fn bad_ids_channels_and_repeats_are_refused() {
    let mut q = OutboundQueue::new(QueueConfig::default());
    assert!(matches!(
        q.push(T, publish("")),
        Err(QueueError::BadId { .. })
    ));
    let mut p = publish("a");
    p.channel = "bad channel".into();
    assert!(matches!(q.push(T, p), Err(QueueError::BadChannel(_))));
    q.push(T, publish("a")).unwrap();
    assert_eq!(
        q.push(T, publish("a")),
        Err(QueueError::DuplicateId { id: "a".into() })
    );
}

#[test]
fn sends_in_order_marks_in_flight_and_removes_on_ack() {
    let mut q = OutboundQueue::new(QueueConfig::default());
    for id in ["a", "b", "c"] {
        q.push(T, publish(id)).unwrap();
    }
    let sent: Vec<_> = std::iter::from_fn(|| q.poll_transmit(T))
        .map(|p| p.id)
        .collect();
    assert_eq!(sent, ["a", "b", "c"]);
    assert_eq!(q.in_flight(), 3);
    assert!(q.on_ack(&ack("b", 7, false)));
    assert!(!q.on_ack(&ack("zzz", 1, false)), "unknown ids are ignored");
    assert_eq!(q.len(), 2);
    assert_eq!(
        events(&mut q),
        [QueueEvent::Acked {
            id: "b".into(),
            channel: "room:1".into(),
            offset: 7,
            duplicate: false
        }]
    );
}

#[test]
fn unacked_messages_are_resent_with_the_same_id_after_a_reconnect() {
    let mut q = OutboundQueue::new(QueueConfig::default());
    q.push(T, publish("a")).unwrap();
    q.push(T, publish("b")).unwrap();
    let first: Vec<_> = std::iter::from_fn(|| q.poll_transmit(T)).collect();
    q.on_disconnect();
    let again: Vec<_> = std::iter::from_fn(|| q.poll_transmit(T)).collect();
    assert_eq!(first, again, "same ids, same data, same order");
    // The server recognises the resend.
    q.on_ack(&ack("a", 1, true));
    q.on_ack(&ack("b", 2, true));
    assert!(q.is_empty());
    let s = q.stats();
    assert_eq!(
        (s.sent, s.acked, s.duplicates),
        (2, 2, 2),
        "sent counts messages, not resends"
    );
}

#[test]
fn forbidden_and_bad_request_nacks_drop_and_count_failed() {
    let mut q = OutboundQueue::new(QueueConfig::default());
    q.push(T, publish("a")).unwrap();
    q.push(T, publish("b")).unwrap();
    while q.poll_transmit(T).is_some() {}
    q.on_nack(T, &nack("a", ErrorCode::Forbidden, None));
    q.on_nack(T, &nack("b", ErrorCode::BadRequest, None));
    assert!(q.is_empty());
    assert_eq!(q.stats().failed, 2);
    expect![[r#"
        [
            Failed {
                id: "a",
                channel: "room:1",
                reason: Refused {
                    code: Forbidden,
                    message: "no",
                },
            },
            Failed {
                id: "b",
                channel: "room:1",
                reason: Refused {
                    code: BadRequest,
                    message: "no",
                },
            },
        ]
    "#]]
    .assert_debug_eq(&events(&mut q));
}

#[test]
fn rate_limit_and_server_error_nacks_keep_and_retry_after_the_advice() {
    let mut q = OutboundQueue::new(QueueConfig::default());
    q.push(T, publish("a")).unwrap();
    q.push(T, publish("b")).unwrap();
    assert_eq!(q.poll_transmit(T).unwrap().id, "a");
    q.on_nack(T, &nack("a", ErrorCode::RateLimit, Some(2_000)));
    // Paused: neither the refused one nor the next goes out before the advice.
    assert_eq!(q.poll_transmit(T.add_millis(1_999)), None);
    assert_eq!(q.poll_timeout(), Some(T.add_millis(2_000)));
    assert_eq!(q.poll_transmit(T.add_millis(2_000)).unwrap().id, "a");
    q.on_nack(
        T.add_millis(2_000),
        &nack("a", ErrorCode::ServerError, None),
    );
    assert_eq!(q.poll_transmit(T.add_millis(2_999)), None);
    assert_eq!(q.poll_transmit(T.add_millis(3_000)).unwrap().id, "a");
    assert_eq!(q.len(), 2);
    assert_eq!(q.stats().failed, 0);
    assert!(matches!(
        events(&mut q).as_slice(),
        [
            QueueEvent::RetryLater {
                code: ErrorCode::RateLimit,
                ..
            },
            QueueEvent::RetryLater {
                code: ErrorCode::ServerError,
                ..
            }
        ]
    ));
}

#[test]
fn entries_older_than_the_dedup_window_expire_and_fail() {
    let mut q = OutboundQueue::new(QueueConfig::default());
    q.push(T, publish("old")).unwrap();
    q.push(T.add_millis(3_600_000), publish("newer")).unwrap();
    let day = 24 * 3_600_000;
    assert_eq!(q.poll_timeout(), Some(T.add_millis(day + 1)));
    q.handle_timeout(T.add_millis(day));
    assert_eq!(q.len(), 2, "exactly 24 h old is still inside the window");
    q.handle_timeout(T.add_millis(day + 1));
    assert_eq!(q.len(), 1);
    assert_eq!(
        events(&mut q),
        [QueueEvent::Failed {
            id: "old".into(),
            channel: "room:1".into(),
            reason: FailReason::Expired
        }]
    );
}

#[test]
fn a_1009_close_fails_the_largest_message_in_flight() {
    let mut q = OutboundQueue::new(QueueConfig::default());
    q.push(T, publish("small")).unwrap();
    q.push(
        T,
        Publish {
            id: "big".into(),
            channel: "room:1".into(),
            data: json!("x".repeat(1_000)),
        },
    )
    .unwrap();
    q.push(T, publish("unsent")).unwrap();
    q.poll_transmit(T);
    q.poll_transmit(T);
    assert_eq!(q.fail_largest_in_flight(), Some("big".into()));
    assert_eq!(
        events(&mut q),
        [QueueEvent::Failed {
            id: "big".into(),
            channel: "room:1".into(),
            reason: FailReason::TooLarge
        }]
    );
    q.on_disconnect();
    assert_eq!(q.fail_largest_in_flight(), None, "nothing in flight");
    assert_eq!(q.len(), 2);
}

#[test]
fn in_flight_is_bounded() {
    let mut q = OutboundQueue::new(QueueConfig {
        max_in_flight: 2,
        ..QueueConfig::default()
    });
    for id in ["a", "b", "c"] {
        q.push(T, publish(id)).unwrap();
    }
    assert!(q.poll_transmit(T).is_some());
    assert!(q.poll_transmit(T).is_some());
    assert_eq!(q.poll_transmit(T), None);
    q.on_ack(&ack("a", 1, false));
    assert_eq!(q.poll_transmit(T).unwrap().id, "c");
}

#[test]
fn persist_and_restore_round_trip() {
    let mut q = OutboundQueue::new(QueueConfig::default());
    q.push(T, publish("a")).unwrap();
    q.push(T.add_millis(5), publish("b")).unwrap();
    q.push(T.add_millis(9), publish("c")).unwrap();
    assert_eq!(q.poll_transmit(T).unwrap().id, "a");
    q.on_ack(&ack("a", 1, false));
    assert_eq!(q.poll_transmit(T).unwrap().id, "b"); // in flight when the app dies
    let json = q.to_json();
    expect![[r#"{"version":1,"entries":[{"id":"b","channel":"room:1","data":{"n":"b"},"enqueued_at":"2026-11-27T14:00:00.005Z","sends":1},{"id":"c","channel":"room:1","data":{"n":"c"},"enqueued_at":"2026-11-27T14:00:00.009Z","sends":0}],"paused_until":null,"stats":{"enqueued":3,"sent":2,"acked":1,"failed":0,"duplicates":0}}"#]].assert_eq(&json);

    let mut r = OutboundQueue::from_json(QueueConfig::default(), &json).unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(r.in_flight(), 0, "restored entries are all unsent");
    let resent: Vec<_> = std::iter::from_fn(|| r.poll_transmit(T))
        .map(|p| p.id)
        .collect();
    assert_eq!(resent, ["b", "c"]);
    assert_eq!(r.stats().sent, 3, "b is not counted twice");
    assert_eq!(
        r.entries().map(|e| e.enqueued_at).collect::<Vec<_>>(),
        [T.add_millis(5), T.add_millis(9)]
    );
    assert!(OutboundQueue::from_json(QueueConfig::default(), "{not json").is_err());
}

#[test]
fn a_restored_queue_over_a_smaller_capacity_keeps_everything() {
    let mut q = small(3);
    for id in ["a", "b", "c"] {
        q.push(T, publish(id)).unwrap();
    }
    let mut r = OutboundQueue::from_json(
        QueueConfig {
            capacity: 2,
            ..QueueConfig::default()
        },
        &q.to_json(),
    )
    .unwrap();
    assert_eq!(r.len(), 3);
    assert_eq!(
        r.push(T, publish("d")),
        Err(QueueError::Full { capacity: 2 })
    );
}

#[derive(Clone, Debug)]
enum Op {
    Push,
    Transmit,
    Ack(u8),
    Nack(u8, u8),
    Disconnect,
    Advance(u32),
    Expire,
    Persist,
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Push),
        3 => Just(Op::Transmit),
        2 => (0u8..40).prop_map(Op::Ack),
        1 => ((0u8..40), (0u8..4)).prop_map(|(i, c)| Op::Nack(i, c)),
        1 => Just(Op::Disconnect),
        1 => (0u32..40_000_000).prop_map(Op::Advance),
        1 => Just(Op::Expire),
        1 => Just(Op::Persist),
    ]
}

proptest! {
    /// Capacity is never exceeded, and every accepted publish is accounted for: still queued,
    /// acknowledged, or reported failed — never lost silently, never reported twice.
    #[test]
    fn never_over_capacity_and_never_loses_an_entry(ops in proptest::collection::vec(arb_op(), 1..300)) {
        let config = QueueConfig { capacity: 8, max_in_flight: 3, ..QueueConfig::default() };
        let mut q = OutboundQueue::new(config);
        let mut now = T;
        let mut accepted = BTreeSet::new();
        let mut settled: BTreeMap<String, &'static str> = BTreeMap::new();
        let mut next_id = 0u32;
        for op in ops {
            match op {
                Op::Push => {
                    let id = format!("m{next_id}");
                    next_id += 1;
                    let before = q.len();
                    match q.push(now, publish(&id)) {
                        Ok(()) => { accepted.insert(id); }
                        Err(QueueError::Full { .. }) => prop_assert_eq!(before, 8),
                        Err(e) => prop_assert!(false, "unexpected {e}"),
                    }
                }
                Op::Transmit => { while q.poll_transmit(now).is_some() {} }
                Op::Ack(i) => { q.on_ack(&ack(&format!("m{i}"), 1, false)); }
                Op::Nack(i, c) => {
                    let code = [ErrorCode::Forbidden, ErrorCode::BadRequest, ErrorCode::RateLimit, ErrorCode::ServerError][c as usize];
                    q.on_nack(now, &nack(&format!("m{i}"), code, Some(500)));
                }
                Op::Disconnect => q.on_disconnect(),
                Op::Advance(ms) => now = now.add_millis(i64::from(ms)),
                Op::Expire => q.handle_timeout(now),
                Op::Persist => {
                    q = OutboundQueue::from_json(config, &q.to_json()).expect("own JSON restores");
                }
            }
            while let Some(ev) = q.poll_event() {
                let (id, how) = match ev {
                    QueueEvent::Acked { id, .. } => (id, "acked"),
                    QueueEvent::Failed { id, .. } => (id, "failed"),
                    QueueEvent::RetryLater { .. } => continue,
                };
                prop_assert!(accepted.contains(&id));
                prop_assert!(settled.insert(id, how).is_none(), "settled twice");
            }
            prop_assert!(q.len() <= 8);
            prop_assert!(q.in_flight() <= 3);
            let queued: BTreeSet<String> = q.entries().map(|e| e.id.clone()).collect();
            prop_assert_eq!(queued.len(), q.len(), "ids stay unique");
            for id in &accepted {
                prop_assert!(queued.contains(id) != settled.contains_key(id), "{id} lost or double");
            }
        }
    }
}
