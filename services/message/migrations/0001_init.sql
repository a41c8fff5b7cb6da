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
    -- Full-text search over live plaintext only: a deleted or encrypted message has no vector, so it
    -- drops out of the index by itself. 'simple' (no stemming) because chats mix languages.
    search_vector     tsvector GENERATED ALWAYS AS (
        CASE WHEN deleted_at IS NULL AND content_encrypted IS NULL
             THEN to_tsvector('simple'::regconfig, content) END) STORED,
    -- History pages walk (conversation_id, seq) in both directions, and reply_to / status look a
    -- message up by (conversation_id, seq) too: this unique index serves every per-conversation path.
    UNIQUE (conversation_id, seq)
);
-- Search: `search_vector @@ query AND conversation_id = ANY(...)`; the GIN index finds the matches.
CREATE INDEX messages_search ON messages USING gin (search_vector);
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
-- The offline buffer reads one user's positions across conversations (the primary key serves the
-- per-conversation reads: a message's recipients, an upsert).
CREATE INDEX positions_by_user ON positions (user_id);

-- A user may leave several different emoji on a message, each once (the primary key). Aggregating a
-- page's reactions reads by message_id, the key's leading column.
CREATE TABLE reactions (
    message_id uuid NOT NULL REFERENCES messages (message_id),
    user_id    text NOT NULL,
    emoji      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, user_id, emoji)
);

-- Previous versions of edited messages, for audit; version 1 is the original text.
CREATE TABLE message_edits (
    message_id  uuid NOT NULL REFERENCES messages (message_id),
    version     int NOT NULL,
    content     text NOT NULL,
    replaced_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, version)
);

-- Append-only record of actions taken on someone else's message (an admin's delete), read newest
-- first per conversation by the conversation service's audit path (keyset on entry_id).
CREATE TABLE audit_log (
    entry_id        bigserial PRIMARY KEY,
    conversation_id uuid NOT NULL,
    actor_id        text NOT NULL,
    action          text NOT NULL,
    target          text NOT NULL,
    request_id      text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_by_conversation ON audit_log (conversation_id, entry_id DESC);
-- Append-only: the table refuses updates and deletes, whoever asks.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END $$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

-- The transactional outbox (events written in the same transaction as the change they describe) is
-- chatmesh/outbox.py's table: db.migrate creates it from outbox.DDL before this file. It stood here
-- first; databases that applied that text have the same table, and migrate never reruns a file.
