"""What every message operation starts with: parse the ids, find the message, check the caller.

The conversation service decides who is in a conversation and with which role; the message service
asks it through the membership cache and never stores that itself.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import psycopg

from chatmesh import errors
from chatmesh.membership import Membership, MembershipCache
from chatmesh.roles import Role
from services.message import store
from services.message.store import MessageRow


def parse_id(value: str, what: str) -> str:
    """A canonical uuid string, or 400 INVALID_ID (never a database error for a malformed id)."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise errors.invalid("INVALID_ID", f"{what} {value!r} is not a valid id") from None


@dataclass(frozen=True)
class Found:
    row: MessageRow
    membership: Membership
    role: Role


async def find(
    conn: psycopg.AsyncConnection,
    membership: MembershipCache,
    message_id: str,
    caller: str,
    *,
    for_update: bool = False,
) -> Found:
    """The message and the caller's role in its conversation: 404 for an unknown message, 403 for a
    caller who is not a participant. `for_update` locks the row for the caller's transaction."""
    message_id = parse_id(message_id, "message_id")
    row = await store.get_message(conn, message_id, for_update=for_update)
    if row is None:
        raise errors.not_found("MESSAGE_NOT_FOUND", f"message {message_id} does not exist")
    found_membership = await membership.get(row.conversation_id)
    return Found(row, found_membership, found_membership.require_participant(caller))


def require_text(value: str, what: str) -> str:
    """PostgreSQL text cannot hold NUL: refuse it as bad input (400), never let it become a 500."""
    if "\x00" in value:
        raise errors.invalid("INVALID_TEXT", f"{what} must not contain NUL characters")
    return value


def require_live(row: MessageRow) -> None:
    if row.deleted_at is not None:
        raise errors.failed_precondition("MESSAGE_DELETED", "the message was deleted")
