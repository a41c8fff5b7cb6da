"""The dead-letter streams: list what delivery gave up on, and replay it once the cause is fixed.

Two of them, the same shape: events fan-out gave up on (`<prefix>:events:dead`, replayed onto the
events stream; fan-out is idempotent by event id) and push notifications workers gave up on
(`<prefix>:notifications:dead`, replayed onto the notifications stream, where every consumer group
gets them again). `chatmesh dead-letter list|replay [--notifications]` shows each entry's original
id and reason, and replays every entry, removing it from the dead-letter stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis

from chatmesh.redis_conn import Keys


@dataclass(frozen=True)
class DeadLetters:
    what: str
    field: bytes  # the payload's field, in both streams
    source: Callable[[Keys], str]
    dead: Callable[[Keys], str]


EVENTS = DeadLetters("event", b"e", lambda keys: keys.events, lambda keys: keys.dead_letter)
NOTIFICATIONS = DeadLetters("notification", b"n", lambda keys: keys.notifications, lambda keys: keys.notifications_dead)


async def list_entries(client: aioredis.Redis, keys: Keys, streams: DeadLetters = EVENTS) -> list[tuple[str, str, str]]:
    """(dead-letter id, original entry id, reason), oldest first."""
    rows = await client.xrange(streams.dead(keys))
    return [
        (rid.decode(), fields.get(b"entry", b"").decode(), fields.get(b"reason", b"").decode()) for rid, fields in rows
    ]


async def replay(client: aioredis.Redis, keys: Keys, streams: DeadLetters = EVENTS) -> int:
    """Move every dead-lettered entry back onto its stream; returns how many."""
    moved = 0
    for rid, fields in await client.xrange(streams.dead(keys)):
        async with client.pipeline(transaction=True) as tx:
            tx.xadd(streams.source(keys), {streams.field: fields.get(streams.field, b"")})
            tx.xdel(streams.dead(keys), rid)
            await tx.execute()
        moved += 1
    return moved
