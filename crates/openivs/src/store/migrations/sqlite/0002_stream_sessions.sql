-- Stream sessions: one row per publish, the session as GetStreamSession returns it.
CREATE TABLE stream_sessions (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_id       TEXT    NOT NULL UNIQUE,
    channel_arn     TEXT    NOT NULL,
    ended           INTEGER NOT NULL,
    has_error_event INTEGER NOT NULL,
    body            TEXT    NOT NULL
);
CREATE INDEX stream_sessions_by_channel ON stream_sessions (channel_arn, seq);
