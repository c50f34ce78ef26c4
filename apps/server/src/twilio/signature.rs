//! `X-Twilio-Signature` (CONTRACT §10.1): HMAC-SHA1 keyed with the auth token, base64, over
//! the public URL followed by the form parameters sorted by name (each name then its values),
//! checked in constant time, with the URL variants Twilio's own validators accept.
//!
//! - [`compute`]: the signature of a URL and form parameters (twilio-python's
//!   `compute_signature`: names in byte order, repeated values de-duplicated and sorted).
//! - [`Validator::webhook`]: a form POST, trying the URL with and without its default port.
//! - [`Validator::json`]: a JSON body: the URL (with its `bodySHA256` query) signed without
//!   parameters, and the body's SHA-256 equal to that query value.
//! - [`Validator::upgrade`]: the media WebSocket's GET: additionally `wss://` or `https://`
//!   and with or without a trailing `/`.
//!
//! URLs are strings handled byte for byte: Twilio signs the URL exactly as configured, so it
//! must not be re-encoded or normalised (the `url` crate would drop a default port and
//! re-escape the query, breaking the comparison).

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

type HmacSha1 = Hmac<sha1::Sha1>;

/// The signature (base64, standard alphabet with padding) of `url` and `params`.
#[must_use]
pub fn compute(token: &[u8], url: &str, params: &[(String, String)]) -> String {
    let mut sorted: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, value) in params {
        sorted.entry(name).or_default().insert(value);
    }
    // The key length is unrestricted for HMAC: `new_from_slice` cannot fail.
    let mut mac = HmacSha1::new_from_slice(token).expect("HMAC accepts keys of any length");
    mac.update(url.as_bytes());
    for (name, values) in sorted {
        for value in values {
            mac.update(name.as_bytes());
            mac.update(value.as_bytes());
        }
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Lowercase hex SHA-256 of a raw body (the `bodySHA256` query value).
#[must_use]
pub fn body_hash(body: &[u8]) -> String {
    Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks signatures with one auth token.
#[derive(Clone)]
pub struct Validator {
    token: Vec<u8>,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Validator(<auth token>)")
    }
}

impl Validator {
    /// A validator for `token` (the account's auth token).
    #[must_use]
    pub fn new(token: &[u8]) -> Self {
        Self {
            token: token.to_vec(),
        }
    }

    /// The signature of `url` and `params` with this token (the simulator signs with it).
    #[must_use]
    pub fn sign(&self, url: &str, params: &[(String, String)]) -> String {
        compute(&self.token, url, params)
    }

    /// A form webhook: `url` is the public URL Twilio requested (PUBLIC_URL + path + query).
    #[must_use]
    pub fn webhook(&self, url: &str, params: &[(String, String)], signature: &str) -> bool {
        port_variants(url)
            .iter()
            .any(|u| self.matches(u, params, signature))
    }

    /// A JSON body: `url` must carry `bodySHA256`, equal to the body's SHA-256, and the URL
    /// alone is signed.
    #[must_use]
    pub fn json(&self, url: &str, body: &[u8], signature: &str) -> bool {
        let Some(expected) = query_value(url, "bodySHA256") else {
            return false;
        };
        let hash_ok = bool::from(body_hash(body).as_bytes().ct_eq(expected.as_bytes()));
        // Both checks always run, so the time taken does not tell which one failed.
        let sig_ok = self.webhook(url, &[], signature);
        hash_ok & sig_ok
    }

    /// The media WebSocket upgrade (no parameters): `url` is the `<Stream url>` we emitted;
    /// `wss://`/`https://`, a trailing slash and the default port are all accepted.
    #[must_use]
    pub fn upgrade(&self, url: &str, signature: &str) -> bool {
        let rest = url
            .strip_prefix("wss://")
            .or_else(|| url.strip_prefix("https://"))
            .unwrap_or(url);
        let mut ok = false;
        for scheme in ["wss://", "https://"] {
            let base = format!("{scheme}{rest}");
            let (path, query) = match base.split_once('?') {
                Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
                None => (base.clone(), None),
            };
            let trimmed = path.trim_end_matches('/').to_owned();
            for p in [trimmed.clone(), format!("{trimmed}/")] {
                let candidate = match &query {
                    Some(q) => format!("{p}?{q}"),
                    None => p,
                };
                // No early exit: every variant is computed, whichever matches.
                ok |= self.webhook(&candidate, &[], signature);
            }
        }
        ok
    }

    fn matches(&self, url: &str, params: &[(String, String)], signature: &str) -> bool {
        let expected = compute(&self.token, url, params);
        bool::from(expected.as_bytes().ct_eq(signature.as_bytes()))
    }
}

/// The URL as given, plus the same URL with its port removed (when it has one) or with the
/// scheme's default port added (when it has none). Credentials (`user:pass@`) are dropped
/// first, as Twilio drops them before signing.
#[must_use]
pub fn port_variants(url: &str) -> Vec<String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return vec![url.to_owned()];
    };
    let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(split);
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let (host, port) = split_port(authority);
    let plain = format!("{scheme}://{host}{tail}");
    let mut out = vec![format!("{scheme}://{authority}{tail}")];
    match port {
        Some(_) => out.push(plain),
        None => {
            let default = match scheme.to_ascii_lowercase().as_str() {
                "https" | "wss" => "443",
                _ => "80",
            };
            out.push(format!("{scheme}://{host}:{default}{tail}"));
        }
    }
    out.dedup();
    out
}

/// `host:port` → (`host`, `Some(port)`); IPv6 literals in brackets keep their colons.
fn split_port(authority: &str) -> (&str, Option<&str>) {
    let colon = if authority.starts_with('[') {
        authority
            .find(']')
            .and_then(|end| authority[end..].find(':').map(|i| end + i))
    } else {
        authority.rfind(':')
    };
    match colon {
        Some(i) if authority[i + 1..].chars().all(|c| c.is_ascii_digit()) => {
            (&authority[..i], Some(&authority[i + 1..]))
        }
        _ => (authority, None),
    }
}

/// The raw (still percent-encoded) value of query parameter `name` in `url`.
fn query_value<'a>(url: &'a str, name: &str) -> Option<&'a str> {
    let query = url.split_once('?')?.1.split('#').next()?;
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests;
