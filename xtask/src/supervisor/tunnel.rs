//! The ngrok tunnel of `cargo xtask dev --tunnel ngrok`: the seed's "Ngrok Service" rules.
//!
//! `ngrok http 8081` runs in the background under the supervisor, its log in a file (the seed's
//! `nohup ... > ngrok.log`). It is verified through its local API (`GET /api/tunnels` on
//! `127.0.0.1:4040`), whose public URL becomes `PUBLIC_URL`; the API is checked again every
//! 60 s, and a tunnel that stops answering or lists no tunnel for our port is restarted. The
//! public URL is published through the supervisor's status, so a restarted tunnel with a new
//! URL updates `PUBLIC_URL` for whoever watches it.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use tokio::sync::watch;

use super::{EventLog, Finish, Policy, Probe, Spec, Status, Supervised, http_get, supervise};

/// Where ngrok's local API listens unless its configuration says otherwise.
pub const DEFAULT_API_ADDR: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    4040,
));

/// What to tell a developer who asked for a tunnel without having ngrok.
pub const INSTALL_HINT: &str = "ngrok was not found on PATH. Install it from https://ngrok.com/download \
(or `snap install ngrok`, or `brew install ngrok`), run `ngrok config add-authtoken <TOKEN>` once, \
then retry; or run `cargo xtask dev` without `--tunnel` (the stack works on localhost without it).";

/// How to run and watch the tunnel.
#[derive(Clone, Debug)]
pub struct TunnelConfig {
    /// The ngrok executable (see [`super::find_program`]).
    pub program: PathBuf,
    /// The local port the tunnel forwards to (the server's, 8081).
    pub port: u16,
    /// ngrok's local API (default `127.0.0.1:4040`; set `web_addr` in ngrok's config to move
    /// it). It is also passed to the child as `TETHER_NGROK_API_ADDR`, which stand-ins read.
    pub api_addr: SocketAddr,
    /// A reserved domain (`--domain`), for a URL that survives restarts (`NGROK_DOMAIN`).
    pub domain: Option<String>,
    /// Time between checks of a running tunnel (seed: 60 s).
    pub check_interval: Duration,
    /// A check that takes longer has failed.
    pub check_timeout: Duration,
    /// How long a fresh ngrok may take to show its tunnel.
    pub start_timeout: Duration,
    /// Where ngrok's own log lines go.
    pub log_file: Option<PathBuf>,
    /// Where its pid is recorded.
    pub pid_file: Option<PathBuf>,
    /// Extra environment for the child.
    pub env: Vec<(OsString, OsString)>,
    /// Restart rules (the same as the server's by default).
    pub policy: Policy,
}

impl TunnelConfig {
    /// The seed's settings for `program` forwarding to `port`.
    pub fn new(program: PathBuf, port: u16) -> Self {
        TunnelConfig {
            program,
            port,
            api_addr: DEFAULT_API_ADDR,
            domain: None,
            check_interval: Duration::from_secs(60),
            check_timeout: Duration::from_secs(5),
            start_timeout: Duration::from_secs(30),
            log_file: None,
            pid_file: None,
            env: Vec::new(),
            policy: Policy::default(),
        }
    }
}

/// A running, watched tunnel.
pub struct Tunnel {
    supervised: Supervised,
}

/// Starts ngrok under supervision; returns at once (see [`Tunnel::wait_public_url`]).
pub fn start(config: TunnelConfig, log: EventLog) -> Tunnel {
    let mut args: Vec<OsString> = vec![
        "http".into(),
        // Log lines to stdout, which the supervisor appends to the log file.
        "--log=stdout".into(),
        "--log-format=json".into(),
    ];
    if let Some(domain) = &config.domain {
        args.push(format!("--domain={domain}").into());
    }
    args.push(config.port.to_string().into());

    let mut spec = Spec::new("ngrok", config.program.clone(), args);
    spec.env = config.env.clone();
    spec.env.push((
        "TETHER_NGROK_API_ADDR".into(),
        config.api_addr.to_string().into(),
    ));
    spec.output_file = config.log_file.clone();
    spec.pid_file = config.pid_file.clone();

    let api = config.api_addr;
    let port = config.port;
    let probe = Probe {
        check: Arc::new(move || {
            Box::pin(async move { fetch_public_url(api, port).await.map(Some) })
        }),
        interval: config.check_interval,
        startup_poll: Duration::from_millis(250).min(config.check_interval),
        timeout: config.check_timeout,
        startup_grace: config.start_timeout,
        failures_allowed: 1,
        ready_event: "tunnel_up",
        down_event: "tunnel_down",
        info_key: "public_url",
    };
    Tunnel {
        supervised: supervise(spec, config.policy, Some(probe), log),
    }
}

