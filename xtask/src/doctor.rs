//! `cargo xtask doctor [--post URL] [--json]`: the seed's deployment checklist as checks.
//!
//! One line per check, `PASS`, `WARN` or `FAIL`, and a non-zero exit on any `FAIL`
//! (CONTRACT §9). `--json` prints one JSON object instead, for machines.
//!
//! Before deployment (the default): the settings as `tether check-env` sees them (variables,
//! Twilio set, secret, store reachable and migrated), production security (secret strength, no
//! wildcard origin, TLS or a trusted proxy), ports, the tunnel (reachable, URL == `PUBLIC_URL`),
//! clock sanity, and — when a local server is running — a connect–drop–resume check.
//!
//! After deployment (`--post URL`): `/health` and `/health/ready` sampled over a window, the
//! error rate and log format of recent JSON logs (`--log-file`), and the live connect–drop–resume
//! check with a real WebSocket client.
//!
//! The settings are the process environment plus `--env-file` (the `KEY=VALUE` file a systemd
//! unit loads), so the file you are about to deploy can be checked before it is.

pub mod deploy;
mod live;
pub mod pm2;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use protocol::{LogEntry, LogLevel};
use serde::Serialize;

use crate::supervisor::{http_get, tunnel};
use crate::util::project_root;

/// `cargo xtask doctor`: the pre- and post-deployment checklists.
#[derive(clap::Args, Debug, Default)]
pub struct Args {
    /// Run the post-deployment checks against the server at URL (e.g. http://127.0.0.1:8081).
    #[arg(long, value_name = "URL")]
    pub post: Option<String>,
    /// Print one JSON object instead of lines.
    #[arg(long)]
    pub json: bool,
    /// Settings file (`KEY=VALUE` lines, as systemd's EnvironmentFile) on top of the environment.
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// The `tether` binary to ask (`check-env`, `token`); built with cargo when not given.
    #[arg(long, value_name = "PATH")]
    pub tether: Option<PathBuf>,
    /// The server's JSON log lines (e.g. `journalctl -u tether -o cat > tether.log`), for the
    /// error-rate and log-format checks.
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// With `--post`: how long to sample `/health` and `/health/ready`, in seconds.
    #[arg(long, default_value_t = 10)]
    pub window: u64,
    /// A token for the live check (else `TETHER_TOKEN`, `tether token`, or `/dev/token`).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Also run `deploy/pm2/ecosystem.config.js` under a private PM2 (installed from npm into
    /// `target/pm2/`) and check that PM2 restarts the server after a kill.
    #[arg(long)]
    pub pm2_live: bool,
}

/// A check's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// Fine.
    Pass,
    /// Worth a look; does not fail the run.
    Warn,
    /// Must be fixed; the run exits non-zero.
    Fail,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        })
    }
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// The verdict.
    pub status: Status,
    /// Dotted name, e.g. `security.origins`.
    pub check: String,
    /// What was found, and what to do about it.
    pub detail: String,
}

/// The checks so far; printed as they come unless the output is JSON.
pub struct Report {
    checks: Vec<Check>,
    print: bool,
}

impl Report {
    /// A report printing lines when `print`.
    pub fn new(print: bool) -> Self {
        Report {
            checks: Vec::new(),
            print,
        }
    }

    /// Adds one check.
    pub fn add(&mut self, status: Status, check: impl Into<String>, detail: impl Into<String>) {
        let check = Check {
            status,
            check: check.into(),
            detail: detail.into(),
        };
        if self.print {
            println!("{} {}: {}", check.status, check.check, check.detail);
        }
        self.checks.push(check);
    }

    /// Every check so far.
    pub fn checks(&self) -> &[Check] {
        &self.checks
    }

    /// Whether any check failed.
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
    }

    fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }
}

/// Runs `cargo xtask doctor`.
pub fn run(args: Args) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let report = runtime.block_on(doctor(&args))?;
    let (pass, warn, fail) = (
        report.count(Status::Pass),
        report.count(Status::Warn),
        report.count(Status::Fail),
    );
    if args.json {
        let out = serde_json::json!({
            "mode": if args.post.is_some() { "post" } else { "pre" },
            "checks": report.checks(),
            "summary": {"pass": pass, "warn": warn, "fail": fail},
        });
        println!("{out}");
    } else {
        println!();
        println!("doctor: {pass} passed, {warn} warnings, {fail} failed");
    }
    if report.failed() {
        bail!("doctor: {fail} check(s) failed");
    }
    Ok(())
}

