"""The message service's audit read path: entries of actions taken on someone else's message.

Entries are written by the action's own transaction (see Messages.delete) into the append-only
`audit_log`; the conversation service gathers them with ListMessageAuditEntries for its audit view.
"""

from __future__ import annotations

import base64

from psycopg_pool import AsyncConnectionPool

from chatmesh import errors
from chatmesh.audit import audit_entry
from chatmesh.gen.chat.v1 import common_pb2
from services.message import store
from services.message.access import parse_id

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


def encode_cursor(entry_id: int) -> str:
    return base64.urlsafe_b64encode(f"a:{entry_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = raw.partition(":")
        if kind != "a":
            raise ValueError(raw)
        return int(value)
    except ValueError:
        raise errors.invalid("INVALID_CURSOR", "cursor is not one this service handed out") from None


class Audit:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def list(self, conversation_id: str, limit: int, cursor: str) -> tuple[list[common_pb2.AuditEntry], str]:
        """Newest first; the cursor is the last entry's id, so pages never repeat or skip under appends."""
        conversation_id = parse_id(conversation_id, "conversation_id")
        if limit < 0:
            raise errors.invalid("INVALID_ARGUMENT", "limit must not be negative")
        limit = min(limit or DEFAULT_LIMIT, MAX_LIMIT)
        before = decode_cursor(cursor) if cursor else None
        async with self._pool.connection() as conn:
            rows = await store.list_audit(conn, conversation_id, limit=limit + 1, before_id=before)
        next_cursor = encode_cursor(rows[limit - 1].entry_id) if len(rows) > limit else ""
        return [audit_entry(r, "message") for r in rows[:limit]], next_cursor
