//! [`CallSession`]: the sans-IO machine of one call (CONTRACT §10.3–10.4), across every media
//! stream the call has and every agent link it needs.
//!
//! It decides; [`super::call`] drives it over the sockets. Inputs are `handle_*` calls with
//! `now`; outputs are drained with [`CallSession::poll_output`] after each; deadlines are in
//! one timer table keyed by [`Timer`], plus the agent [`Link`]'s retry time, both answered by
//! [`CallSession::poll_timeout`]. The agent link's retries and the breaker shared across calls
//! are the `resilience` machines ([`Link`], [`Breaker`]).
//!
//! What it guarantees:
//! - Twilio's frames reach the agent unchanged, in order. While the agent is not up, inbound
//!   `media` is held, at most `buffer` of audio (oldest dropped, counted); when the link comes
//!   (back) the agent gets `connected`, a `start`, then the held audio.
//! - The agent's `media`/`mark`/`clear` go to Twilio with the current `streamSid`.
//! - A Twilio `stop` ends the call; an agent close 1000 ends it (Twilio stream closed); any
//!   other agent end is a drop, retried. A stream lost without `stop` leaves the call waiting
//!   for its resume up to [`RESUME_WAIT`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use resilience::{BackoffConfig, Breaker, Link, LinkOutput, LinkState};

use super::frames::{self, AgentFrame, Inbound, StartInfo};

/// How long a call whose stream dropped waits for `/twilio/voice/after` to bring a new one.
pub const RESUME_WAIT: Duration = Duration::from_secs(60);
/// How often stats are published.
pub const STATS_EVERY: Duration = Duration::from_secs(1);

/// The agent link's backoff: the client policy's shape, scaled for a live call (a caller
/// cannot wait 30 s), with a budget that ends the call after about half a minute of failures.
#[must_use]
pub fn agent_backoff() -> BackoffConfig {
    BackoffConfig {
        initial: Duration::from_millis(250),
        max: Duration::from_secs(2),
        max_attempts: 20,
    }
}

/// The deadlines of a call, one slot each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// Publish stats.
    Stats = 0,
    /// Give up waiting for a resumed stream.
    ResumeWait = 1,
}

const TIMERS: usize = 2;

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Twilio sent `stop`.
    Stop,
    /// The agent closed its link with 1000.
    AgentHangup,
    /// The agent link could not be (re)established within its budget.
    AgentUnavailable,
    /// The stream dropped and no resume came in time.
    StreamLost,
}

impl EndReason {
    /// The spelling in logs, events and the store.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::AgentHangup => "agent_hangup",
            Self::AgentUnavailable => "agent_unavailable",
            Self::StreamLost => "stream_lost",
        }
    }
}

/// Counters published once a second (CONTRACT §10.5), plus a few extras.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    /// Twilio frames received (all events).
    pub frames_in: u64,
    /// Frames sent to Twilio.
    pub frames_out: u64,
    /// Missing `sequenceNumber`s seen.
    pub gaps: u64,
    /// Inter-arrival jitter against `media.timestamp` (RFC 3550 estimator), ms.
    pub jitter_ms: f64,
    /// Audio held now, ms.
    pub buffered_ms: u64,
    /// Held audio frames dropped because the buffer was full.
    pub dropped_frames: u64,
    /// Frames forwarded to the agent.
    pub to_agent: u64,
}

/// What happened, for logs, channels and metrics.
#[derive(Debug, Clone, PartialEq)]
pub enum CallEvent {
    /// The call's first stream started.
    Started,
    /// A new stream joined the call (`streamSid` is the new one).
    StreamResumed {
        /// The new stream.
        stream_sid: String,
    },
    /// The stream ended without `stop`: waiting for a resume.
    StreamDropped,
    /// The agent link went down mid-call.
    AgentLost,
    /// The agent link is back.
    AgentRestored,
    /// The call is over.
    Ended(EndReason),
    /// Once a second.
    Stats(Stats),
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send this text to Twilio (current stream).
    ToTwilio(String),
    /// Send this text to the agent.
    ToAgent(String),
    /// Open an agent link; report with `handle_agent_opened` / `handle_agent_failed`.
    OpenAgent,
    /// Close the agent link (with 1000) and forget it.
    CloseAgent,
    /// Record the call ended in the store (before the Twilio stream is closed).
    PersistEnded(EndReason),
    /// Record the stream dropped in the store.
    PersistDropped,
    /// Close the Twilio stream (1000): `/twilio/voice/after` then answers `<Hangup/>`.
    CloseTwilio,
    /// Tell the world.
    Event(CallEvent),
}

