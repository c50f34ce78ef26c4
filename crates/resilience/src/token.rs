//! [`TokenBroker`]: who is waiting for a token, and what a failed fetch means — decided once
//! here for every driver (issue 10 §4), so the native client and the browser end the same
//! failure the same way.
//!
//! A driver holds the token itself (it is plumbing: a string and where it comes from); the
//! broker holds the *wants* and the *verdicts*. Three parties can wait on one fetch:
//!
//! - **hello**: the socket is open, the session asked for `hello` ([`Output::SendHello`]) and
//!   the driver holds no usable token;
//! - **renew**: the server closed with 4401 and the session waits ([`Event::TokenNeeded`]);
//! - **refresh**: the server announced `token_expiring`.
//!
//! One fetch serves them all. What its result means (CONTRACT §8: "4401 with no way to get a
//! new token → FAILED"):
//!
//! | want | token | [`TokenFailure::Denied`] (no token will ever come) | [`TokenFailure::Unavailable`] (the source failed this time) |
//! |---|---|---|---|
//! | hello | send `hello` | `FAILED` ([`Input::TokenUnavailable`]) | a failed attempt ([`Input::TransportError`]): budget, breaker, backoff |
//! | renew | reconnect ([`Input::TokenAvailable`]) | `FAILED` | reconnect after a backoff delay; that attempt fetches again and counts if it fails |
//! | refresh | send `refresh` | nothing now: the server closes with 4401 at expiry, then *renew* decides | nothing now: the next connection fetches anyway |
//!
//! A [`TokenSource::Fixed`] token can never be renewed: after a 4401 the broker answers
//! [`Input::TokenUnavailable`] at once, and `token_expiring` starts no fetch.
//!
//! [`Output::SendHello`]: crate::Output::SendHello
use crate::connection::{Event, Input};
use crate::session::SessionEvent;

/// Where the driver's tokens come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// One token given as is: it cannot be renewed.
    Fixed,
    /// A source asked again when needed (a token URL, a provider callback).
    Renewable,
}

/// Why a fetch gave no token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenFailure {
    /// No token will ever be had (logged out, refused by the token service with 401/403, no
    /// source configured).
    Denied(String),
    /// The source failed this time (network error, 5xx, a malformed answer).
    Unavailable(String),
}

impl std::fmt::Display for TokenFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Denied(why) => write!(f, "no token can be had: {why}"),
            Self::Unavailable(why) => write!(f, "fetching a token failed: {why}"),
        }
    }
}

/// What the driver does after a fetch ended ([`TokenBroker::on_fetched`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TokenOutcome {
    /// Send `hello` with the token just fetched.
    pub send_hello: bool,
    /// Send `refresh` with the token just fetched ([`crate::Session::refresh_token`]).
    pub send_refresh: bool,
    /// Feed these to the session, in order.
    pub inputs: Vec<Input>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Wants {
    hello: bool,
    renew: bool,
    refresh: bool,
}

/// The token wants of one client. See the module docs.
#[derive(Clone, Debug)]
pub struct TokenBroker {
    source: TokenSource,
    wants: Wants,
    /// A fetch is under way (at most one).
    fetching: bool,
    /// A want arrived and no fetch is under way: [`TokenBroker::poll_fetch`] says start one.
    start: bool,
}

impl TokenBroker {
    /// A broker for tokens from `source`.
    pub fn new(source: TokenSource) -> Self {
        Self {
            source,
            wants: Wants::default(),
            fetching: false,
            start: false,
        }
    }

    /// The source.
    pub fn source(&self) -> TokenSource {
        self.source
    }

    /// Looks at a session event: [`Event::TokenNeeded`] is a *renew* want (with a fixed
    /// token, the answer [`Input::TokenUnavailable`], returned for the driver to feed back),
    /// `token_expiring` a *refresh* want.
    pub fn on_session_event(&mut self, event: &SessionEvent) -> Option<Input> {
        match (event, self.source) {
            (SessionEvent::Connection(Event::TokenNeeded), TokenSource::Fixed) => {
                Some(Input::TokenUnavailable)
            }
            (SessionEvent::Connection(Event::TokenNeeded), TokenSource::Renewable) => {
                self.want(|w| w.renew = true);
                None
            }
            (SessionEvent::TokenExpiring { .. }, TokenSource::Renewable) => {
                self.want(|w| w.refresh = true);
                None
            }
            _ => None,
        }
    }

    /// The session asked for `hello` and the driver holds no usable token.
    pub fn need_hello(&mut self) {
        self.want(|w| w.hello = true);
    }

    /// The socket waiting for `hello` is gone: that want is withdrawn.
    pub fn cancel_hello(&mut self) {
        self.wants.hello = false;
    }

    /// Whether `hello` waits for a token.
    pub fn hello_waiting(&self) -> bool {
        self.wants.hello
    }

    /// Whether a fetch is under way.
    pub fn is_fetching(&self) -> bool {
        self.fetching
    }

    /// `true` once when the driver must start a fetch now (and later report it to
    /// [`TokenBroker::on_fetched`]).
    #[must_use]
    pub fn poll_fetch(&mut self) -> bool {
        if std::mem::take(&mut self.start) {
            self.fetching = true;
            true
        } else {
            false
        }
    }

    /// The fetch ended: serves every want per the module's table.
    pub fn on_fetched(&mut self, result: Result<(), TokenFailure>) -> TokenOutcome {
        self.fetching = false;
        let wants = std::mem::take(&mut self.wants);
        let mut out = TokenOutcome::default();
        match result {
            Ok(()) => {
                out.send_hello = wants.hello;
                out.send_refresh = wants.refresh;
                if wants.renew {
                    out.inputs.push(Input::TokenAvailable);
                }
            }
            Err(failure) => {
                if wants.hello {
                    out.inputs.push(Self::attempt_failed(&failure));
                }
                if wants.renew {
                    out.inputs.push(match failure {
                        TokenFailure::Denied(_) => Input::TokenUnavailable,
                        TokenFailure::Unavailable(_) => Input::TokenAvailable,
                    });
                }
            }
        }
        out
    }

    /// What it means for the connection attempt under way that its token could not be had
    /// (a driver that fetches before opening the socket, as the native one, asks this).
    pub fn attempt_failed(failure: &TokenFailure) -> Input {
        match failure {
            TokenFailure::Denied(_) => Input::TokenUnavailable,
            TokenFailure::Unavailable(_) => Input::TransportError {
                reason: failure.to_string(),
            },
        }
    }

    fn want(&mut self, set: impl FnOnce(&mut Wants)) {
        set(&mut self.wants);
        if !self.fetching {
            self.start = true;
        }
    }
}

#[cfg(test)]
mod tests;
