//! The four Twilio endpoints (CONTRACT §10.2): `POST /twilio/voice`, `POST /twilio/voice/after`,
//! `POST /twilio/stream-status` and the `GET /twilio/media` WebSocket. Each answers `404`
//! while Twilio is not configured and `403` (with a `twilio_signature_invalid` line, without
//! the signature) when the signature is missing or wrong, before anything else happens.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts as _, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt as _;
use protocol::ErrorCode;
use tokio::sync::mpsc;

use super::call::{self, Attach, CallInfo};
use super::frames::{self, Inbound, MAX_FRAME_BYTES};
use super::gateway::{Enabled, Gateway};
use super::{events, token, twiml};
use crate::app::App;
use crate::http::error_response;
use crate::store::{CallRecord, CallState, now};

/// The largest webhook body accepted (Twilio's forms are a few hundred bytes).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Time a new media stream has to send `connected` and `start`.
pub const START_TIMEOUT: Duration = Duration::from_secs(5);
/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-twilio-signature";

/// The routes, merged into the server's router.
pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/twilio/voice", post(voice))
        .route("/twilio/voice/after", post(after))
        .route("/twilio/stream-status", post(stream_status))
        .route("/twilio/media", get(media))
}

fn not_configured() -> Response {
    error_response(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such path")
}

fn xml(body: String) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/xml")], body).into_response()
}

fn forbidden(path: &str, why: &'static str) -> Response {
    tracing::warn!(
        component = "twilio",
        event = "twilio_signature_invalid",
        path,
        reason = why
    );
    error_response(
        StatusCode::FORBIDDEN,
        ErrorCode::Forbidden,
        "invalid Twilio signature",
    )
}

fn bad_request(message: &str) -> Response {
    error_response(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
}

/// A verified webhook's form parameters.
struct Form(Vec<(String, String)>);

impl Form {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A Twilio SID: 2–64 ASCII letters and digits (anything else is not Twilio's); the
    /// error is the `400` message.
    fn sid(&self, name: &str) -> Result<String, String> {
        match self.get(name) {
            Some(v)
                if (2..=64).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric()) =>
            {
                Ok(v.to_owned())
            }
            Some(_) => Err(format!("{name} is not a Twilio SID")),
            None => Err(format!("{name} is missing")),
        }
    }
}

/// The common start of the three webhooks: Twilio configured (else `404`), the signature
/// (else `403`), a Twilio `CallSid` (else `400`).
async fn call_webhook<'a>(
    gw: &'a Gateway,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<(&'a Enabled, Form, String), Response> {
    let Some(tw) = gw.enabled.as_ref() else {
        return Err(not_configured());
    };
    let form = verified(tw, uri, headers, body).await?;
    let call_sid = form
        .sid("CallSid")
        .map_err(|message| bad_request(&message))?;
    Ok((tw, form, call_sid))
}

/// Reads the body (bounded), checks the signature over `PUBLIC_URL` + path + query, and
/// returns the form parameters.
async fn verified(
    tw: &Enabled,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Form, Response> {
    let path = uri.path();
    let body = read_body(body).await?;
    let Some(signature) = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()) else {
        return Err(forbidden(path, "missing"));
    };
    let url = tw
        .urls
        .url(uri.path_and_query().map_or(path, |p| p.as_str()));
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().starts_with("application/json"));
    if is_json {
        if !tw.validator.json(&url, &body, signature) {
            return Err(forbidden(path, "mismatch"));
        }
        let value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| bad_request("the body is not JSON"))?;
        let Some(map) = value.as_object() else {
            return Err(bad_request("the JSON body is not an object"));
        };
        return Ok(Form(
            map.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
                .collect(),
        ));
    }
    let params: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    if !tw.validator.webhook(&url, &params, signature) {
        return Err(forbidden(path, "mismatch"));
    }
    if std::str::from_utf8(&body).is_err() {
        return Err(bad_request("the form is not UTF-8"));
    }
    Ok(Form(params))
}

async fn read_body(body: Body) -> Result<Bytes, Response> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::BadRequest,
                "body over 64 KiB",
            )
        })
}