/// One held inbound frame.
struct Held {
    text: String,
    ms: u64,
}

/// The machine.
pub struct CallSession {
    link: Link,
    stream: Option<StartInfo>,
    /// Whether `stream`'s first start was the call's very first (forward it unchanged).
    first_stream: bool,
    /// Whether the agent has had `connected`+`start` for the current stream.
    agent_primed: bool,
    held: VecDeque<Held>,
    buffer_ms: u64,
    stats: Stats,
    last_seq: Option<u64>,
    /// (arrival, media timestamp) of the previous `media`, for jitter.
    last_media: Option<(Instant, u64)>,
    timers: [Option<Instant>; TIMERS],
    outputs: VecDeque<Output>,
    ended: bool,
    /// Twilio's own `start` text of the call's first stream, forwarded unchanged on the first
    /// link-up.
    pending_original: Option<String>,
    /// Whether the agent link was up before (a later up is a restore).
    agent_was_up: bool,
}

impl CallSession {
    /// A call that holds at most `buffer` of audio while its agent is away; `seed` makes its
    /// retry jitter reproducible.
    #[must_use]
    pub fn new(buffer: Duration, seed: u64) -> Self {
        Self {
            link: Link::new(agent_backoff(), seed),
            stream: None,
            first_stream: true,
            agent_primed: false,
            held: VecDeque::new(),
            buffer_ms: u64::try_from(buffer.as_millis()).unwrap_or(u64::MAX),
            stats: Stats::default(),
            last_seq: None,
            last_media: None,
            timers: [None; TIMERS],
            outputs: VecDeque::new(),
            ended: false,
            pending_original: None,
            agent_was_up: false,
        }
    }

    /// Whether the call is over (the driver stops after draining the outputs).
    #[must_use]
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// The current counters.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The agent link's state.
    #[must_use]
    pub fn link_state(&self) -> LinkState {
        self.link.state()
    }

    /// The current stream's `streamSid`.
    #[must_use]
    pub fn stream_sid(&self) -> Option<&str> {
        self.stream.as_ref().map(|s| s.stream_sid.as_str())
    }

    /// A stream (whose token the driver checked) started: `start_text` is Twilio's frame.
    /// `resumed` is true for a stream that re-establishes a dropped one (also after a restart).
    pub fn handle_stream_started(
        &mut self,
        now: Instant,
        start: StartInfo,
        start_text: &str,
        resumed: bool,
        breaker: &mut Breaker,
    ) {
        if self.ended {
            return;
        }
        self.timers[Timer::ResumeWait as usize] = None;
        self.stats.frames_in += 2;
        self.last_seq = Some(1);
        self.last_media = None;
        let first = self.stream.is_none() && !resumed && self.first_stream;
        let stream_sid = start.stream_sid.clone();
        self.stream = Some(start);
        if first {
            self.outputs.push_back(Output::Event(CallEvent::Started));
            self.timers[Timer::Stats as usize] = Some(now + STATS_EVERY);
        } else {
            self.first_stream = false;
            self.outputs
                .push_back(Output::Event(CallEvent::StreamResumed { stream_sid }));
            self.timers[Timer::Stats as usize].get_or_insert(now + STATS_EVERY);
        }
        match self.link.state() {
            LinkState::Up => {
                // The agent keeps its link and learns the new stream.
                let info = self.stream.as_ref().expect("set above");
                self.outputs
                    .push_back(Output::ToAgent(frames::resumed_start(info)));
                self.agent_primed = true;
            }
            LinkState::Idle => {
                self.pending_original = first.then(|| start_text.to_owned());
                self.link.start(now, breaker);
                self.drain_link(now, breaker);
            }
            _ => self.agent_primed = false,
        }
    }

