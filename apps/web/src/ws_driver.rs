//! The browser driver of `resilience::Session`: a `web_sys::WebSocket`, one `setTimeout`, the
//! `online`/`offline` events and browser storage. It moves bytes and reports what happened;
//! every decision (when to retry, what a close code means, what to resend, when an alert
//! begins) is the session's.
//!
//! The driver lives in a thread-local (the browser runs wasm on one thread) so that socket
//! callbacks, timers and the views' event handlers can reach it without `Send` bounds; each
//! entry point borrows it for one synchronous step and then pumps the session:
//! perform every [`Output`], hand every [`SessionEvent`] to the model, re-arm the timer.

use std::cell::RefCell;
use std::collections::BTreeMap;

use leptos::prelude::*;
use protocol::{ClientMessage, CloseCode, ConnectionState, Hello, Timestamp};
use resilience::connection::{Input, Output};
use resilience::{Instant, Session};
use serde::{Deserialize, Serialize};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::Closure;
use web_sys::{CloseEvent, MessageEvent, WebSocket};

use crate::config::Config;
use crate::model::{HealthView, Level, MessageRow, Model};
use crate::storage::{self, keys};
use crate::token::{self, HeldToken};

mod calls;
mod events;
mod token_fetch;

thread_local! {
    /// The one driver of this page (set by [`start`]).
    static DRIVER: RefCell<Option<Driver>> = const { RefCell::new(None) };
}

/// Runs `f` on the driver, if started and not already borrowed (a re-entrant call is dropped:
/// every entry point is a separate browser task, so this does not happen in practice).
fn with_driver<R>(f: impl FnOnce(&mut Driver) -> R) -> Option<R> {
    DRIVER.with(|cell| {
        let mut guard = cell.try_borrow_mut().ok()?;
        guard.as_mut().map(f)
    })
}

/// Wall clock, unix ms.
fn now_ms() -> f64 {
    js_sys::Date::now()
}

fn wall() -> Timestamp {
    Timestamp::from_unix_millis(now_ms() as i64)
}

/// The last known data kept in browser storage besides the session.
#[derive(Default, Serialize, Deserialize)]
struct SavedView {
    messages: Vec<MessageRow>,
    health: HealthView,
    current_channel: Option<String>,
}

/// Why a token is being fetched (several reasons can wait on one fetch).
#[derive(Default)]
struct TokenWants {
    /// A socket is open and waits for `hello`.
    hello: bool,
    /// The session asked after a 4401 ([`Event::TokenNeeded`]).
    renew: bool,
    /// The server said the token expires soon.
    refresh: bool,
}

/// One WebSocket and the callbacks that keep feeding the session (dropped with it).
struct Socket {
    ws: WebSocket,
    _on_open: Closure<dyn FnMut(web_sys::Event)>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

impl Socket {
    /// Detaches the callbacks and closes the socket; later events of it are never seen.
    fn discard(self, code: Option<CloseCode>, reason: &str) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        // Browsers accept only 1000 and 3000–4999 from scripts; other codes close plainly.
        let closed = match code {
            Some(CloseCode(c)) if c == 1000 || (3000..=4999).contains(&c) => {
                self.ws.close_with_code_and_reason(c, reason)
            }
            _ => self.ws.close(),
        };
        // A socket that cannot be closed is already closing; nothing else to do.
        let _ = closed;
    }
}

/// The driver state.
struct Driver {
    model: Model,
    config: Config,
    sub: String,
    session: Session,
    socket: Option<Socket>,
    /// Bumped for every socket, so a late callback of an old one is recognised and ignored.
    socket_gen: u64,
    /// The socket is open and the session asked for `hello`, which waits for a token.
    hello_pending: bool,
    token: Option<HeldToken>,
    fetching_token: bool,
    token_wants: TokenWants,
    /// The `setTimeout` handle for `session.poll_timeout()`.
    timer: Option<i32>,
    timer_cb: Closure<dyn FnMut()>,
    /// Status text per subscribed channel.
    channel_status: BTreeMap<String, String>,
    next_alert_key: u64,
}

