//! Direct TLS: `TETHER_TLS_CERT` and `TETHER_TLS_KEY`, parsed at load so a bad certificate or
//! key is a configuration error (exit 2), not a failure after the listener is up.

use std::path::PathBuf;

use super::{Check, Cidr, given};
use crate::cli::Settings;

/// PEM files to serve HTTPS/WSS directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// Both files or neither; both must parse.
pub(super) fn load(c: &mut Check, s: &Settings) -> Option<TlsPaths> {
    match (given(s.tls_cert.as_ref()), given(s.tls_key.as_ref())) {
        (None, None) => None,
        (Some(_), None) => {
            c.error(
                "TETHER_TLS_KEY",
                "missing (TETHER_TLS_CERT is set; give both or neither)",
            );
            None
        }
        (None, Some(_)) => {
            c.error(
                "TETHER_TLS_CERT",
                "missing (TETHER_TLS_KEY is set; give both or neither)",
            );
            None
        }
        (Some(cert), Some(key)) => {
            let mut ok = true;
            for (name, path) in [("TETHER_TLS_CERT", cert), ("TETHER_TLS_KEY", key)] {
                if let Err(e) = std::fs::metadata(path) {
                    c.error(name, format!("cannot read {path:?}: {e}"));
                    ok = false;
                }
            }
            let paths = ok.then(|| TlsPaths {
                cert: cert.into(),
                key: key.into(),
            });
            // Parse them now, so a bad certificate or key is a configuration error (exit 2).
            match paths.as_ref().map(crate::tls::load) {
                Some(Err(e)) => {
                    c.error("TETHER_TLS_CERT", format!("{e:#}"));
                    None
                }
                _ => paths,
            }
        }
    }
}

/// Production must see HTTPS somehow: directly, or from a trusted proxy.
pub(super) fn warn_plaintext(
    c: &mut Check,
    prod: bool,
    tls: Option<&TlsPaths>,
    trusted_proxies: &[Cidr],
) {
    if prod && tls.is_none() && trusted_proxies.is_empty() {
        c.warn(
            "TETHER_TLS_CERT",
            "production without TLS or trusted proxies: every /ws and /v1/* request will be refused",
        );
    }
}
