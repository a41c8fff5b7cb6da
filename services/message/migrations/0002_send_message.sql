-- A send in one statement (one round trip, one implicit transaction): the duplicate check on
-- (sender, client_message_id), the next seq, the message row and its outbox event.
--
-- The event is serialized by the service before the seq is known; its message has no seq (0 is not
-- written in proto3). event_seq_suffix(seq) appends the encoding of `Event{message: {seq}}`, and a
-- protobuf parser merges a repeated embedded message field into the one before it, so the stored
-- payload parses as the event with its seq set. Field numbers: Event.message = 10, Message.seq = 3
-- (protos/chat/v1/common.proto); tests/test_message_send_path.py checks the round trip.

CREATE FUNCTION event_seq_suffix(seq bigint) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE STRICT
AS $$
DECLARE
    v bigint := seq;
    inner_field bytea := '\x18'::bytea;  -- Message.seq: field 3, varint
BEGIN
    LOOP
        IF v < 128 THEN
            inner_field := inner_field || set_byte('\x00'::bytea, 0, v::int);
            EXIT;
        END IF;
        inner_field := inner_field || set_byte('\x00'::bytea, 0, ((v & 127) | 128)::int);
        v := v >> 7;
    END LOOP;
    -- Event.message: field 10, length-delimited; the inner field is at most 11 bytes.
    RETURN '\x52'::bytea || set_byte('\x00'::bytea, 0, length(inner_field)) || inner_field;
END $$;

-- Returns (created, the row). created is false when the sender already used this client_message_id:
-- the row is then the original, and nothing was written. A concurrent send of the same id that
-- commits between the check and the insert makes the insert fail with a unique violation on
-- messages_client_id, which rolls back the seq taken; the caller then reads the original.
-- p_notify: NOTIFY the outbox relays (only when the calling process runs none to wake directly).
CREATE FUNCTION send_message(
    p_message_id uuid, p_conversation_id uuid, p_sender_id text, p_content text, p_content_encrypted bytea,
    p_enc_algorithm text, p_enc_key_id text, p_client_message_id text, p_reply_to_id uuid,
    p_created_at timestamptz, p_payload bytea, p_notify boolean,
    OUT created boolean, OUT msg messages)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    taken bigint;
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
                          enc_key_id, client_message_id, reply_to_id, created_at)
        VALUES (p_message_id, p_conversation_id, taken, p_sender_id, p_content, p_content_encrypted,
                p_enc_algorithm, p_enc_key_id, p_client_message_id, p_reply_to_id, p_created_at)
        RETURNING * INTO msg;
    INSERT INTO outbox (payload) VALUES (p_payload || event_seq_suffix(taken));
    IF p_notify THEN
        PERFORM pg_notify(current_schema() || '_outbox', '');
    END IF;
    created := true;
END $$;
