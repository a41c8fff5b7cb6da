"""SQL of the projection: the last-message preview and per-participant read positions, kept from the
message service's events. Every statement only moves state forward, so a replayed or late event is a
no-op (the guards are in the WHERE clauses)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg


@dataclass(frozen=True)
class SeenMessage:
    conversation_id: str
    message_id: str
    seq: int
    sender_id: str
    preview: str | None  # None for a deleted message
    deleted: bool
    sent_at: datetime | None
    edited_at: datetime | None


async def advance_last_message(conn: psycopg.AsyncConnection, m: SeenMessage) -> bool:
    """Make m the conversation's last message if its seq is newer; False when it is not."""
    cur = await conn.execute(
        """UPDATE conversation.conversations
           SET last_message_seq = %s, last_message_id = %s, last_sender_id = %s, last_preview = %s,
               last_deleted = %s, last_message_at = %s, last_edited_at = %s
           WHERE conversation_id = %s AND last_message_seq < %s""",
        (m.seq, m.message_id, m.sender_id, m.preview, m.deleted, m.sent_at, m.edited_at, m.conversation_id, m.seq),
    )
    return cur.rowcount > 0


async def refresh_last_message(conn: psycopg.AsyncConnection, m: SeenMessage) -> None:
    """An edit or deletion of the current last message: a deletion sticks, an older edit never wins."""
    await conn.execute(
        """UPDATE conversation.conversations
           SET last_deleted = last_deleted OR %(deleted)s,
               last_preview = CASE WHEN last_deleted OR %(deleted)s THEN NULL ELSE %(preview)s END,
               last_edited_at = GREATEST(last_edited_at, %(edited)s)
           WHERE conversation_id = %(c)s AND last_message_seq = %(seq)s AND last_message_id = %(id)s
             AND (%(deleted)s OR last_edited_at IS NULL OR %(edited)s::timestamptz IS NULL
                  OR %(edited)s >= last_edited_at)""",
        {"deleted": m.deleted, "preview": m.preview, "edited": m.edited_at, "c": m.conversation_id,
         "seq": m.seq, "id": m.message_id},
    )


async def lock_read_seq(conn: psycopg.AsyncConnection, conversation_id: str, user_id: str) -> int | None:
    """The participant's read position, row locked for this transaction; None for a non-participant."""
    cur = await conn.execute(
        """SELECT read_seq FROM conversation.participants WHERE conversation_id = %s AND user_id = %s
           FOR UPDATE""",
        (conversation_id, user_id),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else None


async def add_own_message(conn: psycopg.AsyncConnection, conversation_id: str, user_id: str, seq: int) -> None:
    """Note a message of the participant's own past their read position (once per seq)."""
    await conn.execute(
        """WITH added AS (
               INSERT INTO conversation.own_messages (conversation_id, user_id, seq) VALUES (%(c)s, %(u)s, %(s)s)
               ON CONFLICT DO NOTHING RETURNING 1)
           UPDATE conversation.participants SET own_unread = own_unread + (SELECT count(*) FROM added)
           WHERE conversation_id = %(c)s AND user_id = %(u)s""",
        {"c": conversation_id, "u": user_id, "s": seq},
    )


async def advance_read(conn: psycopg.AsyncConnection, conversation_id: str, user_id: str, seq: int) -> None:
    """Move the read position forward; own messages it now covers stop being subtracted."""
    await conn.execute(
        """WITH covered AS (
               DELETE FROM conversation.own_messages
               WHERE conversation_id = %(c)s AND user_id = %(u)s AND seq <= %(s)s RETURNING 1)
           UPDATE conversation.participants
           SET read_seq = %(s)s, own_unread = own_unread - (SELECT count(*) FROM covered)
           WHERE conversation_id = %(c)s AND user_id = %(u)s AND read_seq < %(s)s""",
        {"c": conversation_id, "u": user_id, "s": seq},
    )
