//! JWT: one pinned algorithm (HS256 by default; RS256 or EdDSA with a public key), `exp`
//! required (leeway at most 5 s) and at most `max_ttl` away (`TETHER_MAX_TOKEN_TTL_SECS`),
//! `nbf` honoured, optional `iss`/`aud`.
//!
//! API summary:
//! - [`Authenticator::new`]`(&AuthConfig)`; share it (`Arc` or clone; it is cheap to clone).
//! - [`Authenticator::verify`]`(&str) -> Result<Claims, AuthError>` at the current time;
//!   [`Authenticator::verify_at`]`(&str, now_secs)` for tests. [`AuthError`] says why
//!   (expired, bad signature, malformed, wrong algorithm, not yet valid, missing claim, wrong
//!   issuer/audience); its `Display` is safe to log and to send as the `AUTH_FAILURE` message.
//! - [`Authenticator::sign`]`(&Claims) -> Result<String, AuthError>`;
//!   [`Authenticator::issue`]`(IssueRequest, now_secs) -> Result<(String, Claims), AuthError>`
//!   builds the claims `tether token` and `/dev/token` hand out (`sub`, `iat`, `exp`,
//!   `channels`, optional `admin`, configured `iss`/`aud`). [`all_channels`] is the "every
//!   channel" right for `/dev/token`.
//! - [`fingerprint`]`(token) -> String`: 12 hex digits of SHA-256, for logs — never the token.
//! - [`Secret`]: key bytes with a redacted `Debug`.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use protocol::{Audience, ChannelGlob, ChannelRights, Claims};
use sha2::{Digest as _, Sha256};

/// Secret bytes (HS256 key, Twilio token). `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps key bytes.
    #[must_use]
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The bytes. Never log them.
    #[must_use]
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<redacted, {} bytes>)", self.0.len())
    }
}

/// The one algorithm tokens must be signed with; a token whose header names any other (`none`,
/// HS384, HS256 while RS256 is configured — the HS/RS confusion) is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with the secret (the default).
    #[default]
    Hs256,
    /// RSA PKCS#1 v1.5 with SHA-256, verified with a public key.
    Rs256,
    /// Ed25519, verified with a public key.
    EdDsa,
}

impl JwtAlgorithm {
    /// The header's `alg` value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::Rs256 => "RS256",
            Self::EdDsa => "EdDSA",
        }
    }

    /// `HS256`, `RS256` or `EdDSA` (case-insensitive, for the setting).
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Hs256, Self::Rs256, Self::EdDsa]
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s.trim()))
    }

    fn jwt(self) -> Algorithm {
        match self {
            Self::Hs256 => Algorithm::HS256,
            Self::Rs256 => Algorithm::RS256,
            Self::EdDsa => Algorithm::EdDSA,
        }
    }
}

/// The key that verifies tokens for `config`: the secret for HS256, else the PEM public key
/// (RSA as SubjectPublicKeyInfo or PKCS#1; Ed25519 as SubjectPublicKeyInfo). `Err` says why.
pub fn verifying_key(config: &AuthConfig) -> Result<DecodingKey, String> {
    let pem = || {
        config
            .public_key
            .as_deref()
            .ok_or_else(|| format!("{} needs a public key", config.algorithm.as_str()))
    };
    match config.algorithm {
        JwtAlgorithm::Hs256 => Ok(DecodingKey::from_secret(config.secret.expose())),
        JwtAlgorithm::Rs256 => {
            DecodingKey::from_rsa_pem(pem()?).map_err(|e| format!("not a PEM RSA public key: {e}"))
        }
        JwtAlgorithm::EdDsa => DecodingKey::from_ed_pem(pem()?)
            .map_err(|e| format!("not a PEM Ed25519 public key: {e}")),
    }
}

/// JWT settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// The HS256 key (verifies tokens with HS256; `tether token` and `/dev/token` sign with it).
    pub secret: Secret,
    /// The algorithm tokens must use.
    pub algorithm: JwtAlgorithm,
    /// PEM public key verifying RS256/EdDSA tokens (required with them).
    pub public_key: Option<Vec<u8>>,
    /// Required `iss`, when set (and put into issued tokens).
    pub issuer: Option<String>,
    /// Required `aud`, when set (and put into issued tokens).
    pub audience: Option<String>,
    /// Clock skew allowed on `exp`/`nbf`; capped at 5 s.
    pub leeway: Duration,
    /// The longest a token may still live at verification: one whose `exp` lies further in
    /// the future is refused (`TETHER_MAX_TOKEN_TTL_SECS`, CONTRACT §2).
    pub max_ttl: Duration,
}

