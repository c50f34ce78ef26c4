//! Publishing in the session machine: the per-connection rate limit (CONTRACT §5.4) with its
//! strike bucket (a sustained excess closes 4429), the checks of a `publish`, and the
//! `ack`/`nack` of each store outcome, answered in the order the publishes were sent.
use std::time::Instant;

use protocol::{Ack, ChannelName, CloseCode, ErrorCode, ErrorFrame, Nack, Publish, ServerMessage};

use super::machine::{Machine, Output, StoreOp};
use crate::abuse::Offence;
use crate::config::RateLimit;
use crate::ratelimit::{TokenBucket, retry_after_ms};
use crate::store::{PublishOutcome, PublishRequest, StoreError};

/// Publishes one connection may have waiting for the store; at the cap the session stops
/// reading the socket until some complete (the store's queue is unbounded by design).
pub const MAX_IN_FLIGHT: usize = 1_024;
/// Refused publishes a connection may accumulate (refilling at [`STRIKE_REFILL`]/s) before a
/// sustained excess closes it with 4429.
const STRIKE_BURST: u32 = 200;
const STRIKE_REFILL: f64 = 20.0;

/// A connection's publish state, created on its first publish.
#[derive(Debug)]
pub struct Publishing {
    bucket: TokenBucket,
    strikes: TokenBucket,
    /// Whether the last publish was refused (`rate_limited` is logged once per episode).
    limited: bool,
    in_flight: usize,
}

impl Publishing {
    fn new(limit: RateLimit, now: Instant) -> Self {
        Self {
            bucket: TokenBucket::new(limit, now),
            strikes: TokenBucket::new(
                RateLimit {
                    burst: STRIKE_BURST,
                    per_sec: STRIKE_REFILL,
                },
                now,
            ),
            limited: false,
            in_flight: 0,
        }
    }

    /// Whether the store holds as many of this connection's publishes as it may.
    pub fn is_full(&self) -> bool {
        self.in_flight >= MAX_IN_FLIGHT
    }
}

fn nack(id: String, code: ErrorCode, message: &str, retry_after_ms: Option<u64>) -> ServerMessage {
    crate::metrics::publish_refused();
    ServerMessage::Nack(Nack {
        id,
        code,
        message: message.to_owned(),
        retry_after_ms,
    })
}

impl Machine {
    pub(super) fn publish(&mut self, now: Instant, publish: Publish) {
        let limit = self.policy.publish;
        let state = self
            .publishing
            .get_or_insert_with(|| Box::new(Publishing::new(limit, now)));
        if let Err(wait) = state.bucket.try_take(now) {
            let retry = retry_after_ms(wait);
            let first = !state.limited;
            state.limited = true;
            let persistent = state.strikes.try_take(now).is_err();
            self.offence(Offence::RateLimited);
            crate::metrics::rate_limited();
            if first {
                tracing::warn!(
                    component = "websocket",
                    event = "rate_limited",
                    connection_id = %self.connection_id,
                    limit = "publish",
                    retry_after_ms = retry,
                );
            }
            if persistent {
                let notice = ServerMessage::Error(ErrorFrame {
                    code: ErrorCode::RateLimit,
                    message: "publish rate exceeded persistently".into(),
                    channel: None,
                    retry_after_ms: Some(retry.max(1_000)),
                });
                return self.close(CloseCode::RATE_LIMITED, "rate limited", Some(notice));
            }
            let frame = nack(
                publish.id,
                ErrorCode::RateLimit,
                "publish rate exceeded",
                Some(retry),
            );
            return self.send(&frame);
        }
        state.limited = false;
        if let Err(err) = ChannelName::parse(&publish.channel) {
            let frame = nack(publish.id, ErrorCode::BadRequest, &err.to_string(), None);
            return self.send(&frame);
        }
        if !self.claims().can_publish(&publish.channel) {
            let frame = nack(
                publish.id,
                ErrorCode::Forbidden,
                "the token does not allow publishing to this channel",
                None,
            );
            return self.send(&frame);
        }
        let request = PublishRequest {
            channel: publish.channel,
            sub: self.claims().sub.clone(),
            id: publish.id,
            data: publish.data,
            published_at: self.wall(now),
        };
        if let Some(state) = self.publishing.as_mut() {
            state.in_flight += 1;
        }
        self.out.push_back(Output::Store(StoreOp::Publish(request)));
    }

    pub(super) fn on_published(
        &mut self,
        id: String,
        channel: String,
        result: Result<PublishOutcome, StoreError>,
    ) {
        if let Some(state) = self.publishing.as_mut() {
            state.in_flight = state.in_flight.saturating_sub(1);
        }
        let frame = match result {
            Ok(PublishOutcome::Stored { offset }) => ServerMessage::Ack(Ack {
                id,
                channel,
                offset,
                duplicate: false,
            }),
            Ok(PublishOutcome::Duplicate { offset }) => ServerMessage::Ack(Ack {
                id,
                channel,
                offset,
                duplicate: true,
            }),
            Ok(PublishOutcome::Conflict { .. }) => nack(
                id,
                ErrorCode::BadRequest,
                "this id was already published with different data",
                None,
            ),
            Err(err) => {
                self.store_error("publish", &err);
                nack(
                    id,
                    ErrorCode::ServerError,
                    "the message could not be stored; retry later",
                    Some(1_000),
                )
            }
        };
        self.send(&frame);
    }
}
