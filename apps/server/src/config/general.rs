//! The process settings: environment, listen address, log format, web folder, OTLP endpoint.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use super::{Check, given};
use crate::cli::Settings;

/// The default `PORT`.
pub const DEFAULT_PORT: u16 = 8081;

/// `development` or `production`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    /// Embedded defaults, generated secret, `/dev/token`.
    Development,
    /// Strict: secret required, no `*` origin, TLS (direct or via a trusted proxy).
    Production,
}

impl Environment {
    /// `development` / `production`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Production => "production",
        }
    }

    /// True in production.
    #[must_use]
    pub fn is_production(self) -> bool {
        self == Self::Production
    }
}

/// How `serve` writes its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// CONTRACT §7 JSON lines.
    Json,
    /// Human-readable.
    Pretty,
}

/// What [`load`] parsed.
pub(super) struct General {
    pub environment: Environment,
    pub host: IpAddr,
    pub port: u16,
    pub log_format: LogFormat,
    pub web_dir: Option<PathBuf>,
    pub otlp_endpoint: Option<String>,
}

/// `TETHER_ENV`, `TETHER_HOST`, `PORT`, `TETHER_LOG_FORMAT`, `TETHER_WEB_DIR`,
/// `OTEL_EXPORTER_OTLP_ENDPOINT`.
pub(super) fn load(c: &mut Check, s: &Settings) -> General {
    let environment = c.choice(
        "TETHER_ENV",
        s.environment.as_ref(),
        "environment",
        &[
            ("development", Environment::Development),
            ("production", Environment::Production),
        ],
    );
    let host = match given(s.host.as_ref()) {
        None | Some("localhost") => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(v) => v.parse().unwrap_or_else(|_| {
            c.error(
                "TETHER_HOST",
                format!("not an IP address {v:?} (e.g. 127.0.0.1, 0.0.0.0, ::)"),
            );
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        }),
    };
    let port = match given(s.port.as_ref()) {
        None => DEFAULT_PORT,
        Some(v) => v.parse::<u16>().unwrap_or_else(|_| {
            c.error("PORT", format!("not a port number {v:?} (0-65535)"));
            DEFAULT_PORT
        }),
    };
    let log_format = c.choice(
        "TETHER_LOG_FORMAT",
        s.log_format.as_ref(),
        "format",
        &[("json", LogFormat::Json), ("pretty", LogFormat::Pretty)],
    );
    let web_dir = given(s.web_dir.as_ref()).and_then(|dir| {
        if Path::new(dir).is_dir() {
            Some(PathBuf::from(dir))
        } else {
            c.error("TETHER_WEB_DIR", format!("not a folder: {dir:?}"));
            None
        }
    });
    let otlp_endpoint = given(s.otlp_endpoint.as_ref()).and_then(|v| match url::Url::parse(v) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Some(v.to_owned()),
        _ => {
            c.error(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("not an http(s) URL: {v:?}"),
            );
            None
        }
    });
    General {
        environment,
        host,
        port,
        log_format,
        web_dir,
        otlp_endpoint,
    }
}
