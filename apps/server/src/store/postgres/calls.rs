//! The PostgreSQL side of the call records (`calls` table, migration
//! `postgres/0002_calls.sql`): single autocommit statements on the pool, like SQLite's. A
//! call's row is written by the node holding its media stream; any node can read it, so a
//! resume may land on another node and still find its call.

crate::store::calls::call_queries!(sqlx::PgPool, sql::postgres);
