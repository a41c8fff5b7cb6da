"""The live path: one Redis pub/sub connection per process wakes every subscriber of that process.

Fan-out appends an event to each recipient's inbox stream and then publishes, once per batch, the
names of the users it wrote to on one wake channel. A subscription first replays its inbox after its
resume token (or gets the offline buffer), then goes live: each wake-up naming its user makes it read
its inbox after the last entry it sent, so the seam between replay and live neither drops nor
repeats, and a lost or late wake-up only delays an event until the next one (or the next pub/sub
reconnect, which reads every inbox).

Inbox entries travel on as the bytes fan-out stored: they are parsed once, into the gRPC response
(`to_event`), not per step on the way.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
import redis.exceptions

from chatmesh.gen.chat.v1 import common_pb2
from chatmesh.redis_conn import Keys
from services.message.inbox import Inboxes, Token, parse_id

log = logging.getLogger(__name__)

READ_BATCH = 500

# (subscription_id, event, resume_token) is pushed onto the queue of the stream that owns the
# subscription; the event is an inbox entry's serialized bytes, or an Event already complete. None
# ends the stream.
Item = tuple[str, common_pb2.Event | bytes, str]
Outbox = asyncio.Queue[Item]
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
        self.live = False  # replay done: the pump reads its inbox from here on
        self._from_buffer: set[str] = set()  # event ids sent from the offline buffer, not to repeat

    def emit_entries(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        """Inbox entries (XRANGE rows), oldest first; only those past the last one sent."""
        last = parse_id(self.last_id)
        for raw_id, fields in entries:
            entry_id = raw_id.decode()
            if parse_id(entry_id) <= last:
                continue
            self.last_id = entry_id
            if self._from_buffer and _event_id(fields) in self._from_buffer:
                continue
            self._out.put_nowait((self.subscription_id, fields[b"e"], Token(self.epoch, entry_id).encode()))

    def emit_buffered(self, events: list[common_pb2.Event]) -> None:
        """The offline buffer: each event resumes at the inbox position the replay started from."""
        for event in events:
            event.resume_token = Token(self.epoch, self.last_id).encode()
            self._from_buffer.add(event.event_id)
            self._out.put_nowait((self.subscription_id, event, ""))

    def emit_control(self, event: common_pb2.Event) -> None:
        self._out.put_nowait((self.subscription_id, event, ""))


def _event_id(fields: dict[bytes, bytes]) -> str:
    """Fan-out stores the event id beside the payload; entries written before it did are parsed."""
    if (event_id := fields.get(b"i")) is not None:
        return event_id.decode()
    return common_pb2.Event.FromString(fields[b"e"]).event_id


def to_event(target: common_pb2.Event, item: Item) -> None:
    """Fill a response's Event from a queued item: stored bytes are parsed straight into it."""
    _, event, resume_token = item
    if isinstance(event, bytes):
        target.MergeFromString(event)
        target.resume_token = resume_token
    else:
        target.CopyFrom(event)


def item_size(item: Item) -> int:
    _, event, resume_token = item
    return len(event) + len(resume_token) if isinstance(event, bytes) else event.ByteSize()


