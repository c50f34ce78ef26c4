//! `tether check-env`: one line per check on stdout (`PASS`/`WARN`/`FAIL name: detail`),
//! exit 1 when any check fails.
//!
//! Checks: `variables` (every setting parses), `twilio` (all four or none), `secret` (present
//! and long enough; development: the kept file), `port` (the listen address is free), `store`
//! (opens and migrates). Nothing listens; the development secret is not created (it is
//! reported as "would be generated"); the store file is created and migrated, as `serve` would.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use super::Settings;
use crate::config::{Config, ConfigProblem, Env, SecretMode, SecretSource, parse_database_url};
use crate::store::StoreConfig;

/// Which check a setting's problem belongs to.
fn category(p: &ConfigProblem) -> &'static str {
    let s = p.setting.as_str();
    if s.contains("TWILIO") || s.contains("PUBLIC_URL") {
        "twilio"
    } else if s.starts_with("TETHER_JWT_SECRET") {
        "secret"
    } else {
        "variables"
    }
}

struct Report {
    failed: bool,
}

impl Report {
    fn line(&mut self, status: &str, check: &str, detail: impl std::fmt::Display) {
        if status == "FAIL" {
            self.failed = true;
        }
        println!("{status} {check}: {detail}");
    }
}

/// Runs every check and prints one line per check (more than one for several problems).
#[must_use]
pub fn check_env(settings: &Settings) -> ExitCode {
    let mut r = Report { failed: false };
    let loaded = Config::load(settings, &Env::process(), SecretMode::ReadOnly);
    let (errors, warnings) = match &loaded {
        Ok(c) => (Vec::new(), c.warnings.clone()),
        Err(e) => (e.0.clone(), Vec::new()),
    };
    for check in ["variables", "twilio", "secret"] {
        let mut any = false;
        for p in errors.iter().filter(|p| category(p) == check) {
            r.line("FAIL", check, p);
            any = true;
        }
        for p in warnings.iter().filter(|p| category(p) == check) {
            r.line("WARN", check, p);
            any = true;
        }
        if any {
            continue;
        }
        match (check, &loaded) {
            ("variables", Ok(c)) => r.line(
                "PASS",
                check,
                format!("settings valid ({} environment)", c.environment.as_str()),
            ),
            ("twilio", Ok(c)) => match &c.twilio {
                Some(_) => r.line("PASS", check, "all four Twilio settings present"),
                None => r.line("PASS", check, "not configured (Twilio features off)"),
            },
            ("secret", Ok(c)) => {
                let detail = match &c.secret_source {
                    SecretSource::Env => "from TETHER_JWT_SECRET".to_owned(),
                    SecretSource::File(p) => format!("from file {}", p.display()),
                    SecretSource::DevFile { path, .. } => {
                        format!("development secret kept in {}", path.display())
                    }
                    SecretSource::DevPending(path) => {
                        format!(
                            "development secret would be generated into {}",
                            path.display()
                        )
                    }
                    SecretSource::Test => "test secret".to_owned(),
                };
                r.line(
                    "PASS",
                    check,
                    format!("{detail} ({} bytes)", c.auth.secret.len()),
                );
            }
            (_, Err(_)) => r.line("PASS", check, "ok"),
            _ => {}
        }
    }

    // Port and store: from the validated config, or best effort from the raw settings.
    let (addr, store) = match &loaded {
        Ok(c) => (Some(c.listen_addr()), Some(c.store.clone())),
        Err(_) => (raw_addr(settings), raw_store(settings)),
    };
    match addr {
        None => r.line("FAIL", "port", "no valid listen address (see variables)"),
        Some(a) if a.port() == 0 => {
            r.line("PASS", "port", "0: an ephemeral port is chosen at start")
        }
        Some(a) => match std::net::TcpListener::bind(a) {
            Ok(l) => {
                drop(l);
                r.line("PASS", "port", format!("{a} is free"));
            }
            Err(e) => r.line("FAIL", "port", format!("{a} is not available: {e}")),
        },
    }
    match store {
        None => r.line("FAIL", "store", "no usable DATABASE_URL (see variables)"),
        Some(store) => match check_store(&store) {
            Ok(()) => r.line(
                "PASS",
                "store",
                format!("sqlite {} opens, migrations applied", store.path.display()),
            ),
            Err(e) => r.line(
                "FAIL",
                "store",
                format!("sqlite {}: {e}", store.path.display()),
            ),
        },
    }
    if r.failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn raw_addr(s: &Settings) -> Option<SocketAddr> {
    let host: IpAddr = match s.host.as_deref().map(str::trim) {
        None | Some("" | "localhost") => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(h) => h.parse().ok()?,
    };
    let port = match s.port.as_deref().map(str::trim) {
        None | Some("") => 8081,
        Some(p) => p.parse().ok()?,
    };
    Some(SocketAddr::new(host, port))
}

fn raw_store(s: &Settings) -> Option<StoreConfig> {
    let url = s
        .database_url
        .as_deref()
        .unwrap_or("sqlite://data/tether.db");
    parse_database_url(url).ok().map(StoreConfig::sqlite)
}

fn check_store(config: &StoreConfig) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let opened = crate::store::open(config).await?;
        opened.store.ping().await?;
        opened.store.close().await;
        Ok(())
    })
}
