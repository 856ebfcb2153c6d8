-- Calls counted across the nodes, by key (an account's PutMetadata calls, …) and tenth of a
-- second since the Unix epoch: a rate limit that every node sees (see `admit_shared_call`).
-- Rows older than a few seconds are deleted as calls come.
CREATE TABLE call_counts (
    key    TEXT   NOT NULL,
    tenth  BIGINT NOT NULL,
    calls  INTEGER NOT NULL,
    PRIMARY KEY (key, tenth)
);
