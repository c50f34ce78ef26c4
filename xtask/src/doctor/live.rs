//! The doctor's live connect–drop–resume check, with a real WebSocket client.
//!
//! It does what a client does across a network blip (CONTRACT §5.3, §5.4, §8): connect and
//! authenticate, subscribe, publish and get the ack and the delivery; drop the connection
//! without a close frame; while it is away another connection publishes; reconnect, present the
//! token again, resubscribe with `since` = the last offset seen and the epoch, and expect the
//! missed message replayed (`recovered: true`, no gap, no repeat); finally retry the first
//! publish with its original id and expect `duplicate: true` with the first offset.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use protocol::message::{Hello, Publish, Subscribe};
use protocol::{ClientMessage, ServerMessage, Token, decode_server, encode};
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{Args, Settings, get};
use crate::util::project_root;

/// Every awaited frame must come within this.
const FRAME_TIMEOUT: Duration = Duration::from_secs(5);

/// The token for the check: `--token-file`, `TETHER_TOKEN`, `tether token` (same secret as a
/// server using these settings), or the development server's `/dev/token`.
pub async fn find_token(
    args: &Args,
    settings: &Settings,
    tether: Option<&PathBuf>,
    base: &str,
) -> Result<String> {
    if let Some(path) = &args.token_file {
        let token =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        return Ok(token.trim().to_owned());
    }
    if let Some(token) = settings.get("TETHER_TOKEN") {
        return Ok(token.to_owned());
    }
    let mut why = Vec::new();
    if let Some(exe) = tether {
        let out = tokio::process::Command::new(exe)
            .args(["token", "--sub", "doctor", "--subscribe", "doctor:*"])
            .args(["--publish", "doctor:*", "--ttl", "600"])
            .envs(&settings.from_file)
            .current_dir(project_root())
            .stdin(Stdio::null())
            .output()
            .await;
        match out {
            Ok(out) if out.status.success() => {
                let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                if !token.is_empty() {
                    return Ok(token);
                }
                why.push("`tether token` printed nothing".to_owned());
            }
            Ok(out) => why.push(format!(
                "`tether token` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(err) => why.push(format!("cannot run {}: {err}", exe.display())),
        }
    }
    match get(base, "/dev/token?sub=doctor").await {
        Ok((200, body)) => {
            let json: serde_json::Value =
                serde_json::from_str(&body).context("/dev/token answered non-JSON")?;
            if let Some(token) = json["token"].as_str() {
                return Ok(token.to_owned());
            }
            why.push("/dev/token answered without a token".to_owned());
        }
        Ok((code, _)) => why.push(format!("/dev/token answered {code} (production)")),
        Err(err) => why.push(format!("/dev/token: {err:#}")),
    }
    bail!(
        "{}; pass --token-file or TETHER_TOKEN with a token allowing doctor:*",
        why.join("; ")
    )
}

/// One WebSocket connection speaking `tether.v1`.
struct Conn {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Frames read while waiting for another one: the server may deliver a message before it
    /// acknowledges it (CONTRACT §5.4 fixes no order between the two), so nothing is dropped.
    seen: std::collections::VecDeque<ServerMessage>,
}

impl Conn {
    /// Connects and authenticates; the connection id.
    async fn open(url: &str, token: &str) -> Result<(Conn, String)> {
        let (ws, _) = tokio::time::timeout(FRAME_TIMEOUT, tokio_tungstenite::connect_async(url))
            .await
            .context("the WebSocket upgrade timed out")?
            .with_context(|| format!("connecting to {url}"))?;
        let mut conn = Conn {
            ws,
            seen: std::collections::VecDeque::new(),
        };
        conn.send(&ClientMessage::Hello(Hello {
            token: Token::new(token),
            client: Some("xtask-doctor/0.1.0".to_owned()),
        }))
        .await?;
        let welcome = conn
            .expect("welcome", |m| matches!(m, ServerMessage::Welcome(_)))
            .await?;
        let ServerMessage::Welcome(welcome) = welcome else {
            bail!("invariant: expect returned a welcome");
        };
        Ok((conn, welcome.connection_id))
    }

    async fn send(&mut self, msg: &ClientMessage) -> Result<()> {
        self.ws
            .send(Message::text(encode(msg)))
            .await
            .context("sending a frame")
    }

    /// Waits for the first frame `want` accepts (looking at frames already read first); an
    /// `error` frame, a `nack` or a close fails.
    async fn expect(
        &mut self,
        what: &str,
        mut want: impl FnMut(&ServerMessage) -> bool,
    ) -> Result<ServerMessage> {
        if let Some(i) = self.seen.iter().position(&mut want) {
            return self
                .seen
                .remove(i)
                .context("invariant: the position is in range");
        }
        let deadline = tokio::time::Instant::now() + FRAME_TIMEOUT;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .with_context(|| format!("no {what} within {FRAME_TIMEOUT:?}"))?;
            let text = match frame {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(close))) => {
                    bail!("closed while waiting for {what}: {close:?}")
                }
                Some(Ok(_)) => continue,
                Some(Err(err)) => bail!("while waiting for {what}: {err}"),
                None => bail!("the connection ended while waiting for {what}"),
            };
            let msg = decode_server(text.as_str())
                .with_context(|| format!("an undecodable frame: {text}"))?;
            if want(&msg) {
                return Ok(msg);
            }
            match msg {
                ServerMessage::Error(e) => bail!("error frame while waiting for {what}: {e:?}"),
                ServerMessage::Nack(n) => bail!("nack while waiting for {what}: {n:?}"),
                ServerMessage::Pong(_) | ServerMessage::TokenExpiring(_) => {}
                other => self.seen.push_back(other),
            }
        }
    }

    async fn publish(&mut self, id: &str, channel: &str, n: u32) -> Result<(u64, bool)> {
        self.send(&ClientMessage::Publish(Publish {
            id: id.to_owned(),
            channel: channel.to_owned(),
            data: json!({"doctor": n}),
        }))
        .await?;
        let ack = self
            .expect(
                "the ack",
                |m| matches!(m, ServerMessage::Ack(a) if a.id == id),
            )
            .await?;
        let ServerMessage::Ack(ack) = ack else {
            bail!("invariant: expect returned an ack");
        };
        Ok((ack.offset, ack.duplicate))
    }
}

