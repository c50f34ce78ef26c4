//! The Twilio voice gateway end to end (CONTRACT §10): the real server with Twilio on, played
//! by `twilio::player` (the same Twilio `tether simulate-call` plays), through `builtin:echo`
//! or a real WebSocket agent on loopback that the tests cut and let back.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use server::auth::Secret;
use server::config::{AgentUrl, Config, TwilioConfig};
use server::twilio::player::{PlayOptions, Player, StreamTwiml};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{TestServer, logs, within};

pub const AUTH_TOKEN: &str = "twilio-test-auth-token";
pub const PUBLIC_URL: &str = "https://tether.example.test";
pub const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";

pub fn twilio_on(config: &mut Config) {
    config.twilio = Some(TwilioConfig {
        account_sid: ACCOUNT.into(),
        auth_token: Secret::new(AUTH_TOKEN.as_bytes().to_vec()),
        phone_number: "+15550199".into(),
        public_url: PUBLIC_URL.into(),
    });
}

pub fn player(server: &TestServer, seconds: f64, drop_after: Option<f64>) -> Player {
    player_with(server, AUTH_TOKEN, seconds, drop_after)
}

pub fn player_with(
    server: &TestServer,
    token: &str,
    seconds: f64,
    drop_after: Option<f64>,
) -> Player {
    Player::new(PlayOptions {
        target: url::Url::parse(&format!("http://{}", server.addr)).unwrap(),
        public_url: PUBLIC_URL.into(),
        auth_token: token.as_bytes().to_vec(),
        account_sid: ACCOUNT.into(),
        duration: Duration::from_secs_f64(seconds),
        drop_after: drop_after.map(Duration::from_secs_f64),
    })
    .unwrap()
}