/// Starts the driver for `model`: restores what the last page kept and connects.
pub fn start(model: Model) {
    let config = Config::load();
    let sub = storage::sub();
    model.sub.set(sub.clone());

    let view: SavedView = storage::get(keys::VIEW)
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    model.messages.set(view.messages);
    model.health.set(view.health);

    let mut session_config = resilience::Config::new(storage::random_u64());
    session_config.seed |= 1; // never the all-zero seed
    let now = Instant::now();
    let (session, restored) = match storage::get(keys::SESSION) {
        Some(saved) => match Session::restore(session_config.clone(), now, wall(), &saved) {
            Ok(session) => (session, true),
            Err(err) => {
                model.log(
                    Level::Warn,
                    format!("Could not restore the saved queue: {err}"),
                );
                (Session::new(session_config, now, wall()), false)
            }
        },
        None => (Session::new(session_config, now, wall()), false),
    };
    if restored {
        let queued = session.queue().len();
        model.log(
            Level::Info,
            format!(
                "Restored from browser storage: {queued} queued message(s), {} channel(s)",
                session.subscriptions().channels().count()
            ),
        );
    }
    let current = view
        .current_channel
        .filter(|c| session.subscriptions().contains(c))
        .or_else(|| {
            session
                .subscriptions()
                .channels()
                .next()
                .map(|(c, _)| c.to_owned())
        });
    model.current_channel.set(current);

    let timer_cb = Closure::<dyn FnMut()>::new(|| {
        with_driver(|d| {
            d.timer = None;
            d.session.handle_timeout(Instant::now());
            d.pump();
        });
    });
    let channel_status = session
        .subscriptions()
        .channels()
        .map(|(c, _)| (c.to_owned(), "Waiting for the connection".to_owned()))
        .collect();
    let driver = Driver {
        model,
        token: token::load(now_ms()),
        config,
        sub,
        session,
        socket: None,
        socket_gen: 0,
        hello_pending: false,
        fetching_token: false,
        token_wants: TokenWants::default(),
        timer: None,
        timer_cb,
        channel_status,
        next_alert_key: 0,
    };
    DRIVER.with(|cell| *cell.borrow_mut() = Some(driver));

    install_browser_listeners(model);
    with_driver(|d| {
        let now = Instant::now();
        d.session.connect(now);
        let online = web_sys::window().is_none_or(|w| w.navigator().on_line());
        if !online {
            d.model.online.set(false);
            d.session.handle_input(now, Input::NetworkOffline);
        }
        d.start_calls();
        if let Some(channel) = d.config.channel.clone()
            && !d.session.subscriptions().contains(&channel)
            && let Err(err) = d.subscribe(&channel)
        {
            d.model.log(
                Level::Warn,
                format!("The configured channel {channel:?} is not valid: {err}"),
            );
        }
        d.pump();
    });
}

/// `online`/`offline` events into the session, and the one-second tick for countdowns.
fn install_browser_listeners(model: Model) {
    let Some(window) = web_sys::window() else {
        return;
    };
    let online = Closure::<dyn FnMut()>::new(move || {
        model.online.set(true);
        with_driver(|d| {
            d.model.log(
                Level::Info,
                "The browser reports the network is back online",
            );
            d.session.handle_input(Instant::now(), Input::NetworkOnline);
            d.pump();
        });
    });
    let offline = Closure::<dyn FnMut()>::new(move || {
        model.online.set(false);
        with_driver(|d| {
            d.model
                .log(Level::Warn, "The browser reports the network is offline");
            d.session
                .handle_input(Instant::now(), Input::NetworkOffline);
            d.pump();
        });
    });
    let tick = Closure::<dyn FnMut()>::new(move || {
        model.now_ms.set(now_ms());
        with_driver(|d| d.refresh_quality(Instant::now()));
    });
    // Registration only fails without a window; the page then has no events to miss.
    let _ = window.add_event_listener_with_callback("online", online.as_ref().unchecked_ref());
    let _ = window.add_event_listener_with_callback("offline", offline.as_ref().unchecked_ref());
    let _ = window.set_interval_with_callback_and_timeout_and_arguments_0(
        tick.as_ref().unchecked_ref(),
        1000,
    );
    // These live as long as the page.
    online.forget();
    offline.forget();
    tick.forget();
}

