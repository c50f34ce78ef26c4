//! The Calls panel's model: the call events Tether publishes on channel `calls` and on
//! `call:{CallSid}` (CONTRACT §10.5) folded into one row per call — its state, agent link,
//! resumes, last stats and its own event log.
//!
//! Plain data and pure functions (no signals, no browser), so it is tested natively with
//! `cargo test -p web`. The same lifecycle message is published on both channels; a row
//! keeps each one once (keyed by event name and time), whichever channel brought it first.

use std::collections::BTreeSet;

use serde_json::Value;

/// The channel listing every call's lifecycle.
pub const CALLS_CHANNEL: &str = "calls";
/// The prefix of a call's own channel (`call:{CallSid}`).
pub const CALL_PREFIX: &str = "call:";
/// Calls kept (ended ones are forgotten first, oldest first).
pub const CALLS_KEPT: usize = 50;
/// Event-log lines kept per call.
pub const EVENTS_KEPT: usize = 100;

/// `call:{sid}`.
pub fn call_channel(sid: &str) -> String {
    format!("{CALL_PREFIX}{sid}")
}

/// Whether `channel` is one the Calls panel reads (`calls` or `call:…`).
pub fn is_call_channel(channel: &str) -> bool {
    channel == CALLS_CHANNEL || channel.starts_with(CALL_PREFIX)
}

/// Where a call stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallState {
    /// Twilio's stream is up.
    Live,
    /// Twilio's stream dropped; Tether waits for the resume.
    StreamDropped,
    /// Over.
    Ended,
}

impl CallState {
    /// The word shown (and the `data-state` value).
    pub fn word(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::StreamDropped => "stream dropped",
            Self::Ended => "ended",
        }
    }

    /// The `data-state` attribute value (no spaces).
    pub fn attr(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::StreamDropped => "stream-dropped",
            Self::Ended => "ended",
        }
    }
}

/// The link from Tether to the user's agent, as the call's events tell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentLink {
    /// Up (assumed from the start: Tether says when it is lost).
    Up,
    /// Lost; Tether is reconnecting and holding the caller's audio.
    Lost,
}

impl AgentLink {
    /// The word shown (and the `data-agent` value).
    pub fn word(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Lost => "lost",
        }
    }
}

/// The last `stats` message of a call.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallStats {
    /// Frames from Twilio.
    pub frames_in: u64,
    /// Frames to Twilio.
    pub frames_out: u64,
    /// Sequence gaps seen on Twilio's stream.
    pub gaps: u64,
    /// Timestamp jitter, ms.
    pub jitter_ms: f64,
    /// Caller audio held for the agent, ms.
    pub buffered_ms: u64,
    /// When Tether measured it, unix ms.
    pub at_ms: i64,
}

/// One line of a call's event log.
#[derive(Clone, Debug, PartialEq)]
pub struct CallEventRow {
    /// A key unique among all calls' lines.
    pub key: u64,
    /// When Tether saw it, unix ms.
    pub at_ms: i64,
    /// The event name as published (`agent_lost`, …).
    pub event: String,
    /// What happened, in words.
    pub text: String,
}

/// One call as the panel shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct CallRow {
    /// The `CallSid`.
    pub sid: String,
    /// Where the call stands.
    pub state: CallState,
    /// The agent link.
    pub agent: AgentLink,
    /// When it started (its `call_started`), unix ms; else its first event seen.
    pub started_ms: i64,
    /// Whether `started_ms` is the real start (a `call_started` was seen).
    pub start_known: bool,
    /// When it ended, unix ms.
    pub ended_ms: Option<i64>,
    /// The duration Tether reported with `call_ended`, ms.
    pub reported_duration_ms: Option<u64>,
    /// Why it ended (`stop`, `agent_hangup`, `resumes_exhausted`, …).
    pub end_reason: Option<String>,
    /// Stream resumes so far.
    pub resumes: u32,
    /// Times the agent link was lost.
    pub agent_losses: u32,
    /// The current `streamSid`, once a message named it.
    pub stream_sid: Option<String>,
    /// The last stats.
    pub stats: Option<CallStats>,
    /// The event log, oldest first (stats are not logged: they are the figures).
    pub events: Vec<CallEventRow>,
    /// When the latest event of any kind was seen, unix ms (orders the rows).
    pub last_ms: i64,
}

