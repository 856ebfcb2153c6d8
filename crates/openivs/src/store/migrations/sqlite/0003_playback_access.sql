-- A revocation matters only while a playback token it matches can still open a session; rows
-- from before this column existed never expire (the safe side).
ALTER TABLE viewer_revocations ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 9223372036854775807;

-- Single-use playback tokens (aws:single-use-uuid) already used, kept until the token expires.
CREATE TABLE single_use_tokens (
    uuid       TEXT    PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
CREATE INDEX single_use_tokens_by_expiry ON single_use_tokens (expires_at);
