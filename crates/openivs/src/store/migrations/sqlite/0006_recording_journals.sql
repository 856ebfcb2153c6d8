-- Journals of recordings in progress: what a recording interrupted by a crash needs to be
-- finished (a JSON body), from its start to its end, under the node that writes it. That node
-- finishes its own at its next start; in a cluster with a shared S3 store, the node that ends a
-- dead node's stream finishes that stream's recording.
CREATE TABLE recording_journals (
    recording_id TEXT PRIMARY KEY,
    node_id      TEXT NOT NULL,
    channel_arn  TEXT NOT NULL,
    body         TEXT NOT NULL
);