impl CallRow {
    fn new(sid: &str, at_ms: i64) -> Self {
        Self {
            sid: sid.to_owned(),
            state: CallState::Live,
            agent: AgentLink::Up,
            started_ms: at_ms,
            start_known: false,
            ended_ms: None,
            reported_duration_ms: None,
            end_reason: None,
            resumes: 0,
            agent_losses: 0,
            stream_sid: None,
            stats: None,
            events: Vec::new(),
            last_ms: at_ms,
        }
    }

    /// How long the call lasted (ended) or has lasted so far at `now_ms`.
    pub fn duration_ms(&self, now_ms: i64) -> u64 {
        if let Some(reported) = self.reported_duration_ms {
            return reported;
        }
        let until = self.ended_ms.unwrap_or(now_ms);
        u64::try_from(until.saturating_sub(self.started_ms)).unwrap_or(0)
    }

    /// Whether the call is still going on.
    pub fn is_live(&self) -> bool {
        self.state != CallState::Ended
    }
}

/// What a message did to the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The call `sid` changed.
    Changed(String),
    /// Already seen (the same lifecycle message from the other channel, or a replay).
    Duplicate,
}

/// Why a message was not folded in (the panel logs it and carries on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallEventError {
    /// Not a JSON object with a string `event`.
    NoEvent,
    /// No `callSid`, and the channel does not name the call either.
    NoCallSid,
    /// `callSid` differs from the call the channel belongs to.
    WrongChannel {
        /// The channel.
        channel: String,
        /// The `callSid` in the message.
        sid: String,
    },
}

impl std::fmt::Display for CallEventError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoEvent => f.write_str("not a call event (no string `event`)"),
            Self::NoCallSid => f.write_str("a call event without `callSid`"),
            Self::WrongChannel { channel, sid } => {
                write!(f, "an event of call {sid:?} on channel {channel:?}")
            }
        }
    }
}

/// Every call the panel knows, newest activity first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Calls {
    rows: Vec<CallRow>,
    next_key: u64,
}

impl Calls {
    /// No calls.
    pub fn new() -> Self {
        Self::default()
    }

    /// The calls, most recently active first.
    pub fn rows(&self) -> &[CallRow] {
        &self.rows
    }

    /// One call.
    pub fn get(&self, sid: &str) -> Option<&CallRow> {
        self.rows.iter().find(|r| r.sid == sid)
    }

    /// How many calls are live.
    pub fn live_count(&self) -> usize {
        self.rows.iter().filter(|r| r.is_live()).count()
    }

    /// The per-call channels the panel should be subscribed to: those of the live calls.
    pub fn wanted_channels(&self) -> BTreeSet<String> {
        self.rows
            .iter()
            .filter(|r| r.is_live())
            .map(|r| call_channel(&r.sid))
            .collect()
    }

    /// Folds one delivered message of `channel` in. `received_ms` stands in for a missing or
    /// unreadable `at`.
    pub fn apply(
        &mut self,
        channel: &str,
        data: &Value,
        received_ms: i64,
    ) -> Result<Applied, CallEventError> {
        let event = data
            .get("event")
            .and_then(Value::as_str)
            .ok_or(CallEventError::NoEvent)?;
        let from_channel = channel.strip_prefix(CALL_PREFIX);
        let sid = match (data.get("callSid").and_then(Value::as_str), from_channel) {
            (Some(sid), Some(ch)) if sid != ch => {
                return Err(CallEventError::WrongChannel {
                    channel: channel.to_owned(),
                    sid: sid.to_owned(),
                });
            }
            (Some(sid), _) | (None, Some(sid)) if !sid.is_empty() => sid,
            _ => return Err(CallEventError::NoCallSid),
        };
        let at_ms = at_ms(data).unwrap_or(received_ms);

        let index = match self.rows.iter().position(|r| r.sid == sid) {
            Some(i) => i,
            None => {
                self.rows.push(CallRow::new(sid, at_ms));
                self.rows.len() - 1
            }
        };
        let row = &mut self.rows[index];
        if event == "stats" {
            if row.stats.as_ref().is_some_and(|s| s.at_ms > at_ms) {
                return Ok(Applied::Duplicate); // a replayed, older figure
            }
            row.stats = Some(stats(data, at_ms));
        } else {
            if row
                .events
                .iter()
                .any(|e| e.event == event && e.at_ms == at_ms)
            {
                return Ok(Applied::Duplicate);
            }
            fold_lifecycle(row, event, data, at_ms);
            row.events.push(CallEventRow {
                key: self.next_key,
                at_ms,
                event: event.to_owned(),
                text: describe(event, data),
            });
            self.next_key += 1;
            if row.events.len() > EVENTS_KEPT {
                let extra = row.events.len() - EVENTS_KEPT;
                row.events.drain(..extra);
            }
        }
        row.last_ms = row.last_ms.max(at_ms);
        let sid = sid.to_owned();
        self.order_and_trim();
        Ok(Applied::Changed(sid))
    }

