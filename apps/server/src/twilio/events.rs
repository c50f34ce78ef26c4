//! Call events as ordinary channel messages (CONTRACT §10.5) and as log lines (§7,
//! component `twilio`): lifecycle events go to `calls` and `call:{CallSid}`, stats only to the
//! call's channel. Publishing is queued at call time and awaited in a task of its own, so the
//! media path never waits for the store.

use std::sync::Arc;

use serde_json::{Value, json};

use super::session::{CallEvent, Stats};
use crate::store::{PublishRequest, StoreHandle, now};

/// The `sub` Tether publishes call events as.
pub const PUBLISHER: &str = "tether:twilio";

/// The per-call channel name.
#[must_use]
pub fn call_channel(call_sid: &str) -> String {
    format!("call:{call_sid}")
}

/// The stats message body.
#[must_use]
pub fn stats_body(call_sid: &str, s: &Stats) -> Value {
    json!({
        "event": "stats",
        "callSid": call_sid,
        "at": now(),
        "frames_in": s.frames_in,
        "frames_out": s.frames_out,
        "gaps": s.gaps,
        "jitter_ms": (s.jitter_ms * 100.0).round() / 100.0,
        "buffered_ms": s.buffered_ms,
        "dropped_frames": s.dropped_frames,
        "to_agent": s.to_agent,
    })
}

/// A lifecycle message body (`call_started`, `agent_lost`, …) with extra fields.
#[must_use]
pub fn lifecycle_body(event: &str, call_sid: &str, extra: Value) -> Value {
    let mut body = json!({"event": event, "callSid": call_sid, "at": now()});
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    body
}

/// Publishes `data` to `channel` without waiting; a failure is logged once.
pub fn publish(store: &StoreHandle, channel: String, data: Value) {
    let request = PublishRequest {
        channel,
        sub: PUBLISHER.to_owned(),
        id: uuid::Uuid::now_v7().simple().to_string(),
        data,
        published_at: now(),
    };
    let pending = store.publish(request);
    tokio::spawn(async move {
        if let Err(e) = pending.await {
            tracing::warn!(component = "twilio", event = "call_event_publish_failed", error = %e);
        }
    });
}

/// Logs `event` and publishes it where it belongs. `duration_ms` is the call's age.
pub fn emit(
    store: &StoreHandle,
    call_sid: &Arc<str>,
    event: &CallEvent,
    duration_ms: u64,
    resumes: u32,
) {
    let sid: &str = call_sid;
    let (name, extra) = match event {
        CallEvent::Stats(s) => {
            publish(store, call_channel(sid), stats_body(sid, s));
            return;
        }
        CallEvent::Started => {
            tracing::info!(component = "twilio", event = "call_started", call_sid = sid);
            ("call_started", json!({}))
        }
        CallEvent::StreamResumed { stream_sid } => {
            tracing::info!(component = "twilio", event = "stream_resumed", call_sid = sid, stream_sid = %stream_sid, resumes);
            (
                "stream_resumed",
                json!({"streamSid": stream_sid, "resumes": resumes}),
            )
        }
        CallEvent::StreamDropped => {
            tracing::warn!(
                component = "twilio",
                event = "stream_dropped",
                call_sid = sid
            );
            ("stream_dropped", json!({}))
        }
        CallEvent::AgentLost => {
            tracing::warn!(
                component = "twilio",
                event = "agent_link_lost",
                call_sid = sid
            );
            ("agent_lost", json!({}))
        }
        CallEvent::AgentRestored => {
            tracing::info!(
                component = "twilio",
                event = "agent_link_restored",
                call_sid = sid
            );
            ("agent_restored", json!({}))
        }
        CallEvent::Ended(reason) => {
            tracing::info!(
                component = "twilio",
                event = "call_ended",
                call_sid = sid,
                reason = reason.as_str(),
                duration_ms,
                resumes,
            );
            (
                "call_ended",
                json!({"reason": reason.as_str(), "duration_ms": duration_ms}),
            )
        }
    };
    let body = lifecycle_body(name, sid, extra);
    publish(store, "calls".to_owned(), body.clone());
    publish(store, call_channel(sid), body);
}