/// All checks of the selected mode.
pub async fn doctor(args: &Args) -> Result<Report> {
    let mut report = Report::new(!args.json);
    let settings = Settings::load(args.env_file.as_deref())?;
    match &args.post {
        None => pre_deployment(args, &settings, &mut report).await,
        Some(url) => post_deployment(args, &settings, url, &mut report).await,
    }
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// Settings

/// The settings a server would see: the process environment, overlaid by `--env-file`.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    vars: BTreeMap<String, String>,
    /// Only the file's variables, passed on to `tether check-env`.
    from_file: BTreeMap<String, String>,
}

impl Settings {
    /// The environment plus `env_file`.
    pub fn load(env_file: Option<&Path>) -> Result<Self> {
        let mut vars: BTreeMap<String, String> = std::env::vars().collect();
        let mut from_file = BTreeMap::new();
        if let Some(path) = env_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            from_file = parse_env_file(&text);
            vars.extend(from_file.clone());
        }
        Ok(Settings { vars, from_file })
    }

    /// Settings from pairs only (tests).
    #[cfg(test)]
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let vars: BTreeMap<String, String> = pairs
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Settings {
            from_file: vars.clone(),
            vars,
        }
    }

    /// A non-empty setting.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    fn production(&self) -> bool {
        self.get("TETHER_ENV")
            .is_some_and(|e| e.eq_ignore_ascii_case("production"))
    }

    fn port(&self) -> u16 {
        self.get("PORT")
            .and_then(|p| p.parse().ok())
            .unwrap_or(8081)
    }
}

/// `KEY=VALUE` lines; `#` comments, blank lines, optional `export ` and quotes.
pub fn parse_env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_owned(), v.to_owned()))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Before deployment

async fn pre_deployment(args: &Args, settings: &Settings, report: &mut Report) {
    let tether = match &args.tether {
        Some(path) => Ok(path.clone()),
        None => {
            if !args.json {
                println!("(building tether for `check-env`)");
            }
            build_quietly().await
        }
    };
    match &tether {
        Ok(exe) => check_env(exe, settings, report).await,
        Err(err) => report.add(
            Status::Fail,
            "env",
            format!("cannot run `tether check-env`: {err:#}"),
        ),
    }
    security(settings, report);
    ports(settings, report);
    tunnel_check(settings, tunnel::DEFAULT_API_ADDR, report).await;
    clock(report);
    let drain_ms = tether
        .as_ref()
        .ok()
        .and_then(|exe| deploy::server_drain_default(exe))
        .unwrap_or(deploy::CONTRACT_DRAIN_MS);
    deploy::check_deploy(&project_root(), drain_ms, report);
    if args.pm2_live {
        let ecosystem = project_root().join("deploy/pm2/ecosystem.config.js");
        let result = match &tether {
            Ok(exe) => pm2::pm2_live(exe, &ecosystem).await,
            Err(err) => Err(anyhow::anyhow!("no tether binary: {err:#}")),
        };
        match result {
            Ok(detail) => report.add(Status::Pass, "deploy.pm2.live", detail),
            Err(err) => report.add(Status::Fail, "deploy.pm2.live", format!("{err:#}")),
        }
    }

    // The recovery test needs a server; use the local one if it runs.
    let local = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, settings.port()));
    match http_get(local, "/health/live").await {
        Ok((200, _)) => {
            let base = format!("http://{local}");
            live_check(args, settings, tether.as_ref().ok(), &base, report).await;
        }
        _ => report.add(
            Status::Warn,
            "recovery",
            format!(
                "no local server on {local}: connection recovery not tested (start one with \
                 `cargo xtask dev`, or run `cargo xtask doctor --post URL` after deploying)"
            ),
        ),
    }
}

