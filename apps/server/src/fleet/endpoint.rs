//! `GET /v1/admin/fleet?limit=N`: the fleet summary ([`super::summary`]) for the operations
//! console, for a token with the `admin` claim (an extension, documented in
//! `docs/protocol.md`). `limit` (default 10, at most 100) bounds each worst-clients list.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use crate::app::App;
use crate::http::bad_request;

/// Default length of each worst-clients list.
pub const DEFAULT_LIMIT: usize = 10;
/// Longest allowed list.
pub const MAX_LIMIT: usize = 100;

/// The handler.
pub async fn fleet(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let ip = match app.admission.admit_api(peer, &headers, Instant::now()) {
        Ok(ip) => ip,
        Err(refusal) => return refusal.into_response(),
    };
    let need = crate::http::Requirement {
        phase: "admin",
        allowed: &|claims| claims.admin,
        denied: "the fleet view needs a token with the admin claim",
    };
    if let Err(response) = crate::http::authorize(&app, ip, &headers, need) {
        return response;
    }
    let mut limit = DEFAULT_LIMIT;
    for pair in query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        if let Some(v) = pair.strip_prefix("limit=") {
            match v.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => limit = n,
                _ => return bad_request(&format!("limit must be an integer 1-{MAX_LIMIT}")),
            }
        }
    }
    let mut summary = super::summary(limit);
    // This process's own count is the admission's, which also covers connections still in
    // their handshake.
    summary.connections = i64::try_from(app.admission.connections()).unwrap_or(i64::MAX);
    Json(summary).into_response()
}
