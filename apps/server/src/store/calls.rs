//! The Twilio call records the [`super::Store`] keeps (CONTRACT §10.4): what a resume needs to
//! join a dropped stream to its call, after a restart too. Backends implement
//! [`super::Store::call_put`], [`super::Store::call_get`], [`super::Store::call_consume_token`]
//! and [`super::Store::calls_active`] over the `calls` table of migration `0002_calls.sql`, with the statements and the row
//! decoding written once here ([`call_queries`]).

use protocol::Timestamp;
use serde_json::Value;

/// Where a call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    /// TwiML issued or a stream attached: the call is live.
    Active,
    /// The stream ended without Twilio's `stop`: `/twilio/voice/after` may resume it.
    Dropped,
    /// Over: `stop` seen, the agent hung up, Tether chose to end it, or resumes are spent.
    Ended,
}

impl CallState {
    /// The stored spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Dropped => "dropped",
            Self::Ended => "ended",
        }
    }

    /// From the stored spelling (unknown text reads as `Ended`, the safe choice).
    #[must_use]
    pub fn parse(s: &str) -> Self {
        match s {
            "active" => Self::Active,
            "dropped" => Self::Dropped,
            _ => Self::Ended,
        }
    }
}

/// One call.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    /// Twilio's `CallSid`.
    pub call_sid: String,
    /// Twilio's `AccountSid`.
    pub account_sid: String,
    /// The current (or last) media stream's `streamSid`.
    pub stream_sid: Option<String>,
    /// Where the call stands.
    pub state: CallState,
    /// Why it ended (`stop`, `agent_hangup`, `resumes_exhausted`, …).
    pub end_reason: Option<String>,
    /// Streams re-established so far.
    pub resumes: u32,
    /// SHA-256 (hex) of the call token not yet used; `None` once a stream consumed it.
    pub token_digest: Option<String>,
    /// When that token stops being valid.
    pub token_expires_at: Option<Timestamp>,
    /// The stream's `customParameters` minus `callToken`, replayed to a relinked agent.
    pub custom_parameters: Value,
    /// When the call reached Tether.
    pub started_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
}

/// The statements both backends run, written once with SQLite's `?N` placeholders;
/// [`sql::postgres`] spells them with PostgreSQL's `$N`. Plain portable SQL otherwise.
pub(crate) mod sql {
    /// Every column, in [`super::CallRow`]'s order.
    const COLUMNS: &str = "call_sid, account_sid, stream_sid, state, end_reason, resumes, \
         token_digest, token_expires_at, custom_parameters, started_at, updated_at";

    /// Insert or replace one record (11 parameters, in column order).
    pub(crate) fn put() -> String {
        format!(
            "INSERT INTO calls ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
             ON CONFLICT (call_sid) DO UPDATE SET account_sid = excluded.account_sid, \
             stream_sid = excluded.stream_sid, state = excluded.state, \
             end_reason = excluded.end_reason, resumes = excluded.resumes, \
             token_digest = excluded.token_digest, token_expires_at = excluded.token_expires_at, \
             custom_parameters = excluded.custom_parameters, started_at = excluded.started_at, \
             updated_at = excluded.updated_at"
        )
    }

    /// One record by `call_sid` (?1).
    pub(crate) fn get() -> String {
        format!("SELECT {COLUMNS} FROM calls WHERE call_sid = ?1")
    }

    /// Clear the token when `call_sid` (?1) holds `digest` (?2) unexpired at `now` (?3).
    pub(crate) const CONSUME_TOKEN: &str = "UPDATE calls SET token_digest = NULL, updated_at = ?3 \
         WHERE call_sid = ?1 AND token_digest = ?2 AND token_expires_at >= ?3";

    /// Set state (?2), end reason (?3, kept when NULL), streamSid (?4, kept when NULL) and
    /// `updated_at` (?5) of `call_sid` (?1).
    pub(crate) const SET_STATE: &str = "UPDATE calls SET state = ?2, \
         end_reason = COALESCE(?3, end_reason), stream_sid = COALESCE(?4, stream_sid), \
         updated_at = ?5 WHERE call_sid = ?1";

    /// Calls not ended, oldest first.
    pub(crate) fn active() -> String {
        format!("SELECT {COLUMNS} FROM calls WHERE state <> 'ended' ORDER BY started_at")
    }

