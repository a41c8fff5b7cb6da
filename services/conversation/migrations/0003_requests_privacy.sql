-- Private presence (issue 15, item 3): who has taken part in a conversation, direct conversation
-- requests, blocks and the hide-last-seen setting.
--
-- A user's presence is shown only to the other participants of conversations the user has taken
-- part in (`participants.engaged`: created or accepted it, or sent a message in it; the projection
-- sets it from the message service's events). ListContacts reads both directions from the
-- participants' primary key and participants_by_user (0002), engaged rows only.

ALTER TABLE participants ADD COLUMN engaged boolean NOT NULL DEFAULT false;
-- Conversations from before this migration keep showing presence as they did: every participant
-- counts as having taken part (who sent what is the message service's, not readable from here).
UPDATE participants SET engaged = true;

-- Direct conversations only (NULL for groups): 'accepted', 'pending' (a request the recipient has
-- neither accepted nor replied to), 'declined' (then also inactive) or 'blocked'. The requester is
-- created_by.
ALTER TABLE conversations
    ADD COLUMN request_state text CHECK (request_state IN ('accepted', 'pending', 'declined', 'blocked')),
    ADD CONSTRAINT conversations_request_state CHECK ((kind = 'direct') = (request_state IS NOT NULL)) NOT VALID;
UPDATE conversations SET request_state = 'accepted' WHERE kind = 'direct';
ALTER TABLE conversations VALIDATE CONSTRAINT conversations_request_state;

-- blocker blocked blocked: blocked may open no conversation with blocker (direct or group), nor add
-- them to one. "Who blocked me" (blocked_by) is the lookup every create makes.
CREATE TABLE blocks (
    blocker    text NOT NULL REFERENCES users (user_id),
    blocked    text NOT NULL REFERENCES users (user_id),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (blocker, blocked)
);
CREATE INDEX blocks_by_blocked ON blocks (blocked, blocker);

ALTER TABLE users ADD COLUMN hide_last_seen boolean NOT NULL DEFAULT false;
