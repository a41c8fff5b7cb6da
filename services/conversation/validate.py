"""Checks on what callers send, each failing with a 400 and a machine-readable code.

They run before any transaction opens, so bad input never costs a database round trip and never
reaches a constraint that would surface as a 500.
"""

from __future__ import annotations

import uuid

from chatmesh import errors
from chatmesh.auth import user_id_problem
from chatmesh.gen.chat.v1 import common_pb2
from chatmesh.roles import Role

MAX_TITLE = 200
MAX_DESCRIPTION = 1000
MAX_DISPLAY_NAME = 200


def conversation_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise errors.invalid("INVALID_ID", f"conversation_id {value!r} is not a valid id") from None


def user_id(value: str, what: str = "user_id") -> str:
    """A user id is a JWT `sub`: the edge refuses tokens whose sub breaks the same rule
    (`chatmesh.auth.user_id_problem`), so any id a user can have passes here."""
    if not value:
        raise errors.invalid("INVALID_USER_ID", f"{what} is required")
    if (problem := user_id_problem(value)) is not None:
        raise errors.invalid("INVALID_USER_ID", f"{what} is refused: {problem}")
    return value


def text(value: str, what: str) -> str:
    """PostgreSQL text cannot hold NUL: refuse it here rather than fail in the database."""
    if "\x00" in value:
        raise errors.invalid("INVALID_TEXT", f"{what} must not contain NUL characters")
    return value


def title(value: str) -> str:
    trimmed = text(value, "title").strip()
    if not trimmed:
        raise errors.invalid("TITLE_REQUIRED", "a group conversation needs a title")
    if len(trimmed) > MAX_TITLE:
        raise errors.invalid("TITLE_TOO_LONG", f"title exceeds {MAX_TITLE} characters ({len(trimmed)})")
    return trimmed


def description(value: str) -> str:
    """A group's description: "" removes it; only blanks is a mistake, not a way to remove it."""
    trimmed = text(value, "description").strip()
    if value and not trimmed:
        raise errors.invalid("DESCRIPTION_BLANK", 'a description must not be only blanks (send "" to remove it)')
    if len(trimmed) > MAX_DESCRIPTION:
        raise errors.invalid(
            "DESCRIPTION_TOO_LONG", f"description exceeds {MAX_DESCRIPTION} characters ({len(trimmed)})"
        )
    return trimmed


def role(value: int, *, default: Role | None = None) -> Role:
    """A proto Role; ROLE_UNSPECIFIED takes the default, or is refused without one."""
    if value == common_pb2.ROLE_UNSPECIFIED and default is not None:
        return default
    try:
        return Role.from_proto(value)
    except ValueError:
        raise errors.invalid(
            "INVALID_ROLE", f"role must be ROLE_ADMIN, ROLE_MODERATOR or ROLE_MEMBER (got {value})"
        ) from None


def participant_ids(values: list[str], creator: str) -> list[str]:
    """The other participants of a new group: well-formed, no repeats; the creator is implied."""
    seen: set[str] = set()
    for value in values:
        user_id(value, "participant_ids entry")
        if value in seen:
            raise errors.invalid("DUPLICATE_PARTICIPANT", f"{value!r} appears more than once in participant_ids")
        seen.add(value)
    return [value for value in values if value != creator]
