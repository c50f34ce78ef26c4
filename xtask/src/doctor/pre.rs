//! The pre-deployment checklist: settings through `tether check-env`, production security,
//! ports, the tunnel, the clock, the deploy files, and a recovery test against a local server.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{Args, Report, Settings, Status, deploy, live_check, pm2};
use crate::supervisor::{http_get, tunnel};
use crate::util::project_root;

pub async fn pre_deployment(args: &Args, settings: &Settings, report: &mut Report) {
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
    dependencies(settings, std::env::var_os("PATH").as_deref(), report);
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

    // The health and recovery checks need a server; use the local one if it runs.
    let local = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, settings.port()));
    match http_get(local, "/health/live").await {
        Ok((200, _)) => {
            match http_get(local, "/health").await {
                Ok((200, body)) => report.add(
                    Status::Pass,
                    "health",
                    format!("local server: {}", body.trim()),
                ),
                Ok((code, body)) => report.add(
                    Status::Fail,
                    "health",
                    format!("local server answers {code}: {}", body.trim()),
                ),
                Err(err) => report.add(Status::Fail, "health", format!("{err:#}")),
            }
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

/// The programs around the server: the tunnel (when one is used), and the tools the runbook
/// and the deploy files rely on. Missing ones are warnings unless the settings need them.
pub fn dependencies(settings: &Settings, path: Option<&std::ffi::OsStr>, report: &mut Report) {
    use crate::supervisor::find_program;
    let ngrok_needed = settings
        .get("PUBLIC_URL")
        .is_some_and(|u| u.contains("ngrok"));
    match (find_program("ngrok", path), ngrok_needed) {
        (Some(p), _) => report.add(Status::Pass, "deps.ngrok", p.display().to_string()),
        (None, true) => report.add(
            Status::Fail,
            "deps.ngrok",
            format!(
                "PUBLIC_URL is an ngrok URL but ngrok is not installed. {}",
                tunnel::INSTALL_HINT
            ),
        ),
        (None, false) => report.add(
            Status::Warn,
            "deps.ngrok",
            "not installed: only `cargo xtask dev --tunnel ngrok` and tether-ngrok.service need it",
        ),
    }
    for (tool, why) in [
        (
            "curl",
            "the runbook's health checks and tether-ngrok-check.service",
        ),
        ("jq", "the runbook's log queries"),
        ("node", "the PM2 deployment (deploy/pm2)"),
    ] {
        match find_program(tool, path) {
            Some(p) => report.add(
                Status::Pass,
                format!("deps.{tool}"),
                p.display().to_string(),
            ),
            None => report.add(
                Status::Warn,
                format!("deps.{tool}"),
                format!("not installed; used by {why}"),
            ),
        }
    }
}

/// `cargo build -p server` with its output hidden unless it fails; the binary.
pub async fn build_quietly() -> Result<PathBuf> {
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