    /// `sql` as SQLite takes it (as written).
    pub(crate) fn sqlite(sql: &str) -> String {
        sql.to_owned()
    }

    /// `sql` with `$N` placeholders for PostgreSQL (the statements contain no other `?`).
    pub(crate) fn postgres(sql: &str) -> String {
        sql.replace('?', "$")
    }
}

/// The five call-record functions of one backend over its pool type and placeholder
/// spelling. A macro because the binds are the same for both backends while sqlx's generic
/// executor bounds, spelled out per bound type, would be longer than the code they share.
macro_rules! call_queries {
    ($pool:ty, $spell:path) => {
        use protocol::Timestamp;

        use crate::store::calls::{CallRow, sql};
        use crate::store::{CallRecord, CallState, StoreError};

        pub(super) async fn put(pool: &$pool, r: &CallRecord) -> Result<(), StoreError> {
            sqlx::query(&$spell(&sql::put()))
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
            pool: &$pool,
            call_sid: &str,
        ) -> Result<Option<CallRecord>, StoreError> {
            let row: Option<CallRow> = sqlx::query_as(&$spell(&sql::get()))
                .bind(call_sid)
                .fetch_optional(pool)
                .await?;
            row.map(CallRecord::try_from).transpose()
        }

        pub(super) async fn consume_token(
            pool: &$pool,
            call_sid: &str,
            digest: &str,
            now: Timestamp,
        ) -> Result<bool, StoreError> {
            let done = sqlx::query(&$spell(sql::CONSUME_TOKEN))
                .bind(call_sid)
                .bind(digest)
                .bind(now.unix_millis())
                .execute(pool)
                .await?;
            Ok(done.rows_affected() == 1)
        }

        pub(super) async fn set_state(
            pool: &$pool,
            call_sid: &str,
            state: CallState,
            end_reason: Option<&str>,
            stream_sid: Option<&str>,
            now: Timestamp,
        ) -> Result<(), StoreError> {
            sqlx::query(&$spell(sql::SET_STATE))
                .bind(call_sid)
                .bind(state.as_str())
                .bind(end_reason)
                .bind(stream_sid)
                .bind(now.unix_millis())
                .execute(pool)
                .await?;
            Ok(())
        }

        pub(super) async fn active(pool: &$pool) -> Result<Vec<CallRecord>, StoreError> {
            let rows: Vec<CallRow> = sqlx::query_as(&$spell(&sql::active()))
                .fetch_all(pool)
                .await?;
            rows.into_iter().map(CallRecord::try_from).collect()
        }
    };
}
pub(crate) use call_queries;

/// A `calls` row as both backends decode it (`sqlx::FromRow`, by column name).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct CallRow {
    call_sid: String,
    account_sid: String,
    stream_sid: Option<String>,
    state: String,
    end_reason: Option<String>,
    resumes: i64,
    token_digest: Option<String>,
    token_expires_at: Option<i64>,
    custom_parameters: String,
    started_at: i64,
    updated_at: i64,
}

impl TryFrom<CallRow> for CallRecord {
    type Error = super::StoreError;

    fn try_from(r: CallRow) -> Result<Self, Self::Error> {
        Ok(Self {
            custom_parameters: serde_json::from_str(&r.custom_parameters)
                .map_err(|e| super::StoreError::Corrupt(format!("call parameters: {e}")))?,
            call_sid: r.call_sid,
            account_sid: r.account_sid,
            stream_sid: r.stream_sid,
            state: CallState::parse(&r.state),
            end_reason: r.end_reason,
            resumes: u32::try_from(r.resumes).unwrap_or(0),
            token_digest: r.token_digest,
            token_expires_at: r.token_expires_at.map(Timestamp::from_unix_millis),
            started_at: Timestamp::from_unix_millis(r.started_at),
            updated_at: Timestamp::from_unix_millis(r.updated_at),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::sql;

    #[test]
    fn postgres_spelling_only_changes_placeholders() {
        assert_eq!(
            sql::postgres(sql::CONSUME_TOKEN),
            "UPDATE calls SET token_digest = NULL, updated_at = $3 \
             WHERE call_sid = $1 AND token_digest = $2 AND token_expires_at >= $3"
        );
        assert!(!sql::postgres(&sql::put()).contains('?'));
    }
}
