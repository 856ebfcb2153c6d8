-- Journals of recordings in progress (see the SQLite store's migration 0006).
CREATE TABLE recording_journals (
    recording_id TEXT PRIMARY KEY,
    node_id      TEXT NOT NULL,
    channel_arn  TEXT NOT NULL,
    body         TEXT NOT NULL
);
