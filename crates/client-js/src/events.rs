//! What the session tells the JavaScript driver, as plain JSON objects with a `kind`.
//!
//! The driver switches on `kind` and does exactly what it says: open a socket, send this text,
//! close with this code, hand this message to the app. Every frame is encoded here with
//! `protocol::encode`, so the driver never builds a wire message itself, and every label,
//! alert name and error code comes from the Rust types, so the driver never interprets one.

use protocol::ConnectionState;
use resilience::connection::{Event, Output, WaitCause};
use resilience::subscriptions::EndCause;
use resilience::{AlertEvent, AlertKind, QualitySnapshot, QueueEvent, SessionEvent};
use resilience::{SubscriptionEvent, queue::FailReason};
use serde_json::{Value, json};

/// One [`Output`] as the driver's instruction; `open` carries the URL the session chose
/// (CONTRACT §5.9). `SendHello` never reaches the driver as such: `Core` turns it into a
/// `send` of the hello frame once the token is at hand.
pub fn output(out: &Output, url: Option<&str>) -> Value {
    match out {
        Output::OpenSocket { attempt } => json!({"kind": "open", "attempt": attempt, "url": url}),
        Output::SendHello => json!({"kind": "hello"}),
        Output::Send(msg) => send(&protocol::encode(msg)),
        Output::CloseSocket { code, reason } => {
            json!({"kind": "close", "code": code.0, "reason": reason})
        }
    }
}

/// Send this text frame.
pub fn send(text: &str) -> Value {
    json!({"kind": "send", "text": text})
}

/// A connection state as the app sees it: `{state, label}` (CONTRACT §8).
pub fn state(s: ConnectionState) -> Value {
    json!({"state": s.as_str(), "label": s.label()})
}

/// The alert names of CONTRACT §13: `latency`, `reconnects`, `failed_messages`, `downtime`.
pub fn alert_name(kind: AlertKind) -> &'static str {
    match kind {
        AlertKind::HighLatency => "latency",
        AlertKind::ReconnectAttempts => "reconnects",
        AlertKind::FailedMessages => "failed_messages",
        AlertKind::Downtime => "downtime",
    }
}

/// The app's view of the quality figures (`metrics()` and the `quality` event).
pub fn quality(q: &QualitySnapshot) -> Value {
    let mut v = serde_json::to_value(q).expect("a snapshot is plain data");
    if let Some(obj) = v.as_object_mut() {
        let s = q.state;
        obj.insert("state".to_owned(), json!(s.as_str()));
        obj.insert("label".to_owned(), json!(s.label()));
    }
    v
}

/// One [`SessionEvent`] as `{kind, ...}`; `None` for what the app need not see.
pub fn event(ev: &SessionEvent) -> Option<Value> {
    Some(match ev {
        SessionEvent::Connection(e) => return connection(e),
        SessionEvent::Message(d) => {
            let mut v = serde_json::to_value(d).expect("a delivery is plain data");
            v["kind"] = json!("message");
            v
        }
        SessionEvent::Queue(q) => queue(q),
        SessionEvent::Subscription(s) => subscription(s),
        SessionEvent::Alert(AlertEvent::Begin {
            kind,
            value,
            threshold,
        }) => json!({"kind": "alert", "alert": alert_name(*kind), "active": true,
                     "value": value, "threshold": threshold}),
        SessionEvent::Alert(AlertEvent::End { kind }) => {
            json!({"kind": "alert", "alert": alert_name(*kind), "active": false})
        }
        SessionEvent::Quality(q) => json!({"kind": "quality", "quality": quality(q)}),
        SessionEvent::ServerError(e) => json!({"kind": "error", "source": "server",
            "code": e.code.to_string(), "message": e.message, "channel": e.channel}),
        SessionEvent::TokenExpiring { expires_at } => {
            json!({"kind": "token_expiring", "expires_at": expires_at.to_string()})
        }
        SessionEvent::TokenRefreshed { token_expires_at } => {
            json!({"kind": "token_refreshed", "token_expires_at": token_expires_at.to_string()})
        }
        SessionEvent::Undecodable { error } => {
            json!({"kind": "error", "source": "decode", "code": "BAD_REQUEST", "message": error})
        }
        SessionEvent::PersistRequested => json!({"kind": "persist"}),
    })
}

