"""SQL of the audit log: append and read newest first (audit_by_conversation). There is no update or
delete here, and the table's triggers refuse them anyway."""

from __future__ import annotations

from datetime import datetime

import psycopg
from psycopg.rows import class_row

from chatmesh.audit import AuditRow


async def append(
    conn: psycopg.AsyncConnection, conversation_id: str, actor_id: str, action: str, target: str, request_id: str
) -> None:
    await conn.execute(
        """INSERT INTO conversation.audit_log (conversation_id, actor_id, action, target, request_id)
           VALUES (%s, %s, %s, %s, %s)""",
        (conversation_id, actor_id, action, target, request_id),
    )


async def page(
    conn: psycopg.AsyncConnection, conversation_id: str, limit: int, after: tuple[datetime, int] | None
) -> list[AuditRow]:
    keyset = "AND (created_at, id) < (%s, %s)" if after else ""
    async with conn.cursor(row_factory=class_row(AuditRow)) as cur:
        await cur.execute(
            f"""SELECT id AS entry_id, conversation_id::text, actor_id, action, target, request_id, created_at
                FROM conversation.audit_log WHERE conversation_id = %s {keyset}
                ORDER BY created_at DESC, id DESC LIMIT %s""",
            (conversation_id, *(after or ()), limit),
        )
        return await cur.fetchall()
