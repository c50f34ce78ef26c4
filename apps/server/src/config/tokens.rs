//! Token settings: `TETHER_MAX_TOKEN_TTL_SECS`, the longest a JWT may still live when it is
//! verified (CONTRACT §2).

use std::time::Duration;

use super::Check;
use crate::auth::DEFAULT_MAX_TTL;
use crate::cli::Settings;

/// `TETHER_MAX_TOKEN_TTL_SECS` (at least 1 s; default one day).
pub(super) fn max_token_ttl(c: &mut Check, s: &Settings) -> Duration {
    c.secs(
        "TETHER_MAX_TOKEN_TTL_SECS",
        s.max_token_ttl_secs.as_ref(),
        DEFAULT_MAX_TTL.as_secs(),
        1,
    )
}

#[cfg(test)]
mod tests {
    use crate::cli::Settings;
    use crate::config::{Config, Env, SecretMode};
    use std::time::Duration;

    fn load(value: Option<&str>) -> Result<Config, crate::config::ConfigErrors> {
        let dir = tempfile::tempdir().expect("a temp dir");
        let settings = Settings {
            port: Some("0".into()),
            database_url: Some(format!("sqlite://{}", dir.path().join("t.db").display())),
            max_token_ttl_secs: value.map(Into::into),
            ..Settings::default()
        };
        let env = Env::from_pairs([("TETHER_JWT_SECRET", "0123456789abcdef0123456789abcdef")]);
        Config::load(&settings, &env, SecretMode::ReadOnly)
    }

    #[test]
    fn max_token_ttl_defaults_to_a_day_and_refuses_nonsense() {
        assert_eq!(
            load(None).expect("valid").auth.max_ttl,
            Duration::from_secs(86_400)
        );
        assert_eq!(
            load(Some("600")).expect("valid").auth.max_ttl,
            Duration::from_secs(600)
        );
        for bad in ["0", "-5", "soon", "99999999999999999999999"] {
            let errors = load(Some(bad)).expect_err(bad);
            assert!(
                errors
                    .0
                    .iter()
                    .any(|p| p.setting == "TETHER_MAX_TOKEN_TTL_SECS"),
                "{bad}: {errors:?}"
            );
        }
    }
}
