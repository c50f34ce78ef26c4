//! Property: every message survives encode → decode unchanged.
use proptest::prelude::*;
use protocol::message::*;
use protocol::{ErrorCode, Timestamp, Token, decode_client, decode_server, encode};
use serde_json::Value;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[^\u{0}]{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn channel() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9_:.-]{0,30}"
}

fn id() -> impl Strategy<Value = String> {
    "[ -~]{1,40}"
}

fn ts() -> impl Strategy<Value = Timestamp> {
    (0i64..4_102_444_800_000).prop_map(Timestamp::from_unix_millis)
}

fn code() -> impl Strategy<Value = ErrorCode> {
    prop::sample::select(ErrorCode::ALL.to_vec())
}

fn client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        (id(), prop::option::of("[ -~]{0,20}")).prop_map(|(t, client)| ClientMessage::Hello(
            Hello {
                token: Token::new(t),
                client
            }
        )),
        any::<u64>().prop_map(|id| ClientMessage::Ping(Ping { id })),
        (
            channel(),
            prop::option::of(any::<u64>()),
            prop::option::of("[a-z0-9]{1,20}")
        )
            .prop_map(
                |(channel, since, epoch)| ClientMessage::Subscribe(Subscribe {
                    channel,
                    since,
                    epoch
                })
            ),
        channel().prop_map(|channel| ClientMessage::Unsubscribe(Unsubscribe { channel })),
        (id(), channel(), json_value())
            .prop_map(|(id, channel, data)| ClientMessage::Publish(Publish { id, channel, data })),
        id().prop_map(|t| ClientMessage::Refresh(Refresh {
            token: Token::new(t)
        })),
        (
            prop::option::of((
                prop::option::of(0.0f64..1e6),
                prop::option::of(0.0f64..1e6),
                prop::option::of(0.0f64..1e6)
            )),
            prop::option::of(any::<u64>()),
            prop::option::of(any::<u64>()),
            prop::option::of(any::<u64>()),
            prop::option::of(any::<u64>()),
            prop::option::of(0.0f64..=1.0)
        )
            .prop_map(
                |(rtt, reconnects, failed_attempts, downtime_ms, queue, delivery_rate)| {
                    ClientMessage::Report(Report {
                        rtt_ms: rtt.map(|(last, p50, p95)| RttSummary { last, p50, p95 }),
                        reconnects,
                        failed_attempts,
                        downtime_ms,
                        queue,
                        delivery_rate,
                    })
                }
            ),
    ]
}

fn server_message() -> impl Strategy<Value = ServerMessage> {
    prop_oneof![
        (id(), any::<u64>(), any::<u64>(), ts(), ts()).prop_map(|(c, h, m, s, e)| {
            ServerMessage::Welcome(Welcome {
                connection_id: c,
                heartbeat_ms: h,
                max_message_bytes: m,
                server_time: s,
                token_expires_at: e,
            })
        }),
        (any::<u64>(), ts())
            .prop_map(|(id, server_time)| ServerMessage::Pong(Pong { id, server_time })),
        (
            channel(),
            "[a-z0-9]{1,20}",
            any::<u64>(),
            any::<bool>(),
            any::<u64>()
        )
            .prop_map(|(channel, epoch, offset, recovered, replayed)| {
                ServerMessage::Subscribed(Subscribed {
                    channel,
                    epoch,
                    offset,
                    recovered,
                    replayed,
                })
            }),
        channel().prop_map(|channel| ServerMessage::Unsubscribed(Unsubscribed { channel })),
        (channel(), any::<u64>(), id(), json_value(), ts()).prop_map(
            |(channel, offset, id, data, published_at)| {
                ServerMessage::Message(Delivery {
                    channel,
                    offset,
                    id,
                    data,
                    published_at,
                })
            }
        ),
        (id(), channel(), any::<u64>(), any::<bool>()).prop_map(
            |(id, channel, offset, duplicate)| ServerMessage::Ack(Ack {
                id,
                channel,
                offset,
                duplicate
            })
        ),
        (id(), code(), "[ -~]{0,30}", prop::option::of(any::<u64>())).prop_map(
            |(id, code, message, retry_after_ms)| {
                ServerMessage::Nack(Nack {
                    id,
                    code,
                    message,
                    retry_after_ms,
                })
            }
        ),
        (
            code(),
            "[ -~]{0,30}",
            prop::option::of(channel()),
            prop::option::of(any::<u64>())
        )
            .prop_map(|(code, message, channel, retry_after_ms)| {
                ServerMessage::Error(ErrorFrame {
                    code,
                    message,
                    channel,
                    retry_after_ms,
                })
            }),
        ts().prop_map(|expires_at| ServerMessage::TokenExpiring(TokenExpiring { expires_at })),
        ts().prop_map(|token_expires_at| ServerMessage::Refreshed(Refreshed { token_expires_at })),
        (
            any::<u64>(),
            prop::sample::select(vec![ReconnectReason::Shutdown, ReconnectReason::Shed])
        )
            .prop_map(|(after_ms, reason)| ServerMessage::Reconnect(Reconnect {
                after_ms,
                reason
            })),
    ]
}

proptest! {
    #[test]
    fn client_messages_round_trip(msg in client_message()) {
        let text = encode(&msg);
        prop_assert_eq!(decode_client(&text).unwrap(), msg);
    }

    #[test]
    fn server_messages_round_trip(msg in server_message()) {
        let text = encode(&msg);
        prop_assert_eq!(decode_server(&text).unwrap(), msg);
    }
}
