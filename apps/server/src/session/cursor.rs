//! Subscription cursors of the session machine: `subscribe`, the replay from the store a page
//! at a time, the hand-over to live (with the hub), purges and trims met on the way, and
//! `unsubscribe`.
//!
//! **Invariant, per channel, as the client sees it:** after a `subscribed` frame, `message`
//! offsets go up by exactly one each, with no repeat, until the next `subscribed` (a new
//! subscription, a purge's notice with the new epoch and offset 0, or a trim notice with
//! `recovered: false` announcing where the history resumes). Nothing of a subscription is
//! written after its `unsubscribed` or after the `subscribed` of the one that replaced it:
//! every live frame carries the subscription's generation and stale ones are dropped.
//!
//! A page is read together with the channel's state *after* it: an epoch other than the
//! subscription's means a purge happened (the page may mix both histories), so the replay
//! restarts on the new epoch with the purge notice; a first offset beyond the cursor means a
//! retention trim removed what the client still needed, announced by a `subscribed` with
//! `recovered: false` before the replay goes on.
use std::collections::VecDeque;

use protocol::{
    ChannelName, ErrorCode, ErrorFrame, ServerMessage, Subscribe, Subscribed, Unsubscribed,
};

use super::machine::{HubOp, Machine, Output, StoreOp};
use crate::hub::{GoLive, encode_message};
use crate::outbound::{Delivery, DeliveryKind, epoch_tag};
use crate::store::{ChannelInfo, StoreError, StoredMessage};

/// Messages read from the store per replay page.
pub const REPLAY_PAGE: usize = 256;

/// One subscription of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sub {
    /// Distinguishes a re-subscription from the one it replaced (and tags its live frames).
    pub generation: u64,
    /// The last offset written to the client.
    pub upto: u64,
    /// The [`epoch_tag`] of the epoch the client was last told of.
    pub epoch: u64,
    /// Whether the hub delivers to it (the replay is over).
    pub live: bool,
}

/// The replay work of a connection; boxed and dropped when there is none.
#[derive(Debug, Default)]
pub struct Catchup {
    /// A `subscribe` waiting for its channel's state.
    info: Option<PendingInfo>,
    /// Channels to replay, in subscribe order; the front one is being read.
    queue: VecDeque<String>,
    /// The ticket of the page being read for the front channel.
    page: Option<u64>,
}

#[derive(Debug)]
struct PendingInfo {
    ticket: u64,
    generation: u64,
    req: Subscribe,
    /// `channel.subscribe`, from the request to the `subscribed` answer.
    span: tracing::Span,
}

impl Catchup {
    /// Whether a subscribe waits for its channel state.
    pub fn awaiting_info(&self) -> bool {
        self.info.is_some()
    }

    /// The channel of that subscribe (registered in the hub, not yet a [`Sub`]).
    pub fn pending_channel(&self) -> Option<&str> {
        self.info.as_ref().map(|i| i.req.channel.as_str())
    }

    fn is_idle(&self) -> bool {
        self.info.is_none() && self.queue.is_empty() && self.page.is_none()
    }
}

fn channel_error(code: ErrorCode, channel: &str, message: impl Into<String>) -> ServerMessage {
    ServerMessage::Error(ErrorFrame {
        code,
        message: message.into(),
        channel: Some(channel.to_owned()),
        retry_after_ms: None,
    })
}

