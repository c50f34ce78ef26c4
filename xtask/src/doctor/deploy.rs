//! The doctor's `deploy.*` checks: the supervision files under `deploy/` still say what the
//! seed and the server's configuration need (CONTRACT §9), and each engine accepts its file.
//!
//! - `deploy.k8s`: one replica, `Recreate` while the store is SQLite, probes on `/health/live`
//!   and `/health/ready` at the configured port, limits 500Mi / 800m, and a grace period that
//!   covers the `preStop` sleep plus the server's drain window.
//! - `deploy.systemd`: `Restart=on-failure`, `RestartSec=3`, `StartLimitBurst=10` over an
//!   interval long enough to trip, `MemoryMax=500M`, `CPUQuota=80%`, `TimeoutStopSec` longer
//!   than the drain window; `systemd-analyze verify` accepts the units where it exists.
//! - `deploy.pm2`: the ecosystem file, evaluated by `node`, has the seed's PM2 settings and a
//!   `kill_timeout` longer than the drain window.
//! - `deploy.otel`: the collector receives OTLP and has a traces pipeline with an exporter.
//!
//! The drain window is the server's own default, read from `tether serve --help` when the
//! binary is at hand, else CONTRACT §2's 5000 ms.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{Report, Status};

/// CONTRACT §2: `--drain-ms` defaults to 5000.
pub const CONTRACT_DRAIN_MS: u64 = 5000;

