//! The HTTP endpoints of CONTRACT §3: the router, `/health*`, `/dev/token`, server-side
//! publish and history, the WebSocket upgrade at `/ws`, CORS for the allowed origins only,
//! the web app from `--web-dir`, and JSON errors everywhere (unknown paths included).
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{ConnectInfo, Path, Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use health::{HealthInputs, StoreProbe, Thresholds};
use protocol::http::{
    ErrorBody, HistoryMessage, HistoryResponse, PublishBody, PublishResponse, TokenResponse,
};
use protocol::{ChannelName, Claims, ErrorCode, SUBPROTOCOL, defaults};
use serde_json::json;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::admission::Refusal;
use crate::app::App;
use crate::auth::{IssueRequest, all_channels, fingerprint, unix_now};
use crate::store::{self, PublishOutcome, PublishRequest};

/// How long `/health` waits for the store before calling it unreachable.
const STORE_PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Lifetime of a `/dev/token`.
const DEV_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// WebSocket buffer sizes: small, so that an idle connection costs a few KiB. tungstenite
/// grows the read buffer for a larger message and a write of any size still goes out whole.
const WS_READ_BUFFER: usize = 256;
const WS_WRITE_BUFFER: usize = 0;

/// A JSON error response: `{"error":{"code":..,"message":..}}`.
pub fn error_response(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    (status, Json(ErrorBody::new(code, message))).into_response()
}

/// The whole HTTP surface.
pub fn router(app: Arc<App>) -> Router {
    let mut router = Router::new()
        .route("/health", get(health))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/dev/token", get(dev_token))
        .route("/ws", get(websocket))
        .route(
            "/v1/channels/{channel}/messages",
            get(history).post(publish).delete(crate::admin::purge),
        )
        .route("/v1/admin/shed", post(crate::admin::shed))
        .route("/metrics", get(crate::metrics::endpoint::metrics))
        .route("/v1/admin/fleet", get(crate::fleet::endpoint::fleet))
        .merge(crate::twilio::router())
        .route_layer(axum::middleware::from_fn(crate::telemetry::http_layer));
    router = match app.config.web_dir.clone() {
        Some(dir) => {
            let files = tower_http::services::ServeDir::new(dir)
                .append_index_html_on_directories(true)
                .fallback(axum::handler::HandlerWithoutStateExt::into_service(
                    not_found,
                ));
            router.fallback_service(files)
        }
        None => router.fallback(not_found),
    };
    router.layer(cors(&app)).with_state(app)
}

fn cors(app: &App) -> CorsLayer {
    let origins = app.config.allowed_origins.clone();
    // A predicate rather than a list: the answer echoes the one allowed origin, never `*`.
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            origin.to_str().is_ok_and(|o| origins.allows(o))
        }))
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::RETRY_AFTER])
        .max_age(Duration::from_secs(600))
}

async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such path")
}

async fn live() -> Response {
    Json(json!({"status": "alive"})).into_response()
}

/// Probes the store, bounded in time.
async fn store_probe(app: &App) -> StoreProbe {
    let started = Instant::now();
    match tokio::time::timeout(STORE_PING_TIMEOUT, app.store.ping()).await {
        Ok(Ok(latency)) => StoreProbe::Reachable { latency },
        Ok(Err(e)) => StoreProbe::Unreachable {
            latency: started.elapsed(),
            error: e.to_string(),
        },
        Err(_) => StoreProbe::Unreachable {
            latency: started.elapsed(),
            error: "no answer in time".to_owned(),
        },
    }
}

fn status_code(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

async fn ready(State(app): State<Arc<App>>) -> Response {
    let report = health::readiness(&store_probe(&app).await, app.drain.is_draining());
    (status_code(report.http_status()), Json(report)).into_response()
}

async fn health(State(app): State<Arc<App>>) -> Response {
    let inputs = HealthInputs {
        uptime: app.started.elapsed(),
        connections: app.admission.connections() as u64,
        latency: app.latency.median(Instant::now()),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        draining: app.drain.is_draining(),
        store: store_probe(&app).await,
        extra: Default::default(),
    };
    let abuse = app.admission.abuse.snapshot(Instant::now());
    let mut inputs = inputs;
    inputs
        .extra
        .insert("abuse".to_owned(), crate::abuse::health_check(&abuse));
    if app.calls.enabled.is_some() {
        let agent = app.calls.health_check(Instant::now());
        inputs.extra.insert("agent".to_owned(), agent);
    }
    let thresholds = Thresholds {
        latency: app.config.latency_threshold,
        ..Thresholds::default()
    };
    let report = health::evaluate(inputs, &thresholds);
    let status = status_code(report.http_status());
    // The abuse counts as numbers too, beside the contract's fields (extra fields are allowed).
    let mut body = serde_json::to_value(&report).unwrap_or_default();
    body["abuse"] = json!(abuse);
    (status, Json(body)).into_response()
}

#[derive(serde::Deserialize)]
struct DevTokenQuery {
    sub: Option<String>,
}

/// Headers that mean the request came through a proxy: `/dev/token` refuses them.
const FORWARDING_HEADERS: [&str; 5] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
];

fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        })
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

async fn dev_token(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<DevTokenQuery>,
) -> Response {
    let host_ok = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(is_loopback_host);
    let forwarded = FORWARDING_HEADERS
        .iter()
        .any(|name| headers.contains_key(*name));
    if app.config.environment.is_production() || !peer.ip().is_loopback() || !host_ok || forwarded {
        return not_found().await;
    }
    let sub = query.sub.unwrap_or_else(|| "dev".to_owned());
    if sub.is_empty() || sub.len() > 256 {
        return error_response(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "sub must be 1-256 bytes",
        );
    }
    let rights = all_channels();
    let request = IssueRequest {
        sub,
        subscribe: rights.subscribe,
        publish: rights.publish,
        ttl: DEV_TOKEN_TTL,
        admin: false,
    };
    match app.auth.issue(request, unix_now()) {
        Ok((token, _)) => Json(TokenResponse { token }).into_response(),
        Err(e) => {
            tracing::error!(component = "server", event = "dev_token_failed", error = %e);
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::ServerError,
                "cannot sign a token",
            )
        }
    }
}

async fn websocket(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let permit = match app
        .admission
        .admit_websocket(peer, &headers, Instant::now())
    {
        Ok(permit) => permit,
        Err(refusal) => return crate::metrics::upgrade_refused(refusal).into_response(),
    };
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => {
            return error_response(
                rejection.status(),
                ErrorCode::BadRequest,
                &rejection.body_text(),
            );
        }
    };
    let max = app.config.limits.max_message_bytes;
    let tracker = app.drain.tracker().clone();
    upgrade
        .protocols([SUBPROTOCOL])
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(WS_WRITE_BUFFER)
        .max_message_size(max)
        .max_frame_size(max)
        // The session gets a task of its own (tracked for the drain) rather than running
        // inside axum's upgrade task, whose state would stay allocated beside it.
        .on_upgrade(move |socket| {
            tracker.spawn(crate::session::run(app, socket, permit));
            std::future::ready(())
        })
}

/// What an HTTP caller must hold: the right checked after the token verifies, the message of
/// the 403 without it, and the `phase` its `auth_failure` lines carry.
pub(crate) struct Requirement<'a> {
    pub phase: &'static str,
    pub allowed: &'a dyn Fn(&Claims) -> bool,
    pub denied: &'static str,
}

/// The caller's claims, or why not as a finished response: 401 `AUTH_FAILURE` without a valid
/// bearer token (logged and counted toward the IP's cool-down), 429 past the per-token API
/// rate, 403 `FORBIDDEN` without the right. Every `/v1/*` handler goes through here.
#[allow(clippy::result_large_err)] // The error is the finished response, built once.
pub(crate) fn authorize(
    app: &App,
    ip: std::net::IpAddr,
    headers: &HeaderMap,
    need: Requirement<'_>,
) -> Result<Claims, Response> {
    let Some(raw) = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
    else {
        return Err(error_response(
            StatusCode::UNAUTHORIZED,
            ErrorCode::AuthFailure,
            "missing Authorization: Bearer <token>",
        ));
    };
    let token = raw
        .strip_prefix("Bearer ")
        .or_else(|| raw.strip_prefix("bearer "))
        .unwrap_or("")
        .trim();
    let claims = match app.auth.verify(token) {
        Ok(c) => c,
        Err(err) => {
            tracing::warn!(
                component = "server",
                event = "auth_failure",
                client_ip = %ip,
                reason = err.reason(),
                detail = %err,
                phase = need.phase,
                token_fingerprint = %fingerprint(token),
            );
            app.admission.auth_failed(ip, Instant::now());
            crate::metrics::auth_failure();
            return Err(error_response(
                StatusCode::UNAUTHORIZED,
                ErrorCode::AuthFailure,
                &err.to_string(),
            ));
        }
    };
    // The HTTP API rate per token (issue 7 §3), beside the per-IP one.
    if let Err(refusal) = app.admission.admit_api_sub(ip, &claims.sub, Instant::now()) {
        return Err(refusal.into_response());
    }
    if !(need.allowed)(&claims) {
        return Err(error_response(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            need.denied,
        ));
    }
    Ok(claims)
}

