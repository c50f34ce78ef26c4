//! `client-js`: the Rust half of `@tether/client`, the JavaScript client (CONTRACT §13).
//!
//! It exposes one wasm-bindgen class, [`Core`], over `resilience::Session`. The TypeScript
//! driver in `../ts/index.ts` owns the platform's `WebSocket`, one timer and an optional
//! storage; it feeds what happened into `Core` and performs what comes out. Every decision —
//! when to retry, what a close code means, what to resend, when an alert begins, when a queued
//! publish expires — is the session's, exactly as in the native client and the dashboard.
//!
//! | file | what |
//! |---|---|
//! | `lib.rs` | [`Core`]: the session, its clock anchor and the calls the driver makes |
//! | `options.rs` | [`Options`]: the camelCase client options → `resilience::Config` |
//! | `events.rs` | outputs and events as `{kind, …}` JSON for the driver |
//! | `token.rs` | [`Tokens`]: the held token and `resilience::TokenBroker` |
//!
//! # Time
//!
//! The driver passes its monotonic clock (`performance.now()`, milliseconds) into every call,
//! and reads [`Core::poll_timeout`] on the same clock; the wall clock (`Date.now()`) is read
//! once, at creation. `Core` turns the milliseconds into `resilience::Instant`s from one anchor
//! taken at creation, so the machines never read a clock and a test may drive a virtual one.
//!
//! # Data across the boundary
//!
//! Everything crosses as strings and numbers: options, publish data and events as JSON. That
//! keeps the bindings free of `serde-wasm-bindgen`/`js-sys` and lets the native unit tests
//! exercise this exact code.

#![warn(missing_docs)]
use std::collections::VecDeque;
use std::time::Duration;

use protocol::{CloseCode, Timestamp, Token};
use resilience::connection::{Input, Output};
use resilience::{Instant, Session};
use wasm_bindgen::prelude::*;

pub mod events;
pub mod options;
pub mod token;

pub use options::{Options, OptionsError};
pub use token::Tokens;

/// The `client` field of `hello`: who is connecting, for the server's logs.
pub const CLIENT_NAME: &str = concat!("js/", env!("CARGO_PKG_VERSION"));

/// A `resilience::Session` and the clock anchor of its driver.
#[wasm_bindgen]
pub struct Core {
    session: Session,
    /// The instant that corresponds to `base_ms` on the driver's clock.
    base: Instant,
    /// The driver's clock (ms) when the core was created.
    base_ms: f64,
    /// Why the saved state could not be restored, if it could not (the core then starts empty).
    restore_error: Option<String>,
    /// The token held and who waits for one.
    tokens: Tokens,
    /// Instructions decided outside the session (a `hello` after a token fetch), sent first.
    ready: VecDeque<String>,
}

impl Core {
    /// Creates the core: options as JSON, a 64-bit jitter seed, the driver's monotonic and
    /// wall clocks in ms, what [`Core::persist`] saved last time (if anything), and the
    /// app's fixed token (`None`: the app gave a provider, asked through [`Core::poll_fetch`]).
    pub fn open(
        options_json: &str,
        seed: u64,
        now_ms: f64,
        wall_ms: f64,
        saved: Option<&str>,
        fixed_token: Option<String>,
    ) -> Result<Self, OptionsError> {
        let options = Options::parse(options_json)?;
        // A zero seed would give every such client the same schedule; keep it non-zero.
        let config = options.to_config(seed | 1);
        // The one clock read of the package: an anchor, never consulted again. Every later
        // instant is `base` plus the driver's elapsed milliseconds.
        #[allow(clippy::disallowed_methods)]
        let base = Instant::now();
        let wall = Timestamp::from_unix_millis(finite_ms(wall_ms) as i64);
        let (session, restore_error) = match saved {
            None => (Session::new(config, base, wall), None),
            Some(text) => match Session::restore(config.clone(), base, wall, text) {
                Ok(s) => (s, None),
                Err(e) => (Session::new(config, base, wall), Some(e.to_string())),
            },
        };
        Ok(Self {
            session,
            base,
            base_ms: finite_ms(now_ms),
            restore_error,
            tokens: Tokens::new(fixed_token),
            ready: VecDeque::new(),
        })
    }

    /// The session, for tests and for Rust callers.
    pub fn session(&self) -> &Session {
        &self.session
    }

    fn at(&self, now_ms: f64) -> Instant {
        let elapsed = (finite_ms(now_ms) - self.base_ms).max(0.0);
        self.base + Duration::from_micros((elapsed * 1000.0) as u64)
    }
}

/// A finite, non-negative millisecond count (NaN and negatives become 0).
fn finite_ms(ms: f64) -> f64 {
    if ms.is_finite() && ms > 0.0 { ms } else { 0.0 }
}

