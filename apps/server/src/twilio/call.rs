//! The driver of one call: a task that owns the call's [`CallSession`], its current Twilio
//! stream socket and its agent link, and does what the machine says. Thin by design (STYLE §2):
//! a `select!` over the new-stream handle, the Twilio socket, the agent socket, the pending
//! agent connect, the machine's deadline and the drain; every decision is the machine's.
//!
//! A new stream of the same call (a resume, or Twilio's occasional duplicate socket) arrives as
//! an [`Attach`] on the call's channel and replaces the current socket; the agent link stays.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite};

use super::echo;
use super::events;
use super::frames::StartInfo;
use super::gateway::Gateway;
use super::session::{CallSession, Output};
use crate::app::App;
use crate::config::AgentUrl;
use crate::config::RateLimit;
use crate::ratelimit::TokenBucket;
use crate::store::CallState;

/// How long one agent connect attempt may take.
pub const AGENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Inbound frames per second a stream may send (Twilio sends ~50; a flood beyond the bucket
/// is dropped and counted, and a stream that keeps flooding is closed with 1008).
pub const FLOOD_LIMIT: RateLimit = RateLimit {
    burst: 500,
    per_sec: 250.0,
};
/// Frames dropped by the flood limit before the stream is closed.
pub const FLOOD_CLOSE_AFTER: u64 = 1_000;

/// A started stream handed to its call.
#[derive(Debug)]
pub struct Attach {
    /// The Twilio socket, after `connected` and a valid `start`.
    pub socket: WebSocket,
    /// The `start`.
    pub start: StartInfo,
    /// Twilio's `start` text, forwarded as it is.
    pub start_text: String,
    /// Whether the stream re-establishes a dropped one.
    pub resumed: bool,
}

type AgentWs = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The agent end of the link.
enum Agent {
    /// `builtin:echo`: replies waiting to be read.
    Echo(std::collections::VecDeque<String>),
    /// A remote agent.
    Ws(Box<AgentWs>),
}

enum AgentEvent {
    Text(String),
    Closed(u16),
}

enum TwilioEvent {
    Text(String),
    Lost,
    Ignored,
}

/// What the call started with (from the store record).
#[derive(Debug, Clone)]
pub struct CallInfo {
    /// `CallSid`.
    pub call_sid: Arc<str>,
    /// Resumes so far (for logs).
    pub resumes: u32,
    /// When the call reached Tether (wall clock ms), for its duration.
    pub started_at_ms: i64,
}

/// Runs a call until it ends or the server drains. `first` is the stream that started it.
pub async fn run(
    app: Arc<App>,
    gateway: Arc<Gateway>,
    info: CallInfo,
    first: Attach,
    mut attaches: mpsc::Receiver<Attach>,
) {
    let seed = rand::random::<u64>();
    let mut session = CallSession::new(gateway.calls.buffer, seed);
    let mut twilio: Option<WebSocket> = None;
    let mut agent: Option<Agent> = None;
    let mut connecting: Option<futures_util::future::BoxFuture<'static, Option<Agent>>> = None;
    let mut bucket = TokenBucket::new(FLOOD_LIMIT, Instant::now());
    let mut flooded = 0u64;
    let mut resumes = info.resumes;
    let store = app.store.clone();
    let mut pending = Some(first);

    loop {
        if let Some(a) = pending.take() {
            if let Some(old) = twilio.take() {
                close(old, 1000, "replaced by a new stream").await;
            }
            if a.resumed {
                resumes = resumes.max(1);
            }
            twilio = Some(a.socket);
            bucket = TokenBucket::new(FLOOD_LIMIT, Instant::now());
            flooded = 0;
            gateway.with_breaker(|b| {
                session.handle_stream_started(Instant::now(), a.start, &a.start_text, a.resumed, b);
            });
        }
        // Do what the machine says, in order.
        while let Some(out) = session.poll_output() {
            match out {
                Output::ToTwilio(text) => {
                    if let Some(ws) = twilio.as_mut()
                        && ws.send(Message::Text(text.into())).await.is_err()
                    {
                        // The loss is noticed on the next read.
                    }
                }
                Output::ToAgent(text) => match agent.as_mut() {
                    Some(Agent::Echo(queue)) => queue.extend(echo::reply(&text)),
                    Some(Agent::Ws(ws)) => {
                        let _ = ws.send(tungstenite::Message::Text(text.into())).await;
                    }
                    None => {}
                },
                Output::OpenAgent => connecting = Some(open_agent(gateway.calls.agent.clone())),
                Output::CloseAgent => {
                    if let Some(Agent::Ws(mut ws)) = agent.take() {
                        let _ = ws.send(tungstenite::Message::Close(None)).await;
                    }
                    connecting = None;
                }
                Output::PersistDropped => {
                    persist(&app, &info.call_sid, CallState::Dropped, None).await;
                }
                Output::PersistEnded(reason) => {
                    persist(
                        &app,
                        &info.call_sid,
                        CallState::Ended,
                        Some(reason.as_str()),
                    )
                    .await;
                }
                Output::CloseTwilio => {
                    if let Some(ws) = twilio.take() {
                        close(ws, 1000, "call ended").await;
                    }
                }
                Output::Event(event) => {
                    let age = u64::try_from(crate::store::now().unix_millis() - info.started_at_ms)
                        .unwrap_or(0);
                    events::emit(&store, &info.call_sid, &event, age, resumes);
                }
            }
        }
        if session.is_ended() {
            break;
        }
        let deadline = session.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            attach = attaches.recv() => match attach {
                Some(a) => pending = Some(a),
                None => break,
            },
            event = next_twilio(&mut twilio) => match event {
                TwilioEvent::Text(text) => {
                    let now = Instant::now();
                    if bucket.try_take(now).is_ok() {
                        session.handle_twilio_text(now, &text);
                    } else {
                        flooded += 1;
                        if flooded == 1 {
                            tracing::warn!(component = "twilio", event = "media_flood", call_sid = &*info.call_sid);
                        }
                        if flooded >= FLOOD_CLOSE_AFTER
                            && let Some(ws) = twilio.take()
                        {
                            close(ws, 1008, "too many frames").await;
                            session.handle_twilio_lost(now);
                        }
                    }
                }
                TwilioEvent::Lost => {
                    twilio = None;
                    session.handle_twilio_lost(Instant::now());
                }
                TwilioEvent::Ignored => {}
            },
            event = next_agent(&mut agent) => match event {
                AgentEvent::Text(text) => session.handle_agent_text(&text),
                AgentEvent::Closed(code) => {
                    agent = None;
                    gateway.with_breaker(|b| session.handle_agent_closed(Instant::now(), code, b));
                }
            },
            opened = async { connecting.as_mut().expect("guarded by the branch condition").await }, if connecting.is_some() => {
                connecting = None;
                let now = Instant::now();
                match opened {
                    Some(a) => {
                        agent = Some(a);
                        gateway.with_breaker(|b| session.handle_agent_opened(now, b));
                    }
                    None => {
                        gateway.counters.agent_link_failures_total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        gateway.with_breaker(|b| session.handle_agent_failed(now, b));
                    }
                }
            },
            () = sleep_until(deadline) => {
                gateway.with_breaker(|b| session.handle_timeout(Instant::now(), b));
            },
            () = app.drain.draining() => {
                // Tether is going down: the call is left `dropped` so that Twilio's
                // `/twilio/voice/after` (answered by the next Tether) resumes it.
                gateway.with_breaker(|b| session.abandon(b));
                persist(&app, &info.call_sid, CallState::Dropped, None).await;
                if let Some(ws) = twilio.take() {
                    close(ws, 1012, "service restart").await;
                }
                if let Some(Agent::Ws(mut ws)) = agent.take() {
                    let _ = ws.send(tungstenite::Message::Close(None)).await;
                }
                break;
            },
        }
    }
    gateway.unregister(&info.call_sid);
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn persist(app: &App, call_sid: &str, state: CallState, reason: Option<&str>) {
    if let Err(e) = app
        .store
        .call_set_state(call_sid, state, reason, None, crate::store::now())
        .await
    {
        tracing::warn!(component = "twilio", event = "call_state_write_failed", call_sid, error = %e);
    }
}

async fn close(mut ws: WebSocket, code: u16, reason: &'static str) {
    let _ = ws
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}

fn open_agent(url: AgentUrl) -> futures_util::future::BoxFuture<'static, Option<Agent>> {
    Box::pin(async move {
        match url {
            AgentUrl::Echo => Some(Agent::Echo(std::collections::VecDeque::new())),
            AgentUrl::Remote(url) => {
                match tokio::time::timeout(
                    AGENT_CONNECT_TIMEOUT,
                    // 20 ms frames: Nagle would hold each one behind the previous ACK.
                    tokio_tungstenite::connect_async_with_config(url.as_str(), None, true),
                )
                .await
                {
                    Ok(Ok((ws, _))) => Some(Agent::Ws(Box::new(ws))),
                    Ok(Err(e)) => {
                        tracing::debug!(component = "twilio", event = "agent_connect_failed", error = %e);
                        None
                    }
                    Err(_) => None,
                }
            }
        }
    })
}

