"""Fan-out: a Redis consumer group reads the events stream and appends each event to every
recipient's inbox, then wakes the hubs once per batch with the names of the users it wrote to.

Per batch, the inbox appends, a done-marker per event, the XACKs and the wake-up go in one Lua
script (atomic like MULTI, and one round trip), so an event is either fanned out and acknowledged
completely or not at all; the done-marker makes a re-read of the same event (the relay may publish
a row twice if it dies between XADD and its commit) a no-op. One replica at a time fans out, by a lease in Redis, so a conversation's events reach each inbox in
order; the others stand by and take over within the lease's TTL when it dies, first finishing the
entries it had read but not acknowledged. An entry that fails stays pending and is retried after
2 s, 4 s, 8 s (scaled by CHAT_TIME_SCALE); after MAX_RETRIES retries it goes to the dead-letter stream
with its reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import redis.asyncio as aioredis
import redis.exceptions

from chatmesh.gen.chat.v1 import common_pb2
from chatmesh.membership import MembershipCache
from chatmesh.metrics import DEAD_LETTER
from chatmesh.redis_conn import Keys
from services.message.inbox import INBOX_MAXLEN

log = logging.getLogger(__name__)

GROUP = "fanout"
BATCH = 200
BACKOFF_S = 2.0
MAX_RETRIES = 3
DONE_TTL_S = 24 * 3600
LEASE_S = 3.0
MIN_LEASE_S = 1.0  # however scaled: a loaded machine must not lapse a live worker's lease

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""


# One batch, server-side and atomic (a script runs alone, like MULTI): per event, unless its
# done-marker exists, an XADD to each recipient's inbox (the event id beside the payload, so a reader
# can skip an event without parsing it) and the done-marker; then its XACK; last, one wake-up naming
# the batch's recipients. KEYS: the events stream, then per event its done-marker and its inboxes.
# ARGV: group, inbox maxlen, done-marker TTL, wake channel, per event (entry id, event id, payload,
# recipient count), and last the wake-up ("" for none).
_FAN_OUT = """
local group, maxlen, ttl, channel = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local k, a = 2, 5
while a < #ARGV do
  local entry_id, event_id, data, n = ARGV[a], ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])
  if redis.call('EXISTS', KEYS[k]) == 0 then
    for i = 1, n do
      redis.call('XADD', KEYS[k + i], 'MAXLEN', '~', maxlen, '*', 'e', data, 'i', event_id)
    end
    redis.call('SET', KEYS[k], '1', 'EX', ttl)
  end
  redis.call('XACK', KEYS[1], group, entry_id)
  k, a = k + 1 + n, a + 4
