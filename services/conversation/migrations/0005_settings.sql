-- Conversation settings (issue 19, item 3): a group's description, archiving (read-only), and each
-- participant's own mute and pin.
--
-- Query paths:
--   * "my conversations" (ListConversations) still starts from participants_by_user (0002) and sorts
--     the caller's rows; pinned conversations first is one more sort key on those rows
--     (participants.pinned), so no index changes: a user's participations are few enough to sort.
--   * GetMembership reads archived_at with the conversation's row and the muted participants with
--     the participant list it already reads (participants' primary key).

ALTER TABLE conversations
    ADD COLUMN description text NOT NULL DEFAULT '' CHECK (char_length(description) <= 1000),
    -- Set while the conversation is archived (read-only); NULL otherwise.
    ADD COLUMN archived_at timestamptz;

ALTER TABLE participants
    -- Muted: the conversation still counts unread for them, but notifies them of nothing.
    ADD COLUMN muted  boolean NOT NULL DEFAULT false,
    -- Pinned: listed before every unpinned conversation.
    ADD COLUMN pinned boolean NOT NULL DEFAULT false;
