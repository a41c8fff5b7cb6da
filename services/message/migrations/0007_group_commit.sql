-- Group commit (services/message/group_commit.py): the sends that arrive while another batch is
-- committing share one statement and one transaction. Each send runs as today's send_message (0004),
-- inside a subtransaction of its own (a BEGIN ... EXCEPTION block), so one failing send writes
-- nothing and fails alone, while the others commit. The result is one row per send, in the order
-- given: (created, the row) as send_message answers, or the error's SQLSTATE and constraint name.
--
-- The arrays are parallel (one element per send). p_attachment_ids holds each send's upload ids
-- comma-joined ('' for none), as a uuid[][] must be rectangular. p_traceparents: each send's W3C
-- traceparent (NULL when untraced), set as the transaction-local `chatmesh.traceparent` before the
-- send, so its outbox row carries its own trace (0005's column default).
--
-- A concurrent send of the same client_message_id that committed first makes the insert fail on
-- messages_client_id: the subtransaction gives the seq back and the original is read here, as the
-- single send's caller does. The same id twice in one batch needs nothing: the second send's check
-- sees the first's row in this transaction. The service orders a batch by conversation, so batches
-- committing at once (several replicas) lock the conversations' counter rows in one order.
-- p_notify: NOTIFY the outbox relays once for the batch (only when the caller runs none to wake).
CREATE FUNCTION send_messages(
    p_message_ids uuid[], p_conversation_ids uuid[], p_sender_ids text[], p_contents text[],
    p_contents_encrypted bytea[], p_enc_algorithms text[], p_enc_key_ids text[], p_client_message_ids text[],
    p_reply_to_ids uuid[], p_created_ats timestamptz[], p_payloads bytea[], p_attachment_ids text[],
    p_attachments bytea[], p_traceparents text[], p_notify boolean)
RETURNS TABLE (created boolean, msg messages, error_state text, error_constraint text)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    any_created boolean := false;
    sent record;
BEGIN
    FOR i IN 1 .. coalesce(cardinality(p_message_ids), 0) LOOP
        created := NULL;
        msg := NULL;
        error_state := NULL;
        error_constraint := NULL;
        BEGIN
            PERFORM set_config('chatmesh.traceparent', coalesce(p_traceparents[i], ''), true);
            SELECT * INTO sent
                FROM send_message(p_message_ids[i], p_conversation_ids[i], p_sender_ids[i], p_contents[i],
                                  p_contents_encrypted[i], p_enc_algorithms[i], p_enc_key_ids[i],
                                  p_client_message_ids[i], p_reply_to_ids[i], p_created_ats[i], p_payloads[i],
                                  false, coalesce(string_to_array(p_attachment_ids[i], ',')::uuid[], '{}'),
                                  p_attachments[i]);
            created := sent.created;
            msg := sent.msg;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS error_state = RETURNED_SQLSTATE, error_constraint = CONSTRAINT_NAME;
            created := NULL;
            msg := NULL;
        END;
        IF error_state = '23505' AND error_constraint = 'messages_client_id' AND p_client_message_ids[i] IS NOT NULL THEN
            SELECT * INTO msg FROM messages
                WHERE sender_id = p_sender_ids[i] AND client_message_id = p_client_message_ids[i];
            IF FOUND THEN
                created := false;
                error_state := NULL;
                error_constraint := NULL;
            END IF;
        END IF;
        any_created := any_created OR coalesce(created, false);
        RETURN NEXT;
    END LOOP;
    IF any_created AND p_notify THEN
        PERFORM pg_notify(current_schema() || '_outbox', '');
    END IF;
END $$;
