//! [`Subscriptions`]: per channel, the last processed offset and the epoch (CONTRACT §5.3, §8).
//!
//! - [`Subscriptions::subscribe`] builds the `subscribe` frame; after every reconnect
//!   [`Subscriptions::resubscribe_all`] builds one per channel with `since` = the last offset
//!   processed and the epoch it was processed in, so nothing is missed and nothing repeated.
//! - [`Subscriptions::on_delivery`] accepts a message only if its offset is exactly the last
//!   one + 1. A repeat or an older offset is dropped ([`Verdict::Repeat`]). A jump is a gap
//!   ([`Verdict::Gap`], [`SubscriptionEvent::Gap`]): the message is not accepted and the
//!   tracker asks, once, to resubscribe from the last processed offset
//!   ([`Subscriptions::poll_resubscribe`]) so the server replays the missing part in order.
//! - On `subscribed` with `recovered: false` the server could not replay from `since` (trimmed
//!   history, another epoch, a restored store): the channel's offsets are forgotten, the
//!   position moves to just before the server's replay start (`offset - replayed`), and
//!   [`SubscriptionEvent::Reset`] tells the app to refetch the channel's state.
//! - The tracker is serializable ([`Subscriptions::to_json`]) so a driver can persist it beside
//!   the outbound queue and resume after a restart of the client.
//!
//! After a reset or a fresh subscribe without `since`, the position is the server's; a
//! message delivered before the `subscribed` answer (no position yet) is accepted as the start.
use std::collections::{BTreeMap, VecDeque};

use protocol::{
    ChannelName, ChannelNameError, Delivery, ErrorCode, Subscribe, Subscribed, Unsubscribe,
};
use serde::{Deserialize, Serialize};

/// Where a channel stands: the last offset processed and its epoch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The last offset processed (`None`: nothing yet; live from the server's position).
    pub offset: Option<u64>,
    /// The epoch `offset` belongs to.
    pub epoch: Option<String>,
}

/// What [`Subscriptions::on_delivery`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The next offset: hand it to the app.
    Accept,
    /// Already processed (offset ≤ last): drop.
    Repeat {
        /// The last offset processed.
        last: u64,
    },
    /// Offsets are missing before this one: drop; a resubscribe replays them.
    Gap {
        /// The offset that was expected.
        expected: u64,
        /// The offset that arrived.
        got: u64,
    },
    /// Not a subscribed channel: drop.
    NotSubscribed,
}

/// What the app should know about its subscriptions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubscriptionEvent {
    /// The server confirmed a subscription.
    Subscribed {
        /// The channel.
        channel: String,
        /// The channel's epoch.
        epoch: String,
        /// The channel's latest offset.
        offset: u64,
        /// How many retained messages follow as replay.
        replayed: u64,
    },
    /// `recovered: false`: offsets were forgotten; refetch this channel's state.
    Reset {
        /// The channel.
        channel: String,
        /// The new epoch.
        epoch: String,
        /// The first offset the server replays from now on.
        replay_from: u64,
    },
    /// Offsets `expected..got` are missing; a resubscribe from `expected - 1` was requested.
    Gap {
        /// The channel.
        channel: String,
        /// The first missing offset.
        expected: u64,
        /// The offset that arrived.
        got: u64,
    },
    /// The subscription ended (unsubscribed, or refused/ended by the server).
    Ended {
        /// The channel.
        channel: String,
        /// Why.
        cause: EndCause,
    },
}

/// Why a subscription ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndCause {
    /// `unsubscribed`: the app asked for it.
    Unsubscribed,
    /// An `error` naming the channel with a code that ends a subscription
    /// ([`ends_subscription`]): a refused subscribe, or rights lost at a token refresh.
    Refused {
        /// The error code (`FORBIDDEN` or `BAD_REQUEST`).
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
}

/// Whether an `error` naming a channel ends that subscription (decided here, once, for every
/// driver): `FORBIDDEN` (no right, or no longer after a refresh) and `BAD_REQUEST` (a name or
/// frame the server will never take) do; `RATE_LIMIT` and `SERVER_ERROR` are passing, and the
/// subscription stays (CONTRACT §5.3, §5.5).
pub fn ends_subscription(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::Forbidden | ErrorCode::BadRequest)
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Channel {
    #[serde(flatten)]
    position: Position,
    /// A gap resubscribe is under way (not persisted).
    #[serde(skip)]
    resyncing: bool,
}

#[derive(Serialize, Deserialize)]
struct Persisted {
    version: u32,
    channels: BTreeMap<String, Channel>,
}

