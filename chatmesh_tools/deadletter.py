"""The dead-letter stream: list what delivery gave up on, and replay it once the cause is fixed.

`chatmesh dead-letter list` shows each entry's original id and reason; `chatmesh dead-letter replay`
puts every entry back on the events stream (fan-out is idempotent by event id) and removes it from
the dead-letter stream.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from chatmesh.redis_conn import Keys


async def list_entries(client: aioredis.Redis, keys: Keys) -> list[tuple[str, str, str]]:
    """(dead-letter id, original entry id, reason), oldest first."""
    rows = await client.xrange(keys.dead_letter)
    return [(rid.decode(), fields.get(b"entry", b"").decode(), fields.get(b"reason", b"").decode())
            for rid, fields in rows]


async def replay(client: aioredis.Redis, keys: Keys) -> int:
    """Move every dead-lettered event back onto the events stream; returns how many."""
    moved = 0
    for rid, fields in await client.xrange(keys.dead_letter):
        async with client.pipeline(transaction=True) as tx:
            tx.xadd(keys.events, {b"e": fields.get(b"e", b"")})
            tx.xdel(keys.dead_letter, rid)
            await tx.execute()
        moved += 1
    return moved
