"""Conversation rules: who may create, see and change which conversation.

Functions here own their transaction (`async with conn.transaction()`), raise ChatError for
anything the caller got wrong, and write the membership event into the outbox in that same
transaction, so a committed change always has its event and a rolled-back one never does.
"""

from __future__ import annotations

import uuid
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from chatmesh import errors, outbox
from services.conversation import convert, store
from services.conversation.store import ConversationRow, ConversationView, UserRow


def parse_conversation_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise errors.invalid("INVALID_ID", f"conversation_id {value!r} is not a valid id") from None


class Conversations:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def upsert_user(self, user_id: str, display_name: str) -> UserRow:
        async with self._pool.connection() as conn:
            return await store.upsert_user(conn, user_id, display_name.strip()[:200])

    async def get_user(self, user_id: str) -> UserRow:
        async with self._pool.connection() as conn:
            user = await store.get_user(conn, user_id)
        if user is None:
            raise errors.not_found("USER_NOT_FOUND", f"user {user_id!r} does not exist")
        return user

    async def create_direct(self, caller: str, other: str) -> tuple[ConversationView, bool]:
        """The pair's one direct conversation: created now, or the existing one (created=False)."""
        if not other:
            raise errors.invalid("INVALID_ARGUMENT", "user_id is required")
        if other == caller:
            raise errors.invalid("SELF_CONVERSATION", "a direct conversation needs another user")
        low, high = sorted((caller, other))
        async with self._pool.connection() as conn:
            if existing := await store.find_direct(conn, low, high):
                return await self._view(conn, existing), False
            if await store.get_user(conn, other) is None:
                raise errors.not_found("USER_NOT_FOUND", f"user {other!r} does not exist")
            async with conn.transaction():
                row = await store.insert_direct(conn, caller, low, high)
                if row is not None:
                    await store.insert_participants(conn, row.conversation_id, [(low, "member"), (high, "member")])
                    view = await self._view(conn, row)
                    await outbox.enqueue(conn, store.SCHEMA, [convert.membership_event("conversation:created", view, caller)])
                    return view, True
            # A concurrent create won the unique index: return its conversation.
            winner = await store.find_direct(conn, low, high)
            assert winner is not None
            return await self._view(conn, winner), False

    async def get_for(self, caller: str, conversation_id: str) -> ConversationView:
        """A conversation the caller takes part in: 404 when it does not exist, 403 when not theirs."""
        conversation_id = parse_conversation_id(conversation_id)
        async with self._pool.connection() as conn:
            row = await store.get_conversation(conn, conversation_id)
            if row is None:
                raise errors.not_found("CONVERSATION_NOT_FOUND", f"conversation {conversation_id} does not exist")
            view = await self._view(conn, row)
        if not any(p.user_id == caller for p in view.participants):
            raise errors.forbidden("NOT_PARTICIPANT", "you are not a participant of this conversation")
        return view

    async def membership(self, conversation_id: str) -> ConversationView:
        conversation_id = parse_conversation_id(conversation_id)
        async with self._pool.connection() as conn:
            row = await store.get_conversation(conn, conversation_id)
            if row is None:
                raise errors.not_found("CONVERSATION_NOT_FOUND", f"conversation {conversation_id} does not exist")
            return await self._view(conn, row)

    async def contacts(self, user_id: str) -> list[str]:
        async with self._pool.connection() as conn:
            return await store.list_contacts(conn, user_id)

    @staticmethod
    async def _view(conn: AsyncConnection, row: ConversationRow) -> ConversationView:
        return ConversationView(row, await store.list_participants(conn, row.conversation_id))
