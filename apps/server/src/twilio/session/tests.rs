//! Transcript tests of [`CallSession`] on a virtual clock: what the driver is told to do, in
//! order, for a call through its agent's loss and return, a dropped stream's resume, hang-ups
//! and a full hold buffer.

use std::time::{Duration, Instant};

use resilience::{Breaker, BreakerConfig};

use super::*;
use crate::twilio::frames::{Inbound, parse_twilio};

const START: &str = r#"{"event":"start","sequenceNumber":"1","start":{"accountSid":"AC1","streamSid":"MZ1","callSid":"CA1","tracks":["inbound"],"customParameters":{"callToken":"t","who":"x"}},"streamSid":"MZ1"}"#;

fn start_info(text: &str) -> StartInfo {
    match parse_twilio(text) {
        Ok(Inbound::Start(info)) => info,
        other => panic!("not a start: {other:?}"),
    }
}

fn media(seq: u64, ts: u64) -> String {
    // 160 bytes of audio: 20 ms.
    format!(
        r#"{{"event":"media","sequenceNumber":"{seq}","media":{{"track":"inbound","chunk":"{seq}","timestamp":"{ts}","payload":"{}=="}},"streamSid":"MZ1"}}"#,
        "A".repeat(214)
    )
}

/// One line per output, short enough to read as a transcript.
fn transcript(s: &mut CallSession) -> Vec<String> {
    std::iter::from_fn(|| s.poll_output())
        .map(|o| match o {
            Output::ToTwilio(t) => format!("twilio {t}"),
            Output::ToAgent(t) => {
                let v: serde_json::Value = serde_json::from_str(&t).expect("JSON to the agent");
                let mut line = format!("agent {}", v["event"].as_str().unwrap_or("?"));
                if let Some(n) = v["sequenceNumber"].as_str() {
                    line.push_str(&format!(" #{n}"));
                }
                if v["start"]["customParameters"]["tetherResumed"] == "true" {
                    line.push_str(" resumed");
                }
                if let Some(sid) = v["start"]["streamSid"].as_str() {
                    line.push_str(&format!(" {sid}"));
                }
                line
            }
            Output::Event(CallEvent::Stats(st)) => format!(
                "stats in={} out={} gaps={} buffered={} dropped={}",
                st.frames_in, st.frames_out, st.gaps, st.buffered_ms, st.dropped_frames
            ),
            other => format!("{other:?}"),
        })
        .collect()
}

fn breaker() -> Breaker {
    Breaker::new(BreakerConfig::default())
}

