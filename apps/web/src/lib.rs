//! Tether's web dashboard: a Leptos client-side app compiled to `wasm32-unknown-unknown`.
//!
//! It drives the same `resilience::Session` as the native client through a thin browser
//! driver, and shows what a person watching the system needs: connection state, RTT, quality,
//! alerts, server health, a live channel with a composer, the offline queue and a log.
//!
//! | file | what |
//! |---|---|
//! | `ws_driver.rs` | the `Session` driven with `web_sys::WebSocket`, `setTimeout`, online/offline |
//! | `ws_driver/events.rs` | the session's events turned into what the page shows and logs |
//! | `model.rs` | what the page shows, as signals the driver writes and the views read |
//! | `calls.rs` | the Calls panel's model: call events folded into one row per call |
//! | `ui.rs`, `ui/*` | the views: status, RTT, quality, alerts, health, channel, queue, log |
//! | `health_poll.rs` | polls `GET /health` |
//! | `token.rs` | tokens from `/dev/token` or the hosting page (`window.TETHER_CONFIG`) |
//! | `config.rs` | where to connect |
//! | `storage.rs` | what survives a reload (`localStorage`) |
//! | `http.rs` | `fetch` helpers |

mod calls;
mod config;
mod health_poll;
mod http;
mod model;
mod storage;
mod token;
mod ui;
mod ws_driver;

use wasm_bindgen::prelude::wasm_bindgen;

/// Entry point called by the wasm-bindgen glue once the module is instantiated.
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    if let Some(boot) = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.get_element_by_id("boot"))
    {
        boot.remove();
    }
    let model = model::Model::new();
    leptos::mount::mount_to_body(move || leptos::view! { <ui::App model=model /> });
    ws_driver::start(model);
    health_poll::start(model);
}
