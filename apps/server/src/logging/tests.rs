//! Golden-line tests of the JSON log layer: captured output, exact lines.

use std::sync::{Arc, Mutex};

use tracing_subscriber::layer::SubscriberExt as _;

use super::*;

/// A `MakeWriter` collecting everything into a shared buffer.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn fixed_clock() -> Timestamp {
    Timestamp::parse("2026-11-27T14:00:00.123Z").unwrap()
}

/// Runs `f` with a JSON layer installed for this thread and returns the lines.
fn capture(f: impl FnOnce()) -> Vec<String> {
    let buf = Capture::default();
    let subscriber =
        tracing_subscriber::registry().with(JsonLayer::new(buf.clone()).with_clock(fixed_clock));
    tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    text.lines().map(str::to_owned).collect()
}

#[test]
fn contract_example_line() {
    let lines = capture(|| {
        tracing::warn!(
            component = "websocket",
            event = "auth_failure",
            connection_id = "c_01H..",
            reason = "token expired"
        );
    });
    assert_eq!(
        lines,
        [
            r#"{"timestamp":"2026-11-27T14:00:00.123Z","level":"warn","component":"websocket","event":"auth_failure","data":{"reason":"token expired"},"connectionId":"c_01H.."}"#
        ]
    );
    // And the protocol crate's reader agrees.
    let entry: protocol::LogEntry = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(entry.connection_id.as_deref(), Some("c_01H.."));
}

#[test]
fn defaults_types_and_message() {
    let lines = capture(|| {
        let cid = "c_2";
        tracing::info!(
            event = "connection_closed",
            code = 1000u16,
            duration_ms = 12.5,
            clean = true,
            offset = -3i64,
            peer = %"127.0.0.1:5000",
            "closed by {}",
            "client"
        );
        tracing::error!(event = "x", connection_id = %cid, err = ?Some(1));
    });
    assert_eq!(
        lines,
        [
            r#"{"timestamp":"2026-11-27T14:00:00.123Z","level":"info","component":"server","event":"connection_closed","data":{"clean":true,"code":1000,"duration_ms":12.5,"message":"closed by client","offset":-3,"peer":"127.0.0.1:5000"}}"#,
            r#"{"timestamp":"2026-11-27T14:00:00.123Z","level":"error","component":"server","event":"x","data":{"err":"Some(1)"},"connectionId":"c_2"}"#,
        ]
    );
}

#[test]
fn events_without_event_field_still_have_one() {
    let lines = capture(|| tracing::debug!("plain text"));
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(v["event"], "log");
    assert_eq!(v["level"], "debug");
    assert_eq!(v["component"], "server");
    assert_eq!(v["data"]["message"], "plain text");
    assert!(v["data"]["target"].as_str().unwrap().contains("logging"));
    assert!(v.get("connectionId").is_none());
}

#[test]
fn span_fields_are_inherited() {
    let lines = capture(|| {
        let span = tracing::info_span!(
            "conn",
            component = "websocket",
            connection_id = "c_9",
            sub = "alice"
        );
        let _g = span.enter();
        tracing::info!(event = "connection_opened", sub = "bob");
    });
    assert_eq!(
        lines,
        [
            r#"{"timestamp":"2026-11-27T14:00:00.123Z","level":"info","component":"websocket","event":"connection_opened","data":{"sub":"bob"},"connectionId":"c_9"}"#
        ]
    );
}

#[test]
fn secrets_are_never_written() {
    let secret = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0.c2ln";
    let lines = capture(|| {
        tracing::warn!(
            event = "auth_failure",
            token = secret,
            refresh_token = %secret,
            authorization = ?format!("Bearer {secret}"),
            jwt_secret = secret,
            db_password = secret,
            token_fingerprint = "ab12",
            token_expires_at = "2026-11-27T14:00:00.000Z",
        );
        let span = tracing::info_span!("s", token = secret);
        let _g = span.enter();
        tracing::info!(event = "inner");
    });
    for line in &lines {
        assert!(!line.contains(secret), "leak: {line}");
        assert!(!line.contains("c2VjcmV0"), "leak: {line}");
    }
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(v["data"]["token"], "[redacted]");
    assert_eq!(v["data"]["authorization"], "[redacted]");
    assert_eq!(v["data"]["token_fingerprint"], "ab12");
    assert_eq!(v["data"]["token_expires_at"], "2026-11-27T14:00:00.000Z");
    let inner: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(inner["data"]["token"], "[redacted]");
}

#[test]
fn secret_field_rule() {
    for n in [
        "token",
        "TOKEN",
        "auth_token",
        "Authorization",
        "secret",
        "password",
        "x_secret_y",
    ] {
        assert!(is_secret_field(n), "{n}");
    }
    for n in [
        "reason",
        "sub",
        "token_fingerprint",
        "token_expires_at",
        "channel",
    ] {
        assert!(!is_secret_field(n), "{n}");
    }
}

#[test]
fn human_format_redacts_too() {
    let buf = Capture::default();
    let subscriber = tracing_subscriber::registry().with(human_layer(buf.clone(), false));
    tracing::subscriber::with_default(subscriber, || {
        tracing::warn!(
            event = "auth_failure",
            token = "SECRET-VALUE",
            reason = "expired"
        );
    });
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("auth_failure"), "{text}");
    assert!(text.contains("token=[redacted]"), "{text}");
    assert!(!text.contains("SECRET-VALUE"), "{text}");
}

#[test]
fn the_filter_tells_its_level_so_dependencies_do_not_build_discarded_log_records() {
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::layer::Filter;
    let info = super::levels(tracing_subscriber::EnvFilter::new("info"));
    assert_eq!(
        Filter::<tracing_subscriber::Registry>::max_level_hint(&info),
        Some(LevelFilter::INFO)
    );
    let debug = super::levels(tracing_subscriber::EnvFilter::new("warn,server=debug"));
    assert_eq!(
        Filter::<tracing_subscriber::Registry>::max_level_hint(&debug),
        Some(LevelFilter::DEBUG)
    );
}