    /// A text frame from Twilio on the current stream.
    pub fn handle_twilio_text(&mut self, now: Instant, text: &str) {
        if self.ended || self.stream.is_none() {
            return;
        }
        self.stats.frames_in += 1;
        let parsed = frames::parse_twilio(text);
        let seq = match &parsed {
            Ok(Inbound::Media { seq, .. } | Inbound::Other { seq }) => *seq,
            _ => None,
        };
        if let Some(seq) = seq {
            if let Some(last) = self.last_seq
                && seq > last + 1
            {
                self.stats.gaps += seq - last - 1;
            }
            self.last_seq = Some(seq);
        }
        match parsed {
            Ok(Inbound::Media {
                timestamp,
                audio_bytes,
                ..
            }) => {
                if let Some(ts) = timestamp {
                    self.jitter(now, ts);
                }
                let ms = (audio_bytes as u64).div_ceil(8).max(1);
                self.send_or_hold(text, ms);
            }
            Ok(Inbound::Stop) => {
                if self.agent_primed {
                    self.stats.to_agent += 1;
                    self.outputs.push_back(Output::ToAgent(text.to_owned()));
                }
                self.end(EndReason::Stop, false);
            }
            // dtmf, mark, unknown events and garbage after start: forwarded as Twilio sent
            // them when the agent is there (an agent may know events Tether does not).
            _ => {
                if self.agent_primed {
                    self.stats.to_agent += 1;
                    self.outputs.push_back(Output::ToAgent(text.to_owned()));
                }
            }
        }
    }

    /// The Twilio stream ended without `stop` (abnormal close, error, drain).
    pub fn handle_twilio_lost(&mut self, now: Instant) {
        if self.ended || self.stream.is_none() {
            return;
        }
        self.stream = None;
        self.first_stream = false;
        self.timers[Timer::ResumeWait as usize] = Some(now + RESUME_WAIT);
        self.outputs.push_back(Output::PersistDropped);
        self.outputs
            .push_back(Output::Event(CallEvent::StreamDropped));
    }

    /// The agent link attempt succeeded.
    pub fn handle_agent_opened(&mut self, now: Instant, breaker: &mut Breaker) {
        self.link.handle_opened(now, breaker);
        self.drain_link(now, breaker);
    }

    /// The agent link attempt failed.
    pub fn handle_agent_failed(&mut self, now: Instant, breaker: &mut Breaker) {
        self.link.handle_failed(now, breaker);
        self.drain_link(now, breaker);
    }

    /// The open agent link closed with `code` (1006 without one).
    pub fn handle_agent_closed(&mut self, now: Instant, code: u16, breaker: &mut Breaker) {
        self.link.handle_closed(now, code, breaker);
        self.drain_link(now, breaker);
    }

    /// A text frame from the agent.
    pub fn handle_agent_text(&mut self, text: &str) {
        if self.ended {
            return;
        }
        if let (AgentFrame::ToTwilio(frame), Some(stream)) =
            (frames::parse_agent(text), self.stream.as_ref())
        {
            self.stats.frames_out += 1;
            self.outputs
                .push_back(Output::ToTwilio(frames::with_stream_sid(
                    frame,
                    &stream.stream_sid,
                )));
        }
    }

    /// Call when [`CallSession::poll_timeout`] is reached (early calls are harmless).
    pub fn handle_timeout(&mut self, now: Instant, breaker: &mut Breaker) {
        if self.ended {
            return;
        }
        if self.timers[Timer::Stats as usize].is_some_and(|t| now >= t) {
            self.stats.buffered_ms = self.held_ms();
            self.outputs
                .push_back(Output::Event(CallEvent::Stats(self.stats)));
            self.timers[Timer::Stats as usize] = Some(now + STATS_EVERY);
        }
        if self.timers[Timer::ResumeWait as usize].is_some_and(|t| now >= t) {
            self.timers[Timer::ResumeWait as usize] = None;
            self.end(EndReason::StreamLost, false);
            self.link.close(breaker);
            return;
        }
        self.link.handle_timeout(now, breaker);
        self.drain_link(now, breaker);
    }

