-- realtime-mirror schema (CONTRACT.md section 4), SQLite dialect: timestamps are RFC 3339
-- UTC text with six fractional digits (so text order is time order), participant_ids and
-- media are JSON text, and text compares as bytes (BINARY collation), as in PostgreSQL's
-- COLLATE "C". See the PostgreSQL migration for the extra columns.

CREATE TABLE dm_conversations (
    conversation_id            TEXT PRIMARY KEY NOT NULL,
    owner_id                   TEXT,
    participant_ids            TEXT,
    last_message_id            TEXT,
    last_message_at            TEXT,
    last_message_preview       TEXT,
    last_message_author_id     TEXT,
    created_at                 TEXT,
    updated_at                 TEXT,
    deleted_at                 TEXT,
    doc_last_message_id        TEXT,
    doc_last_message_at        TEXT,
    doc_last_message_preview   TEXT,
    doc_last_message_author_id TEXT,
    dm_pair_low                TEXT,
    dm_pair_high               TEXT,
    content_hash               TEXT,
    sync_source                TEXT NOT NULL,
    last_synced_event_id       TEXT,
    retry_count                INTEGER NOT NULL DEFAULT 0,
    mirrored_at                TEXT NOT NULL
);

CREATE TABLE dm_messages (
    conversation_id TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    author_id       TEXT,
    recipient_id    TEXT,
    body            TEXT,
    media           TEXT,
    created_at      TEXT,
    updated_at      TEXT NOT NULL,
    deleted_at      TEXT,
    content_hash    TEXT NOT NULL,
    sync_source     TEXT NOT NULL,
    event_id        TEXT,
    retry_count     INTEGER NOT NULL DEFAULT 0,
    mirrored_at     TEXT NOT NULL,
    PRIMARY KEY (conversation_id, message_id)
);

CREATE INDEX dm_messages_conversation_created_at ON dm_messages (conversation_id, created_at);

CREATE TABLE follow_edges (
    user_id      TEXT NOT NULL,
    target_id    TEXT NOT NULL,
    edge_type    TEXT,
    created_at   TEXT,
    updated_at   TEXT NOT NULL,
    deleted_at   TEXT,
    content_hash TEXT NOT NULL,
    sync_source  TEXT NOT NULL,
    event_id     TEXT,
    retry_count  INTEGER NOT NULL DEFAULT 0,
    mirrored_at  TEXT NOT NULL,
    PRIMARY KEY (user_id, target_id)
);

CREATE TABLE mirror_applied_events (
    idempotency_key TEXT PRIMARY KEY NOT NULL,
    event_type      TEXT NOT NULL,
    entity_id       TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    applied_at      TEXT NOT NULL
);