impl Tunnel {
    /// The public URL right now, if the tunnel is up.
    pub fn public_url(&self) -> Option<String> {
        let status = self.supervised.status();
        status.ready.then_some(status.info).flatten()
    }

    /// A receiver of status changes; `info` is the public URL.
    pub fn watch(&self) -> watch::Receiver<Status> {
        self.supervised.watch()
    }

    /// The pid of the running ngrok.
    #[cfg(test)]
    pub fn pid(&self) -> Option<u32> {
        self.supervised.status().pid
    }

    /// The last lines of ngrok's own log.
    pub fn last_lines(&self, n: usize) -> Vec<String> {
        self.supervised.last_lines(n)
    }

    /// Waits until the tunnel is verified through its API; its public URL.
    pub async fn wait_public_url(&self, timeout: Duration) -> Result<String> {
        let status = self
            .supervised
            .wait_for(timeout, |s| {
                (s.ready && s.info.is_some()) || s.finished.is_some()
            })
            .await
            .context("waiting for the tunnel to come up")?;
        match (status.finished, status.info) {
            (Some(finish), _) => bail!("the tunnel supervisor ended ({finish:?})"),
            (None, Some(url)) => Ok(url),
            (None, None) => bail!("invariant: a ready tunnel has a public URL"),
        }
    }

    /// Stops ngrok.
    pub async fn stop(self) -> Finish {
        self.supervised.stop().await
    }
}

/// Asks ngrok's local API for the public URL of the tunnel to `port`.
pub async fn fetch_public_url(api: SocketAddr, port: u16) -> Result<String> {
    let (status, body) = http_get(api, "/api/tunnels").await?;
    if status != 200 {
        bail!("GET http://{api}/api/tunnels answered {status}");
    }
    pick_public_url(&body, port)
}

#[derive(Deserialize)]
struct Tunnels {
    tunnels: Vec<TunnelInfo>,
}

#[derive(Deserialize)]
struct TunnelInfo {
    public_url: String,
    #[serde(default)]
    proto: String,
    #[serde(default)]
    config: TunnelTarget,
}

#[derive(Deserialize, Default)]
struct TunnelTarget {
    #[serde(default)]
    addr: String,
}

/// The public URL, from an `/api/tunnels` answer, of the tunnel forwarding to `port`
/// (`https` preferred over `http`).
pub fn pick_public_url(body: &str, port: u16) -> Result<String> {
    let tunnels: Tunnels = serde_json::from_str(body)
        .context("ngrok's /api/tunnels answer is not the expected JSON")?;
    if tunnels.tunnels.is_empty() {
        bail!("ngrok lists no tunnel (yet)");
    }
    let ours = |t: &&TunnelInfo| {
        let addr = t.config.addr.trim_end_matches('/');
        addr == port.to_string() || addr.ends_with(&format!(":{port}"))
    };
    let mut matching: Vec<&TunnelInfo> = tunnels.tunnels.iter().filter(ours).collect();
    if matching.is_empty() {
        let targets: Vec<&str> = tunnels
            .tunnels
            .iter()
            .map(|t| t.config.addr.as_str())
            .collect();
        bail!("ngrok's tunnels forward to {targets:?}, none to port {port}");
    }
    matching.sort_by_key(|t| t.proto != "https" && !t.public_url.starts_with("https://"));
    Ok(matching[0].public_url.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_https_tunnel_to_our_port() {
        let body = r#"{"tunnels":[
            {"public_url":"http://a.ngrok.app","proto":"http","config":{"addr":"http://localhost:8081"}},
            {"public_url":"https://a.ngrok.app","proto":"https","config":{"addr":"http://localhost:8081"}},
            {"public_url":"https://b.ngrok.app","proto":"https","config":{"addr":"http://localhost:9999"}}],"uri":"/api/tunnels"}"#;
        assert_eq!(pick_public_url(body, 8081).unwrap(), "https://a.ngrok.app");
        assert_eq!(pick_public_url(body, 9999).unwrap(), "https://b.ngrok.app");
    }

    #[test]
    fn explains_what_is_wrong_with_the_answer() {
        let none = pick_public_url(r#"{"tunnels":[]}"#, 8081).unwrap_err();
        assert!(none.to_string().contains("no tunnel"), "{none}");
        let other = r#"{"tunnels":[{"public_url":"https://b","proto":"https","config":{"addr":"localhost:3000"}}]}"#;
        let wrong = pick_public_url(other, 8081).unwrap_err();
        assert!(wrong.to_string().contains("none to port 8081"), "{wrong}");
        assert!(pick_public_url("<html>", 8081).is_err());
    }
}
