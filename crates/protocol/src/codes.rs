//! Error codes (CONTRACT §6) and WebSocket close codes (§5.7) with what a client does on each.
use serde::{Deserialize, Serialize};

/// The error codes of `error` and `nack` frames and of HTTP error bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// A connection attempt or the `hello` did not complete in time.
    ConnectionTimeout,
    /// The network failed underneath the connection.
    NetworkFailure,
    /// A missing, bad or expired token.
    AuthFailure,
    /// Something failed inside the server; retry later.
    ServerError,
    /// Too many requests; retry after the advised delay.
    RateLimit,
    /// A malformed frame, body or channel name.
    BadRequest,
    /// The token does not grant this action.
    Forbidden,
    /// No such path or resource.
    NotFound,
}

impl ErrorCode {
    /// Every code, in the order CONTRACT §6 lists them.
    pub const ALL: [ErrorCode; 8] = [
        Self::ConnectionTimeout,
        Self::NetworkFailure,
        Self::AuthFailure,
        Self::ServerError,
        Self::RateLimit,
        Self::BadRequest,
        Self::Forbidden,
        Self::NotFound,
    ];

    /// The code exactly as it is spelled on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ConnectionTimeout => "CONNECTION_TIMEOUT",
            Self::NetworkFailure => "NETWORK_FAILURE",
            Self::AuthFailure => "AUTH_FAILURE",
            Self::ServerError => "SERVER_ERROR",
            Self::RateLimit => "RATE_LIMIT",
            Self::BadRequest => "BAD_REQUEST",
            Self::Forbidden => "FORBIDDEN",
            Self::NotFound => "NOT_FOUND",
        }
    }

    /// Whether a publish refused with this code may be retried later (CONTRACT §5.4): a client
    /// drops a message refused with `FORBIDDEN` or `BAD_REQUEST` and retries the others.
    pub const fn is_retryable(self) -> bool {
        !matches!(self, Self::Forbidden | Self::BadRequest)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A WebSocket close code, with the ones Tether uses as constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: normal closure.
    pub const NORMAL: Self = Self(1000);
    /// 1001: going away (also: the server heard nothing for 2.5 heartbeats).
    pub const GOING_AWAY: Self = Self(1001);
    /// 1006: abnormal closure. Never sent on the wire; drivers report it for a connection
    /// that ended without a close frame.
    pub const ABNORMAL: Self = Self(1006);
    /// 1007: a text frame that is not valid UTF-8.
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1009: message too large.
    pub const MESSAGE_TOO_BIG: Self = Self(1009);
    /// 1011: server error.
    pub const INTERNAL_ERROR: Self = Self(1011);
    /// 1012: service restart; a `reconnect` frame with `after_ms` came first.
    pub const SERVICE_RESTART: Self = Self(1012);
    /// 1013: try again later (overloaded, or a slow consumer was cut off).
    pub const TRY_AGAIN_LATER: Self = Self(1013);
    /// 4401: authentication failed or the token expired.
    pub const AUTH_FAILED: Self = Self(4401);
    /// 4403: forbidden.
    pub const FORBIDDEN: Self = Self(4403);
    /// 4408: no `hello` within the connection timeout.
    pub const HELLO_TIMEOUT: Self = Self(4408);
    /// 4429: rate limited; an `error` `RATE_LIMIT` frame with `retry_after_ms` came first.
    pub const RATE_LIMITED: Self = Self(4429);

    /// What a client does when the server closes with this code (CONTRACT §5.7).
    pub const fn action(self) -> CloseAction {
        match self.0 {
            1012 | 4429 => CloseAction::ReconnectAfterAdvice,
            4401 => CloseAction::RenewToken,
            1009 => CloseAction::DropMessageAndReconnect,
            4403 => CloseAction::AbandonActionAndReconnect,
            _ => CloseAction::ReconnectWithBackoff,
        }
    }

    /// Whether this close counts as a failed attempt. A close the server advised (1012, 4429)
    /// is not a failure; the attempt after its wait is (CONTRACT §8).
    pub const fn counts_as_failure(self) -> bool {
        !matches!(self.action(), CloseAction::ReconnectAfterAdvice)
    }
}

impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a client should do after a close, per CONTRACT §5.7.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseAction {
    /// Reconnect with the exponential backoff (1000, 1001, 1007, 1011, 1013, 4408, unknown).
    ReconnectWithBackoff,
    /// Reconnect after the delay the server advised: `reconnect.after_ms` before 1012,
    /// `error.retry_after_ms` before 4429. Not a failed attempt.
    ReconnectAfterAdvice,
    /// 4401: get a new token before reconnecting; with no way to get one, go to `FAILED`.
    RenewToken,
    /// 1009: never resend the message that was too large; reconnect with backoff.
    DropMessageAndReconnect,
    /// 4403: do not retry the action that was refused; reconnect with backoff.
    AbandonActionAndReconnect,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_spelled_as_the_contract() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
        assert!(serde_json::from_str::<ErrorCode>(r#""auth_failure""#).is_err());
    }

    #[test]
    fn retryable_nacks() {
        assert!(!ErrorCode::Forbidden.is_retryable());
        assert!(!ErrorCode::BadRequest.is_retryable());
        assert!(ErrorCode::RateLimit.is_retryable());
        assert!(ErrorCode::ServerError.is_retryable());
    }

    #[test]
    fn close_actions_follow_the_table() {
        use CloseAction::*;
        let table = [
            (1000, ReconnectWithBackoff),
            (1001, ReconnectWithBackoff),
            (1007, ReconnectWithBackoff),
            (1009, DropMessageAndReconnect),
            (1011, ReconnectWithBackoff),
            (1012, ReconnectAfterAdvice),
            (1013, ReconnectWithBackoff),
            (4401, RenewToken),
            (4403, AbandonActionAndReconnect),
            (4408, ReconnectWithBackoff),
            (4429, ReconnectAfterAdvice),
            (1006, ReconnectWithBackoff),
            (4999, ReconnectWithBackoff),
        ];
        for (code, action) in table {
            assert_eq!(CloseCode(code).action(), action, "{code}");
        }
        assert!(!CloseCode::SERVICE_RESTART.counts_as_failure());
        assert!(!CloseCode::RATE_LIMITED.counts_as_failure());
        assert!(CloseCode::GOING_AWAY.counts_as_failure());
        assert!(CloseCode::AUTH_FAILED.counts_as_failure());
    }
}