#[wasm_bindgen]
impl Core {
    /// `new Core(optionsJson, seedHi, seedLo, nowMs, wallMs, saved, fixedToken)`; throws on
    /// bad options. `fixedToken` undefined: the app's provider is asked via `pollFetch`.
    #[wasm_bindgen(constructor)]
    pub fn new(
        options_json: &str,
        seed_hi: u32,
        seed_lo: u32,
        now_ms: f64,
        wall_ms: f64,
        saved: Option<String>,
        fixed_token: Option<String>,
    ) -> Result<Core, JsError> {
        let seed = (u64::from(seed_hi) << 32) | u64::from(seed_lo);
        Self::open(
            options_json,
            seed,
            now_ms,
            wall_ms,
            saved.as_deref(),
            fixed_token,
        )
        .map_err(|e| JsError::new(&e.to_string()))
    }

    /// Why the saved state was not restored (`undefined` when it was, or there was none).
    #[wasm_bindgen(js_name = restoreError)]
    pub fn restore_error(&self) -> Option<String> {
        self.restore_error.clone()
    }

    // ---- the app's commands ---------------------------------------------------------------

    /// Connect and stay connected until `close`.
    pub fn connect(&mut self, now_ms: f64) {
        self.session.connect(self.at(now_ms));
    }

    /// Close on request: `DISCONNECTED`; queued publishes stay queued.
    pub fn close(&mut self, now_ms: f64) {
        self.session.close(self.at(now_ms));
    }

    /// Retry now (leaves `FAILED`).
    pub fn retry(&mut self, now_ms: f64) {
        self.session.retry(self.at(now_ms));
    }

    /// Subscribes (`since` undefined: from the tracked position, or live for a new channel).
    /// Returns an error text, or `undefined` when accepted.
    pub fn subscribe(&mut self, now_ms: f64, channel: &str, since: Option<f64>) -> Option<String> {
        let since = match since {
            None => None,
            Some(s) if s.is_finite() && s >= 0.0 && s.fract() == 0.0 => Some(s as u64),
            Some(s) => return Some(format!("since must be a whole number ≥ 0, not {s}")),
        };
        let now = self.at(now_ms);
        self.session
            .subscribe(now, channel, since)
            .err()
            .map(|e| e.to_string())
    }

    /// Ends a subscription and forgets its position.
    pub fn unsubscribe(&mut self, now_ms: f64, channel: &str) {
        self.session.unsubscribe(self.at(now_ms), channel);
    }

    /// Queues a publish (`data_json`: the JSON text of the data). Returns an error text (queue
    /// full, too large, duplicate id, not JSON), or `undefined` when queued.
    pub fn publish(
        &mut self,
        now_ms: f64,
        id: &str,
        channel: &str,
        data_json: &str,
    ) -> Option<String> {
        let data: serde_json::Value = match serde_json::from_str(data_json) {
            Ok(v) => v,
            Err(e) => return Some(format!("the data is not JSON: {e}")),
        };
        let now = self.at(now_ms);
        self.session
            .publish(now, id, channel, data)
            .err()
            .map(|e| e.to_string())
    }

    /// Stops handing `channel`'s messages over (the app's buffer is full); the server
    /// replays them after [`Core::resume`].
    pub fn pause(&mut self, channel: &str) {
        self.session.pause(channel);
    }

    /// Resumes a paused channel from the last message handed over.
    pub fn resume(&mut self, now_ms: f64, channel: &str) {
        let now = self.at(now_ms);
        self.session.resume(now, channel);
    }

    // ---- tokens ---------------------------------------------------------------------------

    /// `true` once when the driver must call the app's token provider now, then report the
    /// result to `tokenFetched` or `tokenFailed`.
    #[wasm_bindgen(js_name = pollFetch)]
    pub fn poll_fetch(&mut self) -> bool {
        self.tokens.poll_fetch()
    }

    /// The provider gave `token` (`undefined` or empty: it says no token will come).
    #[wasm_bindgen(js_name = tokenFetched)]
    pub fn token_fetched(&mut self, now_ms: f64, token: Option<String>) {
        self.fetched(now_ms, Ok(token));
    }

    /// The provider failed this time (threw or rejected) with this reason.
    #[wasm_bindgen(js_name = tokenFailed)]
    pub fn token_failed(&mut self, now_ms: f64, reason: String) {
        self.fetched(now_ms, Err(reason));
    }

    // ---- what happened --------------------------------------------------------------------

    /// The socket asked for by `open` is open.
    #[wasm_bindgen(js_name = socketOpened)]
    pub fn socket_opened(&mut self, now_ms: f64) {
        self.session
            .handle_input(self.at(now_ms), Input::SocketOpened);
    }

    /// A text frame arrived.
    #[wasm_bindgen(js_name = handleText)]
    pub fn handle_text(&mut self, now_ms: f64, text: &str) {
        let now = self.at(now_ms);
        self.session.handle_text(now, text);
    }

    /// The socket closed with this code (1006 when it had none) and reason.
    #[wasm_bindgen(js_name = socketClosed)]
    pub fn socket_closed(&mut self, now_ms: f64, code: u16, reason: String) {
        self.tokens.socket_gone();
        let input = Input::Closed {
            code: CloseCode(code),
            reason,
        };
        self.session.handle_input(self.at(now_ms), input);
    }

    /// The socket could not be created or failed underneath.
    #[wasm_bindgen(js_name = transportError)]
    pub fn transport_error(&mut self, now_ms: f64, reason: String) {
        self.tokens.socket_gone();
        self.session
            .handle_input(self.at(now_ms), Input::TransportError { reason });
    }

