"""Helpers the message tests share (no tests here): groups with chosen roles, and REST shortcuts.

Groups are written through the conversation service's own store module (its SQL, not the tests'), so
the tests pick every role (admin, moderator, member) without depending on the group API's own rules;
the message service still learns membership the real way, by asking the conversation service.
"""

from __future__ import annotations

from typing import Any

import httpx
import psycopg

from chatmesh.gen.chat.v1 import common_pb2
from chatmesh.roles import Role
from services.conversation import store as conversation_store
from tests.helpers import bearer, new_user_id

__all__ = ["api", "code_of", "group", "mark", "new_user_id", "outbox_events"]


async def group(database_url: str, roles: dict[str, str], title: str = "group") -> str:
    """A group conversation with these users in these roles; returns its id."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn, conn.transaction():
        for user in roles:
            await conversation_store.ensure_user(conn, user)
        row = await conversation_store.insert_group(conn, next(iter(roles)), title, len(roles))
        await conversation_store.insert_participants(
            conn, row.conversation_id, [(user, Role(role)) for user, role in roles.items()]
        )
    return row.conversation_id


async def api(
    http: httpx.AsyncClient, token: str, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None
) -> httpx.Response:
    return await http.request(method, path, json=body, params=params, headers=bearer(token))


def code_of(reply: httpx.Response) -> tuple[int, str]:
    """(HTTP status, machine-readable code) of a reply, for one-line assertions on errors."""
    body = reply.json()
    return reply.status_code, body["error"]["code"] if "error" in body else "OK"


def outbox_events(database_url: str, conversation_id: str) -> list[common_pb2.Event]:
    """The events the message service wrote for a conversation, in outbox (commit) order."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT payload FROM message.outbox ORDER BY id").fetchall()
    events = [common_pb2.Event.FromString(bytes(r[0])) for r in rows]
    return [e for e in events if e.conversation_id == conversation_id]


async def mark(http: httpx.AsyncClient, token: str, message_id: str, status: str) -> httpx.Response:
    return await api(
        http, token, "POST", f"/api/messages/{message_id}/status", {"status": f"MESSAGE_STATUS_{status.upper()}"}
    )