end
if ARGV[#ARGV] ~= '' then redis.call('PUBLISH', channel, ARGV[#ARGV]) end
return 1
"""


class _Lease:
    """A Redis key naming the one fan-out worker; it lapses TTL after its holder stops renewing."""

    def __init__(self, redis_client: aioredis.Redis, key: str, holder: str, ttl_s: float) -> None:
        self._redis = redis_client
        self._key = key
        self._holder = holder
        self.ttl_s = ttl_s
        self._script = redis_client.register_script(_RENEW)

        self.held = False

    async def keep(self) -> None:
        """Renew the lease if ours, take it if free, every third of its TTL, whatever the worker is
        busy with (a long batch must not lapse it)."""
        while True:
            try:
                self.held = bool(await self._script(keys=[self._key],
                                                    args=[self._holder, max(int(self.ttl_s * 1000), 50)]))
            except (redis.exceptions.ConnectionError, OSError):
                self.held = False
            await asyncio.sleep(self.ttl_s / 3)


class Fanout:
    def __init__(self, redis_client: aioredis.Redis, keys: Keys, membership: MembershipCache, consumer: str,
                 time_scale: float = 1.0) -> None:
        self._redis = redis_client
        self._keys = keys
        self._membership = membership
        self._consumer = consumer
        self._scale = time_scale
        self._errors: dict[str, str] = {}
        self._fan_out = redis_client.register_script(_FAN_OUT)

    async def run(self) -> None:
        """Fan out while this replica holds the lease; stand by (and take over when it lapses) otherwise.

        One worker at a time keeps each conversation's events in order in every inbox: competing
        consumers would append a conversation's seq n+1 before seq n whenever their batches race.
        """
        await self._ensure_group()
        lease = _Lease(self._redis, f"{self._keys.prefix}:fanout:leader", self._consumer,
                       max(LEASE_S * self._scale, MIN_LEASE_S))
        block_ms = max(int(lease.ttl_s * 1000 / 3), 10)
        keeper = asyncio.create_task(lease.keep())
        try:
            leading = False
            last_retry_scan = 0.0
            while True:
                try:
                    if not lease.held:
                        leading = False
                        await asyncio.sleep(lease.ttl_s / 3)
                        continue
                    if not leading:
                        leading = True
                        await self.take_over()
                    reply = await self._redis.xreadgroup(GROUP, self._consumer, {self._keys.events: ">"},
                                                         count=BATCH, block=block_ms)
                    for _, entries in reply or []:
                        await self.process(entries)
                    if time.monotonic() - last_retry_scan >= BACKOFF_S * self._scale / 2:
                        last_retry_scan = time.monotonic()
                        await self.retry_pending()
                except redis.exceptions.ResponseError as exc:
                    if "NOGROUP" in str(exc):
                        await self._ensure_group()
                        continue
                    raise
                except (redis.exceptions.ConnectionError, OSError) as exc:
                    log.warning("fan-out lost Redis (%s); retrying", exc)
                    leading = False
                    await asyncio.sleep(0.5 * self._scale)
        finally:
            keeper.cancel()

    async def take_over(self) -> None:
        """On becoming the worker: first finish what a previous worker read but never acknowledged
        (it died mid-batch), in stream order, before reading anything new."""
        while True:
            pending = await self._redis.xpending_range(self._keys.events, GROUP, min="-", max="+", count=BATCH)
            others = [p["message_id"] for p in pending if p["consumer"].decode() != self._consumer]
            if not others:
                return
            claimed = await self._redis.xclaim(self._keys.events, GROUP, self._consumer, min_idle_time=0,
                                               message_ids=others)
            await self.process([(entry_id, fields) for entry_id, fields in claimed if fields])

    async def _ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(self._keys.events, GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def process(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        """Fan out a batch; entries that fail stay pending for a retry with backoff."""
        plans: list[tuple[bytes, common_pb2.Event, bytes, list[str]]] = []
        for entry_id, fields in entries:
            try:
                data = fields[b"e"]
                event = common_pb2.Event.FromString(data)
                plans.append((entry_id, event, data, await self._recipients(event)))
            except Exception as exc:  # noqa: BLE001 - any failure is retried, then dead-lettered with its reason
                self._errors[entry_id.decode()] = f"{type(exc).__name__}: {exc}"
                log.warning("fan-out of %s failed: %s", entry_id, exc)
        if not plans:
            return
        keys = [self._keys.events]
        args: list[str | bytes | int] = [GROUP, INBOX_MAXLEN, DONE_TTL_S, self._keys.wake]
        woken: set[str] = set()
        for entry_id, event, data, recipients in plans:
            keys.append(self._done_key(event))
            keys.extend(self._keys.inbox(user_id) for user_id in recipients)
            args.extend((entry_id, event.event_id, data, len(recipients)))
            woken.update(recipients)
        # The wake-up names every recipient of the batch, even of an event already fanned out (rare:
        # a re-read); a needless wake-up costs one empty inbox read.
        args.append(json.dumps(sorted(woken)) if woken else "")
        await self._fan_out(keys=keys, args=args)

    async def _recipients(self, event: common_pb2.Event) -> list[str]:
        if event.HasField("conversation"):
            self._membership.invalidate(event.conversation_id)
            users = {p.user_id for p in event.conversation.conversation.participants}
            if event.conversation.user_id:
                users.add(event.conversation.user_id)
            return sorted(users)
        membership = await self._membership.get(event.conversation_id)
        return sorted(membership.roles)

    def _done_key(self, event: common_pb2.Event) -> str:
        return f"{self._keys.prefix}:fanned:{event.event_id}"

    async def retry_pending(self) -> None:
        """Claim entries idle past their backoff (a failure here, or a dead worker), retry or dead-letter."""
        base_ms = int(BACKOFF_S * 1000 * self._scale)
        pending = await self._redis.xpending_range(self._keys.events, GROUP, min="-", max="+", count=BATCH,
                                                   idle=base_ms)
        # Delivery n (n = 1 is the first try) failed: retry n waits 2 s * 2^(n-1), so 2 s, 4 s, 8 s;
        # once the last retry has failed, the entry goes to the dead letter stream.
        dead = [p["message_id"] for p in pending if p["times_delivered"] > MAX_RETRIES]
        retry = [p["message_id"] for p in pending if p["times_delivered"] <= MAX_RETRIES
                 and p["time_since_delivered"] >= base_ms * 2 ** (p["times_delivered"] - 1)]
        if dead:
            await self._dead_letter(dead)
        if retry:
            claimed = await self._redis.xclaim(self._keys.events, GROUP, self._consumer, min_idle_time=base_ms,
                                               message_ids=retry)
            await self.process([(entry_id, fields) for entry_id, fields in claimed if fields])

    async def _dead_letter(self, entry_ids: list[bytes]) -> None:
        entries = await self._redis.xclaim(self._keys.events, GROUP, self._consumer, min_idle_time=0,
                                           message_ids=entry_ids)
        async with self._redis.pipeline(transaction=True) as tx:
            for entry_id, fields in entries:
                reason = self._errors.pop(entry_id.decode(), "retries exhausted")
                tx.xadd(self._keys.dead_letter, {b"e": fields.get(b"e", b""), b"entry": entry_id,
                                                 b"reason": reason.encode()})
                tx.xack(self._keys.events, GROUP, entry_id)
                log.error("event %s moved to dead letter after %d retries: %s", entry_id.decode(), MAX_RETRIES, reason)
                DEAD_LETTER.inc()
            await tx.execute()