    /// The upgrade was refused with this HTTP status (Node's `ws` can see it; browsers cannot)
    /// and its `Retry-After` in seconds, if any.
    #[wasm_bindgen(js_name = upgradeRefused)]
    pub fn upgrade_refused(&mut self, now_ms: f64, status: u16, retry_after_secs: Option<f64>) {
        self.tokens.socket_gone();
        let retry_after = retry_after_secs
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64);
        self.session.handle_input(
            self.at(now_ms),
            Input::Refused {
                status,
                retry_after,
            },
        );
    }

    /// The platform reports the network online.
    #[wasm_bindgen(js_name = networkOnline)]
    pub fn network_online(&mut self, now_ms: f64) {
        self.session
            .handle_input(self.at(now_ms), Input::NetworkOnline);
    }

    /// The platform reports the network offline.
    #[wasm_bindgen(js_name = networkOffline)]
    pub fn network_offline(&mut self, now_ms: f64) {
        self.session
            .handle_input(self.at(now_ms), Input::NetworkOffline);
    }

    /// The timer set from `pollTimeout` fired (early or spurious calls are harmless).
    #[wasm_bindgen(js_name = handleTimeout)]
    pub fn handle_timeout(&mut self, now_ms: f64) {
        self.session.handle_timeout(self.at(now_ms));
    }

    // ---- what to do -----------------------------------------------------------------------

    /// When `handleTimeout` next has work, on the driver's clock (ms); `undefined`: never.
    #[wasm_bindgen(js_name = pollTimeout)]
    pub fn poll_timeout(&self) -> Option<f64> {
        self.session
            .poll_timeout()
            .map(|at| self.base_ms + at.saturating_duration_since(self.base).as_secs_f64() * 1e3)
    }

    /// The next instruction as JSON (`open` with its `url`, `send`, `close`); drain until
    /// `undefined`. A `hello` comes out as a `send` once its token is at hand.
    #[wasm_bindgen(js_name = pollOutput)]
    pub fn poll_output(&mut self) -> Option<String> {
        if let Some(ready) = self.ready.pop_front() {
            return Some(ready);
        }
        loop {
            let out = self.session.poll_output()?;
            match out {
                Output::SendHello => {
                    if let Some(frame) = self.tokens.on_send_hello() {
                        return Some(events::send(&frame).to_string());
                    }
                }
                Output::OpenSocket { .. } | Output::CloseSocket { .. } => {
                    self.tokens.socket_gone();
                    return Some(events::output(&out, self.session.url()).to_string());
                }
                Output::Send(_) => {
                    return Some(events::output(&out, self.session.url()).to_string());
                }
            }
        }
    }

    /// The next event for the app as JSON (`state`, `message`, `acked`, `alert`, …); drain
    /// until `undefined`. Events the app need not see are skipped; token events go to the
    /// broker (which may answer the session at once, hence `now_ms`).
    #[wasm_bindgen(js_name = pollEvent)]
    pub fn poll_event(&mut self, now_ms: f64) -> Option<String> {
        while let Some(ev) = self.session.poll_event() {
            if let Some(input) = self.tokens.on_session_event(&ev) {
                let now = self.at(now_ms);
                self.session.handle_input(now, input);
            }
            if let Some(v) = events::event(&ev) {
                return Some(v.to_string());
            }
        }
        None
    }

    // ---- observers ------------------------------------------------------------------------

    /// `{state, label}` as JSON.
    pub fn state(&self) -> String {
        events::state(self.session.state()).to_string()
    }

    /// The quality figures at `now_ms` as JSON (what `metrics()` returns).
    pub fn metrics(&self, now_ms: f64) -> String {
        events::quality(&self.session.quality(self.at(now_ms))).to_string()
    }

    /// The queue and positions as JSON, for the storage.
    pub fn persist(&self) -> String {
        self.session.persist()
    }

    /// Publishes waiting in the queue (in flight included).
    #[wasm_bindgen(js_name = queueLength)]
    pub fn queue_length(&self) -> u32 {
        u32::try_from(self.session.queue().len()).unwrap_or(u32::MAX)
    }

    /// The last processed offset and epoch of `channel` as JSON `{offset, epoch}`, if tracked.
    pub fn position(&self, channel: &str) -> Option<String> {
        self.session
            .subscriptions()
            .position(channel)
            .map(|p| serde_json::json!({"offset": p.offset, "epoch": p.epoch}).to_string())
    }
}

impl Core {
    fn fetched(&mut self, now_ms: f64, result: Result<Option<String>, String>) {
        let now = self.at(now_ms);
        let done = self.tokens.on_fetched(result);
        if let Some(hello) = done.hello {
            self.ready.push_back(events::send(&hello).to_string());
        }
        if let Some(token) = done.refresh {
            // Not connected any more: the next hello fetches anyway.
            let _ = self.session.refresh_token(Token::new(token));
        }
        for input in done.inputs {
            self.session.handle_input(now, input);
        }
    }
}

#[cfg(test)]
mod tests;
