//! Polls `GET /health` and keeps the last answer (also across reloads, as last known data).

use leptos::prelude::*;

use crate::model::{HealthView, Model};

/// Starts the poll loop for the page's lifetime.
pub fn start(model: Model) {
    wasm_bindgen_futures::spawn_local(async move {
        loop {
            let (url, every) =
                crate::ws_driver::health_source().unwrap_or_else(|| ("/health".to_owned(), 5000));
            poll_once(model, &url).await;
            sleep_ms(every).await;
        }
    });
}

/// Polls once now, besides the loop (e.g. right after reconnecting, so the card does not keep
/// saying "unreachable" until the next tick).
pub fn poll_soon(model: Model, url: String) {
    wasm_bindgen_futures::spawn_local(async move { poll_once(model, &url).await });
}

async fn poll_once(model: Model, url: &str) {
    let result = crate::http::get_text(url).await;
    let now = js_sys::Date::now();
    let update = match result {
        // 200 (healthy/degraded) and 503 (unhealthy) both carry the report.
        Ok((status, body)) if status == 200 || status == 503 => {
            match serde_json::from_str::<health::HealthReport>(&body) {
                Ok(report) => HealthView {
                    report: Some(report),
                    received_ms: Some(now),
                    error: None,
                },
                Err(err) => keep_last(model, format!("unexpected /health answer: {err}")),
            }
        }
        Ok((status, _)) => keep_last(model, format!("/health answered {status}")),
        Err(err) => keep_last(model, format!("server unreachable ({err})")),
    };
    if model.health.with_untracked(|h| *h != update) {
        model.health.set(update);
        crate::ws_driver::save_health();
    }
}

/// The last known report with the reason the latest poll failed.
fn keep_last(model: Model, error: String) -> HealthView {
    let mut view = model.health.get_untracked();
    view.error = Some(error);
    view
}

/// Resolves after `ms` milliseconds (a `setTimeout` wrapped in a promise).
pub async fn sleep_ms(ms: u32) {
    let promise = js_sys::Promise::new(&mut |resolve, _reject| {
        if let Some(window) = web_sys::window() {
            // Without a window there is nothing to wait for; the loop then spins slowly anyway.
            let _ = window.set_timeout_with_callback_and_timeout_and_arguments_0(
                &resolve,
                i32::try_from(ms).unwrap_or(i32::MAX),
            );
        }
    });
    // The promise only ever resolves.
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}
