//! Unit tests of the Calls model: the messages Tether publishes (shapes from
//! `apps/server/src/twilio/events.rs`) folded into rows, duplicates across the two channels,
//! ordering, limits and malformed input.

use serde_json::{Value, json};

use super::*;

const T0: i64 = 1_796_000_000_000;

fn at(ms: i64) -> String {
    protocol::Timestamp::from_unix_millis(ms).to_string()
}

fn life(event: &str, sid: &str, ms: i64) -> Value {
    json!({"event": event, "callSid": sid, "at": at(ms)})
}

fn with(mut v: Value, extra: Value) -> Value {
    if let (Value::Object(a), Value::Object(b)) = (&mut v, extra) {
        a.extend(b);
    }
    v
}

fn stats_msg(sid: &str, ms: i64, frames: u64) -> Value {
    json!({"event": "stats", "callSid": sid, "at": at(ms), "frames_in": frames,
           "frames_out": frames - 1, "gaps": 2, "jitter_ms": 1.25, "buffered_ms": 340,
           "dropped_frames": 0, "to_agent": frames})
}

fn events_of(calls: &Calls, sid: &str) -> Vec<String> {
    calls
        .get(sid)
        .unwrap()
        .events
        .iter()
        .map(|e| e.event.clone())
        .collect()
}

#[test]
fn a_call_with_an_agent_blip_goes_live_lost_restored_ended() {
    let mut calls = Calls::new();
    let sid = "CAsim1";
    let ok = |r| assert_eq!(r, Ok(Applied::Changed(sid.to_owned())));
    ok(calls.apply("calls", &life("call_started", sid, T0), 0));
    let row = calls.get(sid).unwrap();
    assert_eq!((row.state, row.agent), (CallState::Live, AgentLink::Up));
    assert!(row.start_known);
    assert_eq!(row.duration_ms(T0 + 1500), 1500, "live: counted to now");

    ok(calls.apply("calls", &life("agent_lost", sid, T0 + 800), 0));
    let row = calls.get(sid).unwrap();
    assert_eq!(row.agent, AgentLink::Lost);
    assert_eq!(row.agent_losses, 1);
    assert_eq!(
        row.state,
        CallState::Live,
        "the call stays up without its agent"
    );

    ok(calls.apply("calls", &life("agent_restored", sid, T0 + 2900), 0));
    assert_eq!(calls.get(sid).unwrap().agent, AgentLink::Up);

    let ended = with(
        life("call_ended", sid, T0 + 6000),
        json!({"reason": "stop", "duration_ms": 5990}),
    );
    ok(calls.apply("calls", &ended, 0));
    let row = calls.get(sid).unwrap();
    assert_eq!(row.state, CallState::Ended);
    assert_eq!(row.end_reason.as_deref(), Some("stop"));
    assert_eq!(
        row.duration_ms(T0 + 60_000),
        5990,
        "the reported duration wins"
    );
    assert_eq!(
        events_of(&calls, sid),
        ["call_started", "agent_lost", "agent_restored", "call_ended"]
    );
    assert_eq!(
        row.events.last().unwrap().text,
        "Call ended (stop) after 6.0 s"
    );
    assert_eq!(row.agent_losses, 1, "the count survives the recovery");
}

#[test]
fn the_same_lifecycle_message_on_both_channels_is_kept_once() {
    let mut calls = Calls::new();
    let started = life("call_started", "CA1", T0);
    assert!(matches!(
        calls.apply("call:CA1", &started, 0),
        Ok(Applied::Changed(_))
    ));
    assert_eq!(calls.apply("calls", &started, 0), Ok(Applied::Duplicate));
    let lost = life("agent_lost", "CA1", T0 + 10);
    calls.apply("calls", &lost, 0).unwrap();
    assert_eq!(calls.apply("call:CA1", &lost, 0), Ok(Applied::Duplicate));
    assert_eq!(events_of(&calls, "CA1"), ["call_started", "agent_lost"]);
    assert_eq!(
        calls.get("CA1").unwrap().agent_losses,
        1,
        "not counted twice"
    );
}

