//! The dashboard's token: whether the held one is still usable, one fetch at a time, and
//! what a fetched (or failed) token means for the session and a waiting `hello`.

use resilience::Instant;
use resilience::connection::Input;

use super::{Driver, now_ms, with_driver};
use crate::model::Level;
use crate::token::{self, HeldToken};

impl Driver {
    pub(super) fn token_usable(&self) -> bool {
        self.token
            .as_ref()
            .is_some_and(|t| t.fresh(now_ms(), 10_000.0))
    }

    /// Starts one token fetch (if none is running); [`Driver::on_token`] serves every want.
    pub(super) fn fetch_token(&mut self) {
        if self.fetching_token {
            return;
        }
        self.fetching_token = true;
        let config = self.config.clone();
        let sub = self.sub.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let result = token::obtain(&config, &sub).await;
            with_driver(|d| {
                d.fetching_token = false;
                d.on_token(result);
                d.pump();
            });
        });
    }

    pub(super) fn on_token(&mut self, result: Result<HeldToken, String>) {
        let wants = std::mem::take(&mut self.token_wants);
        let now = Instant::now();
        match result {
            Ok(held) => {
                token::save(&held);
                self.token = Some(held.clone());
                if wants.renew {
                    self.model.log(Level::Info, "Got a new token");
                    self.session.handle_input(now, Input::TokenAvailable);
                }
                if wants.refresh {
                    let sent = self.session.refresh_token(held.token());
                    self.model.log(
                        Level::Info,
                        if sent {
                            "Token refreshed without reconnecting"
                        } else {
                            "Got a new token; the next connection uses it"
                        },
                    );
                }
                if self.hello_pending {
                    self.send_hello();
                }
            }
            Err(err) => {
                self.model
                    .log(Level::Warn, format!("Could not get a token: {err}"));
                if wants.renew {
                    self.session.handle_input(now, Input::TokenUnavailable);
                }
                if self.hello_pending {
                    // No hello without a token: this attempt fails like a broken transport.
                    self.drop_socket(None, "");
                    self.session.handle_input(
                        now,
                        Input::TransportError {
                            reason: format!("no token: {err}"),
                        },
                    );
                }
            }
        }
    }
}