impl AuthConfig {
    /// A config with just a secret (no iss/aud, 5 s leeway).
    #[must_use]
    pub fn with_secret(secret: impl Into<Vec<u8>>) -> Self {
        Self {
            secret: Secret::new(secret.into()),
            algorithm: JwtAlgorithm::Hs256,
            public_key: None,
            issuer: None,
            audience: None,
            leeway: MAX_LEEWAY,
            max_ttl: DEFAULT_MAX_TTL,
        }
    }
}

/// The largest leeway the contract allows.
pub const MAX_LEEWAY: Duration = Duration::from_secs(5);

/// `TETHER_MAX_TOKEN_TTL_SECS` by default: one day.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(86_400);

/// Why a token was refused. `Display` never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// `exp` (plus leeway) is in the past.
    #[error("token expired")]
    Expired,
    /// `nbf` (minus leeway) is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// The signature does not match (forged, or signed with another key).
    #[error("bad token signature")]
    BadSignature,
    /// The header names an algorithm other than the configured one (including `none`).
    #[error("token algorithm {0:?} not allowed")]
    WrongAlgorithm(String),
    /// A required claim is absent.
    #[error("token has no {0} claim")]
    MissingClaim(&'static str),
    /// `iss` does not match the configured issuer.
    #[error("token issuer not accepted")]
    WrongIssuer,
    /// `aud` does not contain the configured audience.
    #[error("token audience not accepted")]
    WrongAudience,
    /// `exp` lies further in the future than the configured maximum lifetime.
    #[error("token lifetime exceeds the server's maximum of {0} s")]
    TooLong(u64),
    /// Not a JWT, or claims of the wrong shape.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// Signing failed (bad key).
    #[error("cannot sign token: {0}")]
    Signing(String),
}

impl AuthError {
    /// A short snake_case reason for log fields (`expired`, `bad_signature`, …).
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::BadSignature => "bad_signature",
            Self::WrongAlgorithm(_) => "wrong_algorithm",
            Self::MissingClaim(_) => "missing_claim",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::TooLong(_) => "ttl_too_long",
            Self::Malformed(_) => "malformed",
            Self::Signing(_) => "signing_failed",
        }
    }
}

/// What `tether token` / `/dev/token` ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueRequest {
    /// `sub`.
    pub sub: String,
    /// Subscribe globs.
    pub subscribe: Vec<ChannelGlob>,
    /// Publish globs.
    pub publish: Vec<ChannelGlob>,
    /// Lifetime.
    pub ttl: Duration,
    /// `admin` claim.
    pub admin: bool,
}

/// The right to every channel (`*`), for `/dev/token`.
#[must_use]
pub fn all_channels() -> ChannelRights {
    let all = ChannelGlob::parse("*").expect("`*` is a valid glob");
    ChannelRights {
        subscribe: vec![all.clone()],
        publish: vec![all],
    }
}

