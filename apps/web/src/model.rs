//! What the dashboard shows, as reactive signals; the driver writes them, the views read them.
//!
//! Everything here is plain data (no sockets, no closures), so the signals are ordinary
//! `Send + Sync` Leptos signals and `Model` is a `Copy` handle passed to every view.

use std::collections::VecDeque;

use leptos::prelude::*;
use protocol::ConnectionState;
use serde::{Deserialize, Serialize};

use crate::calls::Calls;

/// RTT samples kept for the live chart.
pub const RTT_HISTORY: usize = 60;
/// Messages kept (and persisted) per channel.
pub const MESSAGES_KEPT: usize = 100;
/// Connection log rows kept.
pub const LOG_KEPT: usize = 200;
/// Alert rows kept.
pub const ALERTS_KEPT: usize = 30;

/// One delivered message as the channel view shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessageRow {
    /// The channel.
    pub channel: String,
    /// Its offset in the channel.
    pub offset: u64,
    /// The publisher's id.
    pub id: String,
    /// `data.text` when it is a string, else the JSON.
    pub text: String,
    /// When the server stored it, unix ms.
    pub published_ms: i64,
}

/// One queued publish as the queue panel shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct QueuedRow {
    /// The publish id (kept across resends).
    pub id: String,
    /// The channel.
    pub channel: String,
    /// A short rendering of the payload.
    pub text: String,
    /// When it was published, unix ms.
    pub enqueued_ms: i64,
    /// Sent and awaiting an ack on this connection.
    pub in_flight: bool,
    /// Times sent so far.
    pub sends: u32,
}

/// One alert, open or closed.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertRow {
    /// A unique key for the list.
    pub key: u64,
    /// Human title.
    pub title: &'static str,
    /// The measured value and the threshold, in words.
    pub detail: String,
    /// When it began, unix ms.
    pub began_ms: f64,
    /// When it ended, unix ms (`None` while in force).
    pub ended_ms: Option<f64>,
}

/// How important a log line is (drives its colour and its word).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Routine.
    Info,
    /// Something went wrong but the client copes.
    Warn,
    /// Something an operator should look at.
    Error,
}

impl Level {
    /// The word shown next to the colour.
    pub fn word(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// One connection log line.
#[derive(Clone, Debug, PartialEq)]
pub struct LogRow {
    /// A unique key for the list.
    pub key: u64,
    /// When, unix ms.
    pub at_ms: f64,
    /// Importance.
    pub level: Level,
    /// What happened, in a sentence.
    pub text: String,
}

/// The quality figures shown in the metrics panel.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Quality {
    /// Last RTT, ms.
    pub rtt_ms: Option<u64>,
    /// Median RTT, ms.
    pub rtt_median_ms: Option<u64>,
    /// Acked ÷ sent.
    pub delivery_rate: Option<f64>,
    /// Sent publishes.
    pub sent: u64,
    /// Acked publishes.
    pub acked: u64,
    /// Failed publishes.
    pub failed_messages: u64,
    /// Failed connection attempts.
    pub failed_attempts: u64,
    /// Successful reconnections.
    pub reconnects: u64,
    /// Successful ÷ started attempts while reconnecting.
    pub reconnection_success_rate: Option<f64>,
    /// Total downtime, ms.
    pub downtime_total_ms: u64,
    /// The current outage, ms.
    pub current_downtime_ms: u64,
}

/// The last `/health` answer, or why there is none.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthView {
    /// The report, when one was ever received.
    pub report: Option<health::HealthReport>,
    /// When it was received, unix ms.
    pub received_ms: Option<f64>,
    /// The last poll failed: why.
    pub error: Option<String>,
}

