//! What a played call sent and heard ([`Tally`]), its [`CallReport`], and the [`Summary`] of
//! many calls that `tether simulate-call` and the benchmark print.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::StreamExt as _;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use super::Socket;

/// What happened to one call.
#[derive(Debug, Clone, PartialEq)]
pub struct CallReport {
    /// The `CallSid` played.
    pub call_sid: String,
    /// Media frames sent.
    pub frames_sent: u64,
    /// Distinct frames that came back.
    pub echoed: u64,
    /// Frames sent but never echoed, below the highest echoed index.
    pub gaps: u64,
    /// Marks the agent answered.
    pub marks: u64,
    /// Streams re-established after a drop.
    pub resumes: u32,
    /// Median round trip of the echoed frames.
    pub rtt_p50: Duration,
    /// Largest round trip.
    pub rtt_max: Duration,
    /// The `streamSid`s the echoes carried (one per stream when Tether puts the current one in).
    pub stream_sids: BTreeSet<String>,
    /// What `/twilio/voice/after` answered at the end: `hangup` or `connect`.
    pub after: &'static str,
    /// Every echoed frame's round trip, shortest first.
    pub rtts: Vec<Duration>,
}

impl std::fmt::Display for CallReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "call {} frames_sent={} echoed={} gaps={} marks={} resumes={} rtt_p50_ms={:.1} rtt_max_ms={:.1} after={}",
            self.call_sid,
            self.frames_sent,
            self.echoed,
            self.gaps,
            self.marks,
            self.resumes,
            self.rtt_p50.as_secs_f64() * 1e3,
            self.rtt_max.as_secs_f64() * 1e3,
            self.after
        )
    }
}

/// Many calls together: every frame's round trip in one distribution.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Calls played.
    pub calls: usize,
    /// Media frames sent, all calls.
    pub frames_sent: u64,
    /// Frames echoed, all calls.
    pub echoed: u64,
    /// Round trip percentiles over every echoed frame.
    pub rtt_p50: Duration,
    /// 99th percentile.
    pub rtt_p99: Duration,
    /// Largest.
    pub rtt_max: Duration,
}

impl Summary {
    /// Folds `reports` into one line's figures.
    #[must_use]
    pub fn of(reports: &[CallReport]) -> Self {
        let mut all: Vec<Duration> = reports
            .iter()
            .flat_map(|r| r.rtts.iter().copied())
            .collect();
        all.sort_unstable();
        let at = |q: f64| {
            let i = ((all.len() as f64 * q).ceil() as usize).saturating_sub(1);
            all.get(i).copied().unwrap_or_default()
        };
        Self {
            calls: reports.len(),
            frames_sent: reports.iter().map(|r| r.frames_sent).sum(),
            echoed: reports.iter().map(|r| r.echoed).sum(),
            rtt_p50: at(0.50),
            rtt_p99: at(0.99),
            rtt_max: all.last().copied().unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(
            f,
            "all calls={} frames_sent={} echoed={} lost={} rtt_p50_ms={:.2} rtt_p99_ms={:.2} rtt_max_ms={:.2}",
            self.calls,
            self.frames_sent,
            self.echoed,
            self.frames_sent.saturating_sub(self.echoed),
            ms(self.rtt_p50),
            ms(self.rtt_p99),
            ms(self.rtt_max)
        )
    }
}

/// What was sent and heard, across the call's streams.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) sent: u64,
    pub(super) seq: u64,
    pub(super) sent_at: HashMap<u64, Instant>,
    pub(super) echoed: BTreeSet<u64>,
    pub(super) rtts: Vec<Duration>,
    pub(super) marks: u64,
    pub(super) stream_sids: BTreeSet<String>,
}

