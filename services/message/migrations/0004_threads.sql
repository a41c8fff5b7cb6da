-- Threads: the replies to a message (its reply_to_id) read as a thread, and the root carrying its
-- reply count and last reply time, kept by the writes that change them rather than counted on reads.
--
-- reply_count counts live replies: a send with reply_to_id adds one, deleting a reply takes one away
-- (services/message/threads.py). last_reply_at is the created_at of the live reply with the highest seq.
ALTER TABLE messages
    ADD COLUMN reply_count   integer NOT NULL DEFAULT 0,
    ADD COLUMN last_reply_at timestamptz;

-- Existing replies (sent before this migration) counted once.
UPDATE messages m SET reply_count = t.n, last_reply_at = t.last_at
    FROM (SELECT reply_to_id, count(*) AS n,
                 (array_agg(created_at ORDER BY seq DESC))[1] AS last_at
            FROM messages WHERE reply_to_id IS NOT NULL AND deleted_at IS NULL
           GROUP BY reply_to_id) t
    WHERE m.message_id = t.reply_to_id;

-- A thread page walks one root's replies by seq, in both directions; only replies are indexed, so a
-- plain send pays nothing for it.
CREATE INDEX messages_replies ON messages (reply_to_id, seq) WHERE reply_to_id IS NOT NULL;

-- The protobuf encoding of a non-negative integer (a varint).
CREATE FUNCTION pb_varint(value bigint) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE STRICT
AS $$
DECLARE
    v bigint := value;
    encoded bytea := ''::bytea;
BEGIN
    LOOP
        IF v < 128 THEN
            RETURN encoded || set_byte('\x00'::bytea, 0, v::int);
        END IF;
        encoded := encoded || set_byte('\x00'::bytea, 0, ((v & 127) | 128)::int);
        v := v >> 7;
    END LOOP;
END $$;

-- `Event{thread: {reply_count: n}}`, appended to a reply's event after the seq (see 0002's
-- event_seq_suffix: a parser merges the repeated embedded message into the `thread` the service
-- already set with the root's id and the reply's time). Field numbers: Event.thread = 6,
-- ThreadUpdate.reply_count = 2 (protos/chat/v1/common.proto); tests/test_threads_store.py checks it.
CREATE FUNCTION event_thread_suffix(reply_count bigint) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT
AS $$
    SELECT '\x32'::bytea || set_byte('\x00'::bytea, 0, 1 + length(pb_varint(reply_count)))
           || '\x10'::bytea || pb_varint(reply_count)
$$;

-- send_message gains the thread: a reply updates its root in the same statement (one UPDATE, only
-- when p_reply_to_id is set), which is also the check that the root is a message of this
-- conversation (raised with constraint name reply_to_found otherwise: nothing is written). The
-- root's lock is taken after the conversation's counter row, which already serializes a
-- conversation's sends, so it adds no waiting of its own.
DROP FUNCTION send_message(uuid, uuid, text, text, bytea, text, text, text, uuid, timestamptz, bytea, boolean,
                           uuid[], bytea);

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
    replies integer;
    thread bytea := ''::bytea;
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
    IF p_reply_to_id IS NOT NULL THEN
        UPDATE messages SET reply_count = reply_count + 1, last_reply_at = p_created_at
            WHERE message_id = p_reply_to_id AND conversation_id = p_conversation_id
            RETURNING reply_count INTO replies;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'reply_to_id is not a message of this conversation' USING CONSTRAINT = 'reply_to_found';
        END IF;
        thread := event_thread_suffix(replies);
    END IF;
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
    INSERT INTO outbox (payload) VALUES (p_payload || event_seq_suffix(taken) || thread);
    IF p_notify THEN
        PERFORM pg_notify(current_schema() || '_outbox', '');
    END IF;
    created := true;
END $$;
