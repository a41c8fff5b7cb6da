"""SQL of the conversation service: one function per query, nothing else."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import class_row

SCHEMA = "conversation"


@dataclass
class UserRow:
    user_id: str
    display_name: str
    created_at: datetime


@dataclass
class ConversationRow:
    conversation_id: str
    kind: str
    title: str
    created_by: str
    active: bool
    created_at: datetime
    last_message_at: datetime | None
    last_message_id: str | None
    last_message_seq: int
    last_sender_id: str | None
    last_preview: str | None
    last_deleted: bool
    membership_version: int


@dataclass
class ParticipantRow:
    user_id: str
    role: str
    joined_at: datetime
    display_name: str


@dataclass
class ConversationView:
    """A conversation with its participants, as the read paths return it."""

    row: ConversationRow
    participants: list[ParticipantRow]


_CONVERSATION_COLUMNS = """conversation_id::text, kind, title, created_by, active, created_at, last_message_at,
    last_message_id::text, last_message_seq, last_sender_id, last_preview, last_deleted, membership_version"""


async def upsert_user(conn: psycopg.AsyncConnection, user_id: str, display_name: str) -> UserRow:
    async with conn.cursor(row_factory=class_row(UserRow)) as cur:
        await cur.execute(
            """INSERT INTO conversation.users (user_id, display_name) VALUES (%s, %s)
               ON CONFLICT (user_id) DO UPDATE
                 SET display_name = COALESCE(NULLIF(EXCLUDED.display_name, ''), users.display_name),
                     updated_at = now()
               RETURNING user_id, display_name, created_at""",
            (user_id, display_name),
        )
        row = await cur.fetchone()
        assert row is not None
        return row


async def get_user(conn: psycopg.AsyncConnection, user_id: str) -> UserRow | None:
    async with conn.cursor(row_factory=class_row(UserRow)) as cur:
        await cur.execute(
            "SELECT user_id, display_name, created_at FROM conversation.users WHERE user_id = %s", (user_id,))
        return await cur.fetchone()


async def find_direct(conn: psycopg.AsyncConnection, low: str, high: str) -> ConversationRow | None:
    async with conn.cursor(row_factory=class_row(ConversationRow)) as cur:
        await cur.execute(
            f"""SELECT {_CONVERSATION_COLUMNS} FROM conversation.conversations
                WHERE kind = 'direct' AND direct_low = %s AND direct_high = %s""",
            (low, high),
        )
        return await cur.fetchone()


async def insert_direct(conn: psycopg.AsyncConnection, creator: str, low: str, high: str) -> ConversationRow | None:
    """Insert the pair's direct conversation; None when a concurrent create won the unique index."""
    async with conn.cursor(row_factory=class_row(ConversationRow)) as cur:
        await cur.execute(
            f"""INSERT INTO conversation.conversations (kind, created_by, direct_low, direct_high)
                VALUES ('direct', %s, %s, %s)
                ON CONFLICT (direct_low, direct_high) WHERE kind = 'direct' DO NOTHING
                RETURNING {_CONVERSATION_COLUMNS}""",
            (creator, low, high),
        )
        return await cur.fetchone()


async def insert_participants(conn: psycopg.AsyncConnection, conversation_id: str,
                              members: list[tuple[str, str]]) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO conversation.participants (conversation_id, user_id, role) VALUES (%s, %s, %s)",
            [(conversation_id, user_id, role) for user_id, role in members],
        )


async def get_conversation(conn: psycopg.AsyncConnection, conversation_id: str) -> ConversationRow | None:
    async with conn.cursor(row_factory=class_row(ConversationRow)) as cur:
        await cur.execute(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversation.conversations WHERE conversation_id = %s",
            (conversation_id,),
        )
        return await cur.fetchone()


async def list_participants(conn: psycopg.AsyncConnection, conversation_id: str) -> list[ParticipantRow]:
    async with conn.cursor(row_factory=class_row(ParticipantRow)) as cur:
        await cur.execute(
            """SELECT p.user_id, p.role, p.joined_at, u.display_name
               FROM conversation.participants p JOIN conversation.users u USING (user_id)
               WHERE p.conversation_id = %s ORDER BY p.joined_at, p.user_id""",
            (conversation_id,),
        )
        return await cur.fetchall()


async def list_contacts(conn: psycopg.AsyncConnection, user_id: str) -> list[str]:
    cur = await conn.execute(
        """SELECT DISTINCT other.user_id FROM conversation.participants me
           JOIN conversation.participants other
             ON other.conversation_id = me.conversation_id AND other.user_id <> me.user_id
           WHERE me.user_id = %s""",
        (user_id,),
    )
    return [row[0] for row in await cur.fetchall()]
