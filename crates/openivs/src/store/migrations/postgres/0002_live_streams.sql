-- The stream registry (see the SQLite store's migration 0005).
CREATE TABLE live_streams (
    channel_arn TEXT   PRIMARY KEY,
    node_id     TEXT   NOT NULL,
    origin_url  TEXT   NOT NULL,
    stream_id   TEXT   NOT NULL,
    epoch       BIGINT NOT NULL,
    lease_until BIGINT NOT NULL
);