#[test]
fn stats_keep_the_latest_figures_and_ignore_an_older_replay() {
    let mut calls = Calls::new();
    calls
        .apply("calls", &life("call_started", "CA2", T0), 0)
        .unwrap();
    calls
        .apply("call:CA2", &stats_msg("CA2", T0 + 2000, 100), 0)
        .unwrap();
    let expected = CallStats {
        frames_in: 100,
        frames_out: 99,
        gaps: 2,
        jitter_ms: 1.25,
        buffered_ms: 340,
        at_ms: T0 + 2000,
    };
    assert_eq!(calls.get("CA2").unwrap().stats, Some(expected.clone()));
    assert_eq!(
        calls.apply("call:CA2", &stats_msg("CA2", T0 + 1000, 50), 0),
        Ok(Applied::Duplicate)
    );
    assert_eq!(calls.get("CA2").unwrap().stats, Some(expected));
    assert_eq!(
        events_of(&calls, "CA2"),
        ["call_started"],
        "stats are figures, not log lines"
    );
}

#[test]
fn a_dropped_stream_waits_then_resumes_with_the_new_stream_sid() {
    let mut calls = Calls::new();
    calls
        .apply("calls", &life("call_started", "CA3", T0), 0)
        .unwrap();
    calls
        .apply("calls", &life("stream_dropped", "CA3", T0 + 1000), 0)
        .unwrap();
    assert_eq!(calls.get("CA3").unwrap().state, CallState::StreamDropped);
    let resumed = with(
        life("stream_resumed", "CA3", T0 + 1400),
        json!({"streamSid": "MZ2", "resumes": 1}),
    );
    calls.apply("calls", &resumed, 0).unwrap();
    let row = calls.get("CA3").unwrap();
    assert_eq!(row.state, CallState::Live);
    assert_eq!(row.resumes, 1);
    assert_eq!(row.stream_sid.as_deref(), Some("MZ2"));
    assert_eq!(
        row.events.last().unwrap().text,
        "Stream resumed as MZ2 (resume 1)"
    );
}

#[test]
fn an_ended_call_stays_ended_whatever_arrives_after() {
    let mut calls = Calls::new();
    let ended = with(
        life("call_ended", "CA4", T0 + 100),
        json!({"reason": "resumes_exhausted"}),
    );
    calls.apply("calls", &ended, 0).unwrap();
    calls
        .apply("calls", &life("agent_lost", "CA4", T0 + 200), 0)
        .unwrap();
    calls
        .apply("calls", &life("stream_dropped", "CA4", T0 + 300), 0)
        .unwrap();
    let row = calls.get("CA4").unwrap();
    assert_eq!(row.state, CallState::Ended);
    assert_eq!(row.agent, AgentLink::Up);
    assert!(!row.start_known, "no call_started was seen");
    assert_eq!(
        row.events.first().unwrap().text,
        "Call ended (resumes_exhausted)"
    );
    assert!(calls.wanted_channels().is_empty());
}

#[test]
fn only_live_calls_want_their_channel() {
    let mut calls = Calls::new();
    for sid in ["CAa", "CAb", "CAc"] {
        calls
            .apply("calls", &life("call_started", sid, T0), 0)
            .unwrap();
    }
    calls
        .apply("calls", &life("call_ended", "CAb", T0 + 5), 0)
        .unwrap();
    let wanted: Vec<String> = calls.wanted_channels().into_iter().collect();
    assert_eq!(wanted, ["call:CAa", "call:CAc"]);
    assert_eq!(calls.live_count(), 2);
}

#[test]
fn rows_are_live_first_then_newest_activity_first() {
    let mut calls = Calls::new();
    calls
        .apply("calls", &life("call_started", "CAold", T0), 0)
        .unwrap();
    calls
        .apply("calls", &life("call_started", "CAnew", T0 + 10), 0)
        .unwrap();
    calls
        .apply("calls", &life("call_started", "CAdone", T0 + 20), 0)
        .unwrap();
    calls
        .apply("calls", &life("call_ended", "CAdone", T0 + 30), 0)
        .unwrap();
    let order: Vec<&str> = calls.rows().iter().map(|r| r.sid.as_str()).collect();
    assert_eq!(order, ["CAnew", "CAold", "CAdone"]);
}

