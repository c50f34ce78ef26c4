//! How the driver turns the session's events into what the page shows and logs.

use std::time::Duration;

use leptos::prelude::*;
use protocol::ConnectionState;
use resilience::alerts::AlertKind;
use resilience::connection::{Event, Failure, Input, WaitCause};
use resilience::queue::{FailReason, QueueEvent};
use resilience::{AlertEvent, Instant, SessionEvent, SubscriptionEvent};

use super::{Driver, clock, now_ms};
use crate::model::{AlertRow, Level, MessageRow, Quality, QueuedRow, RTT_HISTORY, payload_text};
use crate::storage::{self, keys};
use crate::token;

impl Driver {
    pub(super) fn on_event(&mut self, now: Instant, event: SessionEvent) {
        let model = self.model;
        match event {
            SessionEvent::Connection(ev) => self.on_connection_event(now, ev),
            SessionEvent::Message(d) if crate::calls::is_call_channel(&d.channel) => {
                self.on_call_message(&d.channel, &d.data);
            }
            SessionEvent::Message(d) => {
                model.add_message(MessageRow {
                    text: payload_text(&d.data),
                    channel: d.channel,
                    offset: d.offset,
                    id: d.id,
                    published_ms: d.published_at.unix_millis(),
                });
                self.save_view();
            }
            SessionEvent::Queue(QueueEvent::Acked {
                offset,
                duplicate,
                channel,
                ..
            }) => {
                let how = if duplicate {
                    " (already stored: not stored twice)"
                } else {
                    ""
                };
                model.log(
                    Level::Info,
                    format!("Message stored in {channel} at offset {offset}{how}"),
                );
            }
            SessionEvent::Queue(QueueEvent::Failed { id, reason, .. }) => {
                let why = match reason {
                    FailReason::Refused { code, message } => format!("{} {message}", code.as_str()),
                    FailReason::Expired => "it waited longer than the deduplication window".into(),
                    FailReason::TooLarge => "the server refused it as too large".into(),
                };
                let text = format!("Message {id} failed: {why}");
                model.log(Level::Error, text.clone());
                model.notice.set(Some(text));
            }
            SessionEvent::Queue(QueueEvent::RetryLater { code, .. }) => {
                model.log(
                    Level::Warn,
                    format!(
                        "The server asked to wait before sending more ({})",
                        code.as_str()
                    ),
                );
            }
            SessionEvent::Subscription(ev) => self.on_subscription_event(ev),
            SessionEvent::Alert(ev) => self.on_alert(ev),
            SessionEvent::Quality(_) => {}
            SessionEvent::ServerError(e) => {
                let text = match &e.channel {
                    Some(c) => format!("Server error on {c}: {} {}", e.code.as_str(), e.message),
                    None => format!("Server error: {} {}", e.code.as_str(), e.message),
                };
                if let Some(c) = &e.channel {
                    self.channel_status
                        .insert(c.clone(), format!("Refused: {}", e.code.as_str()));
                    model.notice.set(Some(text.clone()));
                }
                model.log(Level::Warn, text);
            }
            SessionEvent::TokenExpiring { expires_at } => {
                model.log(
                    Level::Info,
                    format!(
                        "The token expires at {}; getting a new one",
                        clock(expires_at.unix_millis() as f64)
                    ),
                );
                self.token_wants.refresh = true;
                self.fetch_token();
            }
            SessionEvent::TokenRefreshed { token_expires_at } => {
                model.log(
                    Level::Info,
                    format!(
                        "Token refreshed; valid until {}",
                        clock(token_expires_at.unix_millis() as f64)
                    ),
                );
            }
            SessionEvent::Undecodable { error } => {
                model.log(
                    Level::Warn,
                    format!("Ignored a frame the client does not understand: {error}"),
                );
            }
            SessionEvent::PersistRequested => {
                storage::set(keys::SESSION, &self.session.persist());
            }
        }
    }

