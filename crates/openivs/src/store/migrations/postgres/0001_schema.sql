-- The PostgreSQL store's schema: the same tables as the SQLite store's migrations 0001–0004, in
-- PostgreSQL's types (BIGINT identities, BOOLEAN flags). See store/sqlite.rs's migrations for
-- what each table holds.
CREATE TABLE resources (
    seq           BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    arn           TEXT    NOT NULL UNIQUE,
    resource_type TEXT    NOT NULL,
    account       TEXT    NOT NULL,
    region        TEXT    NOT NULL,
    version       BIGINT  NOT NULL,
    parent_arn    TEXT,
    name          TEXT    NOT NULL,
    unique_key    TEXT    UNIQUE,
    body          TEXT    NOT NULL
);
CREATE INDEX resources_by_owner ON resources (account, region, resource_type, seq);
CREATE INDEX resources_by_parent ON resources (parent_arn, resource_type);

CREATE TABLE resource_references (
    from_arn TEXT NOT NULL,
    to_arn   TEXT NOT NULL,
    PRIMARY KEY (from_arn, to_arn)
);
CREATE INDEX resource_references_by_target ON resource_references (to_arn);

CREATE TABLE viewer_revocations (
    channel_arn TEXT   NOT NULL,
    viewer_id   TEXT   NOT NULL,
    max_version BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (channel_arn, viewer_id)
);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE stream_sessions (
    seq             BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id       TEXT    NOT NULL UNIQUE,
    channel_arn     TEXT    NOT NULL,
    ended           BOOLEAN NOT NULL,
    has_error_event BOOLEAN NOT NULL,
    body            TEXT    NOT NULL
);
CREATE INDEX stream_sessions_by_channel ON stream_sessions (channel_arn, seq);

CREATE TABLE single_use_tokens (
    uuid       TEXT   PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX single_use_tokens_by_expiry ON single_use_tokens (expires_at);

-- Outbox seqs are handed out under the store's write lock, so their order is commit order.
CREATE TABLE events (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account    TEXT   NOT NULL,
    region     TEXT   NOT NULL,
    body       TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE event_cursors (
    target TEXT   PRIMARY KEY,
    seq    BIGINT NOT NULL
);
