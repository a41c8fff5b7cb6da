"""The live path: one Redis pub/sub connection per process hands fan-out's batches to its subscribers.

Fan-out appends an event to each recipient's inbox and publishes, once per batch and in the same
script, the batch itself: the events and, per recipient, the inbox entry each new one follows. A
subscription first replays its inbox after its resume token (or gets the offline buffer), then goes
live: a batch entry whose previous id is the last entry the subscription sent (in its epoch) is
exactly its next inbox entry, and goes out as is, with no Redis read. Anything else (a batch lost,
as pub/sub is at most once; a subscription that was still replaying; another epoch) marks the
subscription for the pump, which reads its inbox after the last entry it sent, as every wake-up did
before. So the seam between replay and live neither drops nor repeats, a lost or late batch only
delays an event until the next one (or the next pub/sub reconnect, which reads every inbox), and the
two paths may race: each skips what the other sent (`Subscription.emit_entries`).

An event a batch brings to several subscriptions of one gRPC stream (the members of a group on one
edge, a user's devices) is queued once for all of them.

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

import msgpack
import redis.asyncio as aioredis
from prometheus_client import Counter

from chatmesh.gen.chat.v1 import common_pb2
from chatmesh.pubsub import listen_forever, subscribe_exactly
from chatmesh.redis_conn import Keys
from chatmesh.resilience import Backoff, OutageLog, is_outage, spawn_supervised
from services.message.delivery.inbox import Inboxes, Token, live_channel, parse_id
from services.message.delivery.subscription import Outbox, Recipient, Subscription

log = logging.getLogger(__name__)

READ_BATCH = 500
LATE_READ = 2000  # inbox entries appended while a buffer was read (a few; the rest follow as usual)

REPLAY_FAILURES = Counter(
    "chat_subscription_replay_failures", "Subscription replays that failed and were retried, by cause.", ["cause"]
)

INBOX_READS = Counter(
    "chat_hub_inbox_reads",
    "Inbox reads by the hub, by reason: replay (a subscription starting), live (the read after it goes "
    "live), gap (a live batch that does not follow what a subscription sent), reconnect (pub/sub "
    "subscribed again), wake (an old fan-out's wake-up), more (a read that filled its batch), retry.",
    ["reason"],
)
LIVE_ENTRIES = Counter(
    "chat_hub_live_entries", "Inbox entries a live batch handed to a subscription with no inbox read."
)
_GAP, _WAKE, _MORE, _RETRY = "gap", "wake", "more", "retry"

# The offline buffer of a subscription without a usable token: the messages its user has not
# acknowledged as delivered, from PostgreSQL (the source of truth, whatever Redis still holds).
OfflineBuffer = Callable[[str], Awaitable[list[common_pb2.Event]]]


class Hub:
    """A live batch is used only where it provably continues what a subscription sent; otherwise it is
    a wake-up, and the subscription reads its inbox after the last entry it sent. So a batch that
    never came (pub/sub is at-most-once: a dropped connection loses what was published meanwhile),
    or came out of order, can delay an event until the next one but never skip it."""

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
        self._dirty: dict[Subscription, str] = {}  # -> why its inbox is to be read (INBOX_READS)
        # Subscriptions whose inbox a fan-out worker of the previous version appended to (its wake-up
        # came) since their last read began: that worker does not keep the inbox's last-id key, so a
        # live batch's "previous entry" may be stale for them until a read has caught them up.
        self._woken: dict[Subscription, int] = {}
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
        self._notify(sub, "live")  # whatever was appended while the replay ran

    async def unsubscribe(self, sub: Subscription) -> None:
        if task := self._resyncs.pop(sub, None):
            task.cancel()
        self._dirty.pop(sub, None)
        self._woken.pop(sub, None)
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
            while True:
                INBOX_READS.labels("replay").inc()
                if not (batch := await self._inboxes.read_after(sub.user_id, sub.last_id)):
                    break
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
        INBOX_READS.labels("replay").inc()
        late = await self._inboxes.read_after(sub.user_id, inbox_id, count=LATE_READ)
        if control is not None:
            sub.emit_control(control)
        sub.last_id = inbox_id
        sub.emit_buffer(buffered, late)

    def _notify(self, sub: Subscription, reason: str) -> None:
        self._dirty.setdefault(sub, reason)
        self._wake.set()

    def _on_batch(self, data: bytes) -> None:
        """A live batch from fan-out: [epoch, [[payload, event id, seq, conversation, [user, previous
        entry id, entry id, ...]], ...]]. An entry goes straight to each live subscription of its user
        that sent exactly the entry before it, in the batch's epoch; any other subscription of the user
        is left to the pump. Each event is queued once per stream, for all the subscriptions it reaches."""
        epoch_raw, events = msgpack.unpackb(data, raw=True, use_list=True)
        epoch = epoch_raw.decode()
        by_user, woken = self._by_user, self._woken
        direct = 0
        for payload, _, seq, conversation, recipients in events:
            streams: dict[Outbox, list[Recipient]] = {}
            for i in range(0, len(recipients), 3):
                subs = by_user.get(recipients[i].decode())
                if not subs:
                    continue
                previous, entry_id = recipients[i + 1].decode(), recipients[i + 2].decode()
                for sub in subs:
                    if not sub.live:
                        continue  # replaying: it reads its inbox when it goes live
                    if sub.last_id != previous or sub.epoch != epoch or (woken and sub in woken):
                        self._notify(sub, _GAP)
                        continue
                    direct += 1
                    if (token := sub.take(entry_id, conversation, seq)) is not None:
                        if (to := streams.get(sub.out)) is None:
                            to = streams[sub.out] = []
                        to.append((sub.subscription_id, token))
            for out, to in streams.items():
                out.put_nowait((payload, to))
        if direct:
            LIVE_ENTRIES.inc(direct)

    def _on_wake(self, data: bytes) -> None:
        """A wake-up of a fan-out worker of the previous version: a JSON list of the users whose inboxes
        it appended to. That worker does not keep the inboxes' last-id keys, so until a read begun after
        it has caught them up, its users' subscriptions take nothing from a live batch."""
        for user_id in json.loads(data):
            for sub in self._by_user.get(user_id, ()):
                self._woken[sub] = self._woken.get(sub, 0) + 1
                self._notify(sub, _WAKE)

    async def _pump(self) -> None:
        """Read the inboxes of marked live subscriptions: one XREAD per round, for every such user
        (from the earliest position any of the user's subscriptions sent; each skips what it has sent)."""
        outage = OutageLog(log, "live inbox read")
        backoff = Backoff(0.1, self._backoff_cap_s)
        while True:
            await self._wake.wait()
            self._wake.clear()
            ready = {sub: reason for sub, reason in self._dirty.items() if sub.live}
            for sub in ready:
                del self._dirty[sub]
            if not ready:
                continue
            woken = {sub: self._woken[sub] for sub in ready if sub in self._woken}
            by_inbox: dict[str, list[Subscription]] = defaultdict(list)
            after: dict[str, str] = {}
            why: dict[str, str] = {}
            for sub, reason in ready.items():
                inbox = self._keys.inbox(sub.user_id)
                by_inbox[inbox].append(sub)
                why.setdefault(inbox, reason)
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
                for sub in ready:
                    self._dirty.setdefault(sub, _RETRY)
                await backoff.sleep()
                self._wake.set()
                continue
            for reason in why.values():
                INBOX_READS.labels(reason).inc()
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
                            self._notify(sub, _MORE)  # more to read
            for sub, wakes in woken.items():  # caught up with what those wake-ups announced
                if self._woken.get(sub) == wakes and sub not in self._dirty:
                    del self._woken[sub]

    def _resync(self, sub: Subscription) -> None:
        """Redis lost its data under a live subscription: replay it from its last position, which its
        old epoch turns into `resync_required` and the offline buffer (not a silent gap)."""
        sub.live = False
        task = asyncio.create_task(self.subscribe(sub, Token(sub.epoch, sub.last_id).encode()))
        self._resyncs[sub] = task
        task.add_done_callback(lambda _: self._resyncs.pop(sub, None))

    async def _read(self) -> None:
        """Live batches from fan-out, and the wake-ups of a fan-out worker of the previous version (a
        rolling upgrade: each names the users to read the inboxes of). A worker of this version
        publishes that wake-up too, right after its live batch, for the hubs of the previous version:
        that one is skipped. After every (re)subscription, every live subscription reads its inbox:
        pub/sub is at most once, so whatever was published while the connection was down is lost."""
        live = live_channel(self._keys)
        after_batch = False

        def on_message(channel: bytes, data: bytes) -> None:
            nonlocal after_batch
            if channel.decode() == live:
                self._on_batch(data)
                after_batch = True
                return
            if not after_batch:
                self._on_wake(data)
            after_batch = False

        def on_resubscribe() -> None:
            nonlocal after_batch
            after_batch = False
            for subs in list(self._by_user.values()):
                for sub in subs:
                    self._notify(sub, "reconnect")

        await listen_forever(
            self._pubsub,
            lambda: subscribe_exactly(self._pubsub, [live, self._keys.wake]),
            on_message,
            outage=OutageLog(log, "live pub/sub"),
            backoff=Backoff(0.1, self._backoff_cap_s),
            on_resubscribe=on_resubscribe,
        )
