"""SQL of the message service: one function per query, nothing else."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import psycopg
from psycopg.rows import class_row

from chatmesh import outbox
from chatmesh.audit import AuditRow

SCHEMA = "message"
# Tables a shared module owns in this schema, migrated before the service's own files (chatmesh/db.py).
SHARED_DDL = (outbox.DDL,)


@dataclass
class MessageRow:
    message_id: str
    conversation_id: str
    seq: int
    sender_id: str
    content: str
    content_encrypted: bytes | None
    enc_algorithm: str
    enc_key_id: str
    client_message_id: str | None
    reply_to_id: str | None
    created_at: datetime
    edited_at: datetime | None
    deleted_at: datetime | None
    # A serialized Message holding only its attachments' metadata (migration 0003), or None.
    attachments: bytes | None = None
    # Its thread (migration 0004): live replies naming it, and the time of the latest.
    reply_count: int = 0
    last_reply_at: datetime | None = None


_COLUMNS = """message_id::text, conversation_id::text, seq, sender_id, content, content_encrypted, enc_algorithm,
    enc_key_id, client_message_id, reply_to_id::text, created_at, edited_at, deleted_at, attachments, reply_count,
    last_reply_at"""


@dataclass
class NewMessage:
    conversation_id: str
    sender_id: str
    content: str
    content_encrypted: bytes | None
    enc_algorithm: str
    enc_key_id: str
    client_message_id: str | None
    reply_to_id: str | None
    attachment_ids: list[str] = field(default_factory=list)


_SENT_COLUMNS = ", ".join(f"(msg).{c.strip()}" for c in _COLUMNS.split(","))


async def send_message(
    conn: psycopg.AsyncConnection,
    new: NewMessage,
    message_id: str,
    created_at: datetime,
    payload: bytes,
    *,
    notify: bool,
    attachments: bytes | None = None,
) -> tuple[bool, MessageRow]:
    """(created, row): the duplicate check, the next seq, the message and its outbox event in one
    statement and one implicit transaction (migration 0002). `payload` is the event serialized without
    the seq, which the function appends. For a client_message_id the sender already used: (False, the
    original), and nothing is written. A concurrent duplicate raises UniqueViolation on
    messages_client_id, and nothing is written either (the seq taken is given back). The uploads of
    `new.attachment_ids` are attached in the same statement; one no longer free raises
    RaiseException with constraint name attachments_available, and nothing is written. A reply
    updates its root's reply_count and last_reply_at in the same statement (migration 0004) and
    appends the new count to the event; a reply_to_id that is not a message of the conversation
    raises RaiseException with constraint name reply_to_found, and nothing is written."""
    cur = await conn.execute(
        f"""SELECT created, {_SENT_COLUMNS}
            FROM message.send_message(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::uuid[], %s)""",
        (
            message_id,
            new.conversation_id,
            new.sender_id,
            new.content,
            new.content_encrypted,
            new.enc_algorithm,
            new.enc_key_id,
            new.client_message_id,
            new.reply_to_id,
            created_at,
            payload,
            notify,
            new.attachment_ids,
            attachments,
        ),
    )
    row = await cur.fetchone()
    assert row is not None
    return bool(row[0]), MessageRow(*row[1:])


@dataclass
class Draft:
    """A send ready for the database: the message, with the id, time and event the service chose."""

    new: NewMessage
    message_id: str
    created_at: datetime
    payload: bytes
    attachments: bytes | None
    traceparent: str | None


@dataclass
class Sent:
    """One send's outcome in a batch: (created, row) as `send_message` answers, or the error that
    rolled back its subtransaction (SQLSTATE, constraint name: '' when none)."""

    created: bool
    row: MessageRow | None
    error_state: str | None
    error_constraint: str


async def send_messages(conn: psycopg.AsyncConnection, drafts: list[Draft], *, notify: bool) -> list[Sent]:
    """Many sends in one statement and one implicit transaction (migration 0007): each is
    `send_message` in a subtransaction of its own, so a failing one writes nothing and the others
    commit. One result per draft, in order. A concurrent duplicate of a client_message_id comes back
    as (False, the original), like a resend; the same id twice in `drafts` stores once."""
    cur = await conn.execute(
        f"""SELECT created, {_SENT_COLUMNS}, error_state, error_constraint
            FROM message.send_messages(%s::uuid[], %s::uuid[], %s::text[], %s::text[], %s::bytea[], %s::text[],
                %s::text[], %s::text[], %s::uuid[], %s::timestamptz[], %s::bytea[], %s::text[], %s::bytea[],
                %s::text[], %s)""",
        (
            [d.message_id for d in drafts],
            [d.new.conversation_id for d in drafts],
            [d.new.sender_id for d in drafts],
            [d.new.content for d in drafts],
            [d.new.content_encrypted for d in drafts],
            [d.new.enc_algorithm for d in drafts],
            [d.new.enc_key_id for d in drafts],
            [d.new.client_message_id for d in drafts],
            [d.new.reply_to_id for d in drafts],
            [d.created_at for d in drafts],
            [d.payload for d in drafts],
            [",".join(d.new.attachment_ids) for d in drafts],
            [d.attachments for d in drafts],
            [d.traceparent for d in drafts],
            notify,
        ),
    )
    results = []
    for r in await cur.fetchall():
        if r[-2] is not None:
            results.append(Sent(False, None, str(r[-2]), str(r[-1] or "")))
        else:
            results.append(Sent(bool(r[0]), MessageRow(*r[1:-2]), None, ""))
    return results


async def get_by_client_id(conn: psycopg.AsyncConnection, sender_id: str, client_message_id: str) -> MessageRow | None:
    async with conn.cursor(row_factory=class_row(MessageRow)) as cur:
        await cur.execute(
            f"SELECT {_COLUMNS} FROM message.messages WHERE sender_id = %s AND client_message_id = %s",
            (sender_id, client_message_id),
        )
        return await cur.fetchone()


async def get_message(conn: psycopg.AsyncConnection, message_id: str, *, for_update: bool = False) -> MessageRow | None:
    """One message; `for_update` locks its row until the transaction ends (edit, delete)."""
    lock = " FOR UPDATE" if for_update else ""
    async with conn.cursor(row_factory=class_row(MessageRow)) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM message.messages WHERE message_id = %s{lock}", (message_id,))
        return await cur.fetchone()


async def record_edit(conn: psycopg.AsyncConnection, message_id: str, previous_content: str) -> None:
    """Keep the text being replaced as the next version (the original is version 1)."""
    await conn.execute(
        """INSERT INTO message.message_edits (message_id, version, content)
           SELECT %s, COALESCE(MAX(version), 0) + 1, %s FROM message.message_edits WHERE message_id = %s""",
        (message_id, previous_content, message_id),
    )


async def update_content(conn: psycopg.AsyncConnection, message_id: str, content: str) -> MessageRow:
    async with conn.cursor(row_factory=class_row(MessageRow)) as cur:
        await cur.execute(
            f"""UPDATE message.messages SET content = %s, edited_at = now() WHERE message_id = %s
                RETURNING {_COLUMNS}""",
            (content, message_id),
        )
        row = await cur.fetchone()
        assert row is not None
        return row


async def list_edits(conn: psycopg.AsyncConnection, message_id: str) -> list[tuple[int, str]]:
    cur = await conn.execute(
        "SELECT version, content FROM message.message_edits WHERE message_id = %s ORDER BY version", (message_id,)
    )
    return [(int(r[0]), str(r[1])) for r in await cur.fetchall()]


async def mark_deleted(conn: psycopg.AsyncConnection, message_id: str, actor_id: str) -> MessageRow:
    """Soft delete: the row stays (seq without a gap, audit), every read path hides its content."""
    async with conn.cursor(row_factory=class_row(MessageRow)) as cur:
        await cur.execute(
            f"""UPDATE message.messages SET deleted_at = now(), deleted_by = %s WHERE message_id = %s
                RETURNING {_COLUMNS}""",
            (actor_id, message_id),
        )
        row = await cur.fetchone()
        assert row is not None
        return row


async def list_messages(
    conn: psycopg.AsyncConnection, conversation_id: str, *, limit: int, before_seq: int | None, after_seq: int | None
) -> list[MessageRow]:
    """A page in ascending seq: the newest `limit` before `before_seq`, or the oldest after `after_seq`."""
    return await _page(conn, "conversation_id", conversation_id, limit, before_seq, after_seq)


async def list_replies(
    conn: psycopg.AsyncConnection, root_id: str, *, limit: int, before_seq: int | None, after_seq: int | None
) -> list[MessageRow]:
    """A page of a thread in ascending seq, as `list_messages` pages history (index messages_replies)."""
    return await _page(conn, "reply_to_id", root_id, limit, before_seq, after_seq)


async def _page(
    conn: psycopg.AsyncConnection,
    column: Literal["conversation_id", "reply_to_id"],
    value: str,
    limit: int,
    before_seq: int | None,
    after_seq: int | None,
) -> list[MessageRow]:
    """The messages whose `column` is `value`, paged by seq (one query: the two pagers differ only in it)."""
    async with conn.cursor(row_factory=class_row(MessageRow)) as cur:
        if after_seq is not None:
            await cur.execute(
                f"""SELECT {_COLUMNS} FROM message.messages
                    WHERE {column} = %s AND seq > %s ORDER BY seq LIMIT %s""",
                (value, after_seq, limit),
            )
            return await cur.fetchall()
        await cur.execute(
            f"""SELECT * FROM (SELECT {_COLUMNS} FROM message.messages
                    WHERE {column} = %s AND seq < %s ORDER BY seq DESC LIMIT %s) page ORDER BY seq""",
            (value, before_seq if before_seq is not None else 2**62, limit),
        )
        return await cur.fetchall()


async def reply_deleted(conn: psycopg.AsyncConnection, root_id: str) -> MessageRow | None:
    """A reply of `root_id` was just deleted (in this transaction): one fewer live reply, and the last
    reply time is the latest live one's again (NULL when none is left). The root after it, or None
    when the root is not there."""
    async with conn.cursor(row_factory=class_row(MessageRow)) as cur:
        await cur.execute(
            f"""UPDATE message.messages SET reply_count = GREATEST(reply_count - 1, 0),
                    last_reply_at = (SELECT r.created_at FROM message.messages r
                                     WHERE r.reply_to_id = %s AND r.deleted_at IS NULL ORDER BY r.seq DESC LIMIT 1)
                WHERE message_id = %s RETURNING {_COLUMNS}""",
            (root_id, root_id),
        )
        return await cur.fetchone()


async def thread_participants(conn: psycopg.AsyncConnection, root_id: str) -> list[str]:
    """Who takes part in a thread: the root's sender first, then everyone who replied (deleted replies
    too: they took part), in the order of their first reply. Empty for an unknown root. Callers that
    notify should still check membership: a participant may have left the conversation since."""
    cur = await conn.execute(
        """SELECT sender_id FROM (
               SELECT sender_id, 0 AS seq FROM message.messages WHERE message_id = %s
               UNION ALL
               SELECT sender_id, min(seq) FROM message.messages WHERE reply_to_id = %s GROUP BY sender_id
           ) t GROUP BY sender_id ORDER BY min(seq)""",
        (root_id, root_id),
    )
    return [str(r[0]) for r in await cur.fetchall()]


async def search(
    conn: psycopg.AsyncConnection, conversation_ids: list[str], query: str, *, limit: int
) -> list[MessageRow]:
    """Live plaintext messages of these conversations matching `query` (web-search syntax), newest first.

    The GIN index on search_vector finds the matches; deleted and encrypted messages have no vector.
    """
    async with conn.cursor(row_factory=class_row(MessageRow)) as cur:
        await cur.execute(
            f"""SELECT {_COLUMNS} FROM message.messages
                WHERE search_vector @@ websearch_to_tsquery('simple', %s) AND conversation_id = ANY(%s::uuid[])
                ORDER BY created_at DESC, seq DESC LIMIT %s""",
            (query, conversation_ids, limit),
        )
        return await cur.fetchall()


@dataclass
class Position:
    user_id: str
    delivered_seq: int
    read_seq: int


async def positions(conn: psycopg.AsyncConnection, conversation_id: str) -> dict[str, Position]:
    """Every participant's positions in a conversation (O(participants), whatever the history's length)."""
    async with conn.cursor(row_factory=class_row(Position)) as cur:
        await cur.execute(
            "SELECT user_id, delivered_seq, read_seq FROM message.positions WHERE conversation_id = %s",
            (conversation_id,),
        )
        return {p.user_id: p for p in await cur.fetchall()}


async def advance_position(
    conn: psycopg.AsyncConnection, conversation_id: str, user_id: str, *, delivered_seq: int, read_seq: int
) -> Position | None:
    """Move a user's positions forward, never back; None when neither moved (nothing to announce).

    One statement, so concurrent updates of the same user cannot interleave: the row lock of the
    upsert serializes them and GREATEST keeps the highest. Read implies delivered: callers pass
    delivered_seq >= read_seq.
    """
    async with conn.cursor(row_factory=class_row(Position)) as cur:
        await cur.execute(
            """INSERT INTO message.positions AS p (conversation_id, user_id, delivered_seq, read_seq)
               VALUES (%s, %s, %s, %s)
               ON CONFLICT (conversation_id, user_id) DO UPDATE
                   SET delivered_seq = GREATEST(p.delivered_seq, EXCLUDED.delivered_seq),
                       read_seq = GREATEST(p.read_seq, EXCLUDED.read_seq)
                   WHERE p.delivered_seq < EXCLUDED.delivered_seq OR p.read_seq < EXCLUDED.read_seq
               RETURNING user_id, delivered_seq, read_seq""",
            (conversation_id, user_id, delivered_seq, read_seq),
        )
        return await cur.fetchone()


async def position(conn: psycopg.AsyncConnection, conversation_id: str, user_id: str) -> Position:
    async with conn.cursor(row_factory=class_row(Position)) as cur:
        await cur.execute(
            """SELECT user_id, delivered_seq, read_seq FROM message.positions
               WHERE conversation_id = %s AND user_id = %s""",
            (conversation_id, user_id),
        )
        return await cur.fetchone() or Position(user_id, 0, 0)


async def add_reaction(conn: psycopg.AsyncConnection, message_id: str, user_id: str, emoji: str) -> bool:
    """True when added; False when this user already left this emoji (idempotent)."""
    cur = await conn.execute(
        """INSERT INTO message.reactions (message_id, user_id, emoji) VALUES (%s, %s, %s)
           ON CONFLICT DO NOTHING""",
        (message_id, user_id, emoji),
    )
    return cur.rowcount == 1


async def remove_reaction(conn: psycopg.AsyncConnection, message_id: str, user_id: str, emoji: str) -> bool:
    """True when removed; False when there was nothing to remove (idempotent)."""
    cur = await conn.execute(
        "DELETE FROM message.reactions WHERE message_id = %s AND user_id = %s AND emoji = %s",
        (message_id, user_id, emoji),
    )
    return cur.rowcount == 1


async def reactions(conn: psycopg.AsyncConnection, message_ids: list[str]) -> dict[str, list[tuple[str, list[str]]]]:
    """Per message: (emoji, user ids) in order of each emoji's first use, users in the order they reacted."""
    cur = await conn.execute(
        """SELECT message_id::text, emoji, array_agg(user_id ORDER BY created_at, user_id)
           FROM message.reactions WHERE message_id = ANY(%s::uuid[])
           GROUP BY message_id, emoji ORDER BY message_id, MIN(created_at), emoji""",
        (message_ids,),
    )
    result: dict[str, list[tuple[str, list[str]]]] = {}
    for message_id, emoji, users in await cur.fetchall():
        result.setdefault(message_id, []).append((emoji, list(users)))
    return result