    fn on_connection_event(&mut self, now: Instant, ev: Event) {
        let model = self.model;
        match ev {
            Event::StateChanged { from, to } => {
                model.state.set(to);
                if to != ConnectionState::Connected {
                    model.connection_id.set(None);
                    for status in self.channel_status.values_mut() {
                        *status = "Waiting for the connection".to_owned();
                    }
                }
                if !to.is_trying() {
                    model.next_attempt_ms.set(None);
                    model.wait_cause.set(None);
                    model.attempt.set(0);
                }
                let level = match to {
                    ConnectionState::Failed => Level::Error,
                    ConnectionState::Connected | ConnectionState::Connecting => Level::Info,
                    _ => Level::Warn,
                };
                model.log(
                    level,
                    format!("State {} → {} ({})", from.as_str(), to.as_str(), to.label()),
                );
            }
            Event::AttemptScheduled {
                attempt,
                delay,
                cause,
                ..
            } => {
                model.attempt.set(attempt);
                model
                    .next_attempt_ms
                    .set(Some(now_ms() + delay.as_millis() as f64));
                let cause = match cause {
                    WaitCause::Backoff => "backoff",
                    WaitCause::ServerAdvice => "server advice",
                    WaitCause::Breaker => "circuit breaker open",
                    WaitCause::NetworkOnline => "network back online",
                };
                model.wait_cause.set(Some(cause));
                model.log(
                    Level::Info,
                    format!("Attempt {attempt} in {} ({cause})", seconds(delay)),
                );
            }
            Event::AttemptStarted { attempt } => {
                model.attempt.set(attempt);
                model.next_attempt_ms.set(None);
                model.wait_cause.set(None);
                model.log(Level::Info, format!("Attempt {attempt}: connecting"));
            }
            Event::RetryFailed {
                attempt,
                reason,
                remaining,
                ..
            } => {
                model.log(
                    Level::Warn,
                    format!(
                        "Attempt {attempt} failed: {} ({}); {remaining} left",
                        failure_text(&reason),
                        reason.error_code().as_str()
                    ),
                );
            }
            Event::GaveUp { failures, reason } => {
                model.log(
                    Level::Error,
                    format!(
                        "Gave up after {failures} failed attempts: {}",
                        failure_text(&reason)
                    ),
                );
            }
            Event::Connected {
                attempt,
                connection_id,
                heartbeat,
                ..
            } => {
                model.connection_id.set(Some(connection_id.clone()));
                crate::health_poll::poll_soon(model, self.config.health_url());
                model.log(
                    Level::Info,
                    format!(
                        "Connected on attempt {attempt} as {connection_id} (heartbeat {})",
                        seconds(heartbeat)
                    ),
                );
                for status in self.channel_status.values_mut() {
                    *status = "Resubscribing…".to_owned();
                }
            }
            Event::ConnectionLost {
                reason,
                connected_for,
            } => {
                model.log(
                    Level::Warn,
                    format!(
                        "Connection lost after {}: {}",
                        seconds(connected_for),
                        failure_text(&reason)
                    ),
                );
            }
            Event::TokenNeeded => {
                self.token = None;
                token::forget();
                if token::renewable(&self.config, &self.sub) {
                    model.log(
                        Level::Warn,
                        "The server refused the token; getting a new one",
                    );
                    self.token_wants.renew = true;
                    self.fetch_token();
                } else {
                    model.log(
                        Level::Error,
                        "The server refused the token and no new one can be had",
                    );
                    self.session.handle_input(now, Input::TokenUnavailable);
                }
            }
            Event::Breaker(t) => {
                model.log(Level::Warn, format!("Circuit breaker: {t:?}"));
            }
            Event::Rtt { rtt } => {
                model.rtt.update(|samples| {
                    samples.push_back(rtt.as_secs_f64() * 1000.0);
                    while samples.len() > RTT_HISTORY {
                        samples.pop_front();
                    }
                });
            }
            Event::LatencySpike { rtt, threshold } => {
                model.log(
                    Level::Warn,
                    format!(
                        "Latency spike: {} ms (threshold {} ms)",
                        rtt.as_millis(),
                        threshold.as_millis()
                    ),
                );
            }
        }
    }

    fn on_subscription_event(&mut self, ev: SubscriptionEvent) {
        let model = self.model;
        match ev {
            SubscriptionEvent::Subscribed {
                channel,
                offset,
                replayed,
                ..
            } => {
                let status = if replayed > 0 {
                    format!("Subscribed · caught up {replayed} message(s)")
                } else {
                    "Subscribed".to_owned()
                };
                model.log(
                    Level::Info,
                    format!(
                        "Subscribed to {channel} (latest offset {offset}, {replayed} replayed)"
                    ),
                );
                self.channel_status.insert(channel, status);
            }
            SubscriptionEvent::Reset {
                channel,
                epoch,
                replay_from,
            } => {
                model.log(
                    Level::Warn,
                    format!(
                        "{channel}: history was reset (epoch {epoch}); reloading from offset {replay_from}"
                    ),
                );
                model
                    .messages
                    .update(|m| m.retain(|row| row.channel != channel));
                self.save_view();
            }
            SubscriptionEvent::Gap {
                channel,
                expected,
                got,
            } => {
                model.log(
                    Level::Warn,
                    format!("{channel}: offsets {expected}..{got} missing; asking for them again"),
                );
            }
            SubscriptionEvent::Ended { channel, .. } => {
                model.log(Level::Warn, format!("Subscription to {channel} ended"));
                self.channel_status.remove(&channel);
            }
        }
    }

