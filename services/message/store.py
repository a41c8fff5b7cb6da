"""SQL of the message service: one function per query, nothing else."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import class_row

SCHEMA = "message"


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


_COLUMNS = """message_id::text, conversation_id::text, seq, sender_id, content, content_encrypted, enc_algorithm,
    enc_key_id, client_message_id, reply_to_id::text, created_at, edited_at, deleted_at"""


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


async def next_seq(conn: psycopg.AsyncConnection, conversation_id: str) -> int:
    """Hand out the conversation's next seq, locking its counter row until the transaction ends."""
    cur = await conn.execute(
        """INSERT INTO message.conversation_seq AS s (conversation_id, last_seq) VALUES (%s, 1)
           ON CONFLICT (conversation_id) DO UPDATE SET last_seq = s.last_seq + 1
           RETURNING last_seq""",
        (conversation_id,),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def insert_message(conn: psycopg.AsyncConnection, seq: int, new: NewMessage) -> MessageRow | None:
    """Store a message; None when (sender, client_message_id) already exists."""
    async with conn.cursor(row_factory=class_row(MessageRow)) as cur:
        await cur.execute(
            f"""INSERT INTO message.messages (conversation_id, seq, sender_id, content, content_encrypted,
                    enc_algorithm, enc_key_id, client_message_id, reply_to_id)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (sender_id, client_message_id) WHERE client_message_id IS NOT NULL DO NOTHING
                RETURNING {_COLUMNS}""",
            (new.conversation_id, seq, new.sender_id, new.content, new.content_encrypted, new.enc_algorithm,
             new.enc_key_id, new.client_message_id, new.reply_to_id),
        )
        return await cur.fetchone()


async def get_by_client_id(conn: psycopg.AsyncConnection, sender_id: str, client_message_id: str) -> MessageRow | None:
    async with conn.cursor(row_factory=class_row(MessageRow)) as cur:
        await cur.execute(
            f"SELECT {_COLUMNS} FROM message.messages WHERE sender_id = %s AND client_message_id = %s",
            (sender_id, client_message_id),
        )
        return await cur.fetchone()


async def get_message(conn: psycopg.AsyncConnection, message_id: str) -> MessageRow | None:
    async with conn.cursor(row_factory=class_row(MessageRow)) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM message.messages WHERE message_id = %s", (message_id,))
        return await cur.fetchone()


async def list_messages(conn: psycopg.AsyncConnection, conversation_id: str, *, limit: int,
                        before_seq: int | None, after_seq: int | None) -> list[MessageRow]:
    """A page in ascending seq: the newest `limit` before `before_seq`, or the oldest after `after_seq`."""
    async with conn.cursor(row_factory=class_row(MessageRow)) as cur:
        if after_seq is not None:
            await cur.execute(
                f"""SELECT {_COLUMNS} FROM message.messages
                    WHERE conversation_id = %s AND seq > %s ORDER BY seq LIMIT %s""",
                (conversation_id, after_seq, limit),
            )
            return await cur.fetchall()
        await cur.execute(
            f"""SELECT * FROM (SELECT {_COLUMNS} FROM message.messages
                    WHERE conversation_id = %s AND seq < %s ORDER BY seq DESC LIMIT %s) page ORDER BY seq""",
            (conversation_id, before_seq if before_seq is not None else 2**62, limit),
        )
        return await cur.fetchall()


async def delivered_positions(conn: psycopg.AsyncConnection, user_id: str) -> dict[str, int]:
    cur = await conn.execute(
        "SELECT conversation_id::text, delivered_seq FROM message.positions WHERE user_id = %s", (user_id,))
    return {row[0]: int(row[1]) for row in await cur.fetchall()}
