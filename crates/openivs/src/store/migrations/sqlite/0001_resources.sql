-- Every IVS resource, as the JSON the API returns, plus the attributes listings filter on.
CREATE TABLE resources (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    arn           TEXT    NOT NULL UNIQUE,
    resource_type TEXT    NOT NULL,
    account       TEXT    NOT NULL,
    region        TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    parent_arn    TEXT,
    name          TEXT    NOT NULL,
    unique_key    TEXT    UNIQUE,
    body          TEXT    NOT NULL
);
CREATE INDEX resources_by_owner ON resources (account, region, resource_type, seq);
CREATE INDEX resources_by_parent ON resources (parent_arn, resource_type);

-- Which resource refers to which (a channel to its recording configuration, …).
CREATE TABLE resource_references (
    from_arn TEXT NOT NULL,
    to_arn   TEXT NOT NULL,
    PRIMARY KEY (from_arn, to_arn)
);
CREATE INDEX resource_references_by_target ON resource_references (to_arn);

-- StartViewerSessionRevocation: sessions of this viewer with a version <= max_version are revoked.
CREATE TABLE viewer_revocations (
    channel_arn TEXT    NOT NULL,
    viewer_id   TEXT    NOT NULL,
    max_version INTEGER NOT NULL,
    PRIMARY KEY (channel_arn, viewer_id)
);

-- Server-wide values that must survive restarts (the pagination-token key, …).
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
