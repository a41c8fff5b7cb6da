"""Presence privacy as the directory decides it: who sees a user's presence, whose presence a user
sees (both for the presence service's ListContacts), and the hide-last-seen setting.

The settings live here, in PostgreSQL beside the user, rather than in the presence service's Redis:
presence state may be lost with Redis' data (it is rebuilt from connections), a privacy choice
must not be.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from services.conversation import privacy_store, validate


@dataclass(frozen=True)
class Contacts:
    audience: list[str]  # who may see the user's presence
    visible: list[str]  # whose presence the user may see
    last_seen_hidden: list[str]  # of `visible`, who hides their last seen
    hide_last_seen: bool  # the user's own setting


class Privacy:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def contacts(self, user_id: str) -> Contacts:
        user_id = validate.user_id(user_id)
        async with self._pool.connection() as conn:
            audience = await privacy_store.audience(conn, user_id)
            visible = await privacy_store.visible(conn, user_id)
            hide = await privacy_store.hide_last_seen(conn, user_id)
        return Contacts(audience, [u for u, _ in visible], [u for u, hidden in visible if hidden], hide)

    async def hide_last_seen(self, user_id: str) -> bool:
        async with self._pool.connection() as conn:
            return await privacy_store.hide_last_seen(conn, user_id)

    async def update(self, user_id: str, hide_last_seen: bool | None) -> bool:
        """Change what is given (None: unchanged); the setting after the change."""
        async with self._pool.connection() as conn:
            if hide_last_seen is not None:
                await privacy_store.set_hide_last_seen(conn, user_id, hide_last_seen)
            return await privacy_store.hide_last_seen(conn, user_id)
