-- The outbox of IVS events (EventBridge envelopes), written in the same transaction as the state
-- change each describes, in commit order (seq), and delivered from there to every target.
CREATE TABLE events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    account    TEXT    NOT NULL,
    region     TEXT    NOT NULL,
    body       TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);

-- How far each event target has been delivered (the seq of its last delivered event).
CREATE TABLE event_cursors (
    target TEXT    PRIMARY KEY,
    seq    INTEGER NOT NULL
);