// ---- what the views call ----------------------------------------------------------------

/// Publishes `text` to the channel shown; queued while disconnected. `Err` says why not.
pub fn publish(text: &str) -> Result<(), String> {
    with_driver(|d| d.publish(text)).unwrap_or_else(|| Err("the dashboard is starting".to_owned()))
}

/// Subscribes to `channel` and shows it.
pub fn subscribe(channel: &str) -> Result<(), String> {
    with_driver(|d| {
        let result = d.subscribe(channel);
        d.pump();
        result
    })
    .unwrap_or_else(|| Err("the dashboard is starting".to_owned()))
}

/// Ends the subscription to `channel`.
pub fn unsubscribe(channel: &str) {
    with_driver(|d| {
        d.session.unsubscribe(Instant::now(), channel);
        d.channel_status.remove(channel);
        if d.model.current_channel.get_untracked().as_deref() == Some(channel) {
            d.model.current_channel.set(None);
        }
        d.save_view();
        d.pump();
    });
}

/// Shows `channel` in the channel view.
pub fn show_channel(channel: &str) {
    with_driver(|d| {
        d.model.current_channel.set(Some(channel.to_owned()));
        d.save_view();
        d.sync_model(Instant::now());
    });
}

/// Retry now (leaves `Offline` after the attempts were spent).
pub fn retry() {
    with_driver(|d| {
        d.model.log(Level::Info, "Retry requested");
        d.session.retry(Instant::now());
        d.pump();
    });
}

/// Disconnect on request (`Offline`); queued messages stay queued.
pub fn disconnect() {
    with_driver(|d| {
        d.model.log(Level::Info, "Disconnect requested");
        d.session.close(Instant::now());
        d.pump();
    });
}

/// Connect again after [`disconnect`].
pub fn connect() {
    with_driver(|d| {
        d.model.log(Level::Info, "Connect requested");
        d.session.connect(Instant::now());
        d.pump();
    });
}

/// Remembers the latest health answer with the other last known data.
pub fn save_health() {
    with_driver(|d| d.save_view());
}

/// The health endpoint and poll interval from the configuration.
pub fn health_source() -> Option<(String, u32)> {
    with_driver(|d| (d.config.health_url(), d.config.health_interval_ms()))
}

impl Driver {
    fn publish(&mut self, text: &str) -> Result<(), String> {
        let Some(channel) = self.model.current_channel.get_untracked() else {
            return Err("Subscribe to a channel first".to_owned());
        };
        // Unique per publish and readable in logs: who, when (hex ms), and a random part.
        let id = format!(
            "{}-{:x}-{}",
            self.sub,
            now_ms() as u64,
            storage::random_hex(6)
        );
        let data = serde_json::json!({ "text": text });
        let result = self
            .session
            .publish(Instant::now(), id, channel, data)
            .map_err(|e| e.to_string());
        if let Err(err) = &result {
            self.model
                .log(Level::Warn, format!("Publish refused: {err}"));
        }
        self.pump();
        result
    }

    fn subscribe(&mut self, channel: &str) -> Result<(), String> {
        self.session
            .subscribe(Instant::now(), channel, None)
            .map_err(|e| e.to_string())?;
        let status = if self.session.state() == ConnectionState::Connected {
            "Subscribing…"
        } else {
            "Waiting for the connection"
        };
        self.channel_status
            .insert(channel.to_owned(), status.to_owned());
        self.model.current_channel.set(Some(channel.to_owned()));
        self.save_view();
        Ok(())
    }

    /// Performs every output, hands every event to the model, then re-arms the timer.
    fn pump(&mut self) {
        let now = Instant::now();
        loop {
            let mut busy = false;
            while let Some(out) = self.session.poll_output() {
                busy = true;
                self.perform(now, out);
            }
            while let Some(event) = self.session.poll_event() {
                busy = true;
                self.on_event(now, event);
            }
            if !busy {
                break;
            }
        }
        self.sync_model(now);
        self.arm_timer(now);
    }

