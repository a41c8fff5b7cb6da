-- The conversation service's schema: users, conversations, participants, its outbox and audit log.

CREATE TABLE users (
    user_id      text PRIMARY KEY CHECK (char_length(user_id) BETWEEN 1 AND 128),
    display_name text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE conversations (
    conversation_id    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    kind               text NOT NULL CHECK (kind IN ('direct', 'group')),
    title              text NOT NULL DEFAULT '',
    created_by         text NOT NULL REFERENCES users (user_id),
    -- For direct conversations, the pair ordered (low < high); NULL for groups. The unique index
    -- below makes "one direct conversation per pair" a database rule that concurrent creates cannot break.
    direct_low         text,
    direct_high        text,
    active             boolean NOT NULL DEFAULT true,
    created_at         timestamptz NOT NULL DEFAULT now(),
    -- Kept current from the message service's events (never by reading its schema).
    last_message_at    timestamptz,
    last_message_id    uuid,
    last_message_seq   bigint NOT NULL DEFAULT 0,
    last_sender_id     text,
    last_preview       text,
    last_deleted       boolean NOT NULL DEFAULT false,
    -- Grows with every membership change; callers caching membership compare it.
    membership_version bigint NOT NULL DEFAULT 1,
    CHECK ((kind = 'direct') = (direct_low IS NOT NULL AND direct_high IS NOT NULL))
);
CREATE UNIQUE INDEX conversations_direct_pair ON conversations (direct_low, direct_high) WHERE kind = 'direct';

CREATE TABLE participants (
    conversation_id uuid NOT NULL REFERENCES conversations (conversation_id),
    user_id         text NOT NULL REFERENCES users (user_id),
    role            text NOT NULL CHECK (role IN ('admin', 'moderator', 'member')),
    joined_at       timestamptz NOT NULL DEFAULT now(),
    -- Highest seq the user has read, and how many of the messages after it are their own.
    read_seq        bigint NOT NULL DEFAULT 0,
    own_unread      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, user_id)
);
-- "My conversations": the list path starts from the caller's participant rows.
CREATE INDEX participants_by_user ON participants (user_id, conversation_id);

-- The transactional outbox (events written in the same transaction as the change they describe) is
-- chatmesh/outbox.py's table: db.migrate creates it from outbox.DDL before this file. It stood here
-- first; databases that applied that text have the same table, and migrate never reruns a file.
