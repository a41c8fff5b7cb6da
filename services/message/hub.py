"""The live path: one Redis pub/sub connection per process carries every subscriber's live events.

Fan-out appends an event to a user's inbox stream and then publishes `<entry id> <event>` on the
user's live channel. A subscription first replays its inbox after its resume token, buffering live
events meanwhile, then forwards live events whose entry id is newer than the last it sent, so the
seam between replay and live neither drops nor repeats. If pub/sub drops (Redis restart), each
subscription replays its inbox after its last sent id again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
import redis.exceptions

from chatmesh.gen.chat.v1 import common_pb2
from chatmesh.redis_conn import Keys
from services.message.inbox import Inboxes, Token, parse_id

log = logging.getLogger(__name__)

# (subscription_id, event) pairs are pushed onto the queue of the stream that owns the subscription.
Outbox = asyncio.Queue[tuple[str, common_pb2.Event]]
# The offline buffer of a subscription without a usable token: the messages its user has not
# acknowledged as delivered, from PostgreSQL (the source of truth, whatever Redis still holds).
OfflineBuffer = Callable[[str], Awaitable[list[common_pb2.Event]]]


class Subscription:
    def __init__(self, subscription_id: str, user_id: str, out: Outbox) -> None:
        self.subscription_id = subscription_id
        self.user_id = user_id
        self._out = out
        self.epoch = ""
        self.last_id = "0"
        self._replaying = True
        self._held: list[tuple[str, bytes]] = []
        self._from_buffer: set[str] = set()  # event ids sent from the offline buffer, not to repeat live

    def on_live(self, entry_id: str, data: bytes) -> None:
        if self._replaying:
            self._held.append((entry_id, data))
        else:
            self._emit(entry_id, data)

    def _emit(self, entry_id: str, data: bytes) -> None:
        if parse_id(entry_id) <= parse_id(self.last_id):
            return
        event = common_pb2.Event.FromString(data)
        if event.event_id in self._from_buffer:
            self.last_id = entry_id
            return
        self._emit_event(entry_id, event)

    def emit_buffered(self, events: list[common_pb2.Event]) -> None:
        """The offline buffer: each event resumes at the inbox position the replay started from."""
        for event in events:
            event.resume_token = Token(self.epoch, self.last_id).encode()
            self._from_buffer.add(event.event_id)
            self._out.put_nowait((self.subscription_id, event))

    def _emit_event(self, entry_id: str, event: common_pb2.Event) -> None:
        event.resume_token = Token(self.epoch, entry_id).encode()
        self.last_id = entry_id
        self._out.put_nowait((self.subscription_id, event))

    def emit_control(self, event: common_pb2.Event) -> None:
        self._out.put_nowait((self.subscription_id, event))

    def go_live(self) -> None:
        held, self._held, self._replaying = self._held, [], False
        for entry_id, data in held:
            self._emit(entry_id, data)


class Hub:
    def __init__(self, redis_client: aioredis.Redis, keys: Keys, offline: OfflineBuffer) -> None:
        self._redis = redis_client
        self._keys = keys
        self._inboxes = Inboxes(redis_client, keys)
        self._offline = offline
        self._pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
        self._by_user: dict[str, set[Subscription]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        await self._pubsub.subscribe(self._keys.live("_hub"))  # a pub/sub connection needs one channel
        self._task = asyncio.create_task(self._read())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        await self._pubsub.aclose()

    async def subscribe(self, sub: Subscription, resume_token: str) -> None:
        """Replay what the inbox holds after the token (or the offline buffer), then go live."""
        async with self._lock:
            first = not self._by_user[sub.user_id]
            self._by_user[sub.user_id].add(sub)
            if first:
                await self._pubsub.subscribe(self._keys.live(sub.user_id))
        await self._replay(sub, resume_token)
        sub.go_live()

    async def unsubscribe(self, sub: Subscription) -> None:
        async with self._lock:
            subs = self._by_user.get(sub.user_id)
            if subs is None:
                return
            subs.discard(sub)
            if not subs:
                del self._by_user[sub.user_id]
                await self._pubsub.unsubscribe(self._keys.live(sub.user_id))

    async def _replay(self, sub: Subscription, resume_token: str) -> None:
        sub.epoch = await self._inboxes.epoch()
        token = Token.decode(resume_token) if resume_token else None
        if token and token.epoch == sub.epoch and await self._inboxes.covers(sub.user_id, token.entry_id):
            sub.last_id = token.entry_id
            await self._replay_after(sub)
            return
        if resume_token:
            reason = "epoch_changed" if token and token.epoch != sub.epoch else "token_expired"
            if token is None:
                reason = "token_invalid"
            sub.emit_control(common_pb2.Event(type="resync_required",
                                              resync=common_pb2.ResyncRequired(reason=reason)))
        sub.last_id = await self._inboxes.last_id(sub.user_id) or "0"
        sub.emit_buffered(await self._offline(sub.user_id))

    async def _replay_after(self, sub: Subscription) -> None:
        while batch := await self._inboxes.read_after(sub.user_id, sub.last_id):
            for entry_id, data in batch:
                sub._emit(entry_id, data)

    async def _read(self) -> None:
        while True:
            try:
                async for message in self._pubsub.listen():
                    if message["type"] != "message":
                        continue
                    user_id = self._keys.user_of_live(message["channel"].decode())
                    entry_id, _, data = message["data"].partition(b" ")
                    for sub in list(self._by_user.get(user_id, ())):
                        sub.on_live(entry_id.decode(), data)
            except (redis.exceptions.ConnectionError, OSError) as exc:
                log.warning("live pub/sub lost (%s); resubscribing and replaying inboxes", exc)
                await asyncio.sleep(0.5)
                await self._recover()

    async def _recover(self) -> None:
        """After a pub/sub drop, live events may have been missed: replay each inbox after last sent."""
        try:
            async with self._lock:
                channels = [self._keys.live(u) for u in self._by_user] + [self._keys.live("_hub")]
                await self._pubsub.subscribe(*channels)
            for subs in list(self._by_user.values()):
                for sub in list(subs):
                    await self._replay_after(sub)
        except (redis.exceptions.ConnectionError, OSError) as exc:
            log.warning("recovery failed (%s); will retry", exc)
