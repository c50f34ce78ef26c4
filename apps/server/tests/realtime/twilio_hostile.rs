//! The Twilio gateway against what should not happen (CONTRACT §10.2, issue 11): Twilio off,
//! oversized and malformed webhooks, frames out of order or not JSON, a flood of `media`, and
//! an agent that never answers (its breaker opens: new calls get the fallback TwiML and
//! `/health` says `degraded`). Each gets its clear answer and nothing else happens.

use std::time::Duration;

use futures_util::SinkExt as _;
use server::config::AgentUrl;
use server::twilio::player::PlayError;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{TestServer, logs, within};
use crate::twilio::{close_code, player, twilio_on};

#[tokio::test]
async fn every_endpoint_is_404_while_twilio_is_off() {
    let server = TestServer::start().await;
    for (method, path) in [
        ("POST", "/twilio/voice"),
        ("POST", "/twilio/voice/after"),
        ("POST", "/twilio/stream-status"),
        ("GET", "/twilio/media"),
    ] {
        let r = server.http(method, path, &[], Some("CallSid=CA1")).await;
        assert_eq!(r.status, 404, "{method} {path}: {}", r.body);
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn bad_webhooks_get_their_answer_and_create_nothing() {
    let server = TestServer::start_with(twilio_on).await;
    let p = player(&server, 1.0, None);
    let (status, _) = p
        .webhook("voice", "/twilio/voice", &[("From", "+15550100")])
        .await
        .unwrap();
    assert_eq!(status, 400, "no CallSid");
    let huge = "x".repeat(70 * 1024);
    let (status, _) = p
        .webhook(
            "voice",
            "/twilio/voice",
            &[("CallSid", "CAbig"), ("Pad", &huge)],
        )
        .await
        .unwrap();
    assert_eq!(status, 413, "a body over 64 KiB");
    let (status, _) = p
        .webhook(
            "status",
            "/twilio/stream-status",
            &[("CallSid", "CAst"), ("StreamEvent", "stream-exploded")],
        )
        .await
        .unwrap();
    assert_eq!(status, 400, "an unknown StreamEvent");
    let unsigned = server
        .http(
            "POST",
            "/twilio/voice",
            &[("content-type", "application/x-www-form-urlencoded")],
            Some("CallSid=CAunsigned"),
        )
        .await;
    assert_eq!(unsigned.status, 403);
    // None of them made a call: `/after` for them hangs up.
    for sid in ["CAbig", "CAst", "CAunsigned"] {
        assert_eq!(p.after(sid).await.unwrap(), None, "{sid}");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn frames_out_of_order_or_not_json_close_the_stream_with_1008() {
    let server = TestServer::start_with(twilio_on).await;
    let p = player(&server, 1.0, None);
    let stream = p.voice("CAorder1").await.unwrap();
    // The player sends connected + start; these raw sockets break the order instead.
    for (first, what) in [
        (
            r#"{"event":"start","streamSid":"MZx","start":{"streamSid":"MZx","callSid":"CAorder1","accountSid":"AC1","customParameters":{}}}"#,
            "start before connected",
        ),
        ("this is not json", "not a Media Streams frame"),
        (r#"{"event":"media"}"#, "unexpected frame before start"),
    ] {
        let mut ws = raw_stream(&server, &stream.url).await;
        ws.send(Message::text(first)).await.unwrap();
        assert_eq!(close_code(&mut ws).await, Some(1008), "{what}");
        logs::wait_for("twilio_stream_rejected", |l| l["data"]["reason"] == what).await;
    }
    // The call token is still unused: the real stream joins the call.
    let report = p.play_stream(&stream, "CAorder1").await.unwrap();
    assert_eq!(report.echoed, report.frames_sent, "{report}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_flood_of_media_is_cut_off() {
    let server = TestServer::start_with(twilio_on).await;
    let p = player(&server, 1.0, None);
    let stream = p.voice("CAflood1").await.unwrap();
    let mut ws = p.open_stream(&stream, "CAflood1", "MZflood").await.unwrap();
    let frame = r#"{"event":"media","streamSid":"MZflood","media":{"payload":"/w=="}}"#;
    // Far beyond the bucket (500 at once, 250/s, then 1000 dropped): the stream is closed.
    for _ in 0..2_000 {
        if ws.send(Message::text(frame)).await.is_err() {
            break;
        }
    }
    // Tether closes with 1008; frames of ours it had not read yet make its kernel answer
    // with a reset, which may overtake the close frame. Either way the stream is over.
    let code = close_code(&mut ws).await;
    assert!(code.is_none() || code == Some(1008), "{code:?}");
    logs::wait_for("media_flood", |l| l["data"]["call_sid"] == "CAflood1").await;
    logs::wait_for("stream_dropped", |l| l["data"]["call_sid"] == "CAflood1").await;
    let health = server.http("GET", "/health", &[], None).await;
    assert_eq!(health.status, 200, "{}", health.body);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_agent_that_never_answers_opens_the_breaker_and_new_calls_get_the_fallback() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let server = TestServer::start_with(|c| {
        twilio_on(c);
        c.calls.agent = AgentUrl::Remote(format!("ws://{closed}/agent"));
    })
    .await;
    let p = player(&server, 1.0, None);
    let stream = p.voice("CAnoagent1").await.unwrap();
    let _ws = p.open_stream(&stream, "CAnoagent1", "MZna").await.unwrap();
    // The call's link retries (250 ms, 500 ms, 1 s, 2 s …): five failures open the breaker.
    let health = within("the agent breaker to open", async {
        loop {
            let h = server.http("GET", "/health", &[], None).await;
            if h.json()["checks"]["agent"]["status"] == "degraded" {
                return h;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(health.json()["status"], "degraded", "{}", health.body);
    match p.voice("CAnoagent2").await {
        Err(PlayError::Answer { status, body, .. }) => {
            assert_eq!(status, 200);
            assert!(
                body.contains("<Say>") && body.ends_with("<Hangup/></Response>"),
                "{body}"
            );
        }
        other => panic!("expected the fallback TwiML, got {other:?}"),
    }
    logs::wait_for("call_refused_agent_open", |l| {
        l["data"]["call_sid"] == "CAnoagent2"
    })
    .await;
    server.stop().await.unwrap();
}

async fn raw_stream(
    server: &TestServer,
    signed_url: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut request = format!("ws://{}/twilio/media", server.addr)
        .into_client_request()
        .unwrap();
    let signature =
        server::twilio::signature::compute(crate::twilio::AUTH_TOKEN.as_bytes(), signed_url, &[]);
    request
        .headers_mut()
        .insert("x-twilio-signature", signature.parse().unwrap());
    let (ws, _) = within(
        "the media upgrade",
        tokio_tungstenite::connect_async(request),
    )
    .await
    .unwrap();
    ws
}
