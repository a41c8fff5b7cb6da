"""Ephemeral events across presence replicas: published on per-user Redis channels, read by one
pub/sub connection per replica, and handed to the edge streams that subscribed the user.

Whichever replica sees a transition or a typing frame publishes it; whichever replica holds an
edge's stream delivers it. Nothing is stored: a subscriber that was not listening misses the event,
as an ephemeral event should.

Two Redis clients: PUBLISH goes through the command client (with a timeout: a stalled Redis fails it),
SUBSCRIBE and the reads through a pub/sub client whose reads have no timeout (an idle subscription
would otherwise end after a few quiet seconds). When the pub/sub connection is lost, the reader
retries with backoff and subscribes every wanted channel again; events published meanwhile are lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable

import grpc
import redis.asyncio as aioredis
from google.protobuf.message import DecodeError

from chatmesh.gen.chat.v1 import common_pb2, presence_pb2
from chatmesh.pubsub import listen_forever, subscribe_exactly
from chatmesh.resilience import Backoff, OutageLog, is_outage, spawn_supervised
from services.presence.keys import PresenceKeys

log = logging.getLogger(__name__)

MAX_BATCH = 1000
HUB_CHANNEL = "_hub"  # always subscribed: a pub/sub connection with no channel stops listening
Queue = asyncio.Queue[tuple[str, common_pb2.Event] | None]


class EventHub:
    def __init__(self, redis_client: aioredis.Redis, pubsub_client: aioredis.Redis, keys: PresenceKeys) -> None:
        self._redis = redis_client
        self._keys = keys
        self._pubsub = pubsub_client.pubsub(ignore_subscribe_messages=True)
        self._by_user: dict[str, set[Queue]] = defaultdict(set)
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._streams: set[Queue] = set()

    async def start(self) -> None:
        """Start the reader, which subscribes (and resubscribes after an outage): Redis need not be up
        yet, so a presence replica starts during a Redis outage and catches up when it is back."""
        self._task = spawn_supervised("presence pub/sub reader", self._read)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.wait([self._task])
        await self._pubsub.aclose()

    def end_streams(self) -> None:
        """On drain: end every edge's stream; the edge resubscribes its users on another replica."""
        for queue in self._streams:
            queue.put_nowait(None)

    async def publish(self, user_ids: Iterable[str], event: common_pb2.Event) -> None:
        data = event.SerializeToString()
        async with self._redis.pipeline(transaction=False) as pipe:
            count = 0
            for user_id in user_ids:
                pipe.publish(self._keys.presence_live(user_id), data)
                count += 1
            if count:
                await pipe.execute()

    async def _add(self, user_id: str, queue: Queue) -> None:
        async with self._lock:
            first = not self._by_user[user_id]
            self._by_user[user_id].add(queue)
            if first:
                await self._change("subscribe", self._keys.presence_live(user_id))

    async def _remove(self, user_id: str, queue: Queue) -> None:
        async with self._lock:
            queues = self._by_user.get(user_id)
            if queues is None:
                return
            queues.discard(queue)
            if not queues:
                del self._by_user[user_id]
                await self._change("unsubscribe", self._keys.presence_live(user_id))

    async def _change(self, action: str, channel: str) -> None:
        """(Un)subscribe one channel. In an outage the reader fails too, and when Redis is back it
        subscribes exactly the wanted channels (_resync), this one included or left out."""
        try:
            await getattr(self._pubsub, action)(channel)
        except Exception as exc:
            if not is_outage(exc):
                raise
            log.debug("presence pub/sub %s %s deferred: %r", action, channel, exc)

    async def _resync(self) -> None:
        """Subscribe exactly the wanted channels: the users of this replica's streams and the hub's own."""
        async with self._lock:
            wanted = {self._keys.presence_live(u) for u in self._by_user} | {self._keys.presence_live(HUB_CHANNEL)}
            await subscribe_exactly(self._pubsub, wanted)

    async def _read(self) -> None:
        """Hand each message to the streams of its user, for the life of the process (supervised), and
        subscribe every wanted channel again after an outage (chatmesh.pubsub). Also after a restart by
        the supervisor: the failure may have lost a SUBSCRIBE."""
        await listen_forever(
            self._pubsub,
            self._resync,
            self._deliver,
            outage=OutageLog(log, "presence pub/sub: Redis"),
            backoff=Backoff(0.1, 5.0),
        )

    def _deliver(self, channel: bytes, data: bytes) -> None:
        user_id = self._keys.user_of_presence_live(channel.decode())
        queues = self._by_user.get(user_id)
        if not queues:
            return
        try:
            event = common_pb2.Event.FromString(data)
        except DecodeError:
            log.warning("presence pub/sub: undecodable message on %s dropped", channel.decode())
            return
        for queue in queues:
            queue.put_nowait((user_id, event))

    async def stream(
        self, requests: AsyncIterator[presence_pb2.StreamPresenceEventsRequest]
    ) -> AsyncIterator[presence_pb2.StreamPresenceEventsResponse]:
        """One edge replica's stream: users come and go, their events go out in batches."""
        queue: Queue = asyncio.Queue()
        users: set[str] = set()

        async def read() -> None:
            try:
                async for request in requests:
                    action = request.WhichOneof("action")
                    if action == "subscribe_user_id" and request.subscribe_user_id not in users:
                        users.add(request.subscribe_user_id)
                        await self._add(request.subscribe_user_id, queue)
                    elif action == "unsubscribe_user_id" and request.unsubscribe_user_id in users:
                        users.discard(request.unsubscribe_user_id)
                        await self._remove(request.unsubscribe_user_id, queue)
            finally:
                queue.put_nowait(None)

        reader = asyncio.create_task(read(), name="presence stream requests")
        reader.add_done_callback(_retrieve)
        self._streams.add(queue)
        try:
            while (first := await queue.get()) is not None:
                items = [first]
                while len(items) < MAX_BATCH and not queue.empty():
                    item = queue.get_nowait()
                    if item is None:
                        queue.put_nowait(None)
                        break
                    items.append(item)
                batches: dict[str, common_pb2.UserEvents] = {}
                for user_id, event in items:
                    if user_id in users:
                        batches.setdefault(user_id, common_pb2.UserEvents(user_id=user_id)).events.append(event)
                if batches:
                    yield presence_pb2.StreamPresenceEventsResponse(batches=list(batches.values()))
        finally:
            self._streams.discard(queue)
            reader.cancel()
            for user_id in users:
                await self._remove(user_id, queue)


def _retrieve(task: asyncio.Task[None]) -> None:
    """Collect how a stream's request reader ended, so no exception goes unretrieved: an edge that
    went away or an outage ends the stream (the edge reconnects); anything else is a bug, logged."""
    if task.cancelled() or (exc := task.exception()) is None:
        return
    if isinstance(exc, grpc.aio.AioRpcError) or is_outage(exc):
        log.info("an edge's presence stream ended: %r", exc)
    else:
        log.error("an edge's presence stream failed", exc_info=exc)
