-- Tether's store: channels with epoch and last offset, messages keyed by (channel, offset),
-- and one deduplication record per (channel, publisher sub, id), kept independently of
-- message retention.
CREATE TABLE channels (
    name        TEXT    NOT NULL PRIMARY KEY,
    epoch       TEXT    NOT NULL,
    last_offset INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE messages (
    channel      TEXT    NOT NULL,
    msg_offset   INTEGER NOT NULL,
    id           TEXT    NOT NULL,
    sub          TEXT    NOT NULL,
    data         TEXT    NOT NULL,
    published_at INTEGER NOT NULL,
    PRIMARY KEY (channel, msg_offset)
) WITHOUT ROWID;

-- Age-based retention deletes by time across channels.
CREATE INDEX messages_published_at ON messages (published_at);

CREATE TABLE dedup (
    channel    TEXT    NOT NULL,
    sub        TEXT    NOT NULL,
    id         TEXT    NOT NULL,
    data_hash  BLOB    NOT NULL,
    msg_offset INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (channel, sub, id)
) WITHOUT ROWID;

CREATE INDEX dedup_created_at ON dedup (created_at);
