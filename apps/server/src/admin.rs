//! Operator actions (issue 6 §4, CONTRACT §3), for a token with the `admin` claim:
//!
//! - `POST /v1/admin/shed` `{"fraction":F,"after_ms_max":N?}`: a random share `F` of the open
//!   (welcomed) WebSocket connections gets `reconnect` advice with reason `shed` and a delay
//!   spread over `0..N` ms (default: the drain window), then close 1012 — the same path the
//!   drain takes. Answers `{"shed":K,"connections":M}`; logs `connections_shed`.
//! - `DELETE /v1/channels/{channel}/messages`: the channel's history is purged and its epoch
//!   changes (the store announces it; the hub resets the channel's offsets). Answers
//!   `{"channel":..,"epoch":".."}`; logs `channel_purged`. 404 for a channel that never existed.
//!
//! [`Shedder`] is the registry sessions join after `welcome`: a shed picks keys from it and
//! wakes the chosen sessions through a oneshot each.
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use protocol::{ChannelName, Claims, ErrorCode};
use rand::Rng as _;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;

use crate::app::App;
use crate::http::{bad_request, error_response};
use crate::hub::ConnKey;

/// Largest accepted shed body.
const MAX_BODY: usize = 4 * 1024;
/// Largest accepted `after_ms_max` (one hour).
const MAX_AFTER_MS: u64 = 3_600_000;

/// Sessions that can be shed. Clone freely; clones share one registry.
#[derive(Debug, Clone, Default)]
pub struct Shedder {
    sessions: Arc<Mutex<HashMap<ConnKey, oneshot::Sender<u64>>>>,
}

/// A session's place in the [`Shedder`]; leaves it on drop.
#[derive(Debug)]
pub struct ShedGuard {
    shedder: Shedder,
    key: ConnKey,
    rx: oneshot::Receiver<u64>,
}

impl ShedGuard {
    /// Resolves with the advised `after_ms` once this session is chosen; never otherwise.
    pub async fn chosen(&mut self) -> u64 {
        match (&mut self.rx).await {
            Ok(after_ms) => after_ms,
            Err(_) => std::future::pending().await,
        }
    }
}

impl Drop for ShedGuard {
    fn drop(&mut self) {
        self.shedder.lock().remove(&self.key);
    }
}

impl Shedder {
    /// Registers session `key`.
    #[must_use]
    pub fn register(&self, key: ConnKey) -> ShedGuard {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(key, tx);
        ShedGuard {
            shedder: self.clone(),
            key,
            rx,
        }
    }

    /// Registered sessions.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is registered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Chooses `round(fraction × M)` of the M registered sessions at random and tells each to
    /// reconnect after a random delay in `0..after_ms_max`. Returns `(shed, M)`.
    pub fn shed(&self, fraction: f64, after_ms_max: u64) -> (usize, usize) {
        let mut rng = rand::rng();
        let mut sessions = self.lock();
        let total = sessions.len();
        let want = share(fraction, total);
        let keys: Vec<ConnKey> = sessions.keys().copied().collect();
        let mut shed = 0;
        for i in rand::seq::index::sample(&mut rng, total, want) {
            let Some(tx) = sessions.remove(&keys[i]) else {
                continue;
            };
            let after_ms = if after_ms_max == 0 {
                0
            } else {
                rng.random_range(0..after_ms_max)
            };
            if tx.send(after_ms).is_ok() {
                shed += 1;
            }
        }
        (shed, total)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConnKey, oneshot::Sender<u64>>> {
        self.sessions
            .lock()
            .expect("shed registry lock is never poisoned")
    }
}

/// `round(fraction × total)`, within `0..=total`.
fn share(fraction: f64, total: usize) -> usize {
    // Connection counts are far below 2^52, so the float round trip is exact.
    ((fraction.clamp(0.0, 1.0) * total as f64).round() as usize).min(total)
}

/// The body of `POST /v1/admin/shed`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShedBody {
    fraction: f64,
    #[serde(default)]
    after_ms_max: Option<u64>,
}

