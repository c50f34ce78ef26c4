//! The JavaScript client's token plumbing: the token it holds, and `resilience::TokenBroker`,
//! which decides who waits for a fetch and what a failed fetch means (CONTRACT §8: 4401 with
//! no way to get a new token → `FAILED`).
//!
//! The driver only runs the app's provider when [`Tokens::poll_fetch`] says so and reports the
//! result; the hello frame, the `refresh` and the inputs fed to the session are decided here.

use protocol::{ClientMessage, Hello, Token};
use resilience::connection::Input;
use resilience::{SessionEvent, TokenBroker, TokenFailure, TokenSource};

use crate::CLIENT_NAME;

/// What the driver must do after a fetch ended.
#[derive(Debug, Default, PartialEq)]
pub struct Fetched {
    /// A `hello` frame to send on the socket waiting for it.
    pub hello: Option<String>,
    /// A token to send as `refresh`.
    pub refresh: Option<String>,
    /// Inputs for the session, in order.
    pub inputs: Vec<Input>,
}

/// The token held and the broker's wants.
#[derive(Debug)]
pub struct Tokens {
    broker: TokenBroker,
    /// A fixed token (kept forever), or one fetched for a reconnect (used by the next hello).
    held: Option<String>,
}

impl Tokens {
    /// `fixed`: the app gave one token as is (it cannot be renewed); `None`: a provider.
    pub fn new(fixed: Option<String>) -> Self {
        let source = if fixed.is_some() {
            TokenSource::Fixed
        } else {
            TokenSource::Renewable
        };
        Self {
            broker: TokenBroker::new(source),
            held: fixed,
        }
    }

    /// The `hello` frame carrying `token`.
    pub fn hello_frame(token: &str) -> String {
        protocol::encode(&ClientMessage::Hello(Hello {
            token: Token::new(token),
            client: Some(CLIENT_NAME.to_owned()),
        }))
    }

    /// The session asked for `hello`: the frame now if a token is held, else a fetch is due.
    /// A provider's token serves one hello: every connection asks the provider again, as the
    /// native client does, so a reconnect never presents a token the app has replaced.
    pub fn on_send_hello(&mut self) -> Option<String> {
        let token = match self.broker.source() {
            TokenSource::Fixed => self.held.clone(),
            TokenSource::Renewable => self.held.take(),
        };
        match token {
            Some(t) => Some(Self::hello_frame(&t)),
            None => {
                self.broker.need_hello();
                None
            }
        }
    }

    /// The socket that waited for `hello` is gone.
    pub fn socket_gone(&mut self) {
        self.broker.cancel_hello();
    }

    /// Looks at a session event; an input to feed back (a fixed token after 4401).
    pub fn on_session_event(&mut self, event: &SessionEvent) -> Option<Input> {
        self.broker.on_session_event(event)
    }

    /// `true` once when the driver must call the provider now.
    pub fn poll_fetch(&mut self) -> bool {
        self.broker.poll_fetch()
    }

    /// The provider answered: `Ok(Some(token))`, `Ok(None)` (it says no token will come, e.g.
    /// logged out) or `Err(why)` (it failed this time).
    pub fn on_fetched(&mut self, result: Result<Option<String>, String>) -> Fetched {
        let (result, token) = match result {
            Ok(Some(t)) if !t.is_empty() => (Ok(()), Some(t)),
            Ok(_) => (
                Err(TokenFailure::Denied(
                    "the token provider returned no token".to_owned(),
                )),
                None,
            ),
            Err(why) => (Err(TokenFailure::Unavailable(why)), None),
        };
        let outcome = self.broker.on_fetched(result);
        let mut out = Fetched {
            inputs: outcome.inputs,
            ..Fetched::default()
        };
        if let Some(t) = token {
            out.hello = outcome.send_hello.then(|| Self::hello_frame(&t));
            out.refresh = outcome.send_refresh.then(|| t.clone());
            // Renewed after a 4401: the reconnect that follows presents this one.
            if out.inputs.contains(&Input::TokenAvailable) && !outcome.send_hello {
                self.held = Some(t);
            }
        }
        out
    }
}