    /// Live calls first, then ended ones; each group by latest activity, newest first. Beyond
    /// [`CALLS_KEPT`], the oldest ended calls go (then the oldest live ones).
    fn order_and_trim(&mut self) {
        self.rows
            .sort_by_key(|r| (!r.is_live(), std::cmp::Reverse(r.last_ms)));
        while self.rows.len() > CALLS_KEPT {
            self.rows.pop();
        }
    }
}

/// `at` as unix ms: the RFC 3339 text Tether writes, or a number of ms.
fn at_ms(data: &Value) -> Option<i64> {
    match data.get("at")? {
        Value::String(text) => protocol::Timestamp::parse(text)
            .ok()
            .map(|t| t.unix_millis()),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

fn u64_field(data: &Value, name: &str) -> u64 {
    data.get(name).and_then(Value::as_u64).unwrap_or(0)
}

fn stats(data: &Value, at_ms: i64) -> CallStats {
    CallStats {
        frames_in: u64_field(data, "frames_in"),
        frames_out: u64_field(data, "frames_out"),
        gaps: u64_field(data, "gaps"),
        jitter_ms: data.get("jitter_ms").and_then(Value::as_f64).unwrap_or(0.0),
        buffered_ms: u64_field(data, "buffered_ms"),
        at_ms,
    }
}

/// What a lifecycle event does to the row's state.
fn fold_lifecycle(row: &mut CallRow, event: &str, data: &Value, at_ms: i64) {
    if let Some(stream) = data.get("streamSid").and_then(Value::as_str)
        && !stream.is_empty()
    {
        row.stream_sid = Some(stream.to_owned());
    }
    let ended = row.state == CallState::Ended;
    match event {
        "call_started" => {
            row.started_ms = at_ms;
            row.start_known = true;
        }
        "stream_dropped" if !ended => row.state = CallState::StreamDropped,
        "stream_resumed" => {
            let resumes = data
                .get("resumes")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok());
            row.resumes = resumes.unwrap_or(row.resumes + 1).max(row.resumes);
            if !ended {
                row.state = CallState::Live;
            }
        }
        "agent_lost" => {
            row.agent_losses += 1;
            if !ended {
                row.agent = AgentLink::Lost;
            }
        }
        "agent_restored" if !ended => row.agent = AgentLink::Up,
        "call_ended" => {
            row.state = CallState::Ended;
            row.ended_ms = Some(at_ms);
            row.end_reason = data
                .get("reason")
                .and_then(Value::as_str)
                .map(str::to_owned);
            row.reported_duration_ms = data.get("duration_ms").and_then(Value::as_u64);
        }
        _ => {}
    }
}

/// A lifecycle event in words, for the call's log.
fn describe(event: &str, data: &Value) -> String {
    let text = |name: &str| data.get(name).and_then(Value::as_str).unwrap_or("");
    match event {
        "call_started" => "Call started".to_owned(),
        "stream_dropped" => "Twilio's stream dropped; waiting for it to resume".to_owned(),
        "stream_resumed" => format!(
            "Stream resumed as {} (resume {})",
            text("streamSid"),
            u64_field(data, "resumes")
        ),
        "agent_lost" => "Agent link lost; holding the caller's audio".to_owned(),
        "agent_restored" => "Agent link restored".to_owned(),
        "call_ended" => {
            let reason = match text("reason") {
                "" => "no reason given",
                r => r,
            };
            match data.get("duration_ms").and_then(Value::as_u64) {
                Some(ms) => format!("Call ended ({reason}) after {}", duration_text(ms)),
                None => format!("Call ended ({reason})"),
            }
        }
        "stream_status" => {
            let error = text("streamError");
            if error.is_empty() {
                format!("Twilio reports {}", text("streamEvent"))
            } else {
                format!("Twilio reports {}: {error}", text("streamEvent"))
            }
        }
        other => format!("{other}: {data}"),
    }
}

/// A duration in ms as `850 ms`, `12.3 s` or `3 min 4 s` (calls are short: tenths matter).
pub fn duration_text(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        let s = ms / 1000;
        format!("{} min {} s", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests;
