//! `DATABASE_URL=postgres://…` and `TETHER_NODE_ID` (CONTRACT §12): the PostgreSQL store's
//! settings, parsed apart from the SQLite path so `config.rs` only adds one call.
//!
//! The URL is checked by sqlx's own parser (not by hand) so a malformed URL is a configuration
//! error (exit 2) rather than a failure at connect time; the message never repeats the URL,
//! which may carry a password.

use rand::Rng as _;
use sqlx::postgres::PgConnectOptions;

use crate::store::PostgresConfig;

/// `Some(Ok)` for a valid `postgres:`/`postgresql:` URL, `Some(Err(message))` for a malformed
/// one, `None` for any other scheme (left to the SQLite parser, which refuses unknown ones).
pub fn postgres(url: &str, node_id: &str) -> Option<Result<PostgresConfig, String>> {
    let scheme = url.split_once(':')?.0.to_ascii_lowercase();
    if scheme != "postgres" && scheme != "postgresql" {
        return None;
    }
    Some(match url.parse::<PgConnectOptions>() {
        Ok(_) => Ok(PostgresConfig::new(url, node_id)),
        Err(_) => {
            Err("not a valid postgres URL (use postgres://user:password@host:port/database)".into())
        }
    })
}

/// `TETHER_NODE_ID` as given, checked (1-64 of `A-Za-z0-9._-`), or a random `n_` + 8 hex.
pub fn node_id(given: Option<&str>) -> Result<String, String> {
    match given {
        None => Ok(format!("n_{:08x}", rand::rng().random::<u32>())),
        Some(v)
            if !v.is_empty()
                && v.len() <= 64
                && v.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch)) =>
        {
            Ok(v.to_owned())
        }
        Some(v) => Err(format!(
            "not a node id {v:?} (1-64 characters of A-Z a-z 0-9 . _ -)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_urls_are_taken_and_others_left_alone() {
        let pg = postgres("postgres://u:p@127.0.0.1:5432/tether", "n1")
            .unwrap()
            .unwrap();
        assert_eq!(pg.url, "postgres://u:p@127.0.0.1:5432/tether");
        assert_eq!(pg.node_id, "n1");
        assert!(postgres("postgresql://u@h/db", "n1").unwrap().is_ok());
        assert!(postgres("sqlite://data/tether.db", "n1").is_none());
        assert!(postgres("mysql://h/db", "n1").is_none());
        assert!(postgres("nocolon", "n1").is_none());
    }

    #[test]
    fn malformed_postgres_urls_are_refused_without_echoing_them() {
        for bad in [
            "postgres://u:secretpw@h:notaport/db",
            "postgres://u:secretpw@h:99999999/db",
        ] {
            let err = postgres(bad, "n1").unwrap().unwrap_err();
            assert!(!err.contains("secretpw"), "{err}");
            assert!(err.starts_with("not a valid postgres URL"), "{err}");
        }
    }

    #[test]
    fn node_ids_are_checked_or_generated() {
        let a = node_id(None).unwrap();
        assert!(a.starts_with("n_") && a.len() == 10, "{a}");
        assert_eq!(node_id(Some("node-a.1")).unwrap(), "node-a.1");
        assert!(node_id(Some("")).is_err());
        assert!(node_id(Some("a b")).is_err());
        assert!(node_id(Some(&"x".repeat(65))).is_err());
    }
}
