-- The Twilio voice gateway's call state (CONTRACT §10.4): one row per call, so that a media
-- stream that dropped can be resumed as the same call, even after a restart of Tether.
-- Plain portable SQL (SQLite and PostgreSQL alike).
CREATE TABLE calls (
    call_sid          TEXT    NOT NULL PRIMARY KEY,
    account_sid       TEXT    NOT NULL,
    stream_sid        TEXT,
    state             TEXT    NOT NULL,
    end_reason        TEXT,
    resumes           INTEGER NOT NULL DEFAULT 0,
    token_digest      TEXT,
    token_expires_at  BIGINT,
    custom_parameters TEXT    NOT NULL,
    started_at        BIGINT  NOT NULL,
    updated_at        BIGINT  NOT NULL
);

CREATE INDEX calls_state ON calls (state);
