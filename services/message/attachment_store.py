"""SQL of attachments (migration 0003): one function per query, nothing else."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import class_row


@dataclass
class AttachmentRow:
    attachment_id: str
    conversation_id: str
    uploader_id: str
    filename: str
    size_bytes: int
    storage_key: str
    state: str
    content_type: str
    sha256: str
    width: int
    height: int
    duration_ms: int
    has_thumbnail: bool
    message_id: str | None
    created_at: datetime
    # Of the message it is attached to: hidden once that message is deleted.
    message_deleted: bool = False


_COLUMNS = """a.attachment_id::text, a.conversation_id::text, a.uploader_id, a.filename, a.size_bytes, a.storage_key,
    a.state, a.content_type, a.sha256, a.width, a.height, a.duration_ms, a.has_thumbnail, a.message_id::text,
    a.created_at, m.deleted_at IS NOT NULL AS message_deleted"""
_FROM = "message.attachments a LEFT JOIN message.messages m ON m.message_id = a.message_id"


@dataclass
class Checked:
    """What the service found in the bytes."""

    content_type: str
    sha256: str
    width: int
    height: int
    duration_ms: int
    has_thumbnail: bool


async def create(
    conn: psycopg.AsyncConnection,
    attachment_id: str,
    conversation_id: str,
    uploader_id: str,
    filename: str,
    declared_type: str,
    size_bytes: int,
    storage_key: str,
) -> AttachmentRow:
    await conn.execute(
        """INSERT INTO message.attachments (attachment_id, conversation_id, uploader_id, filename, declared_type,
                                            size_bytes, storage_key)
           VALUES (%s, %s, %s, %s, %s, %s, %s)""",
        (attachment_id, conversation_id, uploader_id, filename, declared_type, size_bytes, storage_key),
    )
    row = await get(conn, attachment_id)
    assert row is not None
    return row


async def get(conn: psycopg.AsyncConnection, attachment_id: str, *, for_update: bool = False) -> AttachmentRow | None:
    lock = " FOR UPDATE OF a" if for_update else ""
    async with conn.cursor(row_factory=class_row(AttachmentRow)) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM {_FROM} WHERE a.attachment_id = %s{lock}", (attachment_id,))
        return await cur.fetchone()


async def get_many(conn: psycopg.AsyncConnection, attachment_ids: list[str]) -> list[AttachmentRow]:
    async with conn.cursor(row_factory=class_row(AttachmentRow)) as cur:
        await cur.execute(f"SELECT {_COLUMNS} FROM {_FROM} WHERE a.attachment_id = ANY(%s::uuid[])", (attachment_ids,))
        return await cur.fetchall()


async def mark_ready(conn: psycopg.AsyncConnection, attachment_id: str, checked: Checked) -> bool:
    """pending -> ready with what the bytes showed; False when it was no longer pending."""
    cur = await conn.execute(
        """UPDATE message.attachments SET state = 'ready', content_type = %s, sha256 = %s, width = %s, height = %s,
                  duration_ms = %s, has_thumbnail = %s
           WHERE attachment_id = %s AND state = 'pending'""",
        (
            checked.content_type,
            checked.sha256,
            checked.width,
            checked.height,
            checked.duration_ms,
            checked.has_thumbnail,
            attachment_id,
        ),
    )
    return cur.rowcount == 1


async def lock_expired(conn: psycopg.AsyncConnection, older_than_s: float, limit: int) -> list[tuple[str, str, bool]]:
    """(id, storage key, has thumbnail) of uploads never attached, created more than `older_than_s`
    ago, locked for the caller's transaction; rows another replica's collector holds are skipped."""
    cur = await conn.execute(
        """SELECT attachment_id::text, storage_key, has_thumbnail FROM message.attachments
           WHERE message_id IS NULL AND created_at < now() - make_interval(secs => %s)
           ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED""",
        (older_than_s, limit),
    )
    return [(str(r[0]), str(r[1]), bool(r[2])) for r in await cur.fetchall()]


async def delete(conn: psycopg.AsyncConnection, attachment_ids: list[str]) -> None:
    await conn.execute(
        "DELETE FROM message.attachments WHERE attachment_id = ANY(%s::uuid[]) AND message_id IS NULL",
        (attachment_ids,),
    )
