//! Tokens: from the hosting page's configuration, or `GET /dev/token?sub=…` in development.
//!
//! The last token is kept in browser storage with its expiry, so a page reloaded while the
//! server is down can still say `hello` the moment the server is back.

use protocol::Token;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::storage::{self, keys};

/// A token and when it expires (unix ms; from its `exp` claim).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HeldToken {
    /// The JWT.
    pub token: String,
    /// Its `exp`, unix ms (0 when unreadable: treated as expired once used).
    pub expires_ms: f64,
}

impl HeldToken {
    /// Wraps a token, reading its expiry from the JWT payload.
    pub fn new(token: String) -> Self {
        let expires_ms = jwt_exp_ms(&token).unwrap_or(0.0);
        Self { token, expires_ms }
    }

    /// Still usable for at least `margin_ms` from `now_ms`.
    pub fn fresh(&self, now_ms: f64, margin_ms: f64) -> bool {
        self.expires_ms == 0.0 || self.expires_ms - margin_ms > now_ms
    }

    /// The protocol token.
    pub fn token(&self) -> Token {
        Token::new(self.token.clone())
    }
}

/// The kept token, if any and not expired.
pub fn load(now_ms: f64) -> Option<HeldToken> {
    let held: HeldToken = serde_json::from_str(&storage::get(keys::TOKEN)?).ok()?;
    held.fresh(now_ms, 5_000.0).then_some(held)
}

/// Keeps `held` for the next page load.
pub fn save(held: &HeldToken) {
    if let Ok(json) = serde_json::to_string(held) {
        storage::set(keys::TOKEN, &json);
    }
}

/// Forgets the kept token (after a 4401).
pub fn forget() {
    storage::remove(keys::TOKEN);
}

/// Whether a new token can be had at all (a fixed token from the page cannot be renewed).
pub fn renewable(config: &Config, sub: &str) -> bool {
    config.token_url(sub).is_some()
}

/// Gets a token: the page's fixed one, or a fresh one from the token URL.
pub async fn obtain(config: &Config, sub: &str) -> Result<HeldToken, String> {
    let Some(url) = config.token_url(sub) else {
        return config
            .token
            .clone()
            .map(HeldToken::new)
            .ok_or_else(|| "no token configured".to_owned());
    };
    let (status, body) = crate::http::get_text(&url).await?;
    if status != 200 {
        return Err(format!("the token endpoint answered {status}"));
    }
    #[derive(Deserialize)]
    struct Body {
        token: String,
    }
    let body: Body =
        serde_json::from_str(&body).map_err(|e| format!("unexpected token response: {e}"))?;
    Ok(HeldToken::new(body.token))
}

/// The `exp` claim of a JWT, in unix ms (read without verifying: only the server verifies).
fn jwt_exp_ms(token: &str) -> Option<f64> {
    let payload = token.split('.').nth(1)?;
    let mut b64: String = payload
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while !b64.len().is_multiple_of(4) {
        b64.push('=');
    }
    let json = web_sys::window()?.atob(&b64).ok()?;
    let claims: serde_json::Value = serde_json::from_str(&json).ok()?;
    Some(claims.get("exp")?.as_f64()? * 1000.0)
}
