//! Security headers on every HTTP answer (issue 7): the ones that cost nothing anywhere in all
//! environments, and `Strict-Transport-Security` in production or when serving TLS directly.
//!
//! - `X-Content-Type-Options: nosniff` — a JSON error is never sniffed into HTML/script.
//! - `Referrer-Policy: no-referrer` — URLs (channel names, `since`) do not leak to other sites.
//! - `X-Frame-Options: DENY` and `Content-Security-Policy: frame-ancestors 'none'` — the web
//!   app cannot be framed (click-jacking). The CSP says nothing else, so the wasm app and its
//!   WebSocket keep working wherever they are served from.
//! - `Strict-Transport-Security: max-age=31536000; includeSubDomains` — browsers never again
//!   try plain HTTP for this host. Only in production (behind TLS) or with `--tls-cert`, since
//!   a development host on plain HTTP would otherwise be pinned to HTTPS.
//!
//! A header a handler has set already is left alone.
use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::Response;

use crate::config::Config;

/// `Strict-Transport-Security` value: a year, subdomains included (no `preload`: that is a
/// decision for the operator).
pub const HSTS: &str = "max-age=31536000; includeSubDomains";

/// The headers [`apply`] adds for `config`.
#[must_use]
pub fn headers_for(config: &Config) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = vec![
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("frame-ancestors 'none'"),
        ),
    ];
    if config.environment.is_production() || config.tls.is_some() {
        headers.push((
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        ));
    }
    headers
}

/// Wraps `router` so every answer carries [`headers_for`]`(config)`.
pub fn apply(router: Router, config: &Config) -> Router {
    let headers = std::sync::Arc::new(headers_for(config));
    router.layer(axum::middleware::map_response(
        move |mut response: Response| {
            let headers = headers.clone();
            async move {
                let map = response.headers_mut();
                for (name, value) in headers.iter() {
                    if !map.contains_key(name) {
                        map.insert(name.clone(), value.clone());
                    }
                }
                response
            }
        },
    ))
}