class Hub:
    """Pub/sub is only a wake-up: a notified subscription reads its inbox after the last entry it
    sent. So a notification that never came (pub/sub is at-most-once: a dropped connection loses
    what was published meanwhile), or came out of order, can delay an event until the next one but
    never skip it."""

    def __init__(self, redis_client: aioredis.Redis, keys: Keys, offline: OfflineBuffer) -> None:
        self._redis = redis_client
        self._keys = keys
        self._inboxes = Inboxes(redis_client, keys)
        self._offline = offline
        self._pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
        self._by_user: dict[str, set[Subscription]] = defaultdict(set)
        self._dirty: set[Subscription] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._streams: set[Outbox] = set()

    async def start(self) -> None:
        await self._pubsub.subscribe(self._keys.wake)
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._pump())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self._pubsub.aclose()

    def attach(self, out: Outbox) -> None:
        """Register a gRPC stream's queue, so `end_streams` can end it."""
        self._streams.add(out)

    def detach(self, out: Outbox) -> None:
        self._streams.discard(out)

    def end_streams(self) -> None:
        """On drain: end every stream after what it already holds; its edge resubscribes, from the last
        resume token it delivered, on another replica."""
        for out in self._streams:
            out.put_nowait(None)  # type: ignore[arg-type]

    async def subscribe(self, sub: Subscription, resume_token: str) -> None:
        """Replay what the inbox holds after the token (or the offline buffer), then go live."""
        self._by_user[sub.user_id].add(sub)
        await self._replay(sub, resume_token)
        sub.live = True
        self._notify(sub)  # whatever was appended while the replay ran

    async def unsubscribe(self, sub: Subscription) -> None:
        self._dirty.discard(sub)
        if (subs := self._by_user.get(sub.user_id)) is not None:
            subs.discard(sub)
            if not subs:
                del self._by_user[sub.user_id]

    async def _replay(self, sub: Subscription, resume_token: str) -> None:
        sub.epoch = await self._inboxes.epoch()
        token = Token.decode(resume_token) if resume_token else None
        if token and token.epoch == sub.epoch and await self._inboxes.covers(sub.user_id, token.entry_id):
            sub.last_id = token.entry_id
            while batch := await self._inboxes.read_after(sub.user_id, sub.last_id):
                sub.emit_entries(batch)
            return
        if resume_token:
            reason = "epoch_changed" if token and token.epoch != sub.epoch else "token_expired"
            if token is None:
                reason = "token_invalid"
            sub.emit_control(common_pb2.Event(type="resync_required",
                                              resync=common_pb2.ResyncRequired(reason=reason)))
        sub.last_id = await self._inboxes.last_id(sub.user_id) or "0"
        sub.emit_buffered(await self._offline(sub.user_id))

    def _notify(self, sub: Subscription) -> None:
        self._dirty.add(sub)
        self._wake.set()

    async def _pump(self) -> None:
        """Read the inboxes of notified live subscriptions: one XREAD per round, for every woken user
        (from the earliest position any of the user's subscriptions sent; each skips what it has sent)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            ready = [sub for sub in self._dirty if sub.live]
            self._dirty.difference_update(ready)
            if not ready:
                continue
            by_inbox: dict[str, list[Subscription]] = defaultdict(list)
            after: dict[str, str] = {}
            for sub in ready:
                inbox = self._keys.inbox(sub.user_id)
                by_inbox[inbox].append(sub)
                if inbox not in after or parse_id(sub.last_id) < parse_id(after[inbox]):
                    after[inbox] = sub.last_id
            try:
                reply = await self._redis.xread(after, count=READ_BATCH)
            except (redis.exceptions.ConnectionError, OSError) as exc:
                log.warning("inbox read failed (%s); retrying", exc)
                self._dirty.update(ready)
                await asyncio.sleep(0.5)
                self._wake.set()
                continue
            for inbox, rows in reply or []:
                for sub in by_inbox[inbox.decode()]:
                    sub.emit_entries(rows)
                    if len(rows) == READ_BATCH:
                        self._notify(sub)  # more to read

    async def _read(self) -> None:
        while True:
            try:
                async for message in self._pubsub.listen():
                    if message["type"] != "message":
                        continue
                    for user_id in json.loads(message["data"]):
                        for sub in self._by_user.get(user_id, ()):
                            self._notify(sub)
            except (redis.exceptions.ConnectionError, OSError) as exc:
                log.warning("live pub/sub lost (%s); resubscribing and reading every inbox", exc)
                await asyncio.sleep(0.5)
                await self._recover()

    async def _recover(self) -> None:
        """After a pub/sub drop, notifications may have been missed: read every inbox after last sent."""
        try:
            await self._pubsub.subscribe(self._keys.wake)
            for subs in list(self._by_user.values()):
                for sub in subs:
                    self._notify(sub)
        except (redis.exceptions.ConnectionError, OSError) as exc:
            log.warning("recovery failed (%s); will retry", exc)
