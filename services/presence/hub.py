"""Ephemeral events across presence replicas: published on per-user Redis channels, read by one
pub/sub connection per replica, and handed to the edge streams that subscribed the user.

Whichever replica sees a transition or a typing frame publishes it; whichever replica holds an
edge's stream delivers it. Nothing is stored: a subscriber that was not listening misses the event,
as an ephemeral event should.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable

import redis.asyncio as aioredis
import redis.exceptions

from chatmesh.gen.chat.v1 import common_pb2, presence_pb2
from chatmesh.redis_conn import Keys

log = logging.getLogger(__name__)

MAX_BATCH = 1000
Queue = asyncio.Queue[tuple[str, common_pb2.Event] | None]


class EventHub:
    def __init__(self, redis_client: aioredis.Redis, keys: Keys) -> None:
        self._redis = redis_client
        self._keys = keys
        self._pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
        self._by_user: dict[str, set[Queue]] = defaultdict(set)
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._streams: set[Queue] = set()

    async def start(self) -> None:
        await self._pubsub.subscribe(self._keys.presence_live("_hub"))  # a pub/sub connection needs one channel
        self._task = asyncio.create_task(self._read())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
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
                await self._pubsub.subscribe(self._keys.presence_live(user_id))

    async def _remove(self, user_id: str, queue: Queue) -> None:
        async with self._lock:
            queues = self._by_user.get(user_id)
            if queues is None:
                return
            queues.discard(queue)
            if not queues:
                del self._by_user[user_id]
                await self._pubsub.unsubscribe(self._keys.presence_live(user_id))

    async def _read(self) -> None:
        while True:
            try:
                async for message in self._pubsub.listen():
                    if message["type"] != "message":
                        continue
                    user_id = self._keys.user_of_presence_live(message["channel"].decode())
                    queues = self._by_user.get(user_id)
                    if not queues:
                        continue
                    event = common_pb2.Event.FromString(message["data"])
                    for queue in queues:
                        queue.put_nowait((user_id, event))
            except (redis.exceptions.ConnectionError, OSError) as exc:
                log.warning("presence pub/sub lost (%s); resubscribing", exc)
                await asyncio.sleep(0.5)
                try:
                    async with self._lock:
                        await self._pubsub.subscribe(*[self._keys.presence_live(u) for u in self._by_user],
                                                     self._keys.presence_live("_hub"))
                except (redis.exceptions.ConnectionError, OSError) as again:
                    log.warning("presence resubscribe failed (%s); will retry", again)

    async def stream(self, requests: AsyncIterator[presence_pb2.StreamPresenceEventsRequest]
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

        reader = asyncio.create_task(read())
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
