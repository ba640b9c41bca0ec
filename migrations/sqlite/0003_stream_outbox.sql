-- The transactional outbox of realtime delivery; see the PostgreSQL migration.
CREATE TABLE mirror_stream_outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id         TEXT NOT NULL,
    kind            TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    sender_id       TEXT NOT NULL,
    version         TEXT NOT NULL,
    enqueued_at     TEXT NOT NULL
);
