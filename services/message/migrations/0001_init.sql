-- The message service's schema: messages with per-conversation seq, receipts as positions,
-- reactions, edit history, and the transactional outbox.

-- One row per conversation: the last seq handed out. Sends lock this row, which both makes seq
-- gapless and serializes a conversation's outbox inserts in seq order.
CREATE TABLE conversation_seq (
    conversation_id uuid PRIMARY KEY,
    last_seq        bigint NOT NULL
);

CREATE TABLE messages (
    message_id        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    conversation_id   uuid NOT NULL,
    seq               bigint NOT NULL,
    sender_id         text NOT NULL,
    content           text NOT NULL DEFAULT '',
    content_encrypted bytea,
    enc_algorithm     text NOT NULL DEFAULT '',
    enc_key_id        text NOT NULL DEFAULT '',
    client_message_id text,
    reply_to_id       uuid,
    created_at        timestamptz NOT NULL DEFAULT now(),
    edited_at         timestamptz,
    deleted_at        timestamptz,
    deleted_by        text,
    -- History pages walk (conversation_id, seq) in both directions.
    UNIQUE (conversation_id, seq)
);
-- Idempotent sends: one message per (sender, client_message_id).
CREATE UNIQUE INDEX messages_client_id ON messages (sender_id, client_message_id) WHERE client_message_id IS NOT NULL;

-- Receipts as positions: the highest seq each user has had delivered and read, per conversation.
CREATE TABLE positions (
    conversation_id uuid NOT NULL,
    user_id         text NOT NULL,
    delivered_seq   bigint NOT NULL DEFAULT 0,
    read_seq        bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, user_id),
    CHECK (read_seq <= delivered_seq)
);

CREATE TABLE reactions (
    message_id uuid NOT NULL REFERENCES messages (message_id),
    user_id    text NOT NULL,
    emoji      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, user_id, emoji)
);

CREATE TABLE message_edits (
    message_id  uuid NOT NULL REFERENCES messages (message_id),
    version     int NOT NULL,
    content     text NOT NULL,
    replaced_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, version)
);

CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    payload      bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