impl Tally {
    pub(super) fn heard(&mut self, text: &str) {
        let Ok(frame) = serde_json::from_str::<Value>(text) else {
            return;
        };
        if let Some(sid) = frame["streamSid"].as_str() {
            self.stream_sids.insert(sid.to_owned());
        }
        match frame["event"].as_str() {
            Some("mark") => self.marks += 1,
            Some("media") => {
                let Some(audio) = frame["media"]["payload"]
                    .as_str()
                    .and_then(|p| base64::engine::general_purpose::STANDARD.decode(p).ok())
                else {
                    return;
                };
                let Some(head) = audio.get(..4) else { return };
                let index = u64::from(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
                if let Some(at) = self.sent_at.get(&index)
                    && self.echoed.insert(index)
                {
                    self.rtts.push(at.elapsed());
                }
            }
            _ => {}
        }
    }

    /// Reads what arrives for at most `tail`; with `until_echoed`, only until every frame
    /// sent came back.
    pub(super) async fn drain(&mut self, socket: &mut Socket, tail: Duration, until_echoed: bool) {
        let until = tokio::time::Instant::now() + tail;
        while !(until_echoed && self.echoed.len() as u64 == self.sent)
            && let Ok(Some(Ok(m))) = tokio::time::timeout_at(until, socket.next()).await
        {
            if let Message::Text(t) = m {
                self.heard(t.as_str());
            }
        }
    }

    pub(super) fn report(
        mut self,
        call_sid: &str,
        resumes: u32,
        after: &'static str,
    ) -> CallReport {
        self.rtts.sort_unstable();
        let top = self.echoed.last().copied();
        let gaps = top.map_or(0, |top| top + 1 - self.echoed.len() as u64);
        CallReport {
            call_sid: call_sid.to_owned(),
            frames_sent: self.sent,
            echoed: self.echoed.len() as u64,
            gaps,
            marks: self.marks,
            resumes,
            rtt_p50: self
                .rtts
                .get(self.rtts.len() / 2)
                .copied()
                .unwrap_or_default(),
            rtt_max: self.rtts.last().copied().unwrap_or_default(),
            stream_sids: self.stream_sids,
            after,
            rtts: self.rtts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::media_frame;
    use super::*;

    #[test]
    fn echoes_count_once_and_gaps_are_holes_below_the_top() {
        let mut t = Tally::default();
        for i in 0..5 {
            t.sent_at.insert(i, Instant::now());
        }
        t.sent = 5;
        for i in [0, 1, 3, 3] {
            t.heard(&media_frame("MZ1", i + 1, i).to_string());
        }
        t.heard(r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"m"}}"#);
        t.heard("not json");
        t.heard(r#"{"event":"media","media":{"payload":"AA=="}}"#);
        let r = t.report("CA1", 0, "hangup");
        assert_eq!((r.echoed, r.gaps, r.marks, r.rtts.len()), (3, 1, 1, 3));
        assert_eq!(r.stream_sids.into_iter().collect::<Vec<_>>(), ["MZ1"]);
    }

    #[test]
    fn the_summary_pools_every_frame() {
        let ms = Duration::from_millis;
        let report = |rtts: Vec<Duration>| CallReport {
            call_sid: "CA".into(),
            frames_sent: rtts.len() as u64 + 1,
            echoed: rtts.len() as u64,
            gaps: 0,
            marks: 0,
            resumes: 0,
            rtt_p50: Duration::ZERO,
            rtt_max: Duration::ZERO,
            stream_sids: BTreeSet::new(),
            after: "hangup",
            rtts,
        };
        let s = Summary::of(&[report((1..=99).map(ms).collect()), report(vec![ms(500)])]);
        assert_eq!((s.calls, s.frames_sent, s.echoed), (2, 102, 100));
        assert_eq!((s.rtt_p50, s.rtt_p99, s.rtt_max), (ms(50), ms(99), ms(500)));
        assert!(s.to_string().contains("lost=2"), "{s}");
        assert_eq!(Summary::of(&[]).rtt_p99, Duration::ZERO);
    }
}
