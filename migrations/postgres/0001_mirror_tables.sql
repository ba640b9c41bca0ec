-- realtime-mirror schema (CONTRACT.md section 4). Ids are COLLATE "C" so every ordering and
-- tie-break compares byte strings, exactly as SQLite does.
-- Columns beyond the contract's: content_hash (the order's last tie-break), the conversation
-- document's own lastMessage* fields (doc_last_message_*, used only while no message is
-- mirrored) and dm_pair_low/high (the two distinct participants, from which recipient_id is
-- derived).

CREATE TABLE dm_conversations (
    conversation_id            text COLLATE "C" PRIMARY KEY,
    owner_id                   text COLLATE "C",
    participant_ids            text[] COLLATE "C",
    last_message_id            text COLLATE "C",
    last_message_at            timestamptz,
    last_message_preview       text,
    last_message_author_id     text COLLATE "C",
    created_at                 timestamptz,
    updated_at                 timestamptz,
    deleted_at                 timestamptz,
    doc_last_message_id        text COLLATE "C",
    doc_last_message_at        timestamptz,
    doc_last_message_preview   text,
    doc_last_message_author_id text COLLATE "C",
    dm_pair_low                text COLLATE "C",
    dm_pair_high               text COLLATE "C",
    content_hash               text COLLATE "C",
    sync_source                text NOT NULL,
    last_synced_event_id       text,
    retry_count                integer NOT NULL DEFAULT 0,
    mirrored_at                timestamptz NOT NULL
);

CREATE TABLE dm_messages (
    conversation_id text COLLATE "C" NOT NULL,
    message_id      text COLLATE "C" NOT NULL,
    author_id       text COLLATE "C",
    recipient_id    text COLLATE "C",
    body            text,
    media           jsonb,
    created_at      timestamptz,
    updated_at      timestamptz NOT NULL,
    deleted_at      timestamptz,
    content_hash    text COLLATE "C" NOT NULL,
    sync_source     text NOT NULL,
    event_id        text,
    retry_count     integer NOT NULL DEFAULT 0,
    mirrored_at     timestamptz NOT NULL,
    PRIMARY KEY (conversation_id, message_id)
);

CREATE INDEX dm_messages_conversation_created_at ON dm_messages (conversation_id, created_at);

CREATE TABLE follow_edges (
    user_id      text COLLATE "C" NOT NULL,
    target_id    text COLLATE "C" NOT NULL,
    edge_type    text,
    created_at   timestamptz,
    updated_at   timestamptz NOT NULL,
    deleted_at   timestamptz,
    content_hash text COLLATE "C" NOT NULL,
    sync_source  text NOT NULL,
    event_id     text,
    retry_count  integer NOT NULL DEFAULT 0,
    mirrored_at  timestamptz NOT NULL,
    PRIMARY KEY (user_id, target_id)
);

-- Idempotency keys of applied events: a record whose key is here is a duplicate.
CREATE TABLE mirror_applied_events (
    idempotency_key text COLLATE "C" PRIMARY KEY,
    event_type      text NOT NULL,
    entity_id       text NOT NULL,
    event_id        text NOT NULL,
    applied_at      timestamptz NOT NULL
);