/// `cargo build -p server` with its output hidden unless it fails; the binary.
async fn build_quietly() -> Result<PathBuf> {
    let out = tokio::process::Command::new("cargo")
        .args(["build", "--quiet", "-p", "server", "--bin", "tether"])
        .current_dir(project_root())
        .stdin(Stdio::null())
        .output()
        .await
        .context("running cargo")?;
    if !out.status.success() {
        bail!(
            "`cargo build -p server` failed:\n{}",
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    Ok(crate::web::target_dir().join("debug").join("tether"))
}

/// `tether check-env`'s lines become `env.<check>` lines.
pub async fn check_env(exe: &Path, settings: &Settings, report: &mut Report) {
    let out = tokio::process::Command::new(exe)
        .arg("check-env")
        .envs(&settings.from_file)
        .current_dir(project_root())
        .stdin(Stdio::null())
        .output()
        .await;
    let out = match out {
        Ok(out) => out,
        Err(err) => {
            report.add(
                Status::Fail,
                "env",
                format!("cannot run {} check-env: {err}", exe.display()),
            );
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = 0;
    for line in stdout.lines() {
        let Some((status, rest)) = line.split_once(' ') else {
            continue;
        };
        let status = match status {
            "PASS" => Status::Pass,
            "WARN" => Status::Warn,
            "FAIL" => Status::Fail,
            _ => continue,
        };
        let (name, detail) = rest.split_once(": ").unwrap_or((rest, ""));
        report.add(status, format!("env.{name}"), detail);
        lines += 1;
    }
    if !out.status.success() && !report.failed() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        report.add(
            Status::Fail,
            "env",
            format!(
                "`tether check-env` failed ({}): {}",
                out.status,
                stderr.trim()
            ),
        );
    } else if lines == 0 {
        report.add(Status::Warn, "env", "`tether check-env` printed no checks");
    }
}

/// The seed's "Validate security settings", for production; development gets notes.
pub fn security(settings: &Settings, report: &mut Report) {
    let production = settings.production();
    let severe = if production {
        Status::Fail
    } else {
        Status::Warn
    };

    // The secret, from the variable or the file; its bytes are measured, never shown.
    let secret = match (
        settings.get("TETHER_JWT_SECRET"),
        settings.get("TETHER_JWT_SECRET_FILE"),
    ) {
        (Some(_), Some(_)) => {
            Err("set TETHER_JWT_SECRET or TETHER_JWT_SECRET_FILE, not both".to_owned())
        }
        (Some(value), None) => Ok(Some(("TETHER_JWT_SECRET".to_owned(), value.len()))),
        (None, Some(path)) => match std::fs::read(path) {
            Ok(bytes) => Ok(Some((
                format!("TETHER_JWT_SECRET_FILE {path}"),
                trim_ascii_end(&bytes).len(),
            ))),
            Err(err) => Err(format!("TETHER_JWT_SECRET_FILE {path}: {err}")),
        },
        (None, None) => Ok(None),
    };
    match (secret, production) {
        (Err(why), _) => report.add(Status::Fail, "security.secret", why),
        (Ok(Some((from, len))), true) if len < 32 => report.add(
            Status::Fail,
            "security.secret",
            format!(
                "{from} is {len} bytes; production needs at least 32 (head -c 48 /dev/urandom | base64)"
            ),
        ),
        (Ok(Some((from, len))), _) => {
            report.add(Status::Pass, "security.secret", format!("{from}, {len} bytes"));
        }
        (Ok(None), true) => report.add(
            Status::Fail,
            "security.secret",
            "production needs TETHER_JWT_SECRET or TETHER_JWT_SECRET_FILE (at least 32 bytes)",
        ),
        (Ok(None), false) => report.add(
            Status::Pass,
            "security.secret",
            "development: generated once and kept in data/dev-secret",
        ),
    }

    // Origins: exact scheme+host+port, never `*`.
    match settings.get("TETHER_ALLOWED_ORIGINS") {
        Some(list) if list.split(',').any(|o| o.trim() == "*") => report.add(
            severe,
            "security.origins",
            "TETHER_ALLOWED_ORIGINS contains `*`; list the exact origins of your web apps",
        ),
        Some(list) if production => {
            let plain: Vec<&str> = list
                .split(',')
                .map(str::trim)
                .filter(|o| o.starts_with("http://"))
                .collect();
            if plain.is_empty() {
                report.add(Status::Pass, "security.origins", list.to_owned());
            } else {
                report.add(
                    Status::Warn,
                    "security.origins",
                    format!("plain-http origins in production: {}", plain.join(", ")),
                );
            }
        }
        Some(list) => report.add(Status::Pass, "security.origins", list.to_owned()),
        None if production => report.add(
            Status::Warn,
            "security.origins",
            "TETHER_ALLOWED_ORIGINS is empty: no browser origin may connect (non-browser clients still can)",
        ),
        None => report.add(
            Status::Pass,
            "security.origins",
            "development default: http://localhost:3000, http://127.0.0.1:3000",
        ),
    }

    // Transport: TLS directly, or behind a trusted proxy that terminates it.
    let tls = (
        settings.get("TETHER_TLS_CERT"),
        settings.get("TETHER_TLS_KEY"),
    );
    let proxies = settings.get("TETHER_TRUSTED_PROXIES");
    match (tls, proxies) {
        ((Some(_), None), _) | ((None, Some(_)), _) => report.add(
            Status::Fail,
            "security.transport",
            "TETHER_TLS_CERT and TETHER_TLS_KEY must be set together",
        ),
        ((Some(cert), Some(_)), _) => report.add(
            Status::Pass,
            "security.transport",
            format!("TLS served directly ({cert})"),
        ),
        ((None, None), Some(cidrs)) => report.add(
            Status::Pass,
            "security.transport",
            format!("TLS terminated by a trusted proxy ({cidrs})"),
        ),
        ((None, None), None) if production => report.add(
            Status::Fail,
            "security.transport",
            "production without TLS or a trusted proxy refuses every /ws and /v1 request: set \
             TETHER_TLS_CERT/TETHER_TLS_KEY or TETHER_TRUSTED_PROXIES",
        ),
        ((None, None), None) => report.add(
            Status::Pass,
            "security.transport",
            "development: plain HTTP/WS on loopback",
        ),
    }

    if !production {
        report.add(
            Status::Warn,
            "security.environment",
            "TETHER_ENV is not production: /dev/token is open to loopback and a development secret is used",
        );
    }
}

fn trim_ascii_end(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &bytes[..end]
}

/// The seed's port checks: the server's port (and the web app's in development).
fn ports(settings: &Settings, report: &mut Report) {
    let mut ports = vec![(settings.port(), "server")];
    if !settings.production() {
        ports.push((crate::dev::WEB_PORT, "web app (development)"));
    }
    for (port, what) in ports {
        match crate::dev::check_port(port) {
            Ok(()) => report.add(
                Status::Pass,
                format!("ports.{port}"),
                format!("{what}: free"),
            ),
            Err(why) if why.contains("tether") => report.add(
                Status::Warn,
                format!("ports.{port}"),
                format!("{what}: {why} (a running Tether; stop it before starting another)"),
            ),
            Err(why) => report.add(
                Status::Fail,
                format!("ports.{port}"),
                format!("{what}: {why}"),
            ),
        }
    }
}

/// The tunnel: reachable on its local API, and its URL equal to `PUBLIC_URL`.
pub async fn tunnel_check(settings: &Settings, api: SocketAddr, report: &mut Report) {
    let public = settings
        .get("PUBLIC_URL")
        .map(|u| u.trim_end_matches('/').to_owned());
    let port = settings.port();
    let fetched = tokio::time::timeout(Duration::from_secs(5), tunnel::fetch_public_url(api, port))
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within 5 s")));
    match (fetched, public) {
        (Ok(url), Some(public)) if url.trim_end_matches('/') == public => report.add(
            Status::Pass,
            "tunnel",
            format!("ngrok forwards {url} to port {port}, equal to PUBLIC_URL"),
        ),
        (Ok(url), Some(public)) => report.add(
            Status::Fail,
            "tunnel",
            format!("ngrok's URL is {url} but PUBLIC_URL is {public}; update PUBLIC_URL or use a reserved domain (NGROK_DOMAIN)"),
        ),
        (Ok(url), None) => report.add(
            Status::Pass,
            "tunnel",
            format!("ngrok forwards {url} to port {port} (PUBLIC_URL unset: Twilio off)"),
        ),
        (Err(err), Some(public)) if public.contains("ngrok") => report.add(
            Status::Fail,
            "tunnel",
            format!("PUBLIC_URL {public} is an ngrok URL but ngrok's API on {api} does not list it: {err:#}"),
        ),
        (Err(_), Some(public)) => report.add(
            Status::Pass,
            "tunnel",
            format!("no ngrok; PUBLIC_URL {public} is served otherwise"),
        ),
        (Err(_), None) => report.add(Status::Pass, "tunnel", "not used"),
    }
}

/// Tokens carry `iat`/`exp` with at most 5 s of leeway: a clock far off breaks every login.
fn clock(report: &mut Report) {
    let now = crate::supervisor::now();
    let year_2024 = 1_704_067_200_000; // 2024-01-01T00:00:00Z
    let year_2100 = 4_102_444_800_000;
    let ms = now.unix_millis();
    if !(year_2024..year_2100).contains(&ms) {
        report.add(
            Status::Fail,
            "clock",
            format!("the system clock says {now}; set it (tokens would be rejected)"),
        );
        return;
    }
    // `timedatectl` exists where systemd runs; elsewhere only the sanity check above applies.
    let synced = std::process::Command::new("timedatectl")
        .args(["show", "--property=NTPSynchronized", "--value"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    match synced.as_deref() {
        Some("yes") => report.add(Status::Pass, "clock", format!("{now}, NTP synchronized")),
        Some(_) => report.add(
            Status::Warn,
            "clock",
            format!("{now}, but NTP is not synchronized (timedatectl set-ntp true); token expiry allows only 5 s of skew"),
        ),
        None => report.add(
            Status::Pass,
            "clock",
            format!("{now} (plausible; NTP state unknown without timedatectl)"),
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// After deployment

async fn post_deployment(args: &Args, settings: &Settings, url: &str, report: &mut Report) {
    let base = url.trim_end_matches('/').to_owned();
    health_window(&base, Duration::from_secs(args.window.max(1)), report).await;
    match &args.log_file {
        Some(path) => logs(path, report),
        None => report.add(
            Status::Warn,
            "logs",
            "no --log-file: error rate and log format not checked \
             (journalctl -u tether -o cat --since -1h > tether.log, or pm2 logs tether --raw)",
        ),
    }
    let tether = args.tether.clone().or_else(|| {
        let exe = crate::web::target_dir().join("debug").join("tether");
        exe.is_file().then_some(exe)
    });
    live_check(args, settings, tether.as_ref(), &base, report).await;
}

/// One sample of an HTTP endpoint: status and body.
async fn get(base: &str, path: &str) -> Result<(u16, String)> {
    if let Some(rest) = base.strip_prefix("http://") {
        let addr = resolve(rest)?;
        return tokio::time::timeout(Duration::from_secs(5), http_get(addr, path))
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within 5 s")));
    }
    if base.starts_with("https://") {
        // TLS is not built into xtask; curl is on every machine that deploys.
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "5", "-w", "\n%{http_code}"])
            .arg(format!("{base}{path}"))
            .stdin(Stdio::null())
            .output()
            .await
            .context("running curl for an https URL")?;
        if !out.status.success() {
            bail!("curl: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
        let code = code.trim().parse().context("curl printed no status code")?;
        return Ok((code, body.to_owned()));
    }
    bail!("{base}: expected an http:// or https:// URL")
}

fn resolve(host_port: &str) -> Result<SocketAddr> {
    let host_port = host_port.split('/').next().unwrap_or(host_port);
    let with_port = if host_port
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host_port.to_owned()
    } else {
        format!("{host_port}:80")
    };
    with_port
        .to_socket_addrs()
        .with_context(|| format!("resolving {with_port}"))?
        .next()
        .with_context(|| format!("{with_port} resolves to nothing"))
}

/// `/health` and `/health/ready` once a second over `window`.
async fn health_window(base: &str, window: Duration, report: &mut Report) {
    let started = Instant::now();
    let mut samples = 0u32;
    let mut health_bad = Vec::new();
    let mut ready_bad = Vec::new();
    let mut degraded = 0u32;
    let mut latencies = Vec::new();
    let mut last_body = None;
    while samples == 0 || started.elapsed() < window {
        samples += 1;
        match get(base, "/health").await {
            Ok((200, body)) => {
                if let Ok(json) = serde_json::from_str::<serde_json::Value>(&body) {
                    if json["status"] == "degraded" {
                        degraded += 1;
                    }
                    if let Some(l) = json["latency"].as_f64() {
                        latencies.push(l);
                    }
                }
                last_body = Some(body);
            }
            Ok((code, body)) => health_bad.push(format!("{code} {}", body.trim())),
            Err(err) => health_bad.push(format!("{err:#}")),
        }
        match get(base, "/health/ready").await {
            Ok((200, _)) => {}
            Ok((code, _)) => ready_bad.push(code.to_string()),
            Err(err) => ready_bad.push(format!("{err:#}")),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let over = format!(
        "{samples} samples over {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if health_bad.is_empty() {
        let body = last_body.unwrap_or_default();
        if degraded > 0 {
            report.add(
                Status::Warn,
                "health",
                format!("degraded in {degraded} of {over}; last: {}", body.trim()),
            );
        } else {
            report.add(Status::Pass, "health", format!("200 healthy in all {over}"));
        }
    } else {
        report.add(
            Status::Fail,
            "health",
            format!(
                "{} of {over} were not 200; first: {}",
                health_bad.len(),
                health_bad[0]
            ),
        );
    }
    if ready_bad.is_empty() {
        report.add(Status::Pass, "health.ready", format!("200 in all {over}"));
    } else {
        report.add(
            Status::Fail,
            "health.ready",
            format!(
                "{} of {over} not ready; first: {}",
                ready_bad.len(),
                ready_bad[0]
            ),
        );
    }
    if let Some(max) = latencies.iter().copied().reduce(f64::max) {
        let status = if max > 200.0 {
            Status::Warn
        } else {
            Status::Pass
        };
        report.add(
            status,
            "health.latency",
            format!("median WebSocket ping RTT up to {max:.1} ms (threshold 200 ms)"),
        );
    }
}

/// The log-format and error-rate checks over a file of JSON log lines (the last 10,000).
pub fn logs(path: &Path, report: &mut Report) {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) => {
            report.add(Status::Fail, "logs", format!("{}: {err}", path.display()));
            return;
        }
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let recent = &lines[lines.len().saturating_sub(10_000)..];
    let mut entries = Vec::new();
    let mut malformed = 0usize;
    for line in recent {
        match serde_json::from_str::<LogEntry>(line) {
            Ok(entry) => entries.push(entry),
            Err(_) => malformed += 1,
        }
    }
    if recent.is_empty() {
        report.add(
            Status::Warn,
            "logs.format",
            format!("{} is empty", path.display()),
        );
        return;
    }
    if malformed == 0 {
        report.add(
            Status::Pass,
            "logs.format",
            format!("{} lines, all CONTRACT §7 JSON", recent.len()),
        );
    } else {
        report.add(
            Status::Fail,
            "logs.format",
            format!(
                "{malformed} of {} lines are not CONTRACT §7 JSON (TETHER_LOG_FORMAT=json?)",
                recent.len()
            ),
        );
    }
    let errors = entries
        .iter()
        .filter(|e| e.level == LogLevel::Error)
        .count();
    let warns: Vec<&LogEntry> = entries
        .iter()
        .filter(|e| e.level == LogLevel::Warn)
        .collect();
    let mut by_event: BTreeMap<&str, usize> = BTreeMap::new();
    for e in entries.iter().filter(|e| e.level >= LogLevel::Warn) {
        *by_event.entry(e.event.as_str()).or_default() += 1;
    }
    let mut top: Vec<(&str, usize)> = by_event.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1));
    let top: Vec<String> = top
        .iter()
        .take(5)
        .map(|(e, n)| format!("{e}×{n}"))
        .collect();
    let total = entries.len().max(1);
    let rate = errors as f64 / total as f64 * 100.0;
    let detail = format!(
        "{errors} error and {} warn lines in {} ({rate:.2} % errors){}",
        warns.len(),
        entries.len(),
        if top.is_empty() {
            String::new()
        } else {
            format!("; top: {}", top.join(", "))
        }
    );
    let status = if rate >= 5.0 {
        Status::Fail
    } else if errors > 0 {
        Status::Warn
    } else {
        Status::Pass
    };
    report.add(status, "logs.errors", detail);
}

/// The connect–drop–resume check, with a token found the first way that works.
async fn live_check(
    args: &Args,
    settings: &Settings,
    tether: Option<&PathBuf>,
    base: &str,
    report: &mut Report,
) {
    if base.starts_with("https://") {
        report.add(
            Status::Warn,
            "recovery",
            "wss:// is not built into xtask: run the check on the server host against its http:// address",
        );
        return;
    }
    let token = match live::find_token(args, settings, tether, base).await {
        Ok(token) => token,
        Err(err) => {
            report.add(
                Status::Warn,
                "recovery",
                format!("no token for the live check: {err:#}"),
            );
            return;
        }
    };
    match tokio::time::timeout(
        Duration::from_secs(30),
        live::connect_drop_resume(base, &token),
    )
    .await
    {
        Ok(Ok(detail)) => report.add(Status::Pass, "recovery", detail),
        Ok(Err(err)) => report.add(Status::Fail, "recovery", format!("{err:#}")),
        Err(_) => report.add(
            Status::Fail,
            "recovery",
            "the live check did not finish within 30 s",
        ),
    }
}
