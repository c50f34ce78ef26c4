//! `GET /metrics` (CONTRACT §3, §11): the exposition text in the format the `Accept` header
//! asks for. Never rate limited and not subject to the transport rule (like `/health`), so a
//! scraper inside the cluster always gets through; with `TETHER_METRICS_TOKEN` set it needs
//! `Authorization: Bearer <token>`, else `401 AUTH_FAILURE`.
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use protocol::ErrorCode;
use sha2::{Digest as _, Sha256};

use super::{Format, render};
use crate::app::App;
use crate::http::error_response;

/// The handler.
pub async fn metrics(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Some(expected) = &app.config.observability.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !same_secret(given.trim().as_bytes(), expected.expose()) {
            return error_response(
                StatusCode::UNAUTHORIZED,
                ErrorCode::AuthFailure,
                "GET /metrics needs Authorization: Bearer <TETHER_METRICS_TOKEN>",
            );
        }
    }
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|h| h.to_str().ok()));
    let mut response = render(format).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    response
}

/// Compares digests, so the time taken says nothing about how much of a guess was right.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    Sha256::digest(given) == Sha256::digest(expected)
}
