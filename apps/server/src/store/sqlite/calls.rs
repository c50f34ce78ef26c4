//! The SQLite side of the call records (`calls` table, migration `sqlite/0002_calls.sql`).
//!
//! These are single autocommit statements on the pool rather than commands to the writer
//! task: they touch only the `calls` table, which the writer neither caches nor announces, and
//! SQLite serialises them with the writer's transactions under the busy timeout. Keeping them
//! off the writer's queue means a call's upgrade never waits behind a large publish batch.

crate::store::calls::call_queries!(sqlx::SqlitePool, sql::sqlite);
