//! The post-deployment checklist: `/health` and `/health/ready` over a window, the log format
//! and error rate of recent JSON logs, and the live connect–drop–resume check.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use protocol::{LogEntry, LogLevel};

use super::{Args, Report, Settings, Status, live};
use crate::supervisor::http_get;

pub async fn post_deployment(args: &Args, settings: &Settings, url: &str, report: &mut Report) {
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
pub async fn get(base: &str, path: &str) -> Result<(u16, String)> {
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
    top.sort_by_key(|b| std::cmp::Reverse(b.1));
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
pub async fn live_check(
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
