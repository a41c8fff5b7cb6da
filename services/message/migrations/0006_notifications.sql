-- Push notifications (issue 19, item 1): the devices a push may reach, and the notifier's state.
--
-- The notifier (services/message/notifier.py) never writes per recipient on the way in: a message
-- makes one upsert of its conversation's row in notify_due, whatever the number of participants.
-- When that row falls due, the recipients are compared with their delivered positions (positions,
-- 0001) in one pass, and only those notified get a row in notify_marks.

-- A user's devices. A push token names one app install: registered again by another user (the app
-- was signed into another account), it moves to them, so one token never reaches two users.
CREATE TABLE devices (
    device_id  uuid PRIMARY KEY,
    user_id    text NOT NULL,
    platform   text NOT NULL CHECK (platform IN ('apns', 'fcm', 'web_push')),
    push_token text NOT NULL CHECK (char_length(push_token) BETWEEN 1 AND 4096),
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (platform, push_token)
);
-- Listing a user's devices, and the devices of the users a batch of notifications goes to.
CREATE INDEX devices_by_user ON devices (user_id);

-- Conversations with messages not yet checked for notifications: through_seq is the latest message
-- the notifier has seen, due_at when the oldest unchecked one has waited the delay. A replica
-- claims a due row by moving due_at forward (a lease), so replicas never check one together.
CREATE TABLE notify_due (
    conversation_id uuid PRIMARY KEY,
    through_seq     bigint NOT NULL,
    due_at          timestamptz NOT NULL
);
CREATE INDEX notify_due_by_time ON notify_due (due_at);

-- Per notified (or muted) recipient: messages up to notified_seq were checked for them, so a
-- message is notified once; notified_at starts the collapse window.
CREATE TABLE notify_marks (
    conversation_id uuid NOT NULL,
    user_id         text NOT NULL,
    notified_seq    bigint NOT NULL,
    notified_at     timestamptz,
    PRIMARY KEY (conversation_id, user_id)
);
