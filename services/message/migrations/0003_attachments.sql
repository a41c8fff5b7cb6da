-- Attachments: uploads into a conversation, attached to at most one message at send.
--
-- An upload is created `pending` (its bytes not in yet), becomes `ready` once the service has checked
-- the bytes (sniffed type, size, sha256, image size and thumbnail, audio duration), and is attached
-- by the send that names it (message_id set, in the same statement as the message). Uploads never
-- attached are collected after CHAT_ATTACHMENT_TTL_S (attachments_unattached serves that sweep).
CREATE TABLE attachments (
    attachment_id   uuid PRIMARY KEY,
    conversation_id uuid NOT NULL,
    uploader_id     text NOT NULL,
    filename        text NOT NULL,
    -- What the client declared: advisory, never served (content_type is sniffed from the bytes).
    declared_type   text NOT NULL DEFAULT '',
    -- Declared at create; the upload must be exactly this long.
    size_bytes      bigint NOT NULL CHECK (size_bytes > 0),
    storage_key     text NOT NULL,
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'ready')),
    content_type    text NOT NULL DEFAULT '',
    sha256          text NOT NULL DEFAULT '',
    width           int NOT NULL DEFAULT 0,
    height          int NOT NULL DEFAULT 0,
    duration_ms     bigint NOT NULL DEFAULT 0,
    has_thumbnail   boolean NOT NULL DEFAULT false,
    message_id      uuid REFERENCES messages (message_id),
    position        int,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (message_id IS NULL OR state = 'ready')
);
CREATE INDEX attachments_unattached ON attachments (created_at) WHERE message_id IS NULL;

-- The attachments' metadata as sent, on the message itself: a serialized chat.v1.Message holding only
-- its `attachments` field, merged into the message proto as it is read (convert.message). Attachment
-- metadata never changes once ready, so every read path (history, search, events, the offline
-- buffer) carries it without a join or a query of its own.
ALTER TABLE messages ADD COLUMN attachments bytea;

-- send_message gains the attachments: attach the named uploads in the same statement as the message,
-- or fail (and write nothing, the seq given back) when one is no longer ready and free, e.g. a
-- concurrent send took it or the collector removed it.
DROP FUNCTION send_message(uuid, uuid, text, text, bytea, text, text, text, uuid, timestamptz, bytea, boolean);

CREATE FUNCTION send_message(
    p_message_id uuid, p_conversation_id uuid, p_sender_id text, p_content text, p_content_encrypted bytea,
    p_enc_algorithm text, p_enc_key_id text, p_client_message_id text, p_reply_to_id uuid,
    p_created_at timestamptz, p_payload bytea, p_notify boolean, p_attachment_ids uuid[], p_attachments bytea,
    OUT created boolean, OUT msg messages)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    taken bigint;
    attached bigint;
BEGIN
    IF p_client_message_id IS NOT NULL THEN
        SELECT * INTO msg FROM messages WHERE sender_id = p_sender_id AND client_message_id = p_client_message_id;
        IF FOUND THEN
            created := false;
            RETURN;
        END IF;
    END IF;
    -- Locks the conversation's counter row until commit: seqs stay gapless, and the conversation's
    -- outbox rows are inserted (and committed) in seq order.
    INSERT INTO conversation_seq AS s (conversation_id, last_seq) VALUES (p_conversation_id, 1)
        ON CONFLICT (conversation_id) DO UPDATE SET last_seq = s.last_seq + 1
        RETURNING last_seq INTO taken;
    INSERT INTO messages (message_id, conversation_id, seq, sender_id, content, content_encrypted, enc_algorithm,
                          enc_key_id, client_message_id, reply_to_id, created_at, attachments)
        VALUES (p_message_id, p_conversation_id, taken, p_sender_id, p_content, p_content_encrypted,
                p_enc_algorithm, p_enc_key_id, p_client_message_id, p_reply_to_id, p_created_at, p_attachments)
        RETURNING * INTO msg;
    IF cardinality(p_attachment_ids) > 0 THEN
        UPDATE attachments SET message_id = p_message_id, position = array_position(p_attachment_ids, attachment_id)
            WHERE attachment_id = ANY (p_attachment_ids) AND message_id IS NULL AND state = 'ready'
              AND conversation_id = p_conversation_id AND uploader_id = p_sender_id;
        GET DIAGNOSTICS attached = ROW_COUNT;
        IF attached <> cardinality(p_attachment_ids) THEN
            RAISE EXCEPTION 'an attachment is no longer available' USING CONSTRAINT = 'attachments_available';
        END IF;
    END IF;
    INSERT INTO outbox (payload) VALUES (p_payload || event_seq_suffix(taken));
    IF p_notify THEN
        PERFORM pg_notify(current_schema() || '_outbox', '');
    END IF;
    created := true;
END $$;
