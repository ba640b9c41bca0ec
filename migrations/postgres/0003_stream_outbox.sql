-- The transactional outbox of realtime delivery (issue 12, seed 003): the transaction that
-- applies a message change also writes one row per user to notify; after the commit the rows
-- are added to the users' Redis Streams (`stream:user:{userId}`) in id order and deleted.
-- Written only while MIRROR_REDIS_URL is set; never by backfill or repair.
-- Pointers only: never a body.
CREATE TABLE mirror_stream_outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         text COLLATE "C" NOT NULL,
    kind            text NOT NULL,
    conversation_id text COLLATE "C" NOT NULL,
    message_id      text COLLATE "C" NOT NULL,
    sender_id       text COLLATE "C" NOT NULL,
    version         text NOT NULL,
    enqueued_at     timestamptz NOT NULL
);
