//! The open-files budget end to end (issue 14, `src/fdlimit.rs`): the `tether` binary started
//! with a hard `RLIMIT_NOFILE` of 300 and `TETHER_MAX_CONNECTIONS` far above it lowers its
//! connection limit to what the descriptors allow (minus the reserve), admits exactly that
//! many WebSockets — each of which works (`hello` → `welcome`) — answers every further
//! upgrade `503`, and never fails `accept` with EMFILE.
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use server::config::TEST_SECRET;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::{self, Message};

/// The open-files limit (soft and hard) the server is started with.
const NOFILE: u64 = 300;
/// Upgrades attempted beyond the derived cap.
const BEYOND: usize = 20;
/// Every wait in this test is bounded by this.
const TIMEOUT: Duration = Duration::from_secs(30);

struct Server {
    child: Child,
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn env(cmd: &mut Command, dir: &Path) {
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.join("tether.db").display()),
        )
        .env("TETHER_JWT_SECRET", TEST_SECRET);
}

fn start(dir: &Path) -> Server {
    // util-linux `prlimit` sets the child's limit without `unsafe` `pre_exec` here.
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile={NOFILE}:{NOFILE}"))
        .arg(env!("CARGO_BIN_EXE_tether"))
        .arg("serve");
    env(&mut cmd, dir);
    cmd.env("PORT", "0")
        .env("TETHER_HOST", "127.0.0.1")
        .env("TETHER_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env("TETHER_MAX_CONNECTIONS", "100000")
        .env("TETHER_MAX_CONNECTIONS_PER_IP", "100000")
        .env("TETHER_UPGRADE_BURST", "100000")
        .env("TETHER_UPGRADE_PER_SEC", "100000")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().expect("the tether binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let kept = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let port = serde_json::from_str::<serde_json::Value>(&line)
                .ok()
                .filter(|v| v["event"] == "server_started")
                .and_then(|v| v["data"]["port"].as_u64());
            kept.lock().unwrap().push(line);
            if let Some(port) = port {
                let _ = tx.send(port);
            }
        }
    });
    let port = rx.recv_timeout(TIMEOUT).expect("server_started logged");
    Server {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], u16::try_from(port).unwrap())),
        lines,
    }
}

fn token(dir: &Path) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tether"));
    cmd.args(["token", "--sub", "fd", "--subscribe", "*", "--ttl", "3600"]);
    env(&mut cmd, dir);
    let out = cmd.output().expect("tether token runs");
    assert!(out.status.success(), "tether token: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_stop_at_the_derived_cap_with_503_and_never_emfile() {
    let dir = tempfile::tempdir().unwrap();
    let srv = start(dir.path());
    let token = token(dir.path());
    let cap = server::fdlimit::connection_cap(NOFILE);
    let url = format!("ws://{}/ws", srv.addr);

    let mut admitted = Vec::new();
    let mut refused = 0usize;
    for _ in 0..cap + BEYOND {
        match tokio::time::timeout(TIMEOUT, connect_async(&url))
            .await
            .expect("every upgrade is answered (no accept stuck on EMFILE)")
        {
            Ok((ws, _)) => admitted.push(ws),
            Err(tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), 503, "refused as full");
                refused += 1;
            }
            Err(e) => panic!("an upgrade failed otherwise: {e}"),
        }
    }
    assert_eq!(admitted.len(), cap, "exactly the derived cap is admitted");
    assert_eq!(refused, BEYOND, "every upgrade beyond the cap gets 503");

    // Every admitted connection works.
    let hello =
        serde_json::json!({"type":"hello","token":token,"client":"fdlimit-test"}).to_string();
    for ws in &mut admitted {
        ws.send(Message::text(hello.clone())).await.unwrap();
        let reply = loop {
            let msg = tokio::time::timeout(TIMEOUT, ws.next())
                .await
                .expect("a reply within the timeout")
                .expect("the connection stays open")
                .unwrap();
            if let Message::Text(t) = msg {
                break t;
            }
        };
        let v: serde_json::Value = serde_json::from_str(reply.as_str()).unwrap();
        assert_eq!(v["type"], "welcome", "got {v}");
    }
    for mut ws in admitted {
        let _ = ws.close(None).await;
    }

    let lines = srv.lines.lock().unwrap().clone();
    assert!(
        !lines.iter().any(|l| l.contains("Too many open files")),
        "the server reached EMFILE"
    );
    let lowered = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "max_connections_lowered")
        .expect("the configured limit is reported lowered");
    assert_eq!(lowered["data"]["max_connections"], cap);
    assert_eq!(lowered["data"]["fd_soft_limit"], NOFILE);
}
