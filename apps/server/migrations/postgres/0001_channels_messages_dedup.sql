-- Tether's store on PostgreSQL: the same three tables as the SQLite store. Several nodes
-- write here at once: a channel's row is the lock that orders its offsets (SELECT .. FOR
-- UPDATE in every writing transaction), `messages` is keyed by (channel, offset), and the
-- dedup record's primary key makes a retry racing on two nodes get one offset.
CREATE TABLE channels (
    name        TEXT   NOT NULL PRIMARY KEY,
    epoch       TEXT   NOT NULL,
    last_offset BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL
);

CREATE TABLE messages (
    channel      TEXT   NOT NULL,
    msg_offset   BIGINT NOT NULL,
    id           TEXT   NOT NULL,
    sub          TEXT   NOT NULL,
    data         TEXT   NOT NULL,
    published_at BIGINT NOT NULL,
    PRIMARY KEY (channel, msg_offset)
);

-- Age-based retention deletes by time across channels.
CREATE INDEX messages_published_at ON messages (published_at);

CREATE TABLE dedup (
    channel    TEXT   NOT NULL,
    sub        TEXT   NOT NULL,
    id         TEXT   NOT NULL,
    data_hash  BYTEA  NOT NULL,
    msg_offset BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (channel, sub, id)
);

CREATE INDEX dedup_created_at ON dedup (created_at);
