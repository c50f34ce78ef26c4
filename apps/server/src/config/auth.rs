//! The JWT settings: algorithm, public key, issuer, audience, leeway, and the HS256 secret.

use std::path::Path;
use std::time::Duration;

use super::secret::resolve_secret;
use super::{Check, Env, SecretMode, SecretSource, given};
use crate::auth::{AuthConfig, JwtAlgorithm};
use crate::cli::Settings;

/// The [`AuthConfig`] and where its secret came from; `None` when the secret is missing (an
/// error is recorded then). Call it last: the development secret is only created when
/// everything else is fine.
pub(super) fn load(
    c: &mut Check,
    s: &Settings,
    env: &Env,
    prod: bool,
    db_path: &Path,
    mode: SecretMode,
) -> Option<(AuthConfig, SecretSource)> {
    let issuer = given(s.jwt_issuer.as_ref()).map(str::to_owned);
    let audience = given(s.jwt_audience.as_ref()).map(str::to_owned);
    let (algorithm, public_key) = jwt_key(c, s);
    let max_ttl = super::tokens::max_token_ttl(c, s);
    let (secret, source) = resolve_secret(c, s, env, prod, db_path, mode)?;
    Some((
        AuthConfig {
            secret,
            algorithm,
            public_key,
            issuer,
            audience,
            leeway: Duration::from_secs(protocol::defaults::JWT_LEEWAY_SECS),
            max_ttl,
        },
        source,
    ))
}

/// `TETHER_JWT_ALGORITHM` and `TETHER_JWT_PUBLIC_KEY_FILE`: the pinned algorithm and, for
/// RS256/EdDSA, a public key that parses.
fn jwt_key(c: &mut Check, s: &Settings) -> (JwtAlgorithm, Option<Vec<u8>>) {
    const ALG: &str = "TETHER_JWT_ALGORITHM";
    const KEY: &str = "TETHER_JWT_PUBLIC_KEY_FILE";
    let algorithm = match given(s.jwt_algorithm.as_ref()) {
        None => JwtAlgorithm::Hs256,
        Some(a) => JwtAlgorithm::parse(a).unwrap_or_else(|| {
            c.error(
                ALG,
                format!("unknown algorithm {a:?} (use HS256, RS256 or EdDSA)"),
            );
            JwtAlgorithm::Hs256
        }),
    };
    let path = given(s.jwt_public_key_file.as_ref());
    let Some(path) = path.filter(|_| algorithm != JwtAlgorithm::Hs256) else {
        if path.is_some() {
            c.error(
                KEY,
                "set, but the algorithm is HS256 (set TETHER_JWT_ALGORITHM=RS256 or EdDSA)",
            );
        } else if algorithm != JwtAlgorithm::Hs256 {
            c.error(
                KEY,
                format!("required with TETHER_JWT_ALGORITHM={}", algorithm.as_str()),
            );
        }
        return (algorithm, None);
    };
    let pem = match std::fs::read(path) {
        Ok(pem) => pem,
        Err(e) => {
            c.error(KEY, format!("cannot read {path:?}: {e}"));
            return (algorithm, None);
        }
    };
    let probe = AuthConfig {
        algorithm,
        public_key: Some(pem),
        ..AuthConfig::with_secret(Vec::new())
    };
    if let Err(e) = crate::auth::verifying_key(&probe) {
        c.error(KEY, format!("{path:?}: {e}"));
    }
    (algorithm, probe.public_key)
}
