//! Issue 11's browser steps: a simulated Twilio call shown live in the dashboard's Calls panel,
//! its agent link cut and restored, then the call ended.
//!
//! The server is restarted on the same database with the Twilio settings and
//! `TETHER_AGENT_URL` pointing at [`FlakyAgent`], a real WebSocket agent on loopback that echoes
//! the caller's audio, drops its first link (TCP gone, no close frame) after [`CUT_AFTER`]
//! media frames and holds the handshake of the next one for [`HOLD`], so the link stays lost
//! long enough to be seen. `tether simulate-call` (the debug binary the scenario built) plays
//! the call; the page must show the call live, its agent lost, then up again, then the call
//! ended, with those events in the call's log. A screenshot per state in `target/browser/`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use fantoccini::Client;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use super::{RECONNECT_TIMEOUT, STEP_TIMEOUT, Server, wait_for_text};
use crate::browser::screenshot;

/// Media frames the agent's first link echoes before it is cut (~0.8 s of a 50 frames/s call).
const CUT_AFTER: usize = 40;
/// How long the agent holds the handshake of the link after the cut.
const HOLD: Duration = Duration::from_secs(2);
/// Seconds of audio the simulated call streams.
const CALL_SECONDS: &str = "6";
/// The Twilio auth token of the scenario (a test value, not a secret of anyone's).
const AUTH_TOKEN: &str = "browser-scenario-token";
/// The public URL the server signs and checks with (never reached: the player signs over it
/// and talks to the loopback address).
const PUBLIC_URL: &str = "https://tether.browser.test";

/// A loopback WebSocket agent that echoes `media` and `mark`, cuts its first link after
/// [`CUT_AFTER`] media frames and holds the next handshake for [`HOLD`].
struct FlakyAgent {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl FlakyAgent {
    async fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the agent")?;
        let url = format!("ws://{}/agent", listener.local_addr()?);
        let task = tokio::spawn(async move {
            for link in 0usize.. {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    if link > 0 {
                        tokio::time::sleep(HOLD).await;
                    }
                    let _ = tcp.set_nodelay(true);
                    let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
                        return;
                    };
                    let cut = (link == 0).then_some(CUT_AFTER);
                    echo(ws, cut).await;
                    // Dropping the socket: the TCP connection goes without a close frame.
                });
            }
        });
        Ok(Self { url, task })
    }
}

impl Drop for FlakyAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Echoes one link until `stop`, the end of the link, or `cut` media frames.
async fn echo(
    mut ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    cut: Option<usize>,
) {
    let mut media = 0;
    while let Some(Ok(Message::Text(text))) = ws.next().await {
        let Ok(frame) = serde_json::from_str::<Value>(text.as_str()) else {
            continue;
        };
        let reply = match frame["event"].as_str() {
            Some("media") => {
                media += 1;
                Some(json!({"event": "media", "media": {"payload": frame["media"]["payload"]}}))
            }
            Some("mark") => Some(json!({"event": "mark", "mark": {"name": frame["mark"]["name"]}})),
            Some("stop") => return,
            _ => None,
        };
        if let Some(reply) = reply
            && ws.send(Message::text(reply.to_string())).await.is_err()
        {
            return;
        }
        if cut == Some(media) {
            return;
        }
    }
}

/// The first call row as the page shows it.
#[derive(Debug, Clone, PartialEq)]
struct RowView {
    sid: String,
    state: String,
    agent: String,
    losses: String,
}

