//! [`Token`]: a bearer token (JWT) that never shows itself in `Debug` output or logs.
use serde::{Deserialize, Serialize};

/// A bearer token as it travels in `hello`, `refresh` and `Authorization` headers.
///
/// `Debug` prints `Token(<redacted>)` so that a message logged at `debug`/`trace` can never leak
/// a credential (CONTRACT §7). Use [`Token::expose`] where the raw value is really needed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Token(String);

impl Token {
    /// Wraps a raw token string.
    pub fn new(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    /// The raw token, for verifying or sending it. Never log the result.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Length of the raw token in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the token is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl From<String> for Token {
    fn from(raw: String) -> Self {
        Self(raw)
    }
}

impl From<&str> for Token {
    fn from(raw: &str) -> Self {
        Self(raw.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let token = Token::new("eyJhbGciOiJIUzI1NiJ9.secret.sig");
        let shown = format!("{token:?}");
        assert_eq!(shown, "Token(<redacted>)");
        assert!(!shown.contains("secret"));
    }

    #[test]
    fn serializes_as_plain_string() {
        let token = Token::new("abc");
        assert_eq!(serde_json::to_string(&token).unwrap(), r#""abc""#);
    }
}