async def append_audit(
    conn: psycopg.AsyncConnection, conversation_id: str, actor_id: str, action: str, target: str, request_id: str
) -> None:
    await conn.execute(
        """INSERT INTO message.audit_log (conversation_id, actor_id, action, target, request_id)
           VALUES (%s, %s, %s, %s, %s)""",
        (conversation_id, actor_id, action, target, request_id),
    )


async def list_audit(
    conn: psycopg.AsyncConnection, conversation_id: str, *, limit: int, before_id: int | None
) -> list[AuditRow]:
    """Newest first, keyset on entry_id (the index audit_log_by_conversation)."""
    async with conn.cursor(row_factory=class_row(AuditRow)) as cur:
        await cur.execute(
            """SELECT entry_id, conversation_id::text, actor_id, action, target, request_id, created_at
               FROM message.audit_log WHERE conversation_id = %s AND entry_id < %s
               ORDER BY entry_id DESC LIMIT %s""",
            (conversation_id, before_id if before_id is not None else 2**62, limit),
        )
        return await cur.fetchall()


async def undelivered_messages(
    conn: psycopg.AsyncConnection, user_id: str, conversation_ids: list[str], limit: int
) -> list[MessageRow]:
    """The messages past the user's delivered position in each conversation: the offline buffer, from
    the source of truth. The user's own messages are included, as fan-out puts them in the user's
    inbox too (the user's other devices see what it sent): were the two to disagree, a resync would
    deliver an own message from the inbox after later seqs from the buffer. In seq order within a
    conversation (created_at can disagree with seq under concurrent sends); conversations by their
    oldest undelivered message. Served by UNIQUE (conversation_id, seq) and the positions key."""
    async with conn.cursor(row_factory=class_row(MessageRow)) as cur:
        await cur.execute(
            f"""SELECT {_COLUMNS} FROM message.messages m
                WHERE m.conversation_id = ANY(%s::uuid[])
                  AND m.seq > COALESCE((SELECT p.delivered_seq FROM message.positions p
                                         WHERE p.conversation_id = m.conversation_id AND p.user_id = %s), 0)
                ORDER BY min(m.created_at) OVER (PARTITION BY m.conversation_id), m.conversation_id, m.seq
                LIMIT %s""",
            (conversation_ids, user_id, limit),
        )
        return await cur.fetchall()