    /// The next deadline.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.ended {
            return None;
        }
        self.timers
            .iter()
            .flatten()
            .copied()
            .chain(self.link.poll_timeout())
            .min()
    }

    /// The next thing to do.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The owner gives up the call (Tether shutting down): the link is released, nothing is
    /// persisted as ended, so the call can resume on the next Tether.
    pub fn abandon(&mut self, breaker: &mut Breaker) {
        self.link.close(breaker);
        self.ended = true;
    }

    fn held_ms(&self) -> u64 {
        self.held.iter().map(|h| h.ms).sum()
    }

    fn send_or_hold(&mut self, text: &str, ms: u64) {
        if self.agent_primed {
            self.stats.to_agent += 1;
            self.outputs.push_back(Output::ToAgent(text.to_owned()));
            return;
        }
        self.held.push_back(Held {
            text: text.to_owned(),
            ms,
        });
        let mut total = self.held_ms();
        while total > self.buffer_ms {
            let Some(old) = self.held.pop_front() else {
                break;
            };
            total -= old.ms;
            self.stats.dropped_frames += 1;
        }
    }

    fn jitter(&mut self, now: Instant, ts: u64) {
        if let Some((at, prev_ts)) = self.last_media {
            let arrival = now.saturating_duration_since(at).as_secs_f64() * 1000.0;
            let media = ts as f64 - prev_ts as f64;
            let d = (arrival - media).abs();
            self.stats.jitter_ms += (d - self.stats.jitter_ms) / 16.0;
        }
        self.last_media = Some((now, ts));
    }

    fn end(&mut self, reason: EndReason, close_twilio: bool) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.outputs.push_back(Output::PersistEnded(reason));
        if close_twilio && self.stream.is_some() {
            self.outputs.push_back(Output::CloseTwilio);
        }
        if matches!(self.link.state(), LinkState::Up | LinkState::Connecting) {
            self.outputs.push_back(Output::CloseAgent);
        }
        self.stats.buffered_ms = self.held_ms();
        self.outputs
            .push_back(Output::Event(CallEvent::Stats(self.stats)));
        self.outputs
            .push_back(Output::Event(CallEvent::Ended(reason)));
    }

    fn drain_link(&mut self, _now: Instant, breaker: &mut Breaker) {
        while let Some(out) = self.link.poll_output() {
            match out {
                LinkOutput::Open => self.outputs.push_back(Output::OpenAgent),
                LinkOutput::Up => self.agent_up(),
                LinkOutput::Lost => {
                    self.agent_primed = false;
                    self.outputs.push_back(Output::Event(CallEvent::AgentLost));
                }
                LinkOutput::Hangup => {
                    self.agent_primed = false;
                    self.end(EndReason::AgentHangup, true);
                }
                LinkOutput::GaveUp => {
                    self.agent_primed = false;
                    self.end(EndReason::AgentUnavailable, true);
                    self.link.close(breaker);
                }
            }
        }
    }

    fn agent_up(&mut self) {
        let restored = self.agent_was_up;
        self.agent_was_up = true;
        if restored {
            self.outputs
                .push_back(Output::Event(CallEvent::AgentRestored));
        }
        let Some(stream) = self.stream.as_ref() else {
            // No stream right now (waiting for a resume): the agent learns it on attach.
            self.agent_primed = false;
            return;
        };
        self.outputs.push_back(Output::ToAgent(frames::connected()));
        let start = match self.pending_original.take() {
            Some(original) if !restored => original,
            _ => frames::resumed_start(stream),
        };
        self.outputs.push_back(Output::ToAgent(start));
        self.stats.to_agent += 2;
        for held in std::mem::take(&mut self.held) {
            self.stats.to_agent += 1;
            self.outputs.push_back(Output::ToAgent(held.text));
        }
        self.agent_primed = true;
    }
}

#[cfg(test)]
mod tests;