/// The subscription tracker. See the module docs.
#[derive(Clone, Debug, Default)]
pub struct Subscriptions {
    channels: BTreeMap<String, Channel>,
    resubscribe: VecDeque<Subscribe>,
    events: VecDeque<SubscriptionEvent>,
}

/// Why [`Subscriptions::from_json`] could not restore.
#[derive(Debug, thiserror::Error)]
#[error("cannot restore the subscriptions: {0}")]
pub struct RestoreSubscriptionsError(#[from] serde_json::Error);

impl Subscriptions {
    /// No subscriptions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Restores what [`Subscriptions::to_json`] saved.
    pub fn from_json(json: &str) -> Result<Self, RestoreSubscriptionsError> {
        let p: Persisted = serde_json::from_str(json)?;
        Ok(Self {
            channels: p.channels,
            ..Self::default()
        })
    }

    /// The channels and their positions as JSON, to persist.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&Persisted {
            version: 1,
            channels: self.channels.clone(),
        })
        .expect("positions are plain numbers and strings")
    }

    /// Subscribes to `channel` (or changes where it starts) and returns the frame to send.
    /// `since`: `None` resumes from the position already tracked (live only for a new
    /// channel); `Some(n)` replays after offset `n` (0: everything retained).
    pub fn subscribe(
        &mut self,
        channel: &str,
        since: Option<u64>,
    ) -> Result<Subscribe, ChannelNameError> {
        ChannelName::parse(channel)?;
        let entry = self.channels.entry(channel.to_owned()).or_default();
        if let Some(since) = since
            && entry.position.offset != Some(since)
        {
            entry.position = Position {
                offset: Some(since),
                epoch: None,
            };
        }
        entry.resyncing = false;
        Ok(frame(channel, &entry.position))
    }

    /// Stops tracking `channel` and returns the frame to send (`None` if not subscribed).
    pub fn unsubscribe(&mut self, channel: &str) -> Option<Unsubscribe> {
        self.channels.remove(channel).map(|_| Unsubscribe {
            channel: channel.to_owned(),
        })
    }

    /// The `subscribe` frames to send after a reconnect: one per channel, from its position.
    pub fn resubscribe_all(&mut self) -> Vec<Subscribe> {
        self.resubscribe.clear();
        self.channels
            .iter_mut()
            .map(|(name, c)| {
                c.resyncing = false;
                frame(name, &c.position)
            })
            .collect()
    }

    /// A `subscribed` answer.
    pub fn on_subscribed(&mut self, s: &Subscribed) {
        let Some(c) = self.channels.get_mut(&s.channel) else {
            return;
        };
        c.resyncing = false;
        if s.recovered {
            // Live only (no position yet): the next message is the one after the latest.
            if c.position.offset.is_none() {
                c.position.offset = Some(s.offset);
            }
            c.position.epoch = Some(s.epoch.clone());
        } else {
            // The replay covers offset - replayed + 1 ..= offset.
            let before = s.offset.saturating_sub(s.replayed);
            c.position = Position {
                offset: Some(before),
                epoch: Some(s.epoch.clone()),
            };
            self.events.push_back(SubscriptionEvent::Reset {
                channel: s.channel.clone(),
                epoch: s.epoch.clone(),
                replay_from: before + 1,
            });
        }
        self.events.push_back(SubscriptionEvent::Subscribed {
            channel: s.channel.clone(),
            epoch: s.epoch.clone(),
            offset: s.offset,
            replayed: s.replayed,
        });
    }

    /// A delivered message: accept it only if it is the next offset of a tracked channel.
    pub fn on_delivery(&mut self, d: &Delivery) -> Verdict {
        let Some(c) = self.channels.get_mut(&d.channel) else {
            return Verdict::NotSubscribed;
        };
        match c.position.offset {
            None => {
                c.position.offset = Some(d.offset);
                Verdict::Accept
            }
            Some(last) if d.offset == last.saturating_add(1) => {
                c.position.offset = Some(d.offset);
                Verdict::Accept
            }
            Some(last) if d.offset <= last => Verdict::Repeat { last },
            Some(last) => {
                let expected = last + 1;
                if !c.resyncing {
                    c.resyncing = true;
                    self.events.push_back(SubscriptionEvent::Gap {
                        channel: d.channel.clone(),
                        expected,
                        got: d.offset,
                    });
                    self.resubscribe.push_back(frame(&d.channel, &c.position));
                }
                Verdict::Gap {
                    expected,
                    got: d.offset,
                }
            }
        }
    }

    /// The server confirmed an `unsubscribe`.
    pub fn on_ended(&mut self, channel: &str) {
        self.end(channel, EndCause::Unsubscribed);
    }

    /// The server ended or refused a subscription with an `error` naming the channel: ends
    /// it if [`ends_subscription`] says so. Returns whether it ended.
    pub fn on_refused(&mut self, channel: &str, code: ErrorCode, message: &str) -> bool {
        ends_subscription(code)
            && self.end(
                channel,
                EndCause::Refused {
                    code,
                    message: message.to_owned(),
                },
            )
    }

    fn end(&mut self, channel: &str, cause: EndCause) -> bool {
        let ended = self.channels.remove(channel).is_some();
        if ended {
            self.events.push_back(SubscriptionEvent::Ended {
                channel: channel.to_owned(),
                cause,
            });
        }
        ended
    }

    /// A `subscribe` to send now to repair a gap.
    #[must_use]
    pub fn poll_resubscribe(&mut self) -> Option<Subscribe> {
        self.resubscribe.pop_front()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<SubscriptionEvent> {
        self.events.pop_front()
    }

    /// Where `channel` stands.
    pub fn position(&self, channel: &str) -> Option<&Position> {
        self.channels.get(channel).map(|c| &c.position)
    }

    /// The tracked channels, in name order.
    pub fn channels(&self) -> impl Iterator<Item = (&str, &Position)> {
        self.channels.iter().map(|(n, c)| (n.as_str(), &c.position))
    }

    /// Whether `channel` is tracked.
    pub fn contains(&self, channel: &str) -> bool {
        self.channels.contains_key(channel)
    }
}

