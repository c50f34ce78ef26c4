//! Where the dashboard connects: defaults for the dev stack, or `window.TETHER_CONFIG`.
//!
//! Served by `cargo xtask dev` or `tether serve --web-dir`, the app talks to its own origin:
//! `/ws`, `/health`, and `/dev/token` in development. A hosting page can set, before loading
//! the app:
//!
//! ```js
//! window.TETHER_CONFIG = {
//!   wsUrl: "wss://rt.example.org/ws",       // the WebSocket endpoint
//!   healthUrl: "https://rt.example.org/health",
//!   token: "<JWT>",                          // a token to use as is (no refresh source), or
//!   tokenUrl: "/my/token",                   // a URL answering {"token":"<JWT>"} (`?sub=` is added)
//!   channel: "room:1",                       // the channel to show first
//!   healthIntervalMs: 5000,
//! };
//! ```

use serde::Deserialize;
use wasm_bindgen::JsValue;

/// The effective configuration.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Config {
    /// The WebSocket URL (default: this origin's `/ws`).
    pub ws_url: Option<String>,
    /// The health URL (default: `/health`).
    pub health_url: Option<String>,
    /// A fixed token from the hosting page.
    pub token: Option<String>,
    /// Where to get tokens (default: `/dev/token`, development only).
    pub token_url: Option<String>,
    /// The channel to subscribe to and show when nothing was kept from last time.
    pub channel: Option<String>,
    /// How often to poll the health endpoint.
    pub health_interval_ms: Option<u32>,
}

impl Config {
    /// Reads `window.TETHER_CONFIG` (an absent or malformed one means the defaults).
    pub fn load() -> Self {
        let Some(window) = web_sys::window() else {
            return Self::default();
        };
        let value = js_sys::Reflect::get(&window, &JsValue::from_str("TETHER_CONFIG"))
            .unwrap_or(JsValue::UNDEFINED);
        if value.is_undefined() || value.is_null() {
            return Self::default();
        }
        js_sys::JSON::stringify(&value)
            .ok()
            .and_then(|s| s.as_string())
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default()
    }

    /// The WebSocket URL: configured, or `ws(s)://<this host>/ws`.
    pub fn ws_url(&self) -> String {
        if let Some(url) = &self.ws_url {
            return url.clone();
        }
        let location = web_sys::window().map(|w| w.location());
        let host = location
            .as_ref()
            .and_then(|l| l.host().ok())
            .unwrap_or_else(|| "localhost:3000".to_owned());
        let secure = location
            .and_then(|l| l.protocol().ok())
            .is_some_and(|p| p == "https:");
        format!("{}://{host}/ws", if secure { "wss" } else { "ws" })
    }

    /// The health URL.
    pub fn health_url(&self) -> String {
        self.health_url
            .clone()
            .unwrap_or_else(|| "/health".to_owned())
    }

    /// The token URL for `sub`, unless the page gave a fixed token.
    pub fn token_url(&self, sub: &str) -> Option<String> {
        if self.token.is_some() && self.token_url.is_none() {
            return None;
        }
        let base = self
            .token_url
            .clone()
            .unwrap_or_else(|| "/dev/token".to_owned());
        let sep = if base.contains('?') { '&' } else { '?' };
        let sub: String = js_sys::encode_uri_component(sub).into();
        Some(format!("{base}{sep}sub={sub}"))
    }

    /// The health poll interval.
    pub fn health_interval_ms(&self) -> u32 {
        self.health_interval_ms.unwrap_or(5000).max(1000)
    }
}
