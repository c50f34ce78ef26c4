//! The built `tether` binary as a process: killed with SIGKILL and restarted on the same
//! database, and drained with SIGTERM.
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use protocol::ServerMessage;
use serde_json::json;
use server::auth::{AuthConfig, Authenticator};
use server::config::TEST_SECRET;
use tokio_tungstenite::connect_async;

use crate::harness::{Client, Incoming, within};

struct Process {
    child: Child,
    addr: SocketAddr,
    _lines: mpsc::Receiver<String>,
}

impl Process {
    /// Starts `tether serve` on an ephemeral port with its store in `dir`; returns once it
    /// logged `server_started`.
    fn start(dir: &Path, extra: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tether"));
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PORT", "0")
            .env("TETHER_HOST", "127.0.0.1")
            .env(
                "DATABASE_URL",
                format!("sqlite://{}", dir.join("tether.db").display()),
            )
            .env("TETHER_JWT_SECRET", TEST_SECRET)
            .env("TETHER_LOG_FORMAT", "json")
            .env("TETHER_UPGRADE_BURST", "1000")
            .env("TETHER_UPGRADE_PER_SEC", "1000")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("the tether binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let addr = loop {
            let line = rx
                .recv_timeout(crate::harness::TIMEOUT)
                .expect("server_started within the timeout");
            let v: serde_json::Value = serde_json::from_str(&line).expect("JSON log lines");
            if v["event"] == "server_started" {
                let port = v["data"]["port"].as_u64().expect("the port is logged");
                break SocketAddr::from(([127, 0, 0, 1], u16::try_from(port).unwrap()));
            }
        };
        Self {
            child,
            addr,
            _lines: rx,
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    async fn client(&self, sub: &str) -> Client {
        let auth = Authenticator::new(&AuthConfig::with_secret(TEST_SECRET));
        let star = protocol::ChannelGlob::parse("*").unwrap();
        let request = server::auth::IssueRequest {
            sub: sub.into(),
            subscribe: vec![star.clone()],
            publish: vec![star],
            ttl: Duration::from_secs(600),
            admin: false,
        };
        let token = auth.issue(request, server::auth::unix_now()).unwrap().0;
        let (ws, _) = within("connect", connect_async(format!("ws://{}/ws", self.addr)))
            .await
            .expect("the upgrade succeeds");
        let mut client = Client { ws };
        client.hello(&token).await;
        client
    }

    /// Waits for the process to exit; returns its status code.
    async fn wait(mut self) -> Option<i32> {
        within("the process to exit", async {
            loop {
                if let Some(status) = self.child.try_wait().expect("try_wait") {
                    return status.code();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn sigkill_and_restart_keeps_every_acked_message() {
    let dir = tempfile::tempdir().unwrap();
    let first = Process::start(dir.path(), &[]);
    let mut c = first.client("writer").await;
    // Publish continuously; kill the process after 300 acks while more are in flight.
    let mut acked = Vec::new();
    let mut sent = 0u64;
    while acked.len() < 300 {
        while sent < acked.len() as u64 + 50 {
            c.publish(&format!("m{sent}"), "durable", json!(sent)).await;
            sent += 1;
        }
        match c.next().await {
            Incoming::Msg(ServerMessage::Ack(a)) => acked.push((a.id, a.offset)),
            other => panic!("unexpected {other:?}"),
        }
    }
    first.signal("-KILL");
    // Whatever else was acked before the socket died counts too.
    loop {
        match c.next().await {
            Incoming::Msg(ServerMessage::Ack(a)) => acked.push((a.id, a.offset)),
            Incoming::Msg(other) => panic!("unexpected {other:?}"),
            Incoming::Closed(_) => break,
        }
    }
    assert_eq!(first.wait().await, None, "killed by a signal");

    let second = Process::start(dir.path(), &[]);
    let mut r = second.client("reader").await;
    let s = r.subscribe("durable", Some(0)).await;
    assert!(s.offset >= acked.len() as u64);
    let (got, _) = r.messages(usize::try_from(s.offset).unwrap()).await;
    for (id, offset) in &acked {
        let stored = &got[usize::try_from(*offset).unwrap() - 1];
        assert_eq!(
            (&stored.id, stored.offset),
            (id, *offset),
            "acked message kept"
        );
    }
}

#[tokio::test]
async fn sigterm_advises_spread_reconnects_closes_1012_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let process = Process::start(dir.path(), &[("TETHER_DRAIN_MS", "2000")]);
    let mut clients = Vec::new();
    for i in 0..8 {
        clients.push(process.client(&format!("c{i}")).await);
    }
    process.signal("-TERM");
    let mut advice = Vec::new();
    for mut c in clients {
        let (code, before) = c.until_close().await;
        assert_eq!(code, Some(1012));
        match before.last() {
            Some(ServerMessage::Reconnect(r)) => {
                assert!(r.after_ms < 2000, "{r:?}");
                assert_eq!(r.reason, protocol::ReconnectReason::Shutdown);
                advice.push(r.after_ms);
            }
            other => panic!("expected reconnect before the close, got {other:?}"),
        }
    }
    advice.sort_unstable();
    advice.dedup();
    assert!(advice.len() > 1, "after_ms is spread: {advice:?}");
    assert_eq!(process.wait().await, Some(0));
}