    fn on_alert(&mut self, ev: AlertEvent) {
        let model = self.model;
        match ev {
            AlertEvent::Begin {
                kind,
                value,
                threshold,
            } => {
                let (title, detail) = alert_words(kind, value, threshold);
                model.log(Level::Warn, format!("Alert: {title} — {detail}"));
                let key = self.next_alert_key;
                self.next_alert_key += 1;
                model.alerts.update(|alerts| {
                    alerts.insert(
                        0,
                        AlertRow {
                            key,
                            title,
                            detail,
                            began_ms: now_ms(),
                            ended_ms: None,
                        },
                    );
                    alerts.truncate(crate::model::ALERTS_KEPT);
                });
            }
            AlertEvent::End { kind } => {
                let (title, _) = alert_words(kind, 0, 0);
                model.log(Level::Info, format!("Alert over: {title}"));
                model.alerts.update(|alerts| {
                    if let Some(row) = alerts
                        .iter_mut()
                        .find(|a| a.title == title && a.ended_ms.is_none())
                    {
                        row.ended_ms = Some(now_ms());
                    }
                });
            }
        }
    }

    /// Copies the session's queue, channels and figures into the model (only what changed).
    pub(super) fn sync_model(&mut self, now: Instant) {
        let queue: Vec<QueuedRow> = self
            .session
            .queue()
            .entries()
            .map(|q| QueuedRow {
                id: q.id.clone(),
                channel: q.channel.clone(),
                text: payload_text(&q.data),
                enqueued_ms: q.enqueued_at.unix_millis(),
                in_flight: q.in_flight,
                sends: q.sends,
            })
            .collect();
        if self.model.queue.with_untracked(|q| *q != queue) {
            self.model.queue.set(queue);
        }
        let channels: Vec<(String, String)> = self
            .session
            .subscriptions()
            .channels()
            .map(|(c, _)| {
                let status = self
                    .channel_status
                    .get(c)
                    .cloned()
                    .unwrap_or_else(|| "Waiting for the connection".to_owned());
                (c.to_owned(), status)
            })
            .collect();
        if self.model.channels.with_untracked(|c| *c != channels) {
            self.model.channels.set(channels);
        }
        self.refresh_quality(now);
    }

    pub(super) fn refresh_quality(&mut self, now: Instant) {
        let q = self.session.quality(now);
        let rtt = self.session.connection().rtt();
        let quality = Quality {
            rtt_ms: q.rtt_ms.or(rtt.last.map(|d| d.as_millis() as u64)),
            rtt_median_ms: q.rtt_median_ms,
            delivery_rate: q.delivery_rate,
            sent: q.sent,
            acked: q.acked,
            failed_messages: q.failed_messages,
            failed_attempts: q.failed_attempts,
            reconnects: q.reconnects,
            reconnection_success_rate: q.reconnection_success_rate,
            downtime_total_ms: q.downtime_total_ms,
            current_downtime_ms: q.current_downtime_ms,
        };
        if self.model.quality.with_untracked(|old| *old != quality) {
            self.model.quality.set(quality);
        }
    }
}

/// A duration in seconds with one decimal, e.g. `4.2 s`.
fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// A failure in words for the log.
fn failure_text(f: &Failure) -> String {
    match f {
        Failure::Closed { code, .. } if code.0 == 1006 => {
            "the connection closed abnormally (server unreachable or dropped)".to_owned()
        }
        other => other.to_string(),
    }
}

/// An alert's title and the measured value against its threshold.
fn alert_words(kind: AlertKind, value: u64, threshold: u64) -> (&'static str, String) {
    match kind {
        AlertKind::HighLatency => ("High latency", format!("{value} ms > {threshold} ms")),
        AlertKind::ReconnectAttempts => (
            "Many reconnection attempts",
            format!("{value} attempts > {threshold}"),
        ),
        AlertKind::FailedMessages => ("Failed messages", format!("{value} failed > {threshold}")),
        AlertKind::Downtime => (
            "Long downtime",
            format!("down {} s > {} s", value / 1000, threshold / 1000),
        ),
    }
}
