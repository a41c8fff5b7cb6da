"""Message rules: who may send and read, and how a send stays ordered and idempotent.

Each write is one transaction that also writes its event to the outbox, so a committed change
always has its event and a rolled-back one never does.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from chatmesh import errors, outbox
from chatmesh.membership import MembershipCache
from services.message import convert, store
from services.message.store import MessageRow, NewMessage

DEFAULT_PAGE = 50
MAX_PAGE = 200
MAX_CLIENT_ID = 128


@dataclass(frozen=True)
class Limits:
    max_content: int = 4000


class _Duplicate(Exception):
    """The (sender, client_message_id) already exists: roll back, so the seq taken is given back."""


def parse_id(value: str, what: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise errors.invalid("INVALID_ID", f"{what} {value!r} is not a valid id") from None


class Messages:
    def __init__(self, pool: AsyncConnectionPool, membership: MembershipCache, limits: Limits = Limits()) -> None:
        self._pool = pool
        self._membership = membership
        self._limits = limits

    async def send(self, sender: str, new: NewMessage) -> tuple[MessageRow, bool]:
        """Store a message with the next seq; a resend of a client_message_id returns the original."""
        new.conversation_id = parse_id(new.conversation_id, "conversation_id")
        if new.reply_to_id:
            new.reply_to_id = parse_id(new.reply_to_id, "reply_to_id")
        self._validate_content(new)
        if new.client_message_id and len(new.client_message_id) > MAX_CLIENT_ID:
            raise errors.invalid("INVALID_ARGUMENT", f"client_message_id exceeds {MAX_CLIENT_ID} characters")
        (await self._membership.get(new.conversation_id)).require_participant(sender)
        async with self._pool.connection() as conn:
            if new.client_message_id and (old := await store.get_by_client_id(conn, sender, new.client_message_id)):
                return self._same_conversation(old, new), False
            try:
                async with conn.transaction():
                    seq = await store.next_seq(conn, new.conversation_id)
                    row = await store.insert_message(conn, seq, new)
                    if row is None:
                        raise _Duplicate
                    await outbox.enqueue(conn, store.SCHEMA, [convert.message_event("chat:message_received", row)])
                    return row, True
            except _Duplicate:
                assert new.client_message_id
                old = await store.get_by_client_id(conn, sender, new.client_message_id)
                assert old is not None
                return self._same_conversation(old, new), False

    async def history(self, reader: str, conversation_id: str, *, limit: int, before_seq: int,
                      after_seq: int) -> tuple[list[MessageRow], bool]:
        conversation_id = parse_id(conversation_id, "conversation_id")
        if limit < 0 or before_seq < 0 or after_seq < 0:
            raise errors.invalid("INVALID_ARGUMENT", "limit, before_seq and after_seq must not be negative")
        if before_seq and after_seq:
            raise errors.invalid("INVALID_ARGUMENT", "give before_seq or after_seq, not both")
        limit = min(limit or DEFAULT_PAGE, MAX_PAGE)
        (await self._membership.get(conversation_id)).require_participant(reader)
        async with self._pool.connection() as conn:
            rows = await store.list_messages(conn, conversation_id, limit=limit + 1,
                                             before_seq=before_seq or None, after_seq=after_seq or None)
        has_more = len(rows) > limit
        if has_more:
            rows = rows[:limit] if after_seq else rows[1:]
        return rows, has_more

    def _validate_content(self, new: NewMessage) -> None:
        if new.content_encrypted:
            if new.content:
                raise errors.invalid("INVALID_ARGUMENT", "send content or content_encrypted, not both")
            if len(new.content_encrypted) > self._limits.max_content * 4:
                raise errors.invalid("CONTENT_TOO_LONG", "encrypted content is too large")
            return
        if not new.content.strip():
            raise errors.invalid("EMPTY_CONTENT", "content must not be blank")
        if len(new.content) > self._limits.max_content:
            raise errors.invalid("CONTENT_TOO_LONG", f"content exceeds {self._limits.max_content} characters")

    @staticmethod
    def _same_conversation(old: MessageRow, new: NewMessage) -> MessageRow:
        if old.conversation_id != new.conversation_id:
            raise errors.conflict("CLIENT_MESSAGE_ID_REUSED",
                                  "client_message_id was already used for another conversation")
        return old
