//! The `tether` process under test: built once, started on a temporary database, killed with
//! SIGKILL or SIGTERM by pid, and started again on the same database and port.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::util::project_root;

/// How long a started server may take to answer `GET /health/ready` with 200.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a SIGTERMed server may take to exit (the drain window plus slack).
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// `cargo build -p server --bin tether` into the target dir in effect; returns the binary.
pub fn build() -> Result<PathBuf> {
    println!("chaos: cargo build -p server --bin tether");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .current_dir(project_root())
        .args(["build", "--quiet", "-p", "server", "--bin", "tether"])
        .status()
        .context("running cargo to build the server")?;
    ensure!(
        status.success(),
        "building the `tether` binary failed ({status})"
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_relative() {
                project_root().join(dir)
            } else {
                dir
            }
        })
        .unwrap_or_else(|| project_root().join("target"));
    let bin = target.join("debug").join("tether");
    ensure!(
        bin.is_file(),
        "{} is missing after the build",
        bin.display()
    );
    Ok(bin)
}

/// How a server process was stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kill {
    /// SIGKILL: a crash; nothing is drained.
    Hard,
    /// SIGTERM: the graceful drain of CONTRACT §5.6.
    Graceful,
}

impl Kill {
    /// The signal's name, for the report.
    pub fn name(self) -> &'static str {
        match self {
            Kill::Hard => "SIGKILL",
            Kill::Graceful => "SIGTERM",
        }
    }
}

/// The `tether` server and everything needed to start it again the same way.
pub struct Server {
    bin: PathBuf,
    addr: SocketAddr,
    env: Vec<(&'static str, String)>,
    log: PathBuf,
    child: Option<Child>,
    /// How many times it was started.
    pub starts: u32,
}

impl Server {
    /// A server on `port` (0: a free one) keeping its database and secret in `dir`.
    pub fn new(bin: &Path, dir: &Path, port: u16, heartbeat_ms: u64) -> Result<Self> {
        let port = if port == 0 { free_port()? } else { port };
        let secret = dir.join("jwt-secret");
        std::fs::write(&secret, "chaos-drill-secret-0123456789abcdef0123456789")
            .with_context(|| format!("writing {}", secret.display()))?;
        let db = dir.join("tether.db");
        let env = vec![
            ("TETHER_HOST", "127.0.0.1".to_owned()),
            ("PORT", port.to_string()),
            ("DATABASE_URL", format!("sqlite://{}", db.display())),
            ("TETHER_ENV", "development".to_owned()),
            ("TETHER_JWT_SECRET_FILE", secret.display().to_string()),
            ("TETHER_LOG_FORMAT", "json".to_owned()),
            ("TETHER_HEARTBEAT_MS", heartbeat_ms.to_string()),
            // Short drains keep the drill quick; clients still get `reconnect` + 1012.
            ("TETHER_DRAIN_MS", "1000".to_owned()),
            // Every drill client connects from 127.0.0.1: lift the per-IP upgrade bucket so
            // a reconnect wave after a restart is not refused as a flood.
            ("TETHER_UPGRADE_BURST", "100000".to_owned()),
            ("TETHER_UPGRADE_PER_SEC", "100000".to_owned()),
            // Keep the whole drill's history, so every acknowledged message can be checked.
            ("TETHER_RETENTION_MESSAGES", "10000000".to_owned()),
        ];
        Ok(Self {
            bin: bin.to_owned(),
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            env,
            log: dir.join("tether.log"),
            child: None,
            starts: 0,
        })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's log file (stdout and stderr of every run, appended).
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts `tether serve` and waits until `/health/ready` answers 200; returns how long
    /// that took.
    pub async fn start(&mut self) -> Result<Duration> {
        ensure!(self.child.is_none(), "the server is already running");
        let started = Instant::now();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = Command::new(&self.bin)
            .arg("serve")
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        self.starts += 1;
        let deadline = started + READY_TIMEOUT;
        loop {
            if let Ok((200, _)) = http_get(self.addr, "/health/ready", None).await {
                return Ok(started.elapsed());
            }
            if let Some(status) = self.try_wait()? {
                self.child = None;
                bail!(
                    "tether exited at start ({status}); see {}",
                    self.log.display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "tether did not answer /health/ready within {READY_TIMEOUT:?}; see {}",
                    self.log.display()
                );
            }
            // Polling an HTTP endpoint is the only readiness signal a process gives.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => Ok(child.try_wait()?),
            None => Ok(None),
        }
    }

    /// Stops the running server with `kill` and reaps it; returns its exit status.
    pub async fn kill(&mut self, kill: Kill) -> Result<ExitStatus> {
        let mut child = self.child.take().context("the server is not running")?;
        let pid = child.id();
        match kill {
            Kill::Hard => child.kill().context("SIGKILL")?,
            Kill::Graceful => {
                let status = Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()
                    .context("running kill -TERM")?;
                ensure!(status.success(), "kill -TERM {pid} failed ({status})");
            }
        }
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill(); // It overstayed its drain; the result is the error below.
                let _ = child.wait();
                bail!(
                    "tether (pid {pid}) did not exit within {EXIT_TIMEOUT:?} of {}",
                    kill.name()
                );
            }
            // A child's exit has no async notification in std; poll it briefly.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A token from `tether token` with the same configuration (same secret).
    pub fn token(&self, sub: &str, ttl_secs: u64) -> Result<String> {
        let out = Command::new(&self.bin)
            .args(["token", "--sub", sub, "--subscribe", "*", "--publish", "*"])
            .args(["--ttl", &ttl_secs.to_string()])
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .output()
            .context("running `tether token`")?;
        ensure!(
            out.status.success(),
            "`tether token` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        ensure!(!token.is_empty(), "`tether token` printed nothing");
        Ok(token)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Best effort on the way out: the process may already be gone.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A free loopback port, chosen by the OS (released again before the server binds it).
pub fn free_port() -> Result<u16> {
    let probe =
        std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(probe.local_addr()?.port())
}

/// A plain HTTP/1.0 GET (so the answer is never chunked); returns the status and the body.
pub async fn http_get(addr: SocketAddr, path: &str, bearer: Option<&str>) -> Result<(u16, String)> {
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let mut request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n");
        if let Some(token) = bearer {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .context("an HTTP answer without a header end")?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .context("an HTTP answer without a status")?;
        anyhow::Ok((status, body.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .with_context(|| format!("GET {path} timed out"))?
}