fn store_failed(e: &crate::store::StoreError) -> Response {
    tracing::error!(component = "twilio", event = "call_store_failed", error = %e);
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::ServerError,
        "store unavailable",
    )
}

/// A fresh token for the call, recorded (digest only) with the record.
fn issue_token(record: &mut CallRecord) -> String {
    let t = token::issue();
    record.token_digest = Some(token::digest(&t));
    record.token_expires_at =
        Some(now().add_millis(i64::try_from(token::CALL_TOKEN_TTL.as_millis()).unwrap_or(60_000)));
    t
}

async fn voice(State(app): State<Arc<App>>, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let gw = &app.calls;
    let (tw, form, call_sid) = match call_webhook(gw, &uri, &headers, body).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    if gw.agent_open(Instant::now()) {
        tracing::warn!(component = "twilio", event = "call_refused_agent_open", call_sid = %call_sid);
        return xml(twiml::fallback(twiml::FALLBACK_TEXT));
    }
    let at = now();
    let mut record = CallRecord {
        call_sid: call_sid.clone(),
        account_sid: form.get("AccountSid").unwrap_or_default().to_owned(),
        stream_sid: None,
        state: CallState::Active,
        end_reason: None,
        resumes: 0,
        token_digest: None,
        token_expires_at: None,
        custom_parameters: serde_json::json!({}),
        started_at: at,
        updated_at: at,
    };
    let t = issue_token(&mut record);
    if let Err(e) = app.store.call_put(&record).await {
        return store_failed(&e);
    }
    xml(twiml::connect(&tw.urls, &t))
}

async fn after(State(app): State<Arc<App>>, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let gw = &app.calls;
    let (tw, _, call_sid) = match call_webhook(gw, &uri, &headers, body).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let mut record = match app.store.call_get(&call_sid).await {
        Ok(Some(r)) => r,
        Ok(None) => return xml(twiml::hangup()),
        Err(e) => return store_failed(&e),
    };
    if record.state == CallState::Ended {
        return xml(twiml::hangup());
    }
    if record.resumes >= gw.calls.resumes {
        record.state = CallState::Ended;
        record.end_reason = Some("resumes_exhausted".into());
        record.token_digest = None;
        record.updated_at = now();
        if let Err(e) = app.store.call_put(&record).await {
            return store_failed(&e);
        }
        tracing::info!(
            component = "twilio",
            event = "call_ended",
            call_sid = %call_sid,
            reason = "resumes_exhausted",
            duration_ms = now().millis_since(record.started_at),
            resumes = record.resumes,
        );
        let body = events::lifecycle_body(
            "call_ended",
            &call_sid,
            serde_json::json!({"reason": "resumes_exhausted"}),
        );
        events::publish(&app.store, "calls".into(), body.clone());
        events::publish(&app.store, events::call_channel(&call_sid), body);
        return xml(twiml::hangup());
    }
    record.resumes += 1;
    record.updated_at = now();
    let t = issue_token(&mut record);
    if let Err(e) = app.store.call_put(&record).await {
        return store_failed(&e);
    }
    gw.counters
        .call_resumes_total
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    xml(twiml::connect(&tw.urls, &t))
}

async fn stream_status(
    State(app): State<Arc<App>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (_, form, call_sid) = match call_webhook(&app.calls, &uri, &headers, body).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let event = form.get("StreamEvent").unwrap_or_default();
    if !matches!(event, "stream-started" | "stream-stopped" | "stream-error") {
        return bad_request("StreamEvent must be stream-started, stream-stopped or stream-error");
    }
    let error: String = form
        .get("StreamError")
        .unwrap_or_default()
        .chars()
        .take(500)
        .collect();
    let stream_sid: String = form
        .get("StreamSid")
        .unwrap_or_default()
        .chars()
        .take(64)
        .collect();
    tracing::info!(component = "twilio", event = "stream_status", call_sid = %call_sid, stream_event = event, stream_sid = %stream_sid, stream_error = %error);
    let body = events::lifecycle_body(
        "stream_status",
        &call_sid,
        serde_json::json!({"streamEvent": event, "streamSid": stream_sid, "streamError": error}),
    );
    events::publish(&app.store, events::call_channel(&call_sid), body);
    StatusCode::NO_CONTENT.into_response()
}

