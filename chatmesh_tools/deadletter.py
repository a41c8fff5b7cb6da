"""The dead-letter streams: list what delivery gave up on, and replay it once the cause is fixed.

Two of them, the same shape: events fan-out gave up on (`<prefix>:events:dead`, one for every
partition, replayed onto the event's partition stream (`Keys.events_of` its conversation, with the
mesh's CHAT_FANOUT_PARTITIONS); fan-out is idempotent by event id) and push notifications workers gave up on
(`<prefix>:notifications:dead`, replayed onto the notifications stream, where every consumer group
gets them again). `chatmesh dead-letter list|replay [--notifications]` shows each entry's original
id and reason, and replays every entry, removing it from the dead-letter stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis

from chatmesh.gen.chat.v1 import common_pb2
from chatmesh.redis_conn import Keys


@dataclass(frozen=True)
class DeadLetters:
    what: str
    field: bytes  # the payload's field, in both streams
    source: Callable[[Keys, bytes], str]  # the stream an entry goes back to, from its payload
    dead: Callable[[Keys], str]


def _event_partition(keys: Keys, payload: bytes) -> str:
    """The partition of the event's conversation (partition 0 when it does not parse, as the relay does)."""
    try:
        conversation_id = common_pb2.Event.FromString(payload).conversation_id
    except Exception:  # noqa: BLE001 - any unreadable payload
        conversation_id = ""
    return keys.events_of(conversation_id)


EVENTS = DeadLetters("event", b"e", _event_partition, lambda keys: keys.dead_letter)
NOTIFICATIONS = DeadLetters(
    "notification", b"n", lambda keys, _: keys.notifications, lambda keys: keys.notifications_dead
)


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
            payload = fields.get(streams.field, b"")
            tx.xadd(streams.source(keys, payload), {streams.field: payload})
            tx.xdel(streams.dead(keys), rid)
            await tx.execute()
        moved += 1
    return moved