fn connection(e: &Event) -> Option<Value> {
    Some(match e {
        Event::StateChanged { from, to } => {
            let mut v = state(*to);
            v["kind"] = json!("state");
            v["from"] = json!(from.as_str());
            v
        }
        Event::TokenNeeded => json!({"kind": "token_needed"}),
        Event::Connected {
            attempt,
            connection_id,
            heartbeat,
            max_message_bytes,
        } => json!({"kind": "connected", "attempt": attempt, "connection_id": connection_id,
                    "heartbeat_ms": heartbeat.as_millis() as u64,
                    "max_message_bytes": max_message_bytes}),
        Event::RetryFailed {
            attempt,
            reason,
            failures,
            remaining,
        } => {
            json!({"kind": "retry_failed", "attempt": attempt, "code": reason.error_code().to_string(),
                    "reason": reason.to_string(), "failures": failures, "remaining": remaining})
        }
        Event::GaveUp { failures, reason } => json!({"kind": "gave_up", "failures": failures,
            "code": reason.error_code().to_string(), "reason": reason.to_string()}),
        Event::ConnectionLost {
            reason,
            connected_for,
        } => json!({"kind": "connection_lost", "code": reason.error_code().to_string(),
                    "reason": reason.to_string(),
                    "connected_for_ms": connected_for.as_millis() as u64}),
        Event::AttemptScheduled {
            attempt,
            delay,
            cause,
            ..
        } => {
            json!({"kind": "attempt_scheduled", "attempt": attempt,
                   "delay_ms": delay.as_millis() as u64, "cause": wait_cause(*cause)})
        }
        Event::LatencySpike { rtt, threshold } => json!({"kind": "latency_spike",
            "rtt_ms": rtt.as_millis() as u64, "threshold_ms": threshold.as_millis() as u64}),
        Event::AttemptStarted { .. } | Event::Breaker(_) | Event::Rtt { .. } => return None,
    })
}

/// Why the next attempt waits this long.
pub fn wait_cause(cause: WaitCause) -> &'static str {
    match cause {
        WaitCause::Backoff => "backoff",
        WaitCause::ServerAdvice => "server_advice",
        WaitCause::Breaker => "breaker",
        WaitCause::NetworkOnline => "network_online",
    }
}

fn queue(q: &QueueEvent) -> Value {
    match q {
        QueueEvent::Acked {
            id,
            channel,
            offset,
            duplicate,
        } => json!({"kind": "acked", "id": id, "channel": channel, "offset": offset,
                    "duplicate": duplicate}),
        QueueEvent::Failed {
            id,
            channel,
            reason,
        } => {
            let (code, message) = match reason {
                FailReason::Refused { code, message } => (code.to_string(), message.clone()),
                FailReason::Expired => (
                    "EXPIRED".to_owned(),
                    "queued longer than the deduplication window".to_owned(),
                ),
                FailReason::TooLarge => (
                    "TOO_LARGE".to_owned(),
                    "the server closed with 1009: message too large".to_owned(),
                ),
            };
            json!({"kind": "failed", "id": id, "channel": channel, "code": code,
                   "message": message})
        }
        QueueEvent::RetryLater { id, code, at } => json!({"kind": "retry_later", "id": id,
            "code": code.to_string(), "at": at.to_string()}),
    }
}

fn subscription(s: &SubscriptionEvent) -> Value {
    match s {
        SubscriptionEvent::Subscribed {
            channel,
            epoch,
            offset,
            replayed,
        } => json!({"kind": "subscribed", "channel": channel, "epoch": epoch,
                    "offset": offset, "replayed": replayed}),
        SubscriptionEvent::Reset {
            channel,
            epoch,
            replay_from,
        } => json!({"kind": "reset", "channel": channel, "epoch": epoch,
                    "replay_from": replay_from}),
        SubscriptionEvent::Gap {
            channel,
            expected,
            got,
        } => json!({"kind": "gap", "channel": channel, "expected": expected, "got": got}),
        SubscriptionEvent::Ended { channel, cause } => match cause {
            EndCause::Unsubscribed => {
                json!({"kind": "ended", "channel": channel, "cause": "unsubscribed"})
            }
            EndCause::Refused { code, message } => json!({"kind": "ended", "channel": channel,
                "cause": "refused", "code": code.to_string(), "message": message}),
        },
    }
}