#[test]
fn the_oldest_ended_calls_go_first_beyond_the_limit() {
    let mut calls = Calls::new();
    calls
        .apply("calls", &life("call_started", "CAlive", T0), 0)
        .unwrap();
    for i in 0..CALLS_KEPT as i64 {
        let sid = format!("CAend{i}");
        calls
            .apply("calls", &life("call_ended", &sid, T0 + 1 + i), 0)
            .unwrap();
    }
    assert_eq!(calls.rows().len(), CALLS_KEPT);
    assert!(calls.get("CAlive").is_some(), "a live call is kept");
    assert!(calls.get("CAend0").is_none(), "the oldest ended call went");
    assert!(calls.get(&format!("CAend{}", CALLS_KEPT - 1)).is_some());
}

#[test]
fn a_call_log_keeps_its_newest_lines() {
    let mut calls = Calls::new();
    for i in 0..(EVENTS_KEPT as i64 + 10) {
        let event = if i % 2 == 0 {
            "agent_lost"
        } else {
            "agent_restored"
        };
        calls
            .apply("calls", &life(event, "CAx", T0 + i), 0)
            .unwrap();
    }
    let row = calls.get("CAx").unwrap();
    assert_eq!(row.events.len(), EVENTS_KEPT);
    assert_eq!(row.events.first().unwrap().at_ms, T0 + 10);
    let keys: Vec<u64> = row.events.iter().map(|e| e.key).collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "keys stay unique");
}

#[test]
fn malformed_messages_are_refused_and_change_nothing() {
    let mut calls = Calls::new();
    let cases = [
        ("calls", json!("call_started"), CallEventError::NoEvent),
        ("calls", json!({"event": 5}), CallEventError::NoEvent),
        ("calls", json!({"text": "hi"}), CallEventError::NoEvent),
        (
            "calls",
            json!({"event": "call_started"}),
            CallEventError::NoCallSid,
        ),
        (
            "calls",
            json!({"event": "call_started", "callSid": ""}),
            CallEventError::NoCallSid,
        ),
        (
            "call:CA1",
            json!({"event": "agent_lost", "callSid": "CA2"}),
            CallEventError::WrongChannel {
                channel: "call:CA1".to_owned(),
                sid: "CA2".to_owned(),
            },
        ),
    ];
    for (channel, data, want) in cases {
        assert_eq!(calls.apply(channel, &data, T0), Err(want), "{data}");
    }
    assert!(calls.rows().is_empty());
}

#[test]
fn a_missing_or_bad_time_falls_back_to_the_receipt_time() {
    let mut calls = Calls::new();
    calls
        .apply("call:CA9", &json!({"event": "agent_lost"}), T0 + 7)
        .unwrap();
    calls
        .apply(
            "call:CA9",
            &json!({"event": "agent_restored", "at": "yesterday"}),
            T0 + 9,
        )
        .unwrap();
    let row = calls.get("CA9").unwrap();
    assert_eq!(row.events[0].at_ms, T0 + 7);
    assert_eq!(row.events[1].at_ms, T0 + 9);
    assert_eq!(row.agent, AgentLink::Up);
}

#[test]
fn unknown_events_are_logged_as_they_came() {
    let mut calls = Calls::new();
    let data = life("future_thing", "CA5", T0);
    calls.apply("calls", &data, 0).unwrap();
    let text = &calls.get("CA5").unwrap().events[0].text;
    assert!(text.starts_with("future_thing: {"), "{text}");
    let status = with(
        life("stream_status", "CA5", T0 + 1),
        json!({"streamEvent": "stream-error", "streamError": "31921"}),
    );
    calls.apply("call:CA5", &status, 0).unwrap();
    assert_eq!(
        calls.get("CA5").unwrap().events[1].text,
        "Twilio reports stream-error: 31921"
    );
}

#[test]
fn channel_names_and_durations_in_words() {
    assert!(is_call_channel("calls"));
    assert!(is_call_channel("call:CA1"));
    assert!(!is_call_channel("callsign"));
    assert!(!is_call_channel("room:1"));
    assert_eq!(call_channel("CA1"), "call:CA1");
    assert_eq!(duration_text(850), "850 ms");
    assert_eq!(duration_text(12_345), "12.3 s");
    assert_eq!(duration_text(184_000), "3 min 4 s");
}