impl Machine {
    fn next_number(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    pub(super) fn subscribe(&mut self, req: Subscribe) {
        if let Err(err) = ChannelName::parse(&req.channel) {
            let frame = channel_error(ErrorCode::BadRequest, &req.channel, err.to_string());
            return self.send(&frame);
        }
        if !self.claims().can_subscribe(&req.channel) {
            let frame = channel_error(
                ErrorCode::Forbidden,
                &req.channel,
                "the token does not allow subscribing to this channel",
            );
            return self.send(&frame);
        }
        // Replace an existing subscription: its replay (if any) is abandoned, its queued live
        // frames are dropped (their generation is no longer current).
        self.end_subscription(&req.channel);
        let span = crate::telemetry::subscribe_span(&req.channel, req.since);
        let generation = self.next_number();
        let ticket = self.next_number();
        // Register before reading the channel's state: whatever the hub fans out from now on
        // is either in the store reads that follow or delivered live (see `hub`).
        self.out.push_back(Output::Hub(HubOp::Register {
            channel: req.channel.clone(),
            generation,
        }));
        self.out.push_back(Output::Store(StoreOp::Info {
            channel: req.channel.clone(),
            ticket,
        }));
        self.catchup.get_or_insert_default().info = Some(PendingInfo {
            ticket,
            generation,
            req,
            span,
        });
    }

    pub(super) fn on_info(&mut self, ticket: u64, result: Result<ChannelInfo, StoreError>) {
        let Some(pending) = self
            .catchup
            .as_mut()
            .and_then(|c| c.info.take_if(|i| i.ticket == ticket))
        else {
            return;
        };
        let channel = pending.req.channel;
        let info = match result {
            Ok(info) => info,
            Err(err) => {
                self.out.push_back(Output::Hub(HubOp::Unregister {
                    channel: channel.clone(),
                }));
                self.store_error("subscribe", &err);
                let frame = channel_error(
                    ErrorCode::ServerError,
                    &channel,
                    "the store is unavailable; retry later",
                );
                self.send(&frame);
                return self.next_page();
            }
        };
        let latest = info.latest_offset;
        let (upto, recovered) = replay_start(
            pending.req.since,
            pending.req.epoch.as_deref(),
            &info.epoch,
            latest,
            info.oldest_retained,
        );
        self.subs.insert(
            channel.clone(),
            Sub {
                generation: pending.generation,
                upto,
                epoch: epoch_tag(&info.epoch),
                live: false,
            },
        );
        self.send(&ServerMessage::Subscribed(Subscribed {
            channel: channel.clone(),
            epoch: info.epoch,
            offset: latest,
            recovered,
            replayed: latest.saturating_sub(upto),
        }));
        crate::telemetry::subscribed(&pending.span, latest.saturating_sub(upto), recovered);
        self.catchup
            .as_mut()
            .expect("the pending info lived in it")
            .queue
            .push_back(channel);
        self.next_page();
    }

    /// Starts reading the next replay page unless one is being read; frees the replay state
    /// when nothing is left to replay.
    pub(super) fn next_page(&mut self) {
        let Some(catchup) = self.catchup.as_mut() else {
            return;
        };
        if catchup.page.is_none() {
            while let Some(channel) = catchup.queue.front() {
                match self.subs.get(channel) {
                    Some(sub) if !sub.live => {
                        self.counter += 1;
                        let ticket = self.counter;
                        catchup.page = Some(ticket);
                        self.out.push_back(Output::Store(StoreOp::Read {
                            channel: channel.clone(),
                            ticket,
                            after: sub.upto,
                            limit: REPLAY_PAGE,
                        }));
                        return;
                    }
                    _ => {
                        catchup.queue.pop_front();
                    }
                }
            }
        }
        if catchup.is_idle() {
            self.catchup = None;
        }
    }

    pub(super) fn on_page(
        &mut self,
        ticket: u64,
        result: Result<(Vec<StoredMessage>, ChannelInfo), StoreError>,
    ) {
        let Some(catchup) = self.catchup.as_mut() else {
            return;
        };
        if catchup.page != Some(ticket) {
            // Abandoned (unsubscribed, replaced, or restarted by a purge) while it was read.
            return;
        }
        catchup.page = None;
        let Some(channel) = catchup.queue.front().cloned() else {
            return self.next_page();
        };
        let (msgs, info) = match result {
            Ok(page) => page,
            Err(err) => {
                self.store_error("replay", &err);
                self.end_subscription(&channel);
                let frame = channel_error(
                    ErrorCode::ServerError,
                    &channel,
                    "replay failed; subscribe again later",
                );
                self.send(&frame);
                return self.next_page();
            }
        };
        let mut sub = *self
            .subs
            .get(&channel)
            .expect("the front of the queue is a current subscription");
        let tag = epoch_tag(&info.epoch);
        if tag != sub.epoch {
            // Purged since the cursor's epoch was read: the page may hold either history.
            // Tell the client as the hub tells live subscribers, then replay the new epoch.
            sub.epoch = tag;
            sub.upto = 0;
            self.subs.insert(channel.clone(), sub);
            self.send(&ServerMessage::Subscribed(Subscribed {
                channel,
                epoch: info.epoch,
                offset: 0,
                recovered: false,
                replayed: 0,
            }));
            return self.next_page();
        }
        // Where the retained history resumes, if a trim removed offsets after the cursor.
        let resumes = match (msgs.first(), info.oldest_retained) {
            (Some(first), _) if first.offset > sub.upto + 1 => Some(first.offset - 1),
            (None, Some(oldest)) if oldest > sub.upto + 1 => Some(oldest - 1),
            (None, None) if info.latest_offset > sub.upto => Some(info.latest_offset),
            _ => None,
        };
        if let Some(resume) = resumes {
            sub.upto = resume;
            self.send(&ServerMessage::Subscribed(Subscribed {
                channel: channel.clone(),
                epoch: info.epoch.clone(),
                offset: info.latest_offset,
                recovered: false,
                replayed: info.latest_offset.saturating_sub(resume),
            }));
        }
        for msg in &msgs {
            if msg.offset <= sub.upto {
                continue;
            }
            sub.upto = msg.offset;
            self.out.push_back(Output::Text(encode_message(msg)));
            crate::metrics::delivered(1);
        }
        self.subs.insert(channel.clone(), sub);
        if msgs.len() >= REPLAY_PAGE {
            return self.next_page();
        }
        self.out.push_back(Output::Hub(HubOp::TryGoLive {
            channel,
            generation: sub.generation,
            upto: sub.upto,
            epoch: sub.epoch,
        }));
    }

    pub(super) fn went_live(&mut self, channel: &str, generation: u64, answer: GoLive) {
        let Some(sub) = self
            .subs
            .get_mut(channel)
            .filter(|s| s.generation == generation && !s.live)
        else {
            return;
        };
        match answer {
            GoLive::Live => sub.live = true,
            // The hub moved on (or a purge happened) while the page was read: read on.
            GoLive::Behind(_) => return self.next_page(),
            GoLive::Gone => {
                self.subs.remove(channel);
            }
        }
        if let Some(catchup) = self.catchup.as_mut()
            && catchup.queue.front().is_some_and(|c| c == channel)
        {
            catchup.queue.pop_front();
        }
        self.next_page();
    }

    /// A frame the hub queued: written only if its subscription is still the current one.
    pub(super) fn deliver(&mut self, delivery: Delivery) {
        let Some(sub) = self
            .subs
            .get_mut(&*delivery.channel)
            .filter(|s| s.generation == delivery.generation)
        else {
            return;
        };
        match delivery.kind {
            DeliveryKind::Message(offset) => {
                if !sub.live || offset <= sub.upto {
                    return;
                }
                sub.upto = offset;
                self.out.push_back(Output::Text(delivery.frame));
            }
            DeliveryKind::Purged(tag) => {
                if sub.epoch == tag {
                    // The replay already met the new epoch and told the client.
                    return;
                }
                sub.epoch = tag;
                sub.upto = 0;
                let replaying = !sub.live;
                self.out.push_back(Output::Text(delivery.frame));
                if replaying {
                    // Restart the replay on the new epoch; a page being read is abandoned.
                    if let Some(catchup) = self.catchup.as_mut()
                        && catchup
                            .queue
                            .front()
                            .is_some_and(|c| **c == *delivery.channel)
                    {
                        catchup.page = None;
                    }
                    self.next_page();
                }
            }
        }
    }

    pub(super) fn unsubscribe(&mut self, channel: String) {
        self.end_subscription(&channel);
        self.send(&ServerMessage::Unsubscribed(Unsubscribed { channel }));
    }

    /// Forgets a subscription (unsubscribe, replace, lost rights, failed replay).
    pub(super) fn end_subscription(&mut self, channel: &str) {
        if self.subs.remove(channel).is_some() {
            self.out.push_back(Output::Hub(HubOp::Unregister {
                channel: channel.to_owned(),
            }));
        }
        if let Some(catchup) = self.catchup.as_mut() {
            let was_front = catchup.queue.front().is_some_and(|c| c == channel);
            catchup.queue.retain(|c| c != channel);
            if was_front {
                // Drop the page being read for it; the next channel's replay starts.
                catchup.page = None;
            }
            self.next_page();
        }
    }

    /// After a refresh: ends the subscriptions the new token no longer allows.
    pub(super) fn drop_forbidden_subscriptions(&mut self) {
        let mut lost: Vec<String> = self
            .subs
            .keys()
            .filter(|c| !self.claims().can_subscribe(c))
            .cloned()
            .collect();
        lost.sort();
        for channel in lost {
            self.end_subscription(&channel);
            let frame = channel_error(
                ErrorCode::Forbidden,
                &channel,
                "the refreshed token no longer allows this channel; subscription ended",
            );
            self.send(&frame);
        }
    }

    pub(super) fn store_error(&self, operation: &str, err: &StoreError) {
        tracing::error!(
            component = "websocket",
            event = "store_error",
            connection_id = %self.connection_id,
            operation,
            error = %err,
        );
    }
}

/// Where a replay starts (the last offset the client already has) and whether the history
/// after `since` is complete (CONTRACT §5.3).
#[must_use]
pub fn replay_start(
    since: Option<u64>,
    client_epoch: Option<&str>,
    epoch: &str,
    latest: u64,
    oldest: Option<u64>,
) -> (u64, bool) {
    let Some(since) = since else {
        return (latest, true);
    };
    // Where a replay of "everything retained" starts.
    let from_oldest = oldest.map_or(latest, |o| o.saturating_sub(1));
    let epoch_changed = client_epoch.is_some_and(|e| e != epoch);
    if epoch_changed || since > latest {
        return (from_oldest, false);
    }
    match oldest {
        // Messages after `since` were trimmed.
        Some(o) if since.saturating_add(1) < o => (from_oldest, false),
        Some(_) => (since, true),
        // Nothing retained: complete only if nothing was published after `since`.
        None => (latest, since == latest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_start_follows_the_contract() {
        // Live only.
        assert_eq!(replay_start(None, None, "e", 10, Some(1)), (10, true));
        // Everything retained.
        assert_eq!(replay_start(Some(0), None, "e", 10, Some(1)), (0, true));
        assert_eq!(
            replay_start(Some(4), Some("e"), "e", 10, Some(1)),
            (4, true)
        );
        // Trimmed.
        assert_eq!(replay_start(Some(0), None, "e", 10, Some(5)), (4, false));
        assert_eq!(replay_start(Some(3), None, "e", 10, Some(5)), (4, false));
        assert_eq!(replay_start(Some(4), None, "e", 10, Some(5)), (4, true));
        // Epoch changed or since beyond latest.
        assert_eq!(
            replay_start(Some(4), Some("old"), "e", 10, Some(1)),
            (0, false)
        );
        assert_eq!(replay_start(Some(40), None, "e", 10, Some(1)), (0, false));
        // Empty channel.
        assert_eq!(replay_start(Some(0), None, "e", 0, None), (0, true));
        assert_eq!(replay_start(Some(3), None, "e", 0, None), (0, false));
    }
}
