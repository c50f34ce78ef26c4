//! The store settings: `DATABASE_URL`, the SQLite `synchronous` mode, retention, dedup window,
//! maintenance interval and group-commit size.

use std::path::PathBuf;

use super::{Check, given, store_pg};
use crate::cli::Settings;
use crate::store::{StoreConfig, Synchronous};

/// The default `DATABASE_URL`.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/tether.db";

/// `DATABASE_URL` (as given, for logs), the parsed [`StoreConfig`] and this node's name
/// (`TETHER_NODE_ID`, CONTRACT §12).
pub(super) fn load(c: &mut Check, s: &Settings) -> (String, StoreConfig, String) {
    let database_url = given(s.database_url.as_ref())
        .unwrap_or(DEFAULT_DATABASE_URL)
        .to_owned();
    let node_id = store_pg::node_id(given(s.node_id.as_ref())).unwrap_or_else(|msg| {
        c.error("TETHER_NODE_ID", msg);
        String::new()
    });
    let postgres = match store_pg::postgres(&database_url, &node_id) {
        Some(Ok(pg)) => Some(pg),
        Some(Err(msg)) => {
            c.error("DATABASE_URL", msg);
            None
        }
        None => None,
    };
    let db_path = match parse_database_url(&database_url) {
        Ok(p) => p,
        // A postgres: URL (valid, or already reported above) has no SQLite file.
        Err(_) if store_pg::postgres(&database_url, "").is_some() => {
            PathBuf::from("data/tether.db")
        }
        Err(msg) => {
            c.error("DATABASE_URL", msg);
            PathBuf::from("data/tether.db")
        }
    };
    let mut store = StoreConfig::sqlite(db_path);
    store.postgres = postgres;
    store.synchronous = c.choice(
        "TETHER_SQLITE_SYNCHRONOUS",
        s.sqlite_synchronous.as_ref(),
        "mode",
        &[("normal", Synchronous::Normal), ("full", Synchronous::Full)],
    );
    store.retention_messages = c.num(
        "TETHER_RETENTION_MESSAGES",
        s.retention_messages.as_ref(),
        store.retention_messages,
        1,
    );
    store.retention_max_age = c.secs(
        "TETHER_RETENTION_MAX_AGE_SECS",
        s.retention_max_age_secs.as_ref(),
        store.retention_max_age.as_secs(),
        1,
    );
    store.dedup_window = c.secs(
        "TETHER_DEDUP_WINDOW_SECS",
        s.dedup_window_secs.as_ref(),
        store.dedup_window.as_secs(),
        1,
    );
    store.maintenance_interval = c.millis(
        "TETHER_MAINTENANCE_INTERVAL_MS",
        s.maintenance_interval_ms.as_ref(),
        u64::try_from(store.maintenance_interval.as_millis()).unwrap_or(60_000),
        10,
    );
    store.batch_max = c.num(
        "TETHER_STORE_BATCH_MAX",
        s.store_batch_max.as_ref(),
        store.batch_max,
        1,
    );
    (database_url, store, node_id)
}

/// `sqlite://data/tether.db`, `sqlite:data/tether.db`, `sqlite:///abs/x.db` → the file path.
/// `postgres:` and every other scheme are refused with the line's message.
pub fn parse_database_url(url: &str) -> Result<PathBuf, String> {
    let Some((scheme, rest)) = url.split_once(':') else {
        return Err(format!(
            "not a URL {url:?} (use sqlite:PATH, e.g. sqlite://data/tether.db)"
        ));
    };
    let valid_scheme = !scheme.is_empty()
        && scheme
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "+-.".contains(ch));
    if !valid_scheme {
        return Err(format!(
            "not a URL {url:?} (use sqlite:PATH, e.g. sqlite://data/tether.db)"
        ));
    }
    match scheme.to_ascii_lowercase().as_str() {
        "sqlite" => {}
        "postgres" | "postgresql" => {
            return Err(
                "postgres: is not supported by this build yet (use sqlite:PATH, e.g. sqlite://data/tether.db)"
                    .into(),
            );
        }
        other => {
            return Err(format!(
                "unsupported scheme {other:?} (use sqlite: or postgres:)"
            ));
        }
    }
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let path = rest.strip_prefix("//").unwrap_or(rest);
    if path.is_empty() {
        return Err(format!(
            "no database file in {url:?} (e.g. sqlite://data/tether.db)"
        ));
    }
    if path == ":memory:" || path.starts_with(":memory:") {
        return Err(
            "an in-memory database is not durable; give a file (e.g. sqlite://data/tether.db)"
                .into(),
        );
    }
    Ok(PathBuf::from(path))
}
