-- The stream registry: which node holds a channel's live stream, under a lease the node renews
-- (lease_until, Unix milliseconds of the database's clock) and an epoch that grows with each new
-- holder, so a node that lost its lease is fenced (its renewal no longer matches).
CREATE TABLE live_streams (
    channel_arn TEXT    PRIMARY KEY,
    node_id     TEXT    NOT NULL,
    origin_url  TEXT    NOT NULL,
    stream_id   TEXT    NOT NULL,
    epoch       INTEGER NOT NULL,
    lease_until INTEGER NOT NULL
);