/// A right on the path's channel.
fn channel_right<'a>(allowed: &'a dyn Fn(&Claims) -> bool) -> Requirement<'a> {
    Requirement {
        phase: "http",
        allowed,
        denied: "the token does not grant this right on this channel",
    }
}

pub(crate) fn bad_request(message: &str) -> Response {
    error_response(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
}

async fn publish(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let ip = match app.admission.admit_api(peer, &headers, Instant::now()) {
        Ok(ip) => ip,
        Err(refusal) => return refusal.into_response(),
    };
    let claims = match authorize(
        &app,
        ip,
        &headers,
        channel_right(&|c| c.can_publish(&channel)),
    ) {
        Ok(c) => c,
        Err(response) => return response,
    };
    if let Err(e) = ChannelName::parse(&channel) {
        return bad_request(&e.to_string());
    }
    let limit = app.config.limits.max_message_bytes;
    let bytes: Bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::BadRequest,
                &format!("the body is larger than {limit} bytes"),
            );
        }
    };
    if protocol::codec::json_depth_exceeds(&bytes, defaults::MAX_JSON_DEPTH) {
        return bad_request("JSON nested too deeply");
    }
    let body: PublishBody = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        Err(e) => return bad_request(&format!("expected {{\"id\":..,\"data\":..}}: {e}")),
    };
    if body.id.is_empty() || body.id.len() > defaults::MAX_ID_BYTES {
        return bad_request(&format!("id must be 1-{} bytes", defaults::MAX_ID_BYTES));
    }
    let request = PublishRequest {
        channel: channel.clone(),
        sub: claims.sub,
        id: body.id,
        data: body.data,
        published_at: store::now(),
    };
    let stored = crate::telemetry::traced_http_publish(&channel, app.store.publish(request));
    let (status, offset, duplicate) = match stored.await {
        Ok(PublishOutcome::Stored { offset }) => (StatusCode::CREATED, offset, false),
        Ok(PublishOutcome::Duplicate { offset }) => (StatusCode::OK, offset, true),
        Ok(PublishOutcome::Conflict { .. }) => {
            return bad_request("this id was already published with different data");
        }
        Err(e) => {
            tracing::error!(component = "server", event = "store_error", operation = "http_publish", error = %e);
            return store_unavailable();
        }
    };
    let body = PublishResponse {
        channel,
        offset,
        duplicate,
    };
    (status, Json(body)).into_response()
}

fn store_unavailable() -> Response {
    let mut response = error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::ServerError,
        "the store is unavailable; retry later",
    );
    response.headers_mut().insert(
        HeaderName::from_static("retry-after"),
        HeaderValue::from_static("1"),
    );
    response
}

async fn history(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let ip = match app.admission.admit_api(peer, &headers, Instant::now()) {
        Ok(ip) => ip,
        Err(refusal) => return refusal.into_response(),
    };
    if let Err(response) = authorize(
        &app,
        ip,
        &headers,
        channel_right(&|c| c.can_subscribe(&channel)),
    ) {
        return response;
    }
    if let Err(e) = ChannelName::parse(&channel) {
        return bad_request(&e.to_string());
    }
    let mut since = 0u64;
    let mut limit = u64::from(defaults::HISTORY_DEFAULT_LIMIT);
    for pair in query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let target = match key {
            "since" => &mut since,
            "limit" => &mut limit,
            _ => continue,
        };
        match value.parse::<u64>() {
            Ok(v) => *target = v,
            Err(_) => return bad_request(&format!("{key} must be a non-negative integer")),
        }
    }
    let limit = limit.clamp(1, u64::from(defaults::HISTORY_MAX_LIMIT));
    let info = match app.store.channel_info(&channel).await {
        Ok(Some(info)) => Ok(info),
        Ok(None) => app.store.channel(&channel).await,
        Err(e) => Err(e),
    };
    let info = match info {
        Ok(info) => info,
        Err(e) => {
            tracing::error!(component = "server", event = "store_error", operation = "history", error = %e);
            return store_unavailable();
        }
    };
    let limit = usize::try_from(limit).unwrap_or(1_000);
    let messages = match app.store.read(&channel, since, limit).await {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(component = "server", event = "store_error", operation = "history", error = %e);
            return store_unavailable();
        }
    };
    let body = HistoryResponse {
        channel,
        epoch: info.epoch,
        messages: messages
            .iter()
            .map(|m| HistoryMessage::from(m.to_delivery()))
            .collect(),
    };
    Json(body).into_response()
}

impl From<Refusal> for Response {
    fn from(r: Refusal) -> Self {
        r.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for ok in [
            "localhost",
            "localhost:8081",
            "127.0.0.1:8081",
            "[::1]:80",
            "127.0.0.2",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "example.com",
            "10.0.0.1:80",
            "localhost.evil.com",
            "[2001:db8::1]:80",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }
}