/// Every signal of the dashboard.
#[derive(Clone, Copy)]
pub struct Model {
    /// The connection state (its `label()` is the badge text).
    pub state: RwSignal<ConnectionState>,
    /// The attempt number while trying (1 = first), 0 when not trying.
    pub attempt: RwSignal<u32>,
    /// When the next attempt starts, unix ms.
    pub next_attempt_ms: RwSignal<Option<f64>>,
    /// Why the next attempt waits (backoff, breaker, server advice…).
    pub wait_cause: RwSignal<Option<&'static str>>,
    /// Wall clock, unix ms, ticking once a second for countdowns and ages.
    pub now_ms: RwSignal<f64>,
    /// The server's connection id while connected.
    pub connection_id: RwSignal<Option<String>>,
    /// Whether the browser says it is online.
    pub online: RwSignal<bool>,
    /// Recent RTT samples, ms, oldest first.
    pub rtt: RwSignal<VecDeque<f64>>,
    /// Quality figures.
    pub quality: RwSignal<Quality>,
    /// Alerts, newest first.
    pub alerts: RwSignal<Vec<AlertRow>>,
    /// The server's health.
    pub health: RwSignal<HealthView>,
    /// Subscribed channels and their status text.
    pub channels: RwSignal<Vec<(String, String)>>,
    /// The channel the view shows.
    pub current_channel: RwSignal<Option<String>>,
    /// Delivered messages of every channel, oldest first.
    pub messages: RwSignal<Vec<MessageRow>>,
    /// The outbound queue.
    pub queue: RwSignal<Vec<QueuedRow>>,
    /// A refused publish or subscribe, shown under the composer.
    pub notice: RwSignal<Option<String>>,
    /// The connection log, newest first.
    pub log: RwSignal<VecDeque<LogRow>>,
    /// The publisher identity (`sub`) in use.
    pub sub: RwSignal<String>,
    /// The calls of the Twilio gateway (channels `calls` and `call:{CallSid}`).
    pub calls: RwSignal<Calls>,
    /// The call whose event log the Calls panel shows (`None`: the first row).
    pub selected_call: RwSignal<Option<String>>,
}

impl Model {
    /// A model in its initial state.
    pub fn new() -> Self {
        Self {
            state: RwSignal::new(ConnectionState::Disconnected),
            attempt: RwSignal::new(0),
            next_attempt_ms: RwSignal::new(None),
            wait_cause: RwSignal::new(None),
            now_ms: RwSignal::new(js_sys::Date::now()),
            connection_id: RwSignal::new(None),
            online: RwSignal::new(true),
            rtt: RwSignal::new(VecDeque::new()),
            quality: RwSignal::new(Quality::default()),
            alerts: RwSignal::new(Vec::new()),
            health: RwSignal::new(HealthView::default()),
            channels: RwSignal::new(Vec::new()),
            current_channel: RwSignal::new(None),
            messages: RwSignal::new(Vec::new()),
            queue: RwSignal::new(Vec::new()),
            notice: RwSignal::new(None),
            log: RwSignal::new(VecDeque::new()),
            sub: RwSignal::new(String::new()),
            calls: RwSignal::new(Calls::new()),
            selected_call: RwSignal::new(None),
        }
    }

    /// Appends a connection log line.
    pub fn log(&self, level: Level, text: impl Into<String>) {
        let text = text.into();
        self.log.update(|log| {
            let key = log.front().map_or(0, |row| row.key + 1);
            log.push_front(LogRow {
                key,
                at_ms: js_sys::Date::now(),
                level,
                text,
            });
            log.truncate(LOG_KEPT);
        });
    }

    /// Adds a delivered message (ignoring one already shown), keeping the newest per channel.
    pub fn add_message(&self, row: MessageRow) {
        self.messages.update(|messages| {
            if messages
                .iter()
                .any(|m| m.channel == row.channel && m.offset == row.offset)
            {
                return;
            }
            let channel = row.channel.clone();
            messages.push(row);
            let count = messages.iter().filter(|m| m.channel == channel).count();
            if count > MESSAGES_KEPT {
                let mut extra = count - MESSAGES_KEPT;
                messages.retain(|m| {
                    if extra > 0 && m.channel == channel {
                        extra -= 1;
                        false
                    } else {
                        true
                    }
                });
            }
        });
    }

    /// The sync status line: "N waiting to sync" or "All synced".
    pub fn sync_text(&self) -> String {
        sync_text(self.queue.with(Vec::len))
    }
}

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}

/// The exact sync status wording of issue 5.
pub fn sync_text(waiting: usize) -> String {
    if waiting == 0 {
        "All synced".to_owned()
    } else {
        format!("{waiting} waiting to sync")
    }
}

/// A payload as one line: `data.text` when it is a string, else compact JSON.
pub fn payload_text(data: &serde_json::Value) -> String {
    match data.get("text").and_then(serde_json::Value::as_str) {
        Some(text) => text.to_owned(),
        None => data.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_text_uses_the_issue_wording() {
        assert_eq!(sync_text(0), "All synced");
        assert_eq!(sync_text(1), "1 waiting to sync");
        assert_eq!(sync_text(3), "3 waiting to sync");
    }

    #[test]
    fn payload_text_prefers_the_text_field() {
        assert_eq!(payload_text(&serde_json::json!({"text": "hi"})), "hi");
        assert_eq!(payload_text(&serde_json::json!([1, 2])), "[1,2]");
    }
}