/// The `event`s published on `channel` so far, in offset order, waiting until `want` is there.
pub async fn events_until(server: &TestServer, channel: &str, want: &str) -> Vec<Value> {
    within(&format!("{want} on {channel}"), async {
        loop {
            let auth = format!("Bearer {}", server.token("reader"));
            let r = server
                .http(
                    "GET",
                    &format!("/v1/channels/{channel}/messages?since=0"),
                    &[("authorization", &auth)],
                    None,
                )
                .await;
            let body = r.json();
            let events: Vec<Value> = body["messages"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|m| m["data"].clone())
                .collect();
            if events.iter().any(|e| e["event"] == want) {
                return events;
            }
            // Call events are published off the call's path: poll the history.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

#[tokio::test]
async fn a_call_flows_through_the_echo_agent_and_hangs_up_after_stop() {
    let server = TestServer::start_with(twilio_on).await;
    let report = within("the call", player(&server, 1.5, None).play("CAecho1"))
        .await
        .expect("the call plays");
    assert_eq!(report.frames_sent, 75, "{report}");
    assert_eq!(report.echoed, 75, "every frame comes back: {report}");
    assert_eq!(report.gaps, 0, "{report}");
    assert!(report.marks >= 1, "echo answers each mark: {report}");
    assert_eq!(report.after, "hangup", "stop ends the call: {report}");
    assert_eq!(
        report.stream_sids.iter().collect::<Vec<_>>(),
        ["MZCAecho101"],
        "Tether puts the current streamSid into what the agent sends"
    );

    let calls = events_until(&server, "calls", "call_ended").await;
    let names: Vec<&str> = calls.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(names, ["call_started", "call_ended"], "{calls:?}");
    assert!(calls.iter().all(|e| e["callSid"] == "CAecho1"));
    let ended = logs::wait_for("call_ended", |l| l["data"]["call_sid"] == "CAecho1").await;
    assert_eq!(ended["component"], "twilio");
    let raw = logs::raw();
    assert!(!raw.contains(AUTH_TOKEN), "the auth token is never logged");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_dropped_stream_is_resumed_as_the_same_call() {
    let server = TestServer::start_with(twilio_on).await;
    let report = within("the call", player(&server, 2.0, Some(0.6)).play("CAdrop1"))
        .await
        .expect("the call plays");
    assert_eq!(report.resumes, 1, "{report}");
    assert_eq!(report.after, "hangup", "{report}");
    assert_eq!(
        report.stream_sids.iter().collect::<Vec<_>>(),
        ["MZCAdrop101", "MZCAdrop102"],
        "echoes follow the new streamSid"
    );
    assert_eq!(report.frames_sent, 100, "{report}");
    // Only what was in flight when the TCP connection vanished may be missing.
    assert!(report.echoed >= 90, "{report}");
    let events = events_until(&server, "call:CAdrop1", "call_ended").await;
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(
        names
            .iter()
            .filter(|n| **n != "stats" && **n != "stream_status")
            .copied()
            .collect::<Vec<_>>(),
        [
            "call_started",
            "stream_dropped",
            "stream_resumed",
            "call_ended"
        ],
        "{names:?}"
    );
    logs::wait_for("stream_resumed", |l| l["data"]["call_sid"] == "CAdrop1").await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn resumes_are_bounded_by_the_setting() {
    let server = TestServer::start_with(|c| {
        twilio_on(c);
        c.calls.resumes = 1;
    })
    .await;
    let p = player(&server, 1.0, None);
    let first = p.voice("CAbound1").await.unwrap();
    drop(p.open_stream(&first, "CAbound1", "MZb1").await.unwrap());
    let again = p
        .after("CAbound1")
        .await
        .unwrap()
        .expect("one resume is left");
    drop(p.open_stream(&again, "CAbound1", "MZb2").await.unwrap());
    assert_eq!(
        p.after("CAbound1").await.unwrap(),
        None,
        "resumes are spent"
    );
    let events = events_until(&server, "calls", "call_ended").await;
    let ended = events.iter().find(|e| e["event"] == "call_ended").unwrap();
    assert_eq!(ended["reason"], "resumes_exhausted", "{ended}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_bad_signature_is_refused_and_a_call_token_works_once() {
    let server = TestServer::start_with(twilio_on).await;
    let forger = player_with(&server, "not-the-token", 1.0, None);
    let (status, _) = forger
        .webhook("voice", "/twilio/voice", &[("CallSid", "CAforged")])
        .await
        .unwrap();
    assert_eq!(status, 403);
    logs::wait_for("twilio_signature_invalid", |_| true).await;
    assert!(!logs::raw().contains("not-the-token"));

    let p = player(&server, 1.0, None);
    let (status, _) = p
        .webhook("voice", "/twilio/voice", &[("CallSid", "CA bad sid!")])
        .await
        .unwrap();
    assert_eq!(status, 400, "a CallSid that is not Twilio's");

    let stream = p.voice("CAonce1").await.unwrap();
    let forged = StreamTwiml {
        call_token: "forged".into(),
        ..stream.clone()
    };
    let mut s = p.open_stream(&forged, "CAonce1", "MZf").await.unwrap();
    assert_eq!(close_code(&mut s).await, Some(1008), "a forged token");

    let mut s = p.open_stream(&stream, "CAonce1", "MZo1").await.unwrap();
    // The first stream has joined its call (and so used the token) before the second tries.
    logs::wait_for("call_started", |l| l["data"]["call_sid"] == "CAonce1").await;
    let mut again = p.open_stream(&stream, "CAonce1", "MZo2").await.unwrap();
    assert_eq!(
        close_code(&mut again).await,
        Some(1008),
        "the token was used"
    );
    s.close(None).await.unwrap();
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_call_survives_a_restart_of_tether() {
    let server = TestServer::start_with(twilio_on).await;
    let p = player(&server, 1.0, None);
    let stream = p.voice("CArestart1").await.unwrap();
    let s = p.open_stream(&stream, "CArestart1", "MZr1").await.unwrap();
    logs::wait_for("call_started", |l| l["data"]["call_sid"] == "CArestart1").await;
    drop(s);
    let dir = server.stop_keep_dir().await;

    let mut config = Config::for_tests(dir.path());
    twilio_on(&mut config);
    let server = TestServer::start_in(dir, config).await;
    let p = player(&server, 1.0, None);
    let again = p
        .after("CArestart1")
        .await
        .unwrap()
        .expect("the call is resumed from the store");
    let mut s = p.open_stream(&again, "CArestart1", "MZr2").await.unwrap();
    s.send(Message::text(
        json!({"event": "stop", "streamSid": "MZr2"}).to_string(),
    ))
    .await
    .unwrap();
    // Twilio asks for the next TwiML once the stream is over: after Tether ended the call.
    logs::wait_for("call_ended", |l| l["data"]["call_sid"] == "CArestart1").await;
    assert_eq!(p.after("CArestart1").await.unwrap(), None);
    server.stop().await.unwrap();
}

/// An agent on loopback that echoes `media` and records every frame; the first link is cut
/// (TCP gone, no close frame) after `cut_after` media frames, and for 1 s after that the agent
/// is down (connections are dropped before the WebSocket handshake).
async fn flaky_agent(
    cut_after: usize,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<Vec<Value>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/agent", listener.local_addr().unwrap());
    let (links_tx, links_rx) = tokio::sync::mpsc::unbounded_channel();
    let down_until = std::sync::Arc::new(std::sync::Mutex::new(None::<std::time::Instant>));
    tokio::spawn(async move {
        let mut link = 0;
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let down = *down_until.lock().unwrap();
            if down.is_some_and(|d| std::time::Instant::now() < d) {
                drop(tcp);
                continue;
            }
            let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                continue;
            };
            let links_tx = links_tx.clone();
            let down_until = down_until.clone();
            let this = link;
            link += 1;
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut media = 0;
                while let Some(Ok(Message::Text(t))) = ws.next().await {
                    let frame: Value = serde_json::from_str(t.as_str()).unwrap();
                    if frame["event"] == "media" {
                        media += 1;
                        let echo = json!({"event": "media",
                            "media": {"payload": frame["media"]["payload"]}});
                        if ws.send(Message::text(echo.to_string())).await.is_err() {
                            break;
                        }
                    }
                    let stop = frame["event"] == "stop";
                    seen.push(frame);
                    if this == 0 && media == cut_after {
                        *down_until.lock().unwrap() =
                            Some(std::time::Instant::now() + Duration::from_secs(1));
                        break;
                    }
                    if stop {
                        break;
                    }
                }
                let _ = links_tx.send(seen);
                // Dropping `ws` here: the TCP connection goes away without a close frame.
            });
        }
    });
    (url, links_rx)
}

#[tokio::test]
async fn the_agent_killed_mid_call_and_back_after_1s_gets_a_resumed_start_and_the_held_audio() {
    let (agent, mut links) = flaky_agent(20).await;
    let server = TestServer::start_with(|c| {
        twilio_on(c);
        c.calls.agent = AgentUrl::Remote(agent);
    })
    .await;
    let report = within("the call", player(&server, 4.0, None).play("CAagent1"))
        .await
        .expect("the call plays");
    assert_eq!(report.after, "hangup", "{report}");
    assert_eq!(report.resumes, 0, "Twilio's stream never dropped: {report}");
    // Audio sent while the link was down is held and delivered to the new link.
    assert!(report.echoed >= 190, "{report}");

    let first = within("the first link", links.recv()).await.unwrap();
    assert_eq!(first[0]["event"], "connected");
    assert_eq!(first[1]["event"], "start");
    assert_eq!(first[1]["start"]["callSid"], "CAagent1");
    let second = within("the second link", links.recv()).await.unwrap();
    assert_eq!(second[0]["event"], "connected", "{:?}", &second[..2]);
    let start = &second[1];
    assert_eq!(start["event"], "start");
    assert_eq!(start["start"]["callSid"], "CAagent1");
    assert_eq!(start["start"]["streamSid"], "MZCAagent101", "same stream");
    assert_eq!(start["start"]["customParameters"]["tetherResumed"], "true");
    assert!(
        start["start"]["customParameters"]
            .get("callToken")
            .is_none(),
        "the call token is not handed to the agent: {start}"
    );
    assert_eq!(second.last().unwrap()["event"], "stop");

    let events = events_until(&server, "call:CAagent1", "agent_restored").await;
    assert!(
        events.iter().any(|e| e["event"] == "agent_lost"),
        "{events:?}"
    );
    logs::wait_for("agent_link_restored", |l| {
        l["data"]["call_sid"] == "CAagent1"
    })
    .await;
    server.stop().await.unwrap();
}

pub async fn close_code<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Option<u16>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    within("the close", async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Close(f)) => return f.map(|f| u16::from(f.code)),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    })
    .await
}
