//! PostgreSQL for the integration tests: the cluster named by `TETHER_TEST_POSTGRES_URL`
//! (`cargo xtask test` starts one), or else a private cluster this test process starts under
//! `target/tmp` through the same code as `cargo xtask` (`xtask/src/postgres.rs`), stopped when
//! the process exits. When neither works the test fails with the command to run — it never
//! passes without a real PostgreSQL.

#![allow(dead_code)]

#[path = "../../../../xtask/src/postgres.rs"]
mod cluster;

use std::sync::OnceLock;

use sqlx::Connection as _;

/// The admin URL of the cluster (database `postgres`).
pub fn admin_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var(cluster::URL_ENV)
            && !url.is_empty()
        {
            return url;
        }
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("pg-{}", std::process::id()));
        match cluster::start_for_process(&dir) {
            Ok(c) => c.url,
            Err(e) => panic!(
                "these tests need PostgreSQL: set {} to a server's URL, or run `cargo xtask test` \
                 (which starts one); starting a private cluster failed: {e}",
                cluster::URL_ENV
            ),
        }
    })
    .clone()
}

/// A URL for a database named after `key`, created when missing.
pub async fn database(key: &str) -> String {
    let admin = admin_url();
    let name = format!("t_{key}");
    let mut conn = sqlx::postgres::PgConnection::connect(&admin)
        .await
        .expect("connect to the test cluster");
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut conn)
        .await
        .expect("query pg_database");
    if exists.is_none() {
        // Two tests never share a key; a lost race on one would only fail loudly here.
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .expect("create the test database");
    }
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    format!("{base}/{name}")
}

/// A database for the test folder `dir` (the same folder gives the same database: reopen).
pub async fn database_for(dir: &std::path::Path) -> String {
    use std::hash::{Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut h);
    database(&format!("{:016x}", h.finish())).await
}
