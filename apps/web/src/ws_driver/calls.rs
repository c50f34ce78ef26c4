//! The driver's side of the Calls panel: the subscriptions it needs and the call messages it
//! folds into [`crate::calls::Calls`].
//!
//! Channel `calls` is read from its start (`since: 0`) on every page load, so the calls that
//! are live when the page opens show up with their history; each live call's own channel
//! (`call:{CallSid}`, with the stats) is subscribed while the call is live and dropped once it
//! has ended. These subscriptions are ordinary ones of the one session: same socket, same
//! resubscribe-with-`since` after a reconnect, same rights check on the server.

use leptos::prelude::*;
use resilience::Instant;
use serde_json::Value;

use super::{Driver, now_ms};
use crate::calls::{CALL_PREFIX, CALLS_CHANNEL, Calls, is_call_channel};
use crate::model::Level;

/// The status text of a subscription the connection has not confirmed yet.
const WAITING: &str = "Waiting for the connection";

impl Driver {
    /// At start: forgets the call subscriptions an earlier page left in the saved session and
    /// reads `calls` again from its first message.
    pub(super) fn start_calls(&mut self) {
        let now = Instant::now();
        let stale: Vec<String> = self
            .session
            .subscriptions()
            .channels()
            .map(|(c, _)| c.to_owned())
            .filter(|c| is_call_channel(c))
            .collect();
        for channel in stale {
            self.session.unsubscribe(now, &channel);
            self.channel_status.remove(&channel);
        }
        match self.session.subscribe(now, CALLS_CHANNEL, Some(0)) {
            Ok(()) => {
                self.channel_status
                    .insert(CALLS_CHANNEL.to_owned(), WAITING.to_owned());
            }
            Err(err) => self
                .model
                .log(Level::Warn, format!("Cannot watch the calls: {err}")),
        }
    }

    /// A message of `calls` or `call:…`: folded into the calls, then the per-call
    /// subscriptions follow the live calls.
    pub(super) fn on_call_message(&mut self, channel: &str, data: &Value) {
        let calls = self.model.calls;
        let applied = calls.try_update_untracked(|c| c.apply(channel, data, now_ms() as i64));
        match applied {
            Some(Ok(crate::calls::Applied::Changed(_))) => {
                // Views re-read the calls only when something changed.
                calls.update(|_| {});
                self.follow_live_calls();
            }
            Some(Ok(crate::calls::Applied::Duplicate)) | None => {}
            Some(Err(err)) => self.model.log(
                Level::Warn,
                format!("Ignored a message on {channel}: {err}"),
            ),
        }
    }

    /// Subscribes to the channel of each live call and ends those of calls that ended.
    fn follow_live_calls(&mut self) {
        let now = Instant::now();
        let wanted = self.model.calls.with_untracked(Calls::wanted_channels);
        let held: Vec<String> = self
            .session
            .subscriptions()
            .channels()
            .map(|(c, _)| c.to_owned())
            .filter(|c| c.starts_with(CALL_PREFIX))
            .collect();
        for channel in held.iter().filter(|c| !wanted.contains(*c)) {
            self.session.unsubscribe(now, channel);
            self.channel_status.remove(channel);
        }
        for channel in wanted.iter().filter(|c| !held.contains(*c)) {
            // Live only: the lifecycle so far came on `calls`; the stats start now.
            match self.session.subscribe(now, channel, None) {
                Ok(()) => {
                    self.channel_status
                        .insert(channel.clone(), WAITING.to_owned());
                }
                Err(err) => self.model.log(
                    Level::Warn,
                    format!("Cannot watch the call channel {channel:?}: {err}"),
                ),
            }
        }
    }
}