#[test]
fn a_call_end_to_end_then_stop() {
    let t0 = Instant::now();
    let mut b = breaker();
    let mut s = CallSession::new(Duration::from_millis(2000), 1);
    s.handle_stream_started(t0, start_info(START), START, false, &mut b);
    assert_eq!(transcript(&mut s), ["Event(Started)", "OpenAgent"]);
    // Audio before the agent is up is held, not lost.
    s.handle_twilio_text(t0, &media(2, 52));
    assert!(transcript(&mut s).is_empty());
    s.handle_agent_opened(t0 + Duration::from_millis(5), &mut b);
    assert_eq!(
        transcript(&mut s),
        ["agent connected", "agent start #1 MZ1", "agent media #2"]
    );
    s.handle_twilio_text(t0 + Duration::from_millis(20), &media(3, 72));
    s.handle_agent_text(r#"{"event":"media","streamSid":"wrong","media":{"payload":"AAAA"}}"#);
    s.handle_agent_text(r#"{"event":"session.update"}"#);
    assert_eq!(
        transcript(&mut s),
        [
            "agent media #3",
            r#"twilio {"event":"media","media":{"payload":"AAAA"},"streamSid":"MZ1"}"#
        ]
    );
    s.handle_timeout(t0 + STATS_EVERY, &mut b);
    assert_eq!(
        transcript(&mut s),
        ["stats in=4 out=1 gaps=0 buffered=0 dropped=0"]
    );
    s.handle_twilio_text(
        t0 + Duration::from_secs(2),
        r#"{"event":"stop","sequenceNumber":"9","stop":{}}"#,
    );
    assert_eq!(
        transcript(&mut s),
        [
            "agent stop #9",
            "PersistEnded(Stop)",
            "CloseAgent",
            "stats in=5 out=1 gaps=0 buffered=0 dropped=0",
            "Event(Ended(Stop))"
        ]
    );
    assert!(s.is_ended());
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn agent_lost_and_restored_gets_connected_start_resumed_then_held_audio() {
    let t0 = Instant::now();
    let mut b = breaker();
    let mut s = CallSession::new(Duration::from_millis(2000), 2);
    s.handle_stream_started(t0, start_info(START), START, false, &mut b);
    s.handle_agent_opened(t0, &mut b);
    transcript(&mut s);
    s.handle_agent_closed(t0 + Duration::from_millis(100), 1006, &mut b);
    assert_eq!(transcript(&mut s), ["Event(AgentLost)"]);
    for i in 0..3 {
        s.handle_twilio_text(
            t0 + Duration::from_millis(120 + 20 * i),
            &media(2 + i, 20 * i),
        );
    }
    assert!(
        transcript(&mut s).is_empty(),
        "held while the agent is away"
    );
    // The retry comes after the backoff; a failed attempt backs off further.
    let retry = s.poll_timeout().expect("a retry is due");
    assert!(retry <= t0 + Duration::from_millis(100 + 250));
    s.handle_timeout(retry, &mut b);
    assert_eq!(transcript(&mut s), ["OpenAgent"]);
    s.handle_agent_failed(retry, &mut b);
    let retry2 = s.poll_timeout().expect("another retry");
    s.handle_timeout(retry2, &mut b);
    assert_eq!(transcript(&mut s), ["OpenAgent"]);
    s.handle_agent_opened(retry2, &mut b);
    assert_eq!(
        transcript(&mut s),
        [
            "Event(AgentRestored)",
            "agent connected",
            "agent start #1 resumed MZ1",
            "agent media #2",
            "agent media #3",
            "agent media #4"
        ]
    );
}

#[test]
fn the_hold_buffer_drops_the_oldest_and_counts() {
    let t0 = Instant::now();
    let mut b = breaker();
    // 100 ms of buffer: five 20 ms frames.
    let mut s = CallSession::new(Duration::from_millis(100), 3);
    s.handle_stream_started(t0, start_info(START), START, false, &mut b);
    transcript(&mut s);
    for i in 0..8 {
        s.handle_twilio_text(t0, &media(2 + i, 20 * i));
    }
    s.handle_timeout(t0 + STATS_EVERY, &mut b);
    let lines = transcript(&mut s);
    assert!(
        lines.contains(&"stats in=10 out=0 gaps=0 buffered=100 dropped=3".to_owned()),
        "{lines:?}"
    );
    s.handle_agent_opened(t0 + STATS_EVERY, &mut b);
    let lines = transcript(&mut s);
    assert_eq!(
        lines,
        [
            "agent connected",
            "agent start #1 MZ1",
            "agent media #5",
            "agent media #6",
            "agent media #7",
            "agent media #8",
            "agent media #9"
        ]
    );
}

#[test]
fn a_dropped_stream_resumes_with_the_link_kept() {
    let t0 = Instant::now();
    let mut b = breaker();
    let mut s = CallSession::new(Duration::from_millis(2000), 4);
    s.handle_stream_started(t0, start_info(START), START, false, &mut b);
    s.handle_agent_opened(t0, &mut b);
    transcript(&mut s);
    s.handle_twilio_lost(t0 + Duration::from_secs(1));
    assert_eq!(
        transcript(&mut s),
        ["PersistDropped", "Event(StreamDropped)"]
    );
    // Agent audio with no stream goes nowhere.
    s.handle_agent_text(r#"{"event":"media","media":{"payload":"AAAA"}}"#);
    assert!(transcript(&mut s).is_empty());
    let second = START.replace("MZ1", "MZ2");
    s.handle_stream_started(
        t0 + Duration::from_secs(2),
        start_info(&second),
        &second,
        true,
        &mut b,
    );
    assert_eq!(
        transcript(&mut s),
        [
            r#"Event(StreamResumed { stream_sid: "MZ2" })"#,
            "agent start #1 resumed MZ2"
        ]
    );
    s.handle_agent_text(r#"{"event":"mark","mark":{"name":"m1"}}"#);
    assert_eq!(
        transcript(&mut s),
        [r#"twilio {"event":"mark","mark":{"name":"m1"},"streamSid":"MZ2"}"#]
    );
}

#[test]
fn no_resume_in_time_ends_the_call() {
    let t0 = Instant::now();
    let mut b = breaker();
    let mut s = CallSession::new(Duration::from_millis(2000), 5);
    s.handle_stream_started(t0, start_info(START), START, false, &mut b);
    s.handle_agent_opened(t0, &mut b);
    s.handle_twilio_lost(t0);
    transcript(&mut s);
    s.handle_timeout(t0 + RESUME_WAIT, &mut b);
    let lines = transcript(&mut s);
    assert!(
        lines.iter().any(|l| l == "PersistEnded(StreamLost)"),
        "{lines:?}"
    );
    assert_eq!(
        lines.last().map(String::as_str),
        Some("Event(Ended(StreamLost))")
    );
    assert!(s.is_ended());
}

#[test]
fn agent_close_1000_hangs_up_and_closes_twilio() {
    let t0 = Instant::now();
    let mut b = breaker();
    let mut s = CallSession::new(Duration::from_millis(2000), 6);
    s.handle_stream_started(t0, start_info(START), START, false, &mut b);
    s.handle_agent_opened(t0, &mut b);
    transcript(&mut s);
    s.handle_agent_closed(t0, 1000, &mut b);
    let lines = transcript(&mut s);
    assert_eq!(lines[..2], ["PersistEnded(AgentHangup)", "CloseTwilio"]);
    assert_eq!(
        lines.last().map(String::as_str),
        Some("Event(Ended(AgentHangup))")
    );
}

#[test]
fn a_resumed_stream_after_restart_primes_a_new_agent_as_resumed() {
    let t0 = Instant::now();
    let mut b = breaker();
    let mut s = CallSession::new(Duration::from_millis(2000), 7);
    let second = START.replace("MZ1", "MZ3");
    s.handle_stream_started(t0, start_info(&second), &second, true, &mut b);
    assert_eq!(
        transcript(&mut s),
        [r#"Event(StreamResumed { stream_sid: "MZ3" })"#, "OpenAgent"]
    );
    s.handle_agent_opened(t0, &mut b);
    assert_eq!(
        transcript(&mut s),
        ["agent connected", "agent start #1 resumed MZ3"]
    );
}

#[test]
fn an_agent_that_never_comes_ends_the_call_when_the_budget_is_spent() {
    let mut now = Instant::now();
    let mut b = Breaker::new(BreakerConfig {
        threshold: 1000,
        ..BreakerConfig::default()
    });
    let mut s = CallSession::new(Duration::from_millis(2000), 8);
    s.handle_stream_started(now, start_info(START), START, false, &mut b);
    let mut opens = 0;
    for _ in 0..1000 {
        let lines = transcript(&mut s);
        if lines.iter().any(|l| l == "Event(Ended(AgentUnavailable))") {
            break;
        }
        if lines.iter().any(|l| l == "OpenAgent") {
            opens += 1;
            s.handle_agent_failed(now, &mut b);
        }
        if let Some(t) = s.poll_timeout() {
            now = t;
            s.handle_timeout(now, &mut b);
        }
    }
    assert_eq!(opens, agent_backoff().max_attempts);
    assert!(s.is_ended());
}
