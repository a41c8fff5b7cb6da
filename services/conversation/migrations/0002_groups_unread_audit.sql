-- Group conversations, the conversation list's order, unread counting and the audit log.
--
-- Query paths and the index each one uses:
--   * membership (GetMembership, every permission check, participant lists): participants' primary
--     key (conversation_id, user_id); the list in seniority order and "promote the longest-standing
--     participant" read participants_by_seniority (conversation_id, joined_at, user_id).
--   * "my conversations" (ListConversations) and ListContacts: participants_by_user (user_id,
--     conversation_id) finds the caller's rows, then conversations by primary key; the page is the
--     top N of those by (activity_at, created_at, conversation_id) with the keyset cursor applied.
--     A per-user index on activity would need activity copied onto every participant row, so each
--     message would rewrite up to 1,000 rows of a large group: a user's own participations (hundreds)
--     are cheaper to sort than that write amplification is to pay.
--   * the direct pair lookup: conversations_direct_pair (0001), also the uniqueness rule.
--   * unread counting: own_messages' primary key (conversation_id, user_id, seq).
--   * the audit trail, newest first, keyset paged: audit_by_conversation (conversation_id,
--     created_at DESC, id DESC).

ALTER TABLE conversations
    ADD COLUMN participant_count integer NOT NULL DEFAULT 0,
    -- The list's sort key: the last message's time, or the creation time before any message.
    ADD COLUMN activity_at timestamptz GENERATED ALWAYS AS (COALESCE(last_message_at, created_at)) STORED,
    -- Edit time of the previewed message, so an older edit arriving late never overwrites a newer one.
    ADD COLUMN last_edited_at timestamptz,
    ADD CONSTRAINT conversations_group_title CHECK (kind = 'direct' OR char_length(title) BETWEEN 1 AND 200);

UPDATE conversations c
   SET participant_count = (SELECT count(*) FROM participants p WHERE p.conversation_id = c.conversation_id);

CREATE INDEX participants_by_seniority ON participants (conversation_id, joined_at, user_id);

-- Seqs of a participant's own messages past their read position: one's own messages are never
-- unread. participants.own_unread counts these rows (kept in the same transaction); a row per seq
-- makes a replayed event a no-op, and a read receipt deletes the rows it covers.
CREATE TABLE own_messages (
    conversation_id uuid   NOT NULL,
    user_id         text   NOT NULL,
    seq             bigint NOT NULL,
    PRIMARY KEY (conversation_id, user_id, seq)
);

-- Privileged actions this service performed (participants added or removed by someone else, role
-- changes, promotions, deactivations). Append-only: the triggers below refuse UPDATE, DELETE and
-- TRUNCATE, so not even a bug in this service can rewrite the trail.
CREATE TABLE audit_log (
    id              bigserial PRIMARY KEY,
    conversation_id uuid NOT NULL REFERENCES conversations (conversation_id),
    actor_id        text NOT NULL,
    action          text NOT NULL,
    target          text NOT NULL DEFAULT '',
    request_id      text NOT NULL DEFAULT '',
    -- clock_timestamp, not now(): several entries of one transaction keep their order.
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX audit_by_conversation ON audit_log (conversation_id, created_at DESC, id DESC);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only (% refused)', TG_OP;
END
$$;
CREATE TRIGGER audit_log_no_update_or_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
