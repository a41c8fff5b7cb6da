"""Fan-out's partition leases: each of the K events partitions is fanned out by one message replica at
a time, and the replicas share the partitions fairly.

Every replica heartbeats into a sorted set (`<prefix>:fanout:replicas`, score: Redis' clock), so N,
the live replicas, is known to each; its fair share is ceil(K/N). One script per tick, every third of
the lease's TTL, atomically: heartbeat, forget replicas silent for a TTL, renew this replica's leases,
take free ones up to the share. Leases beyond the share (a replica joined) are not dropped by the
script but by the worker (`release`), between two batches: a lease given up in the middle of a batch
would let the next holder re-process entries this one is still writing. So a second replica gets
half the partitions within a few lease periods, and a dead replica's partitions are free, and taken,
a TTL after its last renewal.

Whoever holds partition 0 also holds the pre-partitioning lease (`<prefix>:fanout:leader`), under
which it reads what an upgrade left in the legacy stream: a replica of the old release takes that
same key, so an old and a new replica never fan out the legacy stream at once.
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis

from chatmesh.redis_conn import Keys
from chatmesh.resilience import OutageLog, is_outage

log = logging.getLogger(__name__)

# KEYS: replicas set, legacy lease, then the K partition leases. ARGV: holder, TTL (ms).
# Returns {share, legacy held (0/1), partitions held...}.
_TICK = """
local holder, ttl = ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, holder)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[1], ttl * 10)
local k = #KEYS - 2
local share = math.ceil(k / redis.call('ZCARD', KEYS[1]))
local mine, free = {}, {}
for p = 0, k - 1 do
  local owner = redis.call('GET', KEYS[p + 3])
  if owner == holder then
    redis.call('PEXPIRE', KEYS[p + 3], ttl)
    mine[#mine + 1] = p
  elseif not owner then
    free[#free + 1] = p
  end
end
for _, p in ipairs(free) do
  if #mine >= share then break end
  redis.call('SET', KEYS[p + 3], holder, 'PX', ttl)
  mine[#mine + 1] = p
end
local legacy = 0
for _, p in ipairs(mine) do
  if p == 0 then
    local owner = redis.call('GET', KEYS[2])
    if owner == holder then
      redis.call('PEXPIRE', KEYS[2], ttl)
      legacy = 1
    elseif not owner then
      redis.call('SET', KEYS[2], holder, 'PX', ttl)
      legacy = 1
    end
  end
end
local reply = {share, legacy}
for _, p in ipairs(mine) do reply[#reply + 1] = p end
return reply
"""

# KEYS: leases to give up (only those still ours are deleted).
_RELEASE = """
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
end
return 1
"""


class PartitionLeases:
    """This replica's view of its leases, refreshed every third of the TTL by `keep`."""

    def __init__(self, redis_client: aioredis.Redis, keys: Keys, holder: str, ttl_s: float) -> None:
        self._redis = redis_client
        self._keys = keys
        self._holder = holder
        self.ttl_s = ttl_s
        self._tick = redis_client.register_script(_TICK)
        self._release = redis_client.register_script(_RELEASE)
        self.held: set[int] = set()  # partitions whose lease this replica holds
        self.legacy = False  # whether it holds the legacy stream's lease too
        self.share = keys.partitions
        # A tick's answer must not land after a release it did not see (it would name a partition
        # given up, and the worker would read it beside its next holder): one at a time.
        self._lock = asyncio.Lock()

    async def tick(self) -> None:
        async with self._lock:
            await self._tick_locked()

    async def _tick_locked(self) -> None:
        reply = await self._tick(
            keys=[
                self._keys.fanout_replicas,
                self._keys.fanout_legacy_lease,
                *(self._keys.fanout_lease(p) for p in range(self._keys.partitions)),
            ],
            args=[self._holder, max(int(self.ttl_s * 1000), 50)],
        )
        self.share, self.legacy = int(reply[0]), bool(reply[1])
        self.held = {int(p) for p in reply[2:]}

    async def keep(self) -> None:
        """Tick every third of the TTL, whatever the worker is busy with (a long batch must not lapse
        a lease). A failed tick may have let the leases lapse: hold nothing until one succeeds."""
        outage = OutageLog(log, "fan-out leases")
        while True:
            try:
                await self.tick()
                outage.recovered()
            except Exception as exc:  # noqa: BLE001 - whatever failed, the leases may have lapsed: stop fanning out
                self.held, self.legacy = set(), False
                if not is_outage(exc):
                    log.exception("fan-out lease renewal failed")
                outage.failed(exc)
            await asyncio.sleep(self.ttl_s / 3)

    def surplus(self) -> list[int]:
        """The partitions held beyond the fair share (the highest numbers), to give up."""
        return sorted(self.held)[self.share :]

    async def release(self, partitions: list[int]) -> None:
        """Give up these partitions now (the worker has finished its batch of them); the legacy lease
        goes with partition 0."""
        if not partitions:
            return
        keys = [self._keys.fanout_lease(p) for p in partitions]
        if 0 in partitions:
            keys.append(self._keys.fanout_legacy_lease)
            self.legacy = False
        async with self._lock:
            self.held -= set(partitions)
            await self._release(keys=keys, args=[self._holder])

    async def leave(self) -> None:
        """On a clean stop: give up every lease and leave the set, so the others take over at once
        rather than a TTL later."""
        async with self._lock:
            held = sorted(self.held)
            self.held, self.legacy = set(), False
            await self._redis.zrem(self._keys.fanout_replicas, self._holder)
            await self._release(
                keys=[*(self._keys.fanout_lease(p) for p in held), self._keys.fanout_legacy_lease], args=[self._holder]
            )