async fn next_twilio(twilio: &mut Option<WebSocket>) -> TwilioEvent {
    let Some(ws) = twilio.as_mut() else {
        return std::future::pending().await;
    };
    match ws.next().await {
        Some(Ok(Message::Text(t))) => TwilioEvent::Text(t.as_str().to_owned()),
        // Twilio sends text only; binary frames and pings carry nothing for the call.
        Some(Ok(Message::Binary(_) | Message::Ping(_) | Message::Pong(_))) => TwilioEvent::Ignored,
        Some(Ok(Message::Close(_)) | Err(_)) | None => TwilioEvent::Lost,
    }
}

async fn next_agent(agent: &mut Option<Agent>) -> AgentEvent {
    match agent.as_mut() {
        None => std::future::pending().await,
        Some(Agent::Echo(queue)) => match queue.pop_front() {
            Some(text) => AgentEvent::Text(text),
            None => std::future::pending().await,
        },
        Some(Agent::Ws(ws)) => loop {
            match ws.next().await {
                Some(Ok(tungstenite::Message::Text(t))) => {
                    return AgentEvent::Text(t.as_str().to_owned());
                }
                Some(Ok(tungstenite::Message::Close(frame))) => {
                    return AgentEvent::Closed(frame.map_or(1005, |f| u16::from(f.code)));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return AgentEvent::Closed(1006),
            }
        },
    }
}