async fn first_row(client: &Client) -> Result<Option<RowView>> {
    let script = r#"
        const el = document.querySelector('[data-testid="call"]');
        if (!el) return null;
        return [el.dataset.sid, el.dataset.state, el.dataset.agent, el.dataset.agentLosses];
    "#;
    let found = client
        .execute(script, vec![])
        .await
        .context("reading the calls panel")?;
    let Some(cells) = found.as_array() else {
        return Ok(None);
    };
    let cell = |i: usize| {
        cells
            .get(i)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    Ok(Some(RowView {
        sid: cell(0),
        state: cell(1),
        agent: cell(2),
        losses: cell(3),
    }))
}

/// Waits until the first call row satisfies `want`; returns it.
async fn wait_for_row(
    client: &Client,
    what: &str,
    timeout: Duration,
    want: impl Fn(&RowView) -> bool,
) -> Result<RowView> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        let row = first_row(client).await?;
        if let Some(row) = row.as_ref().filter(|r| want(r)) {
            return Ok(row.clone());
        }
        last = row.or(last);
        if Instant::now() > deadline {
            bail!("waited {timeout:?} for the call to show {what}; last seen: {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The steps; `step` prints a step's title with the scenario's clock.
pub(super) async fn steps(
    client: &Client,
    server: &mut Server,
    shots: &Path,
    step: &dyn Fn(&str),
) -> Result<()> {
    step("calls 1. restart the server with Twilio on and a flaky agent; expect `Connected`");
    let agent = FlakyAgent::start().await?;
    server.stop();
    server.env.extend([
        (
            "TWILIO_ACCOUNT_SID",
            "AC0123456789abcdef0123456789abcdef".to_owned(),
        ),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN.to_owned()),
        ("TWILIO_PHONE_NUMBER", "+15550199".to_owned()),
        ("PUBLIC_URL", PUBLIC_URL.to_owned()),
        ("TETHER_AGENT_URL", agent.url.clone()),
    ]);
    server.start().await?;
    wait_for_text(
        client,
        "status-label",
        RECONNECT_TIMEOUT,
        "Connected",
        |t| t == "Connected",
    )
    .await?;
    wait_for_text(
        client,
        "calls-status",
        STEP_TIMEOUT,
        "the `calls` subscription",
        |t| t.starts_with("Subscribed"),
    )
    .await?;

    step("calls 2. tether simulate-call; expect the call live in the Calls panel");
    let envs = [
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
        ("PUBLIC_URL", PUBLIC_URL),
        ("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef"),
    ];
    let url = format!("http://{}", server.addr());
    let out_path = server.log.with_file_name("simulate-call.log");
    let out_file = std::fs::File::create(&out_path)
        .with_context(|| format!("creating {}", out_path.display()))?;
    let child = Command::new(&server.bin)
        .args(["simulate-call", "--url", &url, "--seconds", CALL_SECONDS])
        .envs(envs)
        .stdin(Stdio::null())
        .stdout(out_file.try_clone()?)
        .stderr(out_file)
        .spawn()
        .context("starting `tether simulate-call`")?;
    let mut player = super::ProcessGuard::new("simulate-call", child);
    let watched = watch_call(client, shots).await;
    let out = finish(&mut player, &out_path).await;
    let sid = watched?;
    let out = out?;
    ensure!(
        out.contains(&format!("call {sid} ")) && out.contains("after=hangup"),
        "simulate-call did not report call {sid} hung up normally: {out}"
    );
    println!("browser: {}", out.trim());
    Ok(())
}

/// Follows the call through the page: live, agent lost, agent up again, ended; its log.
async fn watch_call(client: &Client, shots: &Path) -> Result<String> {
    let live = wait_for_row(client, "live", STEP_TIMEOUT, |r| r.state == "live").await;
    screenshot(client, shots, "08-call-live").await?;
    let sid = live?.sid;
    let same = |r: &RowView| r.sid == sid;

    let lost = wait_for_row(client, "its agent link lost", STEP_TIMEOUT, |r| {
        same(r) && r.state == "live" && r.agent == "lost"
    })
    .await;
    screenshot(client, shots, "09-call-agent-lost").await?;
    lost?;

    let back = wait_for_row(client, "its agent link restored", STEP_TIMEOUT, |r| {
        same(r) && r.state == "live" && r.agent == "up" && r.losses == "1"
    })
    .await;
    screenshot(client, shots, "10-call-agent-restored").await?;
    back?;

    let ended = wait_for_row(client, "ended", STEP_TIMEOUT, |r| {
        same(r) && r.state == "ended"
    })
    .await;
    screenshot(client, shots, "11-call-ended").await?;
    let ended = ended?;
    ensure!(
        ended.losses == "1",
        "the ended call shows {} agent losses, expected 1",
        ended.losses
    );

    let script = r#"
        const d = document.getElementById('call-detail');
        if (!d) return null;
        return [d.dataset.sid, Array.from(d.querySelectorAll('[data-testid="call-event"]'))
            .map((e) => e.dataset.event)];
    "#;
    let detail = client
        .execute(script, vec![])
        .await
        .context("reading the call's event log")?;
    ensure!(
        detail[0].as_str() == Some(sid.as_str()),
        "the event log shows {detail}, expected call {sid}"
    );
    let events: Vec<&str> = detail[1]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let expected = ["call_started", "agent_lost", "agent_restored", "call_ended"];
    ensure!(
        events == expected,
        "the call's log holds {events:?}, expected {expected:?}"
    );
    Ok(sid)
}

/// Waits (bounded) for the player to exit 0; returns what it printed.
async fn finish(player: &mut super::ProcessGuard, out_path: &Path) -> Result<String> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    while !player.has_exited() {
        if Instant::now() > deadline {
            player.stop();
            bail!("`tether simulate-call` did not finish within {STEP_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = player.exit_status();
    let out = std::fs::read_to_string(out_path)
        .with_context(|| format!("reading {}", out_path.display()))?;
    ensure!(
        status.is_some_and(|s| s.success()),
        "`tether simulate-call` failed ({status:?}): {out}"
    );
    Ok(out)
}
