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
mod post;
mod pre;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

#[cfg(test)]
use self::post::logs;
use self::post::post_deployment;
pub use self::post::{get, live_check};
use self::pre::pre_deployment;
#[cfg(test)]
use self::pre::{build_quietly, check_env, dependencies, security, tunnel_check};

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