/// The drain default `tether serve --help` states (`Drain window … [default: N]`).
pub fn server_drain_default(exe: &Path) -> Option<u64> {
    let out = Command::new(exe)
        .args(["serve", "--help"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    parse_help_default(&String::from_utf8_lossy(&out.stdout), "--drain-ms")
}

/// The `[default: N]` that follows `flag` in clap's help text (it may wrap onto later lines).
pub fn parse_help_default(help: &str, flag: &str) -> Option<u64> {
    let at = help.find(flag)?;
    let rest = &help[at..];
    // Up to the next flag's entry.
    let end = rest[flag.len()..]
        .find("\n  -")
        .map_or(rest.len(), |i| i + flag.len());
    let entry = &rest[..end];
    let start = entry.find("[default: ")? + "[default: ".len();
    let digits: String = entry[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Runs every `deploy.*` check over the `deploy/` folder of `root`.
pub fn check_deploy(root: &Path, drain_ms: u64, report: &mut Report) {
    let deploy = root.join("deploy");
    verdict(report, "deploy.k8s", k8s(&deploy.join("k8s"), drain_ms));
    verdict(
        report,
        "deploy.systemd",
        systemd(&deploy.join("systemd"), drain_ms),
    );
    match systemd_analyze(&deploy.join("systemd")) {
        Ok(Some(detail)) => report.add(Status::Pass, "deploy.systemd.verify", detail),
        Ok(None) => report.add(
            Status::Warn,
            "deploy.systemd.verify",
            "systemd-analyze not installed: the units were not verified by systemd",
        ),
        Err(err) => report.add(Status::Fail, "deploy.systemd.verify", format!("{err:#}")),
    }
    match pm2(&deploy.join("pm2/ecosystem.config.js"), drain_ms) {
        Ok(Some(detail)) => report.add(Status::Pass, "deploy.pm2", detail),
        Ok(None) => report.add(
            Status::Warn,
            "deploy.pm2",
            "node not installed: the ecosystem file was not evaluated",
        ),
        Err(err) => report.add(Status::Fail, "deploy.pm2", format!("{err:#}")),
    }
    verdict(
        report,
        "deploy.otel",
        otel(&deploy.join("otel/collector.yaml")),
    );
}

fn verdict(report: &mut Report, check: &str, result: Result<String>) {
    match result {
        Ok(detail) => report.add(Status::Pass, check, detail),
        Err(err) => report.add(Status::Fail, check, format!("{err:#}")),
    }
}

/// Every YAML document of a file, as JSON values.
fn yaml_documents(path: &Path) -> Result<Vec<Value>> {
    use serde::Deserialize as _;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).with_context(|| format!("parsing {}", path.display())))
        .collect()
}

fn one_document(path: &Path) -> Result<Value> {
    let mut docs = yaml_documents(path)?;
    if docs.len() != 1 {
        bail!(
            "{}: expected one YAML document, found {}",
            path.display(),
            docs.len()
        );
    }
    Ok(docs.remove(0))
}

/// `"5"` or `5` as a number.
fn number(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// The Kubernetes manifests.
pub fn k8s(dir: &Path, drain_ms: u64) -> Result<String> {
    // Every manifest parses.
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            yaml_documents(&path)?;
        }
    }
    let config = one_document(&dir.join("configmap.yaml"))?;
    let data = &config["data"];
    let deployment = one_document(&dir.join("deployment.yaml"))?;
    if deployment["kind"] != "Deployment" {
        bail!("deployment.yaml is a {}", deployment["kind"]);
    }
    let spec = &deployment["spec"];
    let pod = &spec["template"]["spec"];
    let container = pod["containers"]
        .get(0)
        .context("deployment.yaml has no container")?;

    let sqlite = data["DATABASE_URL"]
        .as_str()
        .is_none_or(|u| u.starts_with("sqlite:"));
    if sqlite {
        if number(&spec["replicas"]) != Some(1) {
            bail!(
                "the SQLite store needs exactly 1 replica, found {}",
                spec["replicas"]
            );
        }
        if spec["strategy"]["type"] != "Recreate" {
            bail!(
                "the SQLite store needs the Recreate strategy, found {}",
                spec["strategy"]["type"]
            );
        }
    }

    let port = number(&data["PORT"]).unwrap_or(8081);
    let named_port = container["ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|p| p["name"] == "http"))
        .context("the container has no port named http")?;
    if number(&named_port["containerPort"]) != Some(port) {
        bail!(
            "containerPort {} differs from PORT {port}",
            named_port["containerPort"]
        );
    }
    for (probe, path) in [
        ("livenessProbe", "/health/live"),
        ("readinessProbe", "/health/ready"),
    ] {
        let get = &container[probe]["httpGet"];
        if get["path"] != path {
            bail!("{probe} uses {} instead of {path}", get["path"]);
        }
        let probe_port = &get["port"];
        if *probe_port != "http" && number(probe_port) != Some(port) {
            bail!("{probe} probes port {probe_port}, not {port}");
        }
    }
    let limits = &container["resources"]["limits"];
    if limits["memory"] != "500Mi" || limits["cpu"] != "800m" {
        bail!(
            "limits are memory {} cpu {} (the seed: 500Mi, 800m)",
            limits["memory"],
            limits["cpu"]
        );
    }

    let drain = number(&data["TETHER_DRAIN_MS"]).unwrap_or(drain_ms);
    if drain != drain_ms {
        bail!(
            "the ConfigMap's TETHER_DRAIN_MS {drain} differs from the server's default {drain_ms}"
        );
    }
    let pre_stop_ms =
        number(&container["lifecycle"]["preStop"]["sleep"]["seconds"]).map_or(0, |s| s * 1000);
    let grace_ms = number(&pod["terminationGracePeriodSeconds"])
        .context("terminationGracePeriodSeconds is not set (default 30 s; say it)")?
        * 1000;
    if grace_ms <= pre_stop_ms + drain {
        bail!(
            "terminationGracePeriodSeconds {} s does not cover preStop {} s + drain {} ms",
            grace_ms / 1000,
            pre_stop_ms / 1000,
            drain
        );
    }
    Ok(format!(
        "manifests parse; probes /health/live and /health/ready on {port}; limits 500Mi/800m; \
         grace {} s > preStop {} s + drain {drain} ms",
        grace_ms / 1000,
        pre_stop_ms / 1000
    ))
}

/// `Key=Value` lines of a unit file (the last assignment wins, as in systemd).
fn unit_keys(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with(';') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// systemd time spans as used here: `15`, `15s`, `5min`, `300`.
fn seconds(span: &str) -> Option<u64> {
    let span = span.trim();
    if let Some(min) = span.strip_suffix("min") {
        return min.trim().parse::<u64>().ok().map(|m| m * 60);
    }
    span.strip_suffix('s').unwrap_or(span).trim().parse().ok()
}

/// The systemd unit's seed settings.
pub fn systemd(dir: &Path, drain_ms: u64) -> Result<String> {
    let path = dir.join("tether.service");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let keys = unit_keys(&text);
    let want = |key: &str, value: &str| -> Result<()> {
        match keys.get(key) {
            Some(v) if v == value => Ok(()),
            other => bail!("{key} is {other:?}, expected {value}"),
        }
    };
    want("Restart", "on-failure")?;
    want("RestartSec", "3")?;
    want("StartLimitBurst", "10")?;
    want("MemoryMax", "500M")?;
    want("CPUQuota", "80%")?;
    let interval = keys
        .get("StartLimitIntervalSec")
        .and_then(|v| seconds(v))
        .context("StartLimitIntervalSec is not set")?;
    // Ten restarts 3 s apart take 30 s at the very least; the window must be longer or the
    // limit never trips.
    if interval <= 10 * 3 {
        bail!("StartLimitIntervalSec={interval} is too short for 10 restarts 3 s apart to trip it");
    }
    let stop = keys
        .get("TimeoutStopSec")
        .and_then(|v| seconds(v))
        .context("TimeoutStopSec is not set")?;
    if stop * 1000 <= drain_ms {
        bail!("TimeoutStopSec={stop} is not longer than the drain window ({drain_ms} ms)");
    }
    Ok(format!(
        "Restart=on-failure, RestartSec=3, StartLimitBurst=10 in {interval} s, MemoryMax=500M, \
         CPUQuota=80%, TimeoutStopSec={stop} s > drain {drain_ms} ms"
    ))
}

/// `systemd-analyze verify` over copies of the units whose programs point at `/bin/true` (the
/// real binaries are not installed here); `None` without systemd-analyze.
pub fn systemd_analyze(dir: &Path) -> Result<Option<String>> {
    if Command::new("systemd-analyze")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        return Ok(None);
    }
    let tmp = tempfile::tempdir().context("a temporary folder for the units")?;
    let mut units = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !(name.ends_with(".service") || name.ends_with(".timer")) {
            continue;
        }
        let text = std::fs::read_to_string(&path)?
            .replace("/usr/local/bin/tether", "/bin/true")
            .replace("/usr/local/bin/ngrok", "/bin/true");
        let copy = tmp.path().join(name);
        std::fs::write(&copy, text)?;
        units.push(copy);
    }
    units.sort();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .stdin(Stdio::null())
        .output()
        .context("running systemd-analyze verify")?;
    let complaints = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    // It exits 0 on mere warnings (an unknown key is only "ignoring"), so any output counts.
    if !out.status.success() || !complaints.is_empty() {
        bail!("systemd-analyze verify: {complaints}");
    }
    Ok(Some(format!(
        "systemd-analyze verify accepts {} units",
        units.len()
    )))
}

/// The PM2 ecosystem file as `node` evaluates it; `None` without node.
pub fn pm2(path: &Path, drain_ms: u64) -> Result<Option<String>> {
    let script = "const c = require(process.argv[1]); process.stdout.write(JSON.stringify(c));";
    let out = match Command::new("node")
        .args(["-e", script])
        .arg(path)
        .env("TETHER_DRAIN_MS", drain_ms.to_string())
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => out,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).context("running node"),
    };
    if !out.status.success() {
        bail!(
            "node cannot load {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let config: Value = serde_json::from_slice(&out.stdout).context("the ecosystem file's JSON")?;
    let app = config["apps"]
        .as_array()
        .and_then(|apps| apps.iter().find(|a| a["name"] == "tether"))
        .context("no app named tether")?;
    let expect = [
        ("max_memory_restart", Value::from("500M")),
        ("restart_delay", Value::from(3000)),
        ("exp_backoff_restart_delay", Value::from(100)),
        ("max_restarts", Value::from(10)),
        ("interpreter", Value::from("none")),
    ];
    for (key, value) in expect {
        if app[key] != value {
            bail!("{key} is {}, expected {value}", app[key]);
        }
    }
    let args = app["args"].to_string();
    if !args.contains("serve") {
        bail!("args {args} do not run `tether serve`");
    }
    let kill = number(&app["kill_timeout"]).context("kill_timeout is not set")?;
    if kill <= drain_ms {
        bail!("kill_timeout {kill} ms is not longer than the drain window {drain_ms} ms");
    }
    if app["min_uptime"].is_null() {
        bail!("min_uptime is not set (PM2's 1 s default lets a slow crash loop forever)");
    }
    Ok(Some(format!(
        "500M, restart_delay 3000, exp_backoff 100, max_restarts 10 (min_uptime {}), \
         kill_timeout {kill} ms > drain {drain_ms} ms",
        app["min_uptime"]
    )))
}

/// The OpenTelemetry Collector configuration.
pub fn otel(path: &Path) -> Result<String> {
    let config = one_document(path)?;
    if config["receivers"]["otlp"]["protocols"]
        .as_object()
        .is_none_or(|p| p.is_empty())
    {
        bail!("no OTLP receiver protocols");
    }
    let traces = &config["service"]["pipelines"]["traces"];
    let receivers = traces["receivers"]
        .as_array()
        .context("no traces pipeline")?;
    if !receivers.iter().any(|r| r == "otlp") {
        bail!("the traces pipeline does not receive from otlp");
    }
    let exporters = traces["exporters"]
        .as_array()
        .filter(|e| !e.is_empty())
        .context("the traces pipeline has no exporter")?;
    for exporter in exporters {
        let name = exporter.as_str().unwrap_or_default();
        if config["exporters"][name].is_null() {
            bail!("exporter {name} is used but not defined");
        }
    }
    Ok(format!(
        "OTLP in, traces out to {}",
        exporters
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    ))
}