/// The check itself; a one-line account of what happened.
pub async fn connect_drop_resume(base: &str, token: &str) -> Result<String> {
    let url = format!(
        "{}/ws",
        base.replacen("http://", "ws://", 1).trim_end_matches('/')
    );
    let run = crate::supervisor::now().unix_millis();
    let channel = format!("doctor:check-{run}");
    let (first_id, second_id) = (format!("doctor-{run}-1"), format!("doctor-{run}-2"));

    // Connect, subscribe (live only), publish, see the ack and the delivery.
    let (mut a, conn_a) = Conn::open(&url, token).await.context("first connection")?;
    a.send(&ClientMessage::Subscribe(Subscribe {
        channel: channel.clone(),
        since: None,
        epoch: None,
    }))
    .await?;
    let subscribed = a
        .expect(
            "subscribed",
            |m| matches!(m, ServerMessage::Subscribed(s) if s.channel == channel),
        )
        .await?;
    let ServerMessage::Subscribed(subscribed) = subscribed else {
        bail!("invariant: expect returned subscribed");
    };
    let epoch = subscribed.epoch;
    let (first_offset, duplicate) = a.publish(&first_id, &channel, 1).await?;
    if duplicate {
        bail!("a fresh publish was acked as a duplicate");
    }
    a.expect(
        "the delivery of the first message",
        |m| matches!(m, ServerMessage::Message(d) if d.offset == first_offset && d.id == first_id),
    )
    .await?;

    // Drop it without a close frame, like a lost network.
    drop(a);

    // Meanwhile another connection publishes.
    let (mut b, _) = Conn::open(&url, token).await.context("second connection")?;
    let (second_offset, _) = b.publish(&second_id, &channel, 2).await?;
    if second_offset != first_offset + 1 {
        bail!("offsets are not consecutive: {first_offset} then {second_offset}");
    }
    // Closing cleanly; a failure to close is the server's business, not the check's.
    let _ = b.ws.close(None).await;

    // Reconnect (a new token check), resume from the last offset seen.
    let (mut c, conn_c) = Conn::open(&url, token).await.context("reconnection")?;
    if conn_c == conn_a {
        bail!("the server reused connection id {conn_a}");
    }
    c.send(&ClientMessage::Subscribe(Subscribe {
        channel: channel.clone(),
        since: Some(first_offset),
        epoch: Some(epoch.clone()),
    }))
    .await?;
    let resumed = c
        .expect(
            "subscribed (resume)",
            |m| matches!(m, ServerMessage::Subscribed(s) if s.channel == channel),
        )
        .await?;
    let ServerMessage::Subscribed(resumed) = resumed else {
        bail!("invariant: expect returned subscribed");
    };
    if !resumed.recovered || resumed.replayed != 1 {
        bail!(
            "resume from offset {first_offset} gave recovered={} replayed={} (expected true, 1)",
            resumed.recovered,
            resumed.replayed
        );
    }
    let replay = c
        .expect(
            "the replayed message",
            |m| matches!(m, ServerMessage::Message(d) if d.channel == channel),
        )
        .await?;
    match replay {
        ServerMessage::Message(d) if d.offset == second_offset && d.id == second_id => {}
        ServerMessage::Message(d) => bail!(
            "replay delivered offset {} id {} (expected {second_offset} {second_id})",
            d.offset,
            d.id
        ),
        _ => bail!("invariant: expect returned a message"),
    }

    // A retry of the first publish with its original id is stored once.
    let (again, duplicate) = c.publish(&first_id, &channel, 1).await?;
    if !duplicate || again != first_offset {
        bail!(
            "a retried publish got offset {again} duplicate={duplicate} (expected {first_offset}, true)"
        );
    }
    let _ = c.ws.close(None).await; // As above.

    Ok(format!(
        "connected, published (offset {first_offset}), dropped, resumed from {first_offset} in epoch \
         {epoch}: 1 missed message replayed, no gap, no repeat; retried publish acked as duplicate"
    ))
}
