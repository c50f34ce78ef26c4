//! Unit tests of [`Core`] on a virtual clock: the exact calls the TypeScript driver makes, with
//! the server's frames scripted, checking the JSON instructions and events that come out.

use serde_json::{Value, json};

use super::*;

const WELCOME: &str = r#"{"type":"welcome","connection_id":"c1","heartbeat_ms":30000,"max_message_bytes":65536,"server_time":"2026-11-27T14:00:00.000Z","token_expires_at":"2026-11-27T15:00:00.000Z"}"#;

const URL: &str = "ws://127.0.0.1:9/ws";

/// `options` with the one URL every test uses added.
fn with_url(options: &str) -> String {
    let mut v: Value = serde_json::from_str(options).expect("options JSON");
    v["urls"] = json!([URL]);
    v.to_string()
}

/// A core with a fixed token.
fn core(options: &str) -> Core {
    Core::open(
        &with_url(options),
        42,
        1000.0,
        1_795_788_000_000.0,
        None,
        Some("t.k.n".to_owned()),
    )
    .expect("valid options")
}

/// A core whose token comes from a provider.
fn core_with_provider(options: &str) -> Core {
    Core::open(&with_url(options), 42, 0.0, 1_795_788_000_000.0, None, None).expect("valid")
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
    std::iter::from_fn(|| c.poll_event(0.0))
        .map(|s| serde_json::from_str(&s).expect("events are JSON"))
        .collect()
}

fn kinds(values: &[Value]) -> Vec<&str> {
    values
        .iter()
        .map(|v| v["kind"].as_str().unwrap_or("?"))
        .collect()
}

/// The hello frame with the fixed token, as the driver is told to send it.
fn hello(token: &str) -> Value {
    json!({"kind": "send", "text": Tokens::hello_frame(token)})
}

/// Connects `c` (fixed token) at `t` ms: open (with the URL) → socket opened → hello → welcome.
fn connect(c: &mut Core, t: f64) {
    c.connect(t);
    let open = outputs(c);
    assert_eq!(kinds(&open), ["open"]);
    assert_eq!(open[0]["url"], URL);
    c.socket_opened(t + 1.0);
    assert_eq!(outputs(c), [hello("t.k.n")]);
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
fn a_4401_with_a_fixed_token_fails() {
    let mut c = core("{}");
    connect(&mut c, 0.0);
    let _ = (outputs(&mut c), events(&mut c));
    c.socket_closed(10.0, 4401, "token expired".to_owned());
    let _ = events(&mut c);
    assert!(!c.poll_fetch(), "a fixed token is never fetched");
    assert!(c.state().contains("FAILED"), "{}", c.state());
}

#[test]
fn a_provider_is_asked_for_each_hello_and_after_a_4401() {
    let mut c = core_with_provider(r#"{"initialRetryDelay":10,"maxRetryDelay":20}"#);
    c.connect(0.0);
    assert_eq!(kinds(&outputs(&mut c)), ["open"]);
    c.socket_opened(1.0);
    assert!(outputs(&mut c).is_empty(), "hello waits for the token");
    assert!(c.poll_fetch());
    assert!(!c.poll_fetch(), "one fetch at a time");
    c.token_fetched(2.0, Some("bad".to_owned()));
    assert_eq!(outputs(&mut c), [hello("bad")]);
    c.handle_text(
        3.0,
        r#"{"type":"error","code":"AUTH_FAILURE","message":"bad token"}"#,
    );
    c.socket_closed(4.0, 4401, "bad token".to_owned());
    let _ = events(&mut c);
    // Renew: the provider again; its token serves the reconnect's hello.
    assert!(c.poll_fetch());
    c.token_fetched(5.0, Some("good".to_owned()));
    let _ = events(&mut c);
    let mut t = 5.0;
    while kinds(&outputs(&mut c)) != ["open"] {
        t = c.poll_timeout().expect("a reconnect is scheduled");
        c.handle_timeout(t);
    }
    c.socket_opened(t + 1.0);
    assert_eq!(outputs(&mut c), [hello("good")]);
    assert!(!c.poll_fetch());
    c.handle_text(t + 2.0, WELCOME);
    let _ = events(&mut c);
    assert!(c.state().contains("CONNECTED"), "{}", c.state());
}

#[test]
fn a_provider_that_denies_fails_and_one_that_throws_counts_an_attempt() {
    let mut c = core_with_provider(r#"{"maxRetryAttempts":5}"#);
    c.connect(0.0);
    let _ = outputs(&mut c);
    c.socket_opened(1.0);
    let _ = outputs(&mut c);
    assert!(c.poll_fetch());
    c.token_failed(2.0, "network down".to_owned());
    let _ = events(&mut c);
    // A failed attempt, not the end: the session retries after a backoff delay.
    assert!(!c.state().contains("FAILED"), "{}", c.state());
    assert!(c.poll_timeout().is_some());
    let m: Value = serde_json::from_str(&c.metrics(3.0)).expect("metrics");
    assert_eq!(m["failed_attempts"], 1);

    let mut c = core_with_provider("{}");
    c.connect(0.0);
    let _ = outputs(&mut c);
    c.socket_opened(1.0);
    let _ = outputs(&mut c);
    assert!(c.poll_fetch());
    c.token_fetched(2.0, None);
    let _ = events(&mut c);
    assert!(c.state().contains("FAILED"), "{}", c.state());
}

#[test]
fn the_queue_survives_a_reload_through_persist() {
    let mut c = core("{}");
    assert_eq!(c.publish(0.0, "m1", "room:1", "[1,2]"), None);
    let saved = c.persist();
    let mut fresh = Core::open(
        &with_url("{}"),
        7,
        0.0,
        1_795_788_000_000.0,
        Some(&saved),
        Some("t.k.n".to_owned()),
    )
    .expect("restore");
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
    let c =
        Core::open(&with_url("{}"), 1, 0.0, 0.0, Some("{garbage"), None).expect("options are fine");
    assert!(c.restore_error().is_some());
    assert_eq!(c.queue_length(), 0);
}

#[test]
fn the_hello_frame_carries_the_token_and_the_client_name() {
    let hello: Value = serde_json::from_str(&Tokens::hello_frame("t.k.n")).expect("JSON");
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
