//! Unit tests of [`Core`] on a virtual clock: the exact calls the TypeScript driver makes, with
//! the server's frames scripted, checking the JSON instructions and events that come out.

use serde_json::{Value, json};

use super::*;

const WELCOME: &str = r#"{"type":"welcome","connection_id":"c1","heartbeat_ms":30000,"max_message_bytes":65536,"server_time":"2026-11-27T14:00:00.000Z","token_expires_at":"2026-11-27T15:00:00.000Z"}"#;

fn core(options: &str) -> Core {
    Core::open(options, 42, 1000.0, 1_795_788_000_000.0, None).expect("valid options")
}

/// The driver's instructions, without the heartbeat's pings (their timing is the session's).
fn outputs(c: &mut Core) -> Vec<Value> {
    std::iter::from_fn(|| c.poll_output())
        .map(|s| serde_json::from_str::<Value>(&s).expect("outputs are JSON"))
        .filter(|o| {
            !o["text"]
                .as_str()
                .is_some_and(|t| t.contains(r#""type":"ping""#))
        })
        .collect()
}

fn events(c: &mut Core) -> Vec<Value> {
    std::iter::from_fn(|| c.poll_event())
        .map(|s| serde_json::from_str(&s).expect("events are JSON"))
        .collect()
}

fn kinds(values: &[Value]) -> Vec<&str> {
    values
        .iter()
        .map(|v| v["kind"].as_str().unwrap_or("?"))
        .collect()
}

/// Connects `c` at `t` ms: open → socket opened → hello → welcome.
fn connect(c: &mut Core, t: f64) {
    c.connect(t);
    assert_eq!(kinds(&outputs(c)), ["open"]);
    c.socket_opened(t + 1.0);
    assert_eq!(kinds(&outputs(c)), ["hello"]);
    c.handle_text(t + 2.0, WELCOME);
}

#[test]
fn a_connection_subscribes_publishes_and_resolves_the_ack() {
    let mut c = core("{}");
    assert_eq!(c.subscribe(1000.0, "room:1", None), None);
    assert_eq!(c.publish(1000.0, "m1", "room:1", r#"{"text":"hi"}"#), None);
    connect(&mut c, 1000.0);
    let sent: Vec<Value> = outputs(&mut c)
        .into_iter()
        .map(|o| serde_json::from_str(o["text"].as_str().expect("send")).expect("frame"))
        .collect();
    assert_eq!(sent[0], json!({"type":"subscribe","channel":"room:1"}));
    assert_eq!(
        sent[1],
        json!({"type":"publish","id":"m1","channel":"room:1","data":{"text":"hi"}})
    );
    let ev = events(&mut c);
    let state = ev
        .iter()
        .rfind(|e| e["kind"] == "state")
        .expect("a state event");
    assert_eq!(state["state"], "CONNECTED");
    assert_eq!(state["label"], "Connected");

    c.handle_text(1010.0, r#"{"type":"subscribed","channel":"room:1","epoch":"e1","offset":0,"recovered":true,"replayed":0}"#);
    c.handle_text(
        1011.0,
        r#"{"type":"ack","id":"m1","channel":"room:1","offset":1,"duplicate":false}"#,
    );
    c.handle_text(1012.0, r#"{"type":"message","channel":"room:1","offset":1,"id":"m1","data":{"text":"hi"},"published_at":"2026-11-27T14:00:01.000Z"}"#);
    // A repeat of offset 1 (a replay overlapping live) never reaches the app.
    c.handle_text(1013.0, r#"{"type":"message","channel":"room:1","offset":1,"id":"m1","data":{"text":"hi"},"published_at":"2026-11-27T14:00:01.000Z"}"#);
    let ev = events(&mut c);
    let acked = ev.iter().find(|e| e["kind"] == "acked").expect("acked");
    assert_eq!(
        acked,
        &json!({"kind":"acked","id":"m1","channel":"room:1","offset":1,"duplicate":false})
    );
    let messages: Vec<&Value> = ev.iter().filter(|e| e["kind"] == "message").collect();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["data"], json!({"text":"hi"}));
    assert_eq!(
        c.position("room:1").as_deref(),
        Some(r#"{"epoch":"e1","offset":1}"#)
    );
    let m: Value = serde_json::from_str(&c.metrics(1020.0)).expect("metrics JSON");
    assert_eq!(m["delivery_rate"], 1.0);
    assert_eq!(m["label"], "Connected");
}

#[test]
fn the_retry_delay_comes_out_on_the_drivers_clock() {
    let mut c = core(r#"{"initialRetryDelay":100,"maxRetryDelay":400,"maxRetryAttempts":2}"#);
    connect(&mut c, 1000.0);
    let _ = (outputs(&mut c), events(&mut c));
    c.socket_closed(2000.0, 1011, "boom".to_owned());
    let ev = events(&mut c);
    let state = ev.iter().find(|e| e["kind"] == "state").expect("state");
    assert_eq!(state["state"], "RECONNECTING");
    assert_eq!(state["label"], "Reconnecting...");
    // Jittered within [d/2, d] of the 100 ms initial delay, on the driver's clock.
    let at = c.poll_timeout().expect("a retry is scheduled");
    assert!((2050.0..=2100.0).contains(&at), "{at}");
    c.handle_timeout(at);
    assert_eq!(kinds(&outputs(&mut c)), ["open"]);
    // Two failed attempts spend the budget of 2: FAILED, label Offline.
    c.socket_closed(at + 1.0, 1006, String::new());
    let at = c.poll_timeout().expect("second retry");
    c.handle_timeout(at);
    assert_eq!(kinds(&outputs(&mut c)), ["open"]);
    c.socket_closed(at + 1.0, 1006, String::new());
    let ev = events(&mut c);
    assert!(ev.iter().any(|e| e["kind"] == "gave_up"), "{ev:?}");
    assert_eq!(c.state(), r#"{"label":"Offline","state":"FAILED"}"#);
}

#[test]
fn a_4401_asks_for_a_token_and_a_refusal_fails() {
    let mut c = core("{}");
    connect(&mut c, 0.0);
    let _ = (outputs(&mut c), events(&mut c));
    c.socket_closed(10.0, 4401, "token expired".to_owned());
    assert!(kinds(&events(&mut c)).contains(&"token_needed"));
    c.token_unavailable(11.0);
    assert!(c.state().contains("FAILED"));
}

#[test]
fn the_queue_survives_a_reload_through_persist() {
    let mut c = core("{}");
    assert_eq!(c.publish(0.0, "m1", "room:1", "[1,2]"), None);
    let saved = c.persist();
    let mut fresh = Core::open("{}", 7, 0.0, 1_795_788_000_000.0, Some(&saved)).expect("restore");
    assert_eq!(fresh.restore_error(), None);
    assert_eq!(fresh.queue_length(), 1);
    connect(&mut fresh, 0.0);
    let sent = outputs(&mut fresh);
    assert!(
        sent[0]["text"]
            .as_str()
            .expect("text")
            .contains(r#""id":"m1""#)
    );
}

#[test]
fn hostile_input_is_an_error_and_loses_nothing() {
    let mut c = core("{}");
    assert!(
        c.publish(0.0, "m1", "room:1", "{not json")
            .expect("refused")
            .contains("not JSON")
    );
    assert!(c.publish(0.0, "m2", "bad channel!", "1").is_some());
    assert!(c.subscribe(0.0, "", None).is_some());
    assert!(c.subscribe(0.0, "room:1", Some(-1.0)).is_some());
    assert!(c.subscribe(0.0, "room:1", Some(1.5)).is_some());
    assert!(c.subscribe(0.0, "room:1", Some(f64::NAN)).is_some());
    let big = format!("\"{}\"", "x".repeat(70 * 1024));
    assert!(c.publish(0.0, "m3", "room:1", &big).is_some());
    assert_eq!(c.queue_length(), 0);
    // Garbled frames are events, never a failure of the core.
    connect(&mut c, 0.0);
    let _ = events(&mut c);
    for text in ["", "{", "[]", r#"{"type":"nope"}"#, &"[".repeat(10_000)] {
        c.handle_text(5.0, text);
    }
    let ev = events(&mut c);
    assert_eq!(
        ev.iter().filter(|e| e["source"] == "decode").count(),
        5,
        "{ev:?}"
    );
    assert!(c.state().contains("CONNECTED"));
    // A corrupt saved state starts empty and says why.
    let c = Core::open("{}", 1, 0.0, 0.0, Some("{garbage")).expect("options are fine");
    assert!(c.restore_error().is_some());
    assert_eq!(c.queue_length(), 0);
}

#[test]
fn the_hello_frame_carries_the_token_and_the_client_name() {
    let c = core("{}");
    let hello: Value = serde_json::from_str(&c.hello_frame("t.k.n")).expect("JSON");
    assert_eq!(
        hello,
        json!({"type":"hello","token":"t.k.n","client": CLIENT_NAME})
    );
}

#[test]
fn alert_names_are_the_contracts() {
    use resilience::AlertKind;
    let names: Vec<&str> = AlertKind::ALL
        .iter()
        .map(|k| events::alert_name(*k))
        .collect();
    assert_eq!(
        names,
        ["latency", "reconnects", "failed_messages", "downtime"]
    );
}
