//! The spans of CONTRACT §11 and the helpers the instrumented code calls (one line each).
//!
//! Every helper returns [`Span::none()`] (and costs nothing else) unless traces are exported
//! ([`super::enabled`]), so the message path pays for spans only when someone collects them.
//! The span tree of one WebSocket publish:
//!
//! ```text
//! ws.connection (connection_id, sub, close_code)
//! ├── ws.hello
//! ├── channel.subscribe (channel, since, replayed, recovered)
//! └── channel.publish (channel, offset, duplicate)
//!     └── store.commit
//! ```
//!
//! and of an HTTP publish: `http.request (method, route, status)` → `channel.publish` →
//! `store.commit`, where `http.request` continues the caller's W3C `traceparent` when given.
use std::future::Future;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::field::Empty;
use tracing::{Instrument as _, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::store::{PublishOutcome, StoreError};

use super::enabled;

/// `ws.connection`: the whole WebSocket connection. A root span (not a child of the upgrade
/// request), so each connection is one trace.
#[must_use]
pub fn connection_span(connection_id: &str) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(
        parent: None,
        "ws.connection",
        otel.kind = "server",
        connection_id = %connection_id,
        sub = Empty,
        close_code = Empty,
    )
}

/// Records the authenticated `sub` on the current `ws.connection`.
pub fn record_sub(sub: &str) {
    Span::current().record("sub", sub);
}

/// Records the close code on the current `ws.connection`.
pub fn record_close(code: u16) {
    Span::current().record("close_code", code);
}

/// `ws.hello`: waiting for `hello` until `welcome` (or the refusal).
#[must_use]
pub fn hello_span() -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!("ws.hello")
}

/// `channel.subscribe`: from the request to the `subscribed` answer; record the outcome with
/// [`subscribed`].
#[must_use]
pub fn subscribe_span(channel: &str, since: Option<u64>) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        "channel.subscribe",
        channel = %channel,
        since = Empty,
        replayed = Empty,
        recovered = Empty,
    );
    if let Some(since) = since {
        span.record("since", since);
    }
    span
}

/// Records a subscription's outcome on its span.
pub fn subscribed(span: &Span, replayed: u64, recovered: bool) {
    span.record("replayed", replayed);
    span.record("recovered", recovered);
}

/// Wraps a WebSocket publish already queued in the store (`stored`): a `channel.publish` span
/// (child of the current span) with a `store.commit` child covering the wait for the group
/// commit, the publish outcome counted, and the ack latency from `received` recorded.
pub fn traced_publish(
    channel: &str,
    received: Instant,
    stored: impl Future<Output = Result<PublishOutcome, StoreError>> + Send + 'static,
) -> impl Future<Output = Result<PublishOutcome, StoreError>> + Send + 'static {
    let (span, commit) = publish_spans(channel);
    async move {
        let outcome = stored.instrument(commit).await;
        record_outcome(&span, &outcome);
        crate::metrics::published(&outcome);
        crate::metrics::publish_acked(received);
        outcome
    }
}

/// [`traced_publish`] for `POST /v1/channels/{channel}/messages`: a conflict or a store error
/// counts as a refused publish too (the HTTP path builds no `nack`).
pub fn traced_http_publish(
    channel: &str,
    stored: impl Future<Output = Result<PublishOutcome, StoreError>> + Send + 'static,
) -> impl Future<Output = Result<PublishOutcome, StoreError>> + Send + 'static {
    let received = Instant::now();
    let inner = traced_publish(channel, received, stored);
    async move {
        let outcome = inner.await;
        if matches!(outcome, Ok(PublishOutcome::Conflict { .. }) | Err(_)) {
            crate::metrics::publish_refused();
        }
        outcome
    }
}

fn publish_spans(channel: &str) -> (Span, Span) {
    if !enabled() {
        return (Span::none(), Span::none());
    }
    let span = tracing::info_span!(
        "channel.publish",
        channel = %channel,
        offset = Empty,
        duplicate = Empty,
        otel.status_code = Empty,
        error = Empty,
    );
    let commit = tracing::info_span!(parent: &span, "store.commit");
    (span, commit)
}

fn record_outcome(span: &Span, outcome: &Result<PublishOutcome, StoreError>) {
    match outcome {
        Ok(PublishOutcome::Stored { offset }) => {
            span.record("offset", offset);
            span.record("duplicate", false);
        }
        Ok(PublishOutcome::Duplicate { offset }) => {
            span.record("offset", offset);
            span.record("duplicate", true);
        }
        Ok(PublishOutcome::Conflict { .. }) => {
            span.record("otel.status_code", "ERROR");
        }
        Err(e) => {
            span.record("otel.status_code", "ERROR");
            span.record("error", e.to_string());
        }
    }
}

/// `twilio.call`: one voice call, for the `twilio` area to instrument its call task with
/// (`call_task.instrument(telemetry::call_span(call_sid))`); record resumes with
/// [`record_resumes`].
#[must_use]
pub fn call_span(call_sid: &str) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(parent: None, "twilio.call", callSid = %call_sid, resumes = 0u64)
}

/// Records how many times the call's stream was resumed so far.
pub fn record_resumes(span: &Span, resumes: u64) {
    span.record("resumes", resumes);
}

/// The `axum` middleware of `http.request` (method, route, status), continuing an incoming
/// W3C `traceparent`. `/health*` and `/metrics` are left out: probes and scrapes every few
/// seconds would bury the requests that matter.
pub async fn http_layer(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if !enabled() || path.starts_with("/health") || path == "/metrics" {
        return next.run(request).await;
    }
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let span = tracing::info_span!(
        parent: None,
        "http.request",
        otel.kind = "server",
        method = %request.method(),
        route = %route,
        status = Empty,
        otel.status_code = Empty,
    );
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
    // A missing or malformed traceparent yields an empty context: a new trace starts.
    let _ = span.set_parent(parent);
    let response = next.run(request).instrument(span.clone()).await;
    span.record("status", response.status().as_u16());
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    response
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(axum::http::HeaderName::as_str).collect()
    }
}
