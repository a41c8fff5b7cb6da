"""Reading a Redis pub/sub connection for the life of a process, through outages: the one loop behind
presence's ephemeral events (services/presence/hub.py) and the message service's live wake-ups.

Pub/sub is at most once: what is published while the connection is down is lost, and redis-py
resubscribes what it held on a new connection but not a SUBSCRIBE that failed. So after every
(re)connection the loop subscribes again through the caller's `subscribe` and then calls
`on_resubscribe`, where a caller that cannot afford the gap catches up (reads what it may have
missed). A lost or refused connection is retried with jittered backoff and logged once when lost and
once when back (chatmesh.resilience); the backoff starts over only once a message arrives, so a
connection that keeps dropping right after it subscribes is retried slowly, not in a tight loop.

The connection must come from a client whose reads never time out (chatmesh.redis_conn.open_pubsub_redis):
an idle subscription would otherwise end after a few quiet seconds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import NoReturn

from redis.asyncio.client import PubSub

from chatmesh.resilience import Backoff, OutageLog, is_outage

# A message's channel and payload, as Redis sent them (bytes). Called in the reading loop: it must
# not block; what takes time belongs to a task or queue of the caller's.
Handler = Callable[[bytes, bytes], None]


async def subscribe_exactly(pubsub: PubSub, wanted: Collection[str]) -> None:
    """Subscribe every wanted channel and unsubscribe the others: the repair after an outage, when a
    SUBSCRIBE or UNSUBSCRIBE sent meanwhile may have failed."""
    held = {c.decode() if isinstance(c, bytes) else str(c) for c in pubsub.channels}
    await pubsub.subscribe(*wanted)
    if stale := held - set(wanted):
        await pubsub.unsubscribe(*stale)


async def listen_forever(
    pubsub: PubSub,
    subscribe: Callable[[], Awaitable[None]],
    on_message: Handler,
    *,
    outage: OutageLog,
    backoff: Backoff,
    on_resubscribe: Callable[[], None] | None = None,
) -> NoReturn:
    """Subscribe, hand each message to `on_message`, and after any loss of the connection subscribe
    again (then `on_resubscribe`), for ever. An outage is retried; anything else is a bug and raised
    (run this under chatmesh.resilience.spawn_supervised, which restarts it)."""
    while True:
        try:
            await subscribe()
            outage.recovered()
            if on_resubscribe is not None:
                on_resubscribe()
            fresh = True
            async for message in pubsub.listen():
                if message["type"] != "message":
                    continue
                if fresh:
                    fresh = False
                    backoff.reset()
                on_message(message["channel"], message["data"])
        except Exception as exc:
            if not is_outage(exc):
                raise
            outage.failed(exc)
        else:  # listen() returns once nothing is subscribed, which the next `subscribe` repairs
            outage.failed(ConnectionError("no channel subscribed"))
        await backoff.sleep()