/// The caller's token, which must carry the `admin` claim: 401 `AUTH_FAILURE` without a valid
/// one, 403 `FORBIDDEN` without the claim. Failures count and log as in the other endpoints.
#[allow(clippy::result_large_err)] // The error is the finished response, built once.
fn authorize_admin(app: &App, ip: IpAddr, headers: &HeaderMap) -> Result<Claims, Response> {
    crate::http::authorize(
        app,
        ip,
        headers,
        crate::http::Requirement {
            phase: "admin",
            allowed: &|claims| claims.admin,
            denied: "operator actions need a token with the admin claim",
        },
    )
}

/// `POST /v1/admin/shed`.
pub async fn shed(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let ip = match app.admission.admit_api(peer, &headers, Instant::now()) {
        Ok(ip) => ip,
        Err(refusal) => return refusal.into_response(),
    };
    let claims = match authorize_admin(&app, ip, &headers) {
        Ok(c) => c,
        Err(response) => return response,
    };
    let Ok(bytes): Result<Bytes, _> = axum::body::to_bytes(body, MAX_BODY).await else {
        return bad_request(&format!("the body is larger than {MAX_BODY} bytes"));
    };
    let body: ShedBody = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        Err(e) => {
            return bad_request(&format!(
                "expected {{\"fraction\":0.0..1.0,\"after_ms_max\":N}}: {e}"
            ));
        }
    };
    if !(0.0..=1.0).contains(&body.fraction) {
        return bad_request("fraction must be between 0.0 and 1.0");
    }
    let window = u64::try_from(app.config.drain.as_millis()).unwrap_or(MAX_AFTER_MS);
    let after_ms_max = body.after_ms_max.unwrap_or(window);
    if after_ms_max > MAX_AFTER_MS {
        return bad_request(&format!("after_ms_max must be at most {MAX_AFTER_MS}"));
    }
    let (shed, connections) = app.shed.shed(body.fraction, after_ms_max);
    tracing::info!(
        component = "server",
        event = "connections_shed",
        fraction = body.fraction,
        after_ms_max,
        shed,
        connections,
        sub = %claims.sub,
    );
    Json(json!({"shed": shed, "connections": connections})).into_response()
}

/// `DELETE /v1/channels/{channel}/messages`.
pub async fn purge(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(channel): Path<String>,
    headers: HeaderMap,
) -> Response {
    let ip = match app.admission.admit_api(peer, &headers, Instant::now()) {
        Ok(ip) => ip,
        Err(refusal) => return refusal.into_response(),
    };
    let claims = match authorize_admin(&app, ip, &headers) {
        Ok(c) => c,
        Err(response) => return response,
    };
    if let Err(e) = ChannelName::parse(&channel) {
        return bad_request(&e.to_string());
    }
    match app.store.channel_info(&channel).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return error_response(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                "no such channel",
            );
        }
        Err(e) => return store_error(&e.to_string()),
    }
    let info = match app.store.purge(&channel).await {
        Ok(info) => info,
        Err(e) => return store_error(&e.to_string()),
    };
    tracing::info!(
        component = "server",
        event = "channel_purged",
        channel = %channel,
        epoch = %info.epoch,
        sub = %claims.sub,
    );
    Json(json!({"channel": channel, "epoch": info.epoch})).into_response()
}

fn store_error(error: &str) -> Response {
    tracing::error!(component = "server", event = "store_error", operation = "purge", error = %error);
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::ServerError,
        "the store is unavailable; retry later",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_rounds_within_bounds() {
        assert_eq!(share(0.5, 4), 2);
        assert_eq!(share(1.0, 3), 3);
        assert_eq!(share(0.0, 3), 0);
        assert_eq!(share(0.34, 3), 1);
        assert_eq!(share(2.0, 3), 3);
        assert_eq!(share(0.5, 0), 0);
    }

    #[tokio::test]
    async fn shed_wakes_the_chosen_and_forgets_the_gone() {
        let shedder = Shedder::default();
        let mut guards: Vec<ShedGuard> = (1..=4).map(|k| shedder.register(k)).collect();
        drop(guards.pop());
        assert_eq!(shedder.len(), 3);
        assert_eq!(shedder.shed(1.0, 100), (3, 3));
        for g in &mut guards {
            assert!(g.chosen().await < 100);
        }
        assert!(shedder.is_empty());
    }
}