/// Signs HS256 tokens, and verifies tokens of the one configured algorithm.
#[derive(Clone)]
pub struct Authenticator {
    encoding: EncodingKey,
    // `None` when the configured public key is unusable: every token is then refused (fail
    // closed; `Config::load` refuses such a key before anything listens).
    decoding: Option<DecodingKey>,
    algorithm: JwtAlgorithm,
    validation: Validation,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_secs: i64,
    max_ttl_secs: i64,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithm", &self.algorithm)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .field("max_ttl_secs", &self.max_ttl_secs)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Builds the keys and the validation rules from the config.
    #[must_use]
    pub fn new(config: &AuthConfig) -> Self {
        let mut validation = Validation::new(config.algorithm.jwt());
        // Time and iss/aud checks are done here, with an explicit `now`, so each failure gets
        // its own reason and tests need no clock. The library checks the signature and alg.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        Self {
            encoding: EncodingKey::from_secret(config.secret.expose()),
            decoding: verifying_key(config).ok(),
            algorithm: config.algorithm,
            validation,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway_secs: i64::try_from(config.leeway.min(MAX_LEEWAY).as_secs()).unwrap_or(5),
            max_ttl_secs: i64::try_from(config.max_ttl.as_secs()).unwrap_or(i64::MAX),
        }
    }

    /// Verifies `token` now.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify_at(token, unix_now())
    }

    /// Verifies `token` as if the time were `now` (seconds since the epoch).
    pub fn verify_at(&self, token: &str, now: i64) -> Result<Claims, AuthError> {
        check_header(token, self.algorithm)?;
        let Some(decoding) = &self.decoding else {
            return Err(AuthError::BadSignature);
        };
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            decoding,
            &self.validation,
        )
        .map_err(map_jwt_error)?;
        let raw = data.claims;
        for claim in ["sub", "exp"] {
            if raw.get(claim).is_none_or(serde_json::Value::is_null) {
                return Err(AuthError::MissingClaim(claim));
            }
        }
        let claims: Claims = serde_json::from_value(serde_json::Value::Object(raw))
            .map_err(|e| AuthError::Malformed(format!("claims: {e}")))?;
        if self.expired_at(&claims, now) {
            return Err(AuthError::Expired);
        }
        if claims.exp.saturating_sub(now) > self.max_ttl_secs {
            return Err(AuthError::TooLong(
                u64::try_from(self.max_ttl_secs).unwrap_or(u64::MAX),
            ));
        }
        if let Some(nbf) = claims.nbf
            && nbf.saturating_sub(self.leeway_secs) > now
        {
            return Err(AuthError::NotYetValid);
        }
        if let Some(iss) = &self.issuer
            && claims.iss.as_deref() != Some(iss.as_str())
        {
            return Err(AuthError::WrongIssuer);
        }
        if let Some(aud) = &self.audience {
            let ok = match &claims.aud {
                Some(Audience::One(a)) => a == aud,
                Some(Audience::Many(list)) => list.iter().any(|a| a == aud),
                None => false,
            };
            if !ok {
                return Err(AuthError::WrongAudience);
            }
        }
        Ok(claims)
    }

    /// Whether verification at `now` (seconds) refuses `claims` as expired: `exp` plus the
    /// leeway lies in the past. The one rule for the hello, a refresh and the session's
    /// expiry timer ([`Authenticator::expiry_millis`]).
    #[must_use]
    pub fn expired_at(&self, claims: &Claims, now: i64) -> bool {
        claims.exp.saturating_add(self.leeway_secs) < now
    }

    /// The first wall-clock instant (Unix milliseconds) at which [`Authenticator::verify_at`]
    /// refuses `claims` as expired: the start of the second after `exp` + leeway. A session
    /// closes its connection then, honouring the same leeway as verification.
    #[must_use]
    pub fn expiry_millis(&self, claims: &Claims) -> i64 {
        claims
            .exp
            .saturating_add(self.leeway_secs)
            .saturating_add(1)
            .saturating_mul(1_000)
    }

    /// Signs `claims` with HS256.
    pub fn sign(&self, claims: &Claims) -> Result<String, AuthError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| AuthError::Signing(e.to_string()))
    }

    /// Builds and signs the claims for `request` at time `now` (seconds): `iat` = now,
    /// `exp` = now + ttl, `channels` always present, configured `iss`/`aud` included.
    pub fn issue(&self, request: IssueRequest, now: i64) -> Result<(String, Claims), AuthError> {
        let ttl = i64::try_from(request.ttl.as_secs()).unwrap_or(i64::MAX);
        let claims = Claims {
            sub: request.sub,
            exp: now.saturating_add(ttl),
            iat: Some(now),
            nbf: None,
            iss: self.issuer.clone(),
            aud: self.audience.clone().map(Audience::One),
            channels: Some(ChannelRights {
                subscribe: request.subscribe,
                publish: request.publish,
            }),
            admin: request.admin,
        };
        let token = self.sign(&claims)?;
        Ok((token, claims))
    }
}

/// 12 hex digits of the token's SHA-256: lets logs correlate a token without revealing it.
#[must_use]
pub fn fingerprint(token: &str) -> String {
    Fingerprint::of(token).to_string()
}

/// The first 6 bytes of a token's SHA-256, kept by a session (instead of the token or its hex
/// string) so a later `auth_failure` can name the token; `Display` is [`fingerprint`]'s form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fingerprint([u8; 6]);

impl Fingerprint {
    /// The fingerprint of `token`.
    #[must_use]
    pub fn of(token: &str) -> Self {
        let digest = Sha256::digest(token.as_bytes());
        let mut bytes = [0; 6];
        bytes.copy_from_slice(&digest[..6]);
        Self(bytes)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Seconds since the epoch.
#[must_use]
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Reads the header's `alg` ourselves so `none` and other algorithms get a precise reason.
fn check_header(token: &str, expected: JwtAlgorithm) -> Result<(), AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed("not three dot-separated parts".into()));
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|_| AuthError::Malformed("header is not base64url".into()))?;
    let header: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| AuthError::Malformed("header is not JSON".into()))?;
    match header.get("alg").and_then(serde_json::Value::as_str) {
        Some(alg) if alg == expected.as_str() => Ok(()),
        Some(other) => Err(AuthError::WrongAlgorithm(other.chars().take(16).collect())),
        None => Err(AuthError::Malformed("header has no alg".into())),
    }
}

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AuthError::WrongAlgorithm("?".into())
        }
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::MissingRequiredClaim(c) if c == "exp" => AuthError::MissingClaim("exp"),
        ErrorKind::MissingRequiredClaim(_) => AuthError::MissingClaim("sub"),
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::Base64(_) => AuthError::Malformed("not base64url".into()),
        ErrorKind::Json(_) => AuthError::Malformed("claims are not a JSON object".into()),
        ErrorKind::Utf8(_) => AuthError::Malformed("not UTF-8".into()),
        _ => AuthError::Malformed("invalid token".into()),
    }
}

#[cfg(test)]
mod tests;
