//! Call tokens (CONTRACT §10.2): the `callToken` `<Parameter>` that binds a media stream to the
//! call its TwiML was issued for. Random (128 bits), short-lived (60 s to be used), and
//! single-use per stream: the store keeps only its SHA-256 with the call record and clears it
//! when a stream consumes it, so a replay — even after a restart — finds nothing.

use std::time::Duration;

use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

/// How long a call token may wait to be used.
pub const CALL_TOKEN_TTL: Duration = Duration::from_secs(60);

/// A fresh token: 16 random bytes, base64url without padding.
#[must_use]
pub fn issue() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What the store keeps: lowercase hex SHA-256 of the token.
#[must_use]
pub fn digest(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_digests_stable() {
        let (a, b) = (issue(), issue());
        assert_ne!(a, b);
        assert_eq!(a.len(), 22);
        assert_eq!(digest(&a), digest(&a));
        assert_ne!(digest(&a), digest(&b));
        assert_eq!(digest(&a).len(), 64);
    }
}
