"""The live path: one Redis pub/sub connection per process wakes every subscriber of that process.

Fan-out appends an event to each recipient's inbox stream and then publishes, once per batch, the
names of the users it wrote to on one wake channel. A subscription first replays its inbox after its
resume token (or gets the offline buffer), then goes live: each wake-up naming its user makes it read
its inbox after the last entry it sent, so the seam between replay and live neither drops nor
repeats, and a lost or late wake-up only delays an event until the next one (or the next pub/sub
reconnect, which reads every inbox).

No subscription is left deaf: one whose replay fails (Redis, PostgreSQL or the conversation service
unavailable) retries it with jittered backoff until it goes live or its socket goes away, resuming
from what it already sent; the pump and the pub/sub reader retry the same way, logging once per
outage, not per attempt.

Inbox entries travel on as the bytes fan-out stored: they are parsed once, into the gRPC response
(`to_event`), not per step on the way.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any, cast

import redis.asyncio as aioredis
from prometheus_client import Counter

from chatmesh.gen.chat.v1 import common_pb2
from chatmesh.redis_conn import Keys
from chatmesh.resilience import Backoff, OutageLog, is_outage, spawn_supervised
from services.message.delivery.inbox import Inboxes, Token, parse_id
from services.message.delivery.subscription import Outbox, Subscription

log = logging.getLogger(__name__)

READ_BATCH = 500
LATE_READ = 2000  # inbox entries appended while a buffer was read (a few; the rest follow as usual)

REPLAY_FAILURES = Counter(
    "chat_subscription_replay_failures", "Subscription replays that failed and were retried, by cause.", ["cause"]
)

# The offline buffer of a subscription without a usable token: the messages its user has not
# acknowledged as delivered, from PostgreSQL (the source of truth, whatever Redis still holds).
OfflineBuffer = Callable[[str], Awaitable[list[common_pb2.Event]]]


class Hub:
    """Pub/sub is only a wake-up: a notified subscription reads its inbox after the last entry it
    sent. So a notification that never came (pub/sub is at-most-once: a dropped connection loses
    what was published meanwhile), or came out of order, can delay an event until the next one but
    never skip it."""

    def __init__(
        self,
        redis_client: aioredis.Redis,
        pubsub_client: aioredis.Redis,
        keys: Keys,
        offline: OfflineBuffer,
        *,
        time_scale: float = 1.0,
    ) -> None:
        self._redis = redis_client
        self._keys = keys
        self._inboxes = Inboxes(redis_client, keys)
        self._offline = offline
        self._pubsub = pubsub_client.pubsub(ignore_subscribe_messages=True)
        self._by_user: dict[str, set[Subscription]] = defaultdict(set)
        self._dirty: set[Subscription] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._streams: set[Outbox] = set()
        self._resyncs: dict[Subscription, asyncio.Task[None]] = {}  # live subscriptions replaying again
        self._backoff_cap_s = max(5.0 * time_scale, 0.5)
        self._replay_outage = OutageLog(log, "subscription replay")

    async def start(self) -> None:
        """Start the pub/sub reader and the pump; neither needs Redis to be up yet."""
        self._tasks = [spawn_supervised("hub pub/sub", self._read), spawn_supervised("hub pump", self._pump)]

    async def stop(self) -> None:
        for task in [*self._tasks, *self._resyncs.values()]:
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
            out.put_nowait(None)

    async def subscribe(self, sub: Subscription, resume_token: str) -> None:
        """Replay what the inbox holds after the token (or the offline buffer), then go live.

        A replay that fails is retried with backoff, from what it already sent, until it succeeds or
        the subscription is cancelled (its socket went away): never left registered but not live."""
        self._by_user[sub.user_id].add(sub)
        backoff = Backoff(0.1, self._backoff_cap_s)
        attempt = 0
        while True:
            sent_before = sub.last_id
            try:
                await self._replay(sub, resume_token)
                break
            except Exception as exc:  # noqa: BLE001 - an outage is retried; a bug is logged and retried too
                REPLAY_FAILURES.labels("outage" if is_outage(exc) else "error").inc()
                if not is_outage(exc) and attempt == 0:
                    log.exception("replay of %s failed; retrying", sub.subscription_id or sub.user_id)
                attempt += 1
                self._replay_outage.failed(exc)
                if sub.last_id != sent_before:  # this attempt sent entries: resume after them, in its epoch
                    resume_token = Token(sub.epoch, sub.last_id).encode()
                await backoff.sleep()
        self._replay_outage.recovered()
        sub.live = True
        self._notify(sub)  # whatever was appended while the replay ran

    async def unsubscribe(self, sub: Subscription) -> None:
        if task := self._resyncs.pop(sub, None):
            task.cancel()
        self._dirty.discard(sub)
        if (subs := self._by_user.get(sub.user_id)) is not None:
            subs.discard(sub)
            if not subs:
                del self._by_user[sub.user_id]

    async def _replay(self, sub: Subscription, resume_token: str) -> None:
        """Everything is read before anything but inbox entries is emitted, so a replay that fails
        halfway can be retried without sending a control event or the offline buffer twice."""
        sub.epoch = await self._inboxes.epoch()
        token = Token.decode(resume_token) if resume_token else None
        if token and token.epoch == sub.epoch and await self._inboxes.covers(sub.user_id, token.entry_id):
            if token.buffered:
                await self._replay_buffer(sub, token.entry_id)
            else:
                sub.last_id = token.entry_id
            while batch := await self._inboxes.read_after(sub.user_id, sub.last_id):
                sub.emit_entries(batch)
            return
        control = None
        if resume_token:
            reason = "epoch_changed" if token and token.epoch != sub.epoch else "token_expired"
            if token is None:
                reason = "token_invalid"
            control = common_pb2.Event(type="resync_required", resync=common_pb2.ResyncRequired(reason=reason))
        await self._replay_buffer(sub, await self._inboxes.last_id(sub.user_id) or "0", control)

    async def _replay_buffer(self, sub: Subscription, inbox_id: str, control: common_pb2.Event | None = None) -> None:
        """The offline buffer, read after the inbox position `inbox_id`, merged with what the inbox
        gained meanwhile (read last, so nothing committed between the two reads is missed)."""
        buffered = await self._offline(sub.user_id)
        late = await self._inboxes.read_after(sub.user_id, inbox_id, count=LATE_READ)
        if control is not None:
            sub.emit_control(control)
        sub.last_id = inbox_id
        sub.emit_buffer(buffered, late)

    def _notify(self, sub: Subscription) -> None:
        self._dirty.add(sub)
        self._wake.set()

    async def _pump(self) -> None:
        """Read the inboxes of notified live subscriptions: one XREAD per round, for every woken user
        (from the earliest position any of the user's subscriptions sent; each skips what it has sent)."""
        outage = OutageLog(log, "live inbox read")
        backoff = Backoff(0.1, self._backoff_cap_s)
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
                # The epoch with the read, in one round trip: entries of a Redis that lost its data
                # (a new epoch) must not go out under an old epoch's tokens, as if nothing was lost.
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.get(self._keys.epoch)
                    pipe.xread(cast("dict[Any, Any]", after), count=READ_BATCH)  # the stubs' dict is invariant
                    epoch, reply = await pipe.execute()
            except Exception as exc:
                if not is_outage(exc):
                    raise
                outage.failed(exc)
                self._dirty.update(ready)
                await backoff.sleep()
                self._wake.set()
                continue
            outage.recovered()
            backoff.reset()
            current = epoch.decode() if epoch else None
            for sub in [sub for sub in ready if sub.epoch != current]:
                self._resync(sub)
            for inbox, rows in reply or []:
                for sub in by_inbox[inbox.decode()]:
                    if sub.live:
                        sub.emit_entries(rows)
                        if len(rows) == READ_BATCH:
                            self._notify(sub)  # more to read

    def _resync(self, sub: Subscription) -> None:
        """Redis lost its data under a live subscription: replay it from its last position, which its
        old epoch turns into `resync_required` and the offline buffer (not a silent gap)."""
        sub.live = False
        task = asyncio.create_task(self.subscribe(sub, Token(sub.epoch, sub.last_id).encode()))
        self._resyncs[sub] = task
        task.add_done_callback(lambda _: self._resyncs.pop(sub, None))

    async def _read(self) -> None:
        """Wake-ups from fan-out. After every (re)subscription, every live subscription reads its inbox:
        pub/sub is at most once, so whatever was published while the connection was down is lost."""
        outage = OutageLog(log, "live pub/sub")
        backoff = Backoff(0.1, self._backoff_cap_s)
        while True:
            try:
                await self._pubsub.subscribe(self._keys.wake)
                outage.recovered()
                backoff.reset()
                for subs in list(self._by_user.values()):
                    for sub in subs:
                        self._notify(sub)
                async for message in self._pubsub.listen():
                    if message["type"] != "message":
                        continue
                    for user_id in json.loads(message["data"]):
                        for sub in self._by_user.get(user_id, ()):
                            self._notify(sub)
            except Exception as exc:
                if not is_outage(exc):
                    raise
                outage.failed(exc)
                await backoff.sleep()
