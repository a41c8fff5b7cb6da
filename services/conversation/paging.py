"""Page sizes and opaque keyset cursors.

A cursor is URL-safe base64 of a small JSON object naming the last item a page returned; clients
treat it as opaque. Anything that does not decode to the expected shape is a 400 INVALID_CURSOR,
never a 500, so a truncated or hand-edited cursor gets a clear answer.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any

from chatmesh import errors

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


def page_size(limit: int) -> int:
    """0 means the default; anything outside 1..MAX_LIMIT is refused rather than silently clamped."""
    if limit == 0:
        return DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise errors.invalid("INVALID_LIMIT", f"limit must be between 1 and {MAX_LIMIT} (got {limit})")
    return limit


def encode(payload: dict[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
    except (binascii.Error, ValueError):
        raise bad_cursor() from None
    if not isinstance(payload, dict):
        raise bad_cursor()
    return payload


def timestamp_of(value: Any) -> datetime:
    """A cursor's timestamp field, timezone-aware, or INVALID_CURSOR."""
    if not isinstance(value, str):
        raise bad_cursor()
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise bad_cursor() from None
    if parsed.tzinfo is None:
        raise bad_cursor()
    return parsed


def bad_cursor() -> errors.ChatError:
    return errors.invalid("INVALID_CURSOR", "cursor is not one this service issued")
