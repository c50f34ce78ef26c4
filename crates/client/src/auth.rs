//! Where the client's token comes from: a fixed [`Token`], or a [`TokenProvider`] asked again
//! on every (re)connect and when the server announces `token_expiring` (CONTRACT §5.5).
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use protocol::Token;

/// The future a [`TokenProvider`] returns.
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<Token, TokenError>> + Send>>;

/// Hands out fresh tokens. Any `Fn() -> impl Future<Output = Result<Token, TokenError>>`
/// closure is one.
pub trait TokenProvider: Send + Sync {
    /// Fetches a token (from a login service, a file, a refresh token…).
    fn fetch(&self) -> TokenFuture;
}

impl<F, Fut> TokenProvider for F
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = Result<Token, TokenError>> + Send + 'static,
{
    fn fetch(&self) -> TokenFuture {
        Box::pin(self())
    }
}

/// Why a [`TokenProvider`] could not hand out a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// No token will ever be had (the user logged out, the account is gone): after a 4401
    /// the connection goes to `FAILED` instead of retrying.
    #[error("no token can be had: {0}")]
    Denied(String),
    /// The token service failed this time; the client retries with its backoff.
    #[error("fetching a token failed: {0}")]
    Unavailable(String),
}

/// How the client authenticates.
#[derive(Clone)]
pub enum Credentials {
    /// One fixed token. After a 4401 (bad or expired token) there is no way to a new one,
    /// so the connection goes to `FAILED`.
    Token(Token),
    /// A provider asked on every (re)connect and on `token_expiring`.
    Provider(Arc<dyn TokenProvider>),
}

impl Credentials {
    /// Credentials from a provider closure.
    pub fn provider(provider: impl TokenProvider + 'static) -> Self {
        Self::Provider(Arc::new(provider))
    }

    /// A future yielding the token to present now.
    pub(crate) fn fetch(&self) -> TokenFuture {
        match self {
            Self::Token(token) => {
                let token = token.clone();
                Box::pin(async move { Ok(token) })
            }
            Self::Provider(provider) => provider.fetch(),
        }
    }

    /// Whether a new token can be asked for after a 4401.
    pub(crate) fn can_renew(&self) -> bool {
        matches!(self, Self::Provider(_))
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Token(_) => f.write_str("Credentials::Token(<redacted>)"),
            Self::Provider(_) => f.write_str("Credentials::Provider(..)"),
        }
    }
}

impl From<Token> for Credentials {
    fn from(token: Token) -> Self {
        Self::Token(token)
    }
}