async fn media(
    State(app): State<Arc<App>>,
    uri: Uri,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Response {
    let Some(tw) = app.calls.enabled.as_ref() else {
        return not_configured();
    };
    let Some(signature) = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()) else {
        return forbidden(uri.path(), "missing");
    };
    let url = match uri.query() {
        Some(q) => format!("{}?{q}", tw.urls.media),
        None => tw.urls.media.clone(),
    };
    if !tw.validator.upgrade(&url, signature) {
        return forbidden(uri.path(), "mismatch");
    }
    let (mut parts, _) = request.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &app).await {
        Ok(u) => u,
        Err(rejection) => return bad_request(&rejection.body_text()),
    };
    let tracker = app.drain.tracker().clone();
    upgrade
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| {
            tracker.spawn(stream_opened(app, socket));
            std::future::ready(())
        })
}

async fn reject(mut socket: WebSocket, reason: &'static str, detail: &str) {
    tracing::warn!(
        component = "twilio",
        event = "twilio_stream_rejected",
        reason,
        detail
    );
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: 1008,
            reason: reason.into(),
        })))
        .await;
}

/// A new media socket: `connected`, then a `start` whose call token is valid for its call,
/// then the stream joins its call (running here, or started from the store's record).
async fn stream_opened(app: Arc<App>, mut socket: WebSocket) {
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    let mut connected = false;
    let (info, start_text) = loop {
        let next = tokio::time::timeout_at(deadline, socket.next()).await;
        let text = match next {
            Err(_) => return reject(socket, "no start in time", "").await,
            Ok(Some(Ok(Message::Text(t)))) => t.as_str().to_owned(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(Message::Binary(_)))) => {
                return reject(socket, "binary frame", "").await;
            }
            Ok(Some(Ok(Message::Close(_)) | Err(_)) | None) => return,
        };
        match frames::parse_twilio(&text) {
            Ok(Inbound::Connected) if !connected => connected = true,
            Ok(Inbound::Start(info)) if connected => break (info, text),
            Ok(Inbound::Start(_)) => return reject(socket, "start before connected", "").await,
            Ok(_) => return reject(socket, "unexpected frame before start", "").await,
            Err(e) => return reject(socket, "not a Media Streams frame", &e.to_string()).await,
        }
    };
    let Some(token) = info
        .custom_parameters
        .get("callToken")
        .and_then(|v| v.as_str())
    else {
        return reject(socket, "no call token", "").await;
    };
    let call_sid = info.call_sid.clone();
    match app
        .store
        .call_consume_token(&call_sid, &token::digest(token), now())
        .await
    {
        Ok(true) => {}
        Ok(false) => return reject(socket, "invalid call token", "").await,
        Err(e) => {
            tracing::error!(component = "twilio", event = "call_store_failed", error = %e);
            return reject(socket, "store unavailable", "").await;
        }
    }
    let record = match app.store.call_get(&call_sid).await {
        Ok(Some(r)) => r,
        _ => return reject(socket, "unknown call", "").await,
    };
    let _ = app
        .store
        .call_set_state(
            &call_sid,
            CallState::Active,
            None,
            Some(&info.stream_sid),
            now(),
        )
        .await;
    let gw = &app.calls;
    let resumed = record.resumes > 0;
    let mut attach = Attach {
        socket,
        start: info,
        start_text,
        resumed,
    };
    if let Some(tx) = gw.live(&call_sid) {
        match tx.send(attach).await {
            Ok(()) => return,
            // The call task ended meanwhile: start it afresh below.
            Err(mpsc::error::SendError(back)) => attach = back,
        }
    }
    let (tx, rx) = mpsc::channel(4);
    gw.register(&call_sid, tx);
    if !resumed {
        gw.counters
            .calls_started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let info = CallInfo {
        call_sid: Arc::from(call_sid.as_str()),
        resumes: record.resumes,
        started_at_ms: record.started_at.unix_millis(),
    };
    let gateway: Arc<Gateway> = app.calls.clone();
    call::run(app, gateway, info, attach, rx).await;
}
