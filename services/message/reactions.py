"""Reactions: participants leave emoji on live messages, several different ones each, each once.

Adding an emoji the user already left, or removing one they did not, succeeds without a change or
an event (idempotent): a client retrying after a timeout must not get an error for what it wanted.
"""

from __future__ import annotations

import emoji as emoji_data
from psycopg_pool import AsyncConnectionPool

from chatmesh import errors, outbox
from chatmesh.gen.chat.v1 import common_pb2
from chatmesh.membership import MembershipCache
from services.message import access, convert, store, views

MAX_EMOJI_CHARS = 32


def validate_emoji(value: str) -> str:
    """Exactly one emoji as Unicode defines them (ZWJ sequences, skin tones and flags included),
    checked against the `emoji` package's copy of the Unicode emoji data; not text, not two emoji."""
    if not value or len(value) > MAX_EMOJI_CHARS or not emoji_data.is_emoji(value):
        raise errors.invalid("INVALID_EMOJI", "emoji must be exactly one emoji")
    return value


class Reactions:
    def __init__(self, pool: AsyncConnectionPool, membership: MembershipCache) -> None:
        self._pool = pool
        self._membership = membership

    async def add(self, user: str, message_id: str, emoji: str) -> common_pb2.Message:
        return await self._change(user, message_id, validate_emoji(emoji), add=True)

    async def remove(self, user: str, message_id: str, emoji: str) -> common_pb2.Message:
        return await self._change(user, message_id, validate_emoji(emoji), add=False)

    async def _change(self, user: str, message_id: str, emoji: str, *, add: bool) -> common_pb2.Message:
        async with self._pool.connection() as conn:
            found = await access.find(conn, self._membership, message_id, user)
            found.membership.require_unarchived()  # an archived conversation keeps its reactions as they are
            if add:
                found.membership.require_writer(user)  # a blocked conversation takes no new reactions
            access.require_live(found.row)
            async with outbox.wake_after(store.SCHEMA) as notify, conn.transaction():
                if add:
                    changed = await store.add_reaction(conn, found.row.message_id, user, emoji)
                else:
                    changed = await store.remove_reaction(conn, found.row.message_id, user, emoji)
                if changed:
                    kind = "chat:reaction_added" if add else "chat:reaction_removed"
                    await outbox.enqueue(
                        conn, store.SCHEMA, [convert.reaction_event(kind, found.row, user, emoji)], notify=notify
                    )
            return await views.render_one(conn, user, found.row, found.membership.roles)