    fn perform(&mut self, now: Instant, out: Output) {
        match out {
            Output::OpenSocket { attempt } => {
                self.model.attempt.set(attempt);
                self.drop_socket(None, "");
                self.open_socket(now);
                if !self.token_usable() {
                    self.fetch_token();
                }
            }
            Output::SendHello => {
                if self.token_usable() {
                    self.send_hello();
                } else {
                    self.hello_pending = true;
                    self.token_wants.hello = true;
                    self.fetch_token();
                }
            }
            Output::Send(msg) => self.send(&msg),
            Output::CloseSocket { code, reason } => self.drop_socket(Some(code), reason),
        }
    }

    fn open_socket(&mut self, now: Instant) {
        self.socket_gen += 1;
        let gen_ = self.socket_gen;
        let url = self.config.ws_url();
        let ws = match WebSocket::new_with_str(&url, protocol::SUBPROTOCOL) {
            Ok(ws) => ws,
            Err(err) => {
                let reason = format!("cannot open {url}: {}", crate::http::describe(err));
                self.session
                    .handle_input(now, Input::TransportError { reason });
                return;
            }
        };
        let on_open = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
            with_driver(|d| {
                if d.socket_gen == gen_ {
                    d.session.handle_input(Instant::now(), Input::SocketOpened);
                    d.pump();
                }
            });
        });
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |ev: MessageEvent| {
            let Some(text) = ev.data().as_string() else {
                return; // tether.v1 is text frames only
            };
            with_driver(|d| {
                if d.socket_gen == gen_ {
                    d.session.handle_text(Instant::now(), &text);
                    d.pump();
                }
            });
        });
        let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |ev: CloseEvent| {
            with_driver(|d| {
                if d.socket_gen == gen_ {
                    d.socket = None;
                    d.hello_pending = false;
                    let code = CloseCode(ev.code());
                    d.session.handle_input(
                        Instant::now(),
                        Input::Closed {
                            code,
                            reason: ev.reason(),
                        },
                    );
                    d.pump();
                }
            });
        });
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        self.socket = Some(Socket {
            ws,
            _on_open: on_open,
            _on_message: on_message,
            _on_close: on_close,
        });
    }

    fn drop_socket(&mut self, code: Option<CloseCode>, reason: &str) {
        self.hello_pending = false;
        self.token_wants.hello = false;
        if let Some(socket) = self.socket.take() {
            socket.discard(code, reason);
        }
    }

    fn send(&mut self, msg: &ClientMessage) {
        if let Some(socket) = &self.socket {
            // A failed send means the socket is closing; its close event tells the session.
            let _ = socket.ws.send_with_str(&protocol::encode(msg));
        }
    }

    fn send_hello(&mut self) {
        self.hello_pending = false;
        let Some(held) = &self.token else {
            return;
        };
        let hello = ClientMessage::Hello(Hello {
            token: held.token(),
            client: Some(format!("web/{}", env!("CARGO_PKG_VERSION"))),
        });
        self.send(&hello);
    }

    fn arm_timer(&mut self, now: Instant) {
        let Some(window) = web_sys::window() else {
            return;
        };
        if let Some(handle) = self.timer.take() {
            window.clear_timeout_with_handle(handle);
        }
        if let Some(at) = self.session.poll_timeout() {
            let wait = at.saturating_duration_since(now);
            // setTimeout takes an i32 of ms; the session's timers are far shorter than 24 days.
            let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
            self.timer = window
                .set_timeout_with_callback_and_timeout_and_arguments_0(
                    self.timer_cb.as_ref().unchecked_ref(),
                    ms,
                )
                .ok();
        }
    }

    fn save_view(&self) {
        let view = SavedView {
            messages: self.model.messages.get_untracked(),
            health: self.model.health.get_untracked(),
            current_channel: self.model.current_channel.get_untracked(),
        };
        if let Ok(json) = serde_json::to_string(&view) {
            storage::set(keys::VIEW, &json);
        }
    }
}

/// A unix-ms time as the local `HH:MM:SS`.
pub fn clock(ms: f64) -> String {
    let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ms));
    format!(
        "{:02}:{:02}:{:02}",
        date.get_hours(),
        date.get_minutes(),
        date.get_seconds()
    )
}