fn frame(channel: &str, p: &Position) -> Subscribe {
    Subscribe {
        channel: channel.to_owned(),
        since: p.offset,
        epoch: p.offset.and(p.epoch.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use protocol::Timestamp;
    use serde_json::json;

    fn msg(channel: &str, offset: u64) -> Delivery {
        Delivery {
            channel: channel.into(),
            offset,
            id: format!("m{offset}"),
            data: json!(offset),
            published_at: Timestamp::from_unix_millis(0),
        }
    }

    fn subscribed(
        channel: &str,
        epoch: &str,
        offset: u64,
        recovered: bool,
        replayed: u64,
    ) -> Subscribed {
        Subscribed {
            channel: channel.into(),
            epoch: epoch.into(),
            offset,
            recovered,
            replayed,
        }
    }

    fn events(s: &mut Subscriptions) -> Vec<SubscriptionEvent> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    #[test]
    fn resubscribes_from_the_last_processed_offset_and_epoch() {
        let mut s = Subscriptions::new();
        let f = s.subscribe("room:1", None).unwrap();
        assert_eq!(
            protocol::encode(&protocol::ClientMessage::Subscribe(f)),
            r#"{"type":"subscribe","channel":"room:1"}"#
        );
        s.on_subscribed(&subscribed("room:1", "e1", 10, true, 0));
        assert_eq!(s.on_delivery(&msg("room:1", 11)), Verdict::Accept);
        assert_eq!(s.on_delivery(&msg("room:1", 12)), Verdict::Accept);
        let again = s.resubscribe_all();
        expect_test::expect![[r#"
            [
                "{\"type\":\"subscribe\",\"channel\":\"room:1\",\"since\":12,\"epoch\":\"e1\"}",
            ]
        "#]]
        .assert_debug_eq(
            &again
                .into_iter()
                .map(|f| protocol::encode(&protocol::ClientMessage::Subscribe(f)))
                .collect::<Vec<_>>(),
        );
    }

    #[test]
    fn repeats_and_old_offsets_are_dropped() {
        let mut s = Subscriptions::new();
        s.subscribe("c", Some(4)).unwrap();
        s.on_subscribed(&subscribed("c", "e", 6, true, 2));
        assert_eq!(s.on_delivery(&msg("c", 5)), Verdict::Accept);
        assert_eq!(s.on_delivery(&msg("c", 5)), Verdict::Repeat { last: 5 });
        assert_eq!(s.on_delivery(&msg("c", 2)), Verdict::Repeat { last: 5 });
        assert_eq!(s.on_delivery(&msg("c", 6)), Verdict::Accept);
        assert_eq!(s.on_delivery(&msg("other", 1)), Verdict::NotSubscribed);
    }

    #[test]
    fn a_gap_is_reported_once_and_repaired_by_a_resubscribe() {
        let mut s = Subscriptions::new();
        s.subscribe("c", Some(0)).unwrap();
        s.on_subscribed(&subscribed("c", "e", 0, true, 0));
        events(&mut s);
        assert_eq!(s.on_delivery(&msg("c", 1)), Verdict::Accept);
        assert_eq!(
            s.on_delivery(&msg("c", 4)),
            Verdict::Gap {
                expected: 2,
                got: 4
            }
        );
        assert_eq!(
            s.on_delivery(&msg("c", 5)),
            Verdict::Gap {
                expected: 2,
                got: 5
            }
        );
        assert_eq!(
            events(&mut s),
            [SubscriptionEvent::Gap {
                channel: "c".into(),
                expected: 2,
                got: 4
            }]
        );
        let fix = s.poll_resubscribe().unwrap();
        assert_eq!((fix.since, fix.epoch.as_deref()), (Some(1), Some("e")));
        assert_eq!(s.poll_resubscribe(), None, "asked once");
        // The replay fills the gap in order.
        s.on_subscribed(&subscribed("c", "e", 5, true, 4));
        for o in 2..=5 {
            assert_eq!(s.on_delivery(&msg("c", o)), Verdict::Accept);
        }
    }

    #[test]
    fn not_recovered_forgets_offsets_and_asks_the_app_to_refetch() {
        let mut s = Subscriptions::new();
        s.subscribe("c", Some(50)).unwrap();
        s.on_subscribed(&subscribed("c", "e1", 60, true, 10));
        for o in 51..=60 {
            s.on_delivery(&msg("c", o));
        }
        events(&mut s);
        // The store was restored from a backup: new epoch, history from 1 to 30 kept.
        s.resubscribe_all();
        s.on_subscribed(&subscribed("c", "e2", 30, false, 30));
        assert_eq!(
            events(&mut s)[0],
            SubscriptionEvent::Reset {
                channel: "c".into(),
                epoch: "e2".into(),
                replay_from: 1
            }
        );
        assert_eq!(
            s.position("c"),
            Some(&Position {
                offset: Some(0),
                epoch: Some("e2".into())
            })
        );
        assert_eq!(s.on_delivery(&msg("c", 1)), Verdict::Accept);
        // Trimmed history: replay starts at the oldest retained (offset 91 of 100).
        s.on_subscribed(&subscribed("c", "e2", 100, false, 10));
        assert_eq!(s.on_delivery(&msg("c", 91)), Verdict::Accept);
    }

    #[test]
    fn ended_and_unsubscribed_channels_are_forgotten() {
        let mut s = Subscriptions::new();
        s.subscribe("a", None).unwrap();
        s.subscribe("b", None).unwrap();
        assert!(s.unsubscribe("a").is_some());
        assert!(s.unsubscribe("a").is_none());
        s.on_ended("b");
        assert_eq!(
            events(&mut s),
            [SubscriptionEvent::Ended {
                channel: "b".into(),
                cause: EndCause::Unsubscribed,
            }]
        );
        assert!(s.resubscribe_all().is_empty());
        assert!(s.subscribe("bad name", None).is_err());
    }

    #[test]
    fn persist_and_restore_round_trip() {
        let mut s = Subscriptions::new();
        s.subscribe("room:1", Some(3)).unwrap();
        s.on_subscribed(&subscribed("room:1", "e1", 5, true, 2));
        s.on_delivery(&msg("room:1", 4));
        s.subscribe("room:2", None).unwrap();
        let json = s.to_json();
        expect_test::expect![[r#"{"version":1,"channels":{"room:1":{"offset":4,"epoch":"e1"},"room:2":{"offset":null,"epoch":null}}}"#]].assert_eq(&json);
        let mut r = Subscriptions::from_json(&json).unwrap();
        assert_eq!(r.position("room:1"), s.position("room:1"));
        assert_eq!(r.resubscribe_all(), s.resubscribe_all());
        assert!(Subscriptions::from_json("[]").is_err());
    }

    proptest! {
        /// Whatever the server sends (repeats, reordering, gaps, resets), the app never sees
        /// an offset twice or out of order: each accepted offset is the previous + 1, except
        /// the first after a reset or a fresh start.
        #[test]
        fn never_yields_a_repeated_or_out_of_order_offset(
            stream in proptest::collection::vec(prop_oneof![
                8 => (1u64..60).prop_map(Some),
                1 => Just(None),
            ], 1..400)
        ) {
            let mut s = Subscriptions::new();
            s.subscribe("c", None).unwrap();
            let mut last: Option<u64> = None;
            for item in stream {
                match item {
                    Some(o) => {
                        if s.on_delivery(&msg("c", o)) == Verdict::Accept {
                            if let Some(l) = last {
                                prop_assert_eq!(o, l + 1);
                            }
                            last = Some(o);
                        }
                    }
                    None => {
                        // A reset: the server replays from a new start.
                        s.on_subscribed(&subscribed("c", "e", 40, false, 10));
                        last = Some(30);
                    }
                }
                prop_assert_eq!(s.position("c").unwrap().offset, last);
            }
        }
    }
}
