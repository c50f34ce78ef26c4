//! The observability settings (issue 13): the bearer token `GET /metrics` asks for, from
//! `TETHER_METRICS_TOKEN` or a file (`TETHER_METRICS_TOKEN_FILE` / `--metrics-token-file`), and
//! the OTLP transport (`OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf`, the default, or `grpc`).
//! The other `OTEL_*` variables (service name, resource attributes, sampler, batch sizes) are
//! read by the OpenTelemetry SDK itself, with their standard meaning.

use super::{Check, Env, given};
use crate::auth::Secret;
use crate::cli::Settings;

/// The environment variable holding the metrics token itself (never a flag).
pub const METRICS_TOKEN_ENV: &str = "TETHER_METRICS_TOKEN";
/// The environment variable naming a file with the metrics token.
pub const METRICS_TOKEN_FILE_ENV: &str = "TETHER_METRICS_TOKEN_FILE";

/// The environment variable choosing the OTLP transport.
pub const OTLP_PROTOCOL_ENV: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";

/// What `Config::observability` holds.
#[derive(Debug, Clone, Default)]
pub struct ObservabilityConfig {
    /// The bearer token `GET /metrics` asks for; `None`: open.
    pub metrics_token: Option<Secret>,
    /// How spans travel to `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub otlp_protocol: OtlpProtocol,
}

/// `OTEL_EXPORTER_OTLP_PROTOCOL`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `http/protobuf`: POST `{endpoint}/v1/traces`.
    #[default]
    HttpProtobuf,
    /// `grpc`: the OTLP `TraceService` at `{endpoint}`.
    Grpc,
}

/// Parses every observability setting.
pub(super) fn load(c: &mut Check, s: &Settings, env: &Env) -> ObservabilityConfig {
    let otlp_protocol = match env.get(OTLP_PROTOCOL_ENV).map(str::trim) {
        None | Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
        Some("grpc") => OtlpProtocol::Grpc,
        Some(other) => {
            c.error(
                OTLP_PROTOCOL_ENV,
                format!("unsupported {other:?} (use http/protobuf or grpc)"),
            );
            OtlpProtocol::HttpProtobuf
        }
    };
    ObservabilityConfig {
        metrics_token: metrics_token(c, s, env),
        otlp_protocol,
    }
}

/// The metrics token, when one is configured: `None` leaves `/metrics` open (as CONTRACT §2
/// says: "when set, `GET /metrics` needs `Authorization: Bearer <it>`").
pub(super) fn metrics_token(c: &mut Check, s: &Settings, env: &Env) -> Option<Secret> {
    let from_env = env.get(METRICS_TOKEN_ENV);
    let file = given(s.metrics_token_file.as_ref());
    let bytes = match (from_env, file) {
        (Some(_), Some(_)) => {
            c.error(
                METRICS_TOKEN_ENV,
                "set either TETHER_METRICS_TOKEN or TETHER_METRICS_TOKEN_FILE (--metrics-token-file), not both",
            );
            return None;
        }
        (Some(v), None) => v.trim().as_bytes().to_vec(),
        (None, Some(path)) => match std::fs::read(path) {
            Ok(bytes) => bytes.trim_ascii().to_vec(),
            Err(e) => {
                c.error(METRICS_TOKEN_FILE_ENV, format!("cannot read {path:?}: {e}"));
                return None;
            }
        },
        (None, None) => return None,
    };
    if bytes.is_empty() {
        c.error(METRICS_TOKEN_FILE_ENV, "the metrics token is empty");
        return None;
    }
    // A header value can carry only visible ASCII: anything else could never be presented.
    if !bytes.iter().all(|b| b.is_ascii_graphic()) {
        c.error(
            METRICS_TOKEN_ENV,
            "the metrics token must be printable ASCII without spaces",
        );
        return None;
    }
    Some(Secret::new(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check() -> Check {
        Check {
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    #[test]
    fn otlp_protocols() {
        let mut c = check();
        let s = Settings::default();
        let p = |v: &str, c: &mut Check| {
            load(c, &s, &Env::from_pairs([(OTLP_PROTOCOL_ENV, v)])).otlp_protocol
        };
        assert_eq!(p("grpc", &mut c), OtlpProtocol::Grpc);
        assert_eq!(p("http/protobuf", &mut c), OtlpProtocol::HttpProtobuf);
        assert!(c.errors.is_empty());
        p("http/json", &mut c);
        assert_eq!(c.errors[0].setting, OTLP_PROTOCOL_ENV);
    }

    #[test]
    fn from_env_from_file_or_unset() {
        let mut c = check();
        let env = Env::from_pairs([(METRICS_TOKEN_ENV, "s3cret")]);
        let t = metrics_token(&mut c, &Settings::default(), &env).expect("token");
        assert_eq!(t.expose(), b"s3cret");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-file\n").unwrap();
        let s = Settings {
            metrics_token_file: Some(path.display().to_string()),
            ..Settings::default()
        };
        let t = metrics_token(&mut c, &s, &Env::from_pairs::<&str, &str>([])).expect("token");
        assert_eq!(t.expose(), b"from-file");
        assert!(c.errors.is_empty());

        assert!(
            metrics_token(
                &mut c,
                &Settings::default(),
                &Env::from_pairs::<&str, &str>([])
            )
            .is_none()
        );
        assert!(c.errors.is_empty());
    }

    #[test]
    fn both_missing_file_and_bad_bytes_are_errors_naming_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "a b").unwrap();
        let with_file = |p: &std::path::Path| Settings {
            metrics_token_file: Some(p.display().to_string()),
            ..Settings::default()
        };
        let env = Env::from_pairs([(METRICS_TOKEN_ENV, "x")]);
        let none = Env::from_pairs::<&str, &str>([]);
        for (s, e, setting) in [
            (with_file(&path), &env, METRICS_TOKEN_ENV),
            (
                with_file(&dir.path().join("missing")),
                &none,
                METRICS_TOKEN_FILE_ENV,
            ),
            (with_file(&path), &none, METRICS_TOKEN_ENV),
        ] {
            let mut c = check();
            assert!(metrics_token(&mut c, &s, e).is_none());
            assert_eq!(c.errors.len(), 1);
            assert_eq!(c.errors[0].setting, setting);
        }
    }
}
