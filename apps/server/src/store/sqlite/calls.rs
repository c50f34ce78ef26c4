//! The SQLite side of the call records (`calls` table, migration `0002_calls.sql`).
//!
//! These are single autocommit statements on the pool rather than commands to the writer
//! task: they touch only the `calls` table, which the writer neither caches nor announces, and
//! SQLite serialises them with the writer's transactions under the busy timeout. Keeping them
//! off the writer's queue means a call's upgrade never waits behind a large publish batch.

use protocol::Timestamp;
use sqlx::Row as _;
use sqlx::SqlitePool;
use sqlx::sqlite::SqliteRow;

use crate::store::{CallRecord, CallState, StoreError};

const COLUMNS: &str = "call_sid, account_sid, stream_sid, state, end_reason, resumes, \
     token_digest, token_expires_at, custom_parameters, started_at, updated_at";

pub(super) async fn put(pool: &SqlitePool, r: &CallRecord) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO calls ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
         ON CONFLICT (call_sid) DO UPDATE SET account_sid = excluded.account_sid, \
         stream_sid = excluded.stream_sid, state = excluded.state, \
         end_reason = excluded.end_reason, resumes = excluded.resumes, \
         token_digest = excluded.token_digest, token_expires_at = excluded.token_expires_at, \
         custom_parameters = excluded.custom_parameters, started_at = excluded.started_at, \
         updated_at = excluded.updated_at"
    ))
    .bind(&r.call_sid)
    .bind(&r.account_sid)
    .bind(&r.stream_sid)
    .bind(r.state.as_str())
    .bind(&r.end_reason)
    .bind(i64::from(r.resumes))
    .bind(&r.token_digest)
    .bind(r.token_expires_at.map(Timestamp::unix_millis))
    .bind(r.custom_parameters.to_string())
    .bind(r.started_at.unix_millis())
    .bind(r.updated_at.unix_millis())
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn get(
    pool: &SqlitePool,
    call_sid: &str,
) -> Result<Option<CallRecord>, StoreError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM calls WHERE call_sid = ?1"))
        .bind(call_sid)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(decode).transpose()
}

pub(super) async fn consume_token(
    pool: &SqlitePool,
    call_sid: &str,
    digest: &str,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE calls SET token_digest = NULL, updated_at = ?3 \
         WHERE call_sid = ?1 AND token_digest = ?2 AND token_expires_at >= ?3",
    )
    .bind(call_sid)
    .bind(digest)
    .bind(now.unix_millis())
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn set_state(
    pool: &SqlitePool,
    call_sid: &str,
    state: CallState,
    end_reason: Option<&str>,
    stream_sid: Option<&str>,
    now: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE calls SET state = ?2, end_reason = COALESCE(?3, end_reason), \
         stream_sid = COALESCE(?4, stream_sid), updated_at = ?5 WHERE call_sid = ?1",
    )
    .bind(call_sid)
    .bind(state.as_str())
    .bind(end_reason)
    .bind(stream_sid)
    .bind(now.unix_millis())
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn active(pool: &SqlitePool) -> Result<Vec<CallRecord>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM calls WHERE state <> 'ended' ORDER BY started_at"
    ))
    .fetch_all(pool)
    .await?;
    rows.iter().map(decode).collect()
}

fn decode(row: &SqliteRow) -> Result<CallRecord, StoreError> {
    let params: String = row.get(8);
    Ok(CallRecord {
        call_sid: row.get(0),
        account_sid: row.get(1),
        stream_sid: row.get(2),
        state: CallState::parse(row.get::<&str, _>(3)),
        end_reason: row.get(4),
        resumes: u32::try_from(row.get::<i64, _>(5)).unwrap_or(0),
        token_digest: row.get(6),
        token_expires_at: row
            .get::<Option<i64>, _>(7)
            .map(Timestamp::from_unix_millis),
        custom_parameters: serde_json::from_str(&params)
            .map_err(|e| StoreError::Corrupt(format!("call parameters: {e}")))?,
        started_at: Timestamp::from_unix_millis(row.get(9)),
        updated_at: Timestamp::from_unix_millis(row.get(10)),
    })
}
