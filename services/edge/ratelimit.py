"""Per-user abuse limits held in Redis, so they hold across every edge replica.

Rates are fixed windows (`count` per `seconds`) on one counter per user in Redis, whose time to live
is the client's `Retry-After`. REST requests take one unit per request with one atomic script call
(`hit`). WebSocket message sends, the hot path, take units from a local bucket per user (`take`)
that is filled by reserving units from the same counter in batches: one script call reserves up to
the batch size, never past what the window has left, so the limit across replicas and transports is
never exceeded. Batches start at 1 and double while a user keeps sending (up to 1/16 of the limit),
so a quiet user costs what a REST request does and a busy one a round trip every few dozen sends;
the price is that units a replica reserved and did not use are lost for the window, so a user who
switches replicas mid-window may be refused at most 1/16 of the limit early. A refusal is
remembered until the window ends, so a flooding client does not reach Redis at all.

Concurrent sockets are a sorted set per user scored by a lease deadline, so a replica that dies
without cleaning up frees its slots when they expire. Each replica renews the leases of all of its
sockets together, in one pipeline every LEASE_RENEW_S. Redis being unreachable or stalled fails open
within a fraction of a second (`RedisGuard`: a short deadline per call, logged once per outage):
limits protect the mesh, they must not take it down.

Typing frames are limited by the presence service itself (across edges, in the same Redis); the edge
passes its RATE_LIMITED answer on as an error frame or a 429.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from chatmesh.redis_conn import open_redis
from chatmesh.redis_guard import RedisGuard

log = logging.getLogger(__name__)

SOCKET_LEASE_S = 120.0  # a socket's slot outlives its replica by at most this long
LEASE_RENEW_S = 30.0
RENEW_CHUNK = 1000  # users per pipeline round trip when renewing leases
MAX_BATCH = 64  # units reserved at once for one user, at most
SOCKET_TIMEOUT_S = 1.0  # the Redis client's own bound on a read, under the guard's per-call deadlines
RENEW_DEADLINE_S = 2.0  # a renewal pipeline carries up to RENEW_CHUNK users and runs in the background

# KEYS: counter. ARGV: limit, window_ms. Returns {allowed, ms until the window ends}.
_RATE = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]); ttl = tonumber(ARGV[2]) end
if n > tonumber(ARGV[1]) then return {0, ttl} end
return {1, ttl}
"""

# KEYS: counter. ARGV: limit, window_ms, wanted. Returns {units granted (0..wanted), ms until the window ends}.
_RESERVE = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
local grant = math.min(tonumber(ARGV[3]), tonumber(ARGV[1]) - n)
if grant > 0 then
  if redis.call('INCRBY', KEYS[1], grant) == grant then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
else
  grant = 0
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  if n > 0 or grant > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
  ttl = tonumber(ARGV[2])
end
return {grant, ttl}
"""

# KEYS: the user's sockets. ARGV: socket id, now_ms, lease_ms, limit. Returns 1 when admitted.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


class _Script:
    """EVALSHA, loading the script on NOSCRIPT. redis-py's own Script checks `isinstance(client,
    Pipeline)` on every call, and Pipeline is a typing Protocol subclass, which makes that check slow
    enough to show in the edge's profile."""

    def __init__(self, redis: aioredis.Redis, source: str) -> None:
        self._redis = redis
        self._source = source
        self._sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: list[str], args: list[Any]) -> Any:
        # redis-py types its commands for the sync and the async client at once: this one awaits.
        try:
            return await cast(Awaitable[Any], self._redis.evalsha(self._sha, len(keys), *keys, *args))
        except NoScriptError:
            await self._redis.script_load(self._source)
            return await cast(Awaitable[Any], self._redis.evalsha(self._sha, len(keys), *keys, *args))


@dataclass(slots=True)
class _Bucket:
    """Units this replica reserved for one user in the current window."""

    units: int
    window_end: float  # monotonic
    batch: int  # the size of the last reservation
    refused: bool = False  # the window has nothing left


class RateLimiter:
    def __init__(self, redis_url: str, prefix: str) -> None:
        self._redis = open_redis(redis_url, timeout_s=SOCKET_TIMEOUT_S) if redis_url else None
        self.guard = RedisGuard("edge limits: Redis (failing open)")
        self._prefix = f"{prefix}:edge"
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._leases: dict[str, str] = {}  # socket id -> user id, for the sockets held here
        if self._redis is None:
            log.warning("CHAT_REDIS_URL is not set: per-user rate and socket limits are off")
        if self._redis is not None:
            self._rate = _Script(self._redis, _RATE)
            self._reserve = _Script(self._redis, _RESERVE)
            self._acquire = _Script(self._redis, _ACQUIRE)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    def _rate_key(self, name: str, user_id: str) -> str:
        return f"{self._prefix}:rate:{name}:{{{user_id}}}"

    async def hit(self, name: str, user_id: str, limit: tuple[int, float]) -> float:
        """0 when allowed; otherwise the seconds to wait (a whole number, at least 1)."""
        count, seconds = limit
        if count <= 0 or self._redis is None:
            return 0.0
        answer = await self.guard.call(
            lambda: self._rate(keys=[self._rate_key(name, user_id)], args=[count, max(1, int(seconds * 1000))])
        )
        if answer is None:
            return 0.0  # unchecked: Redis is away
        allowed, ttl_ms = answer
        return 0.0 if allowed else float(max(1, math.ceil(int(ttl_ms) / 1000)))

    async def take(self, name: str, user_id: str, limit: tuple[int, float]) -> float:
        """Like `hit`, from this replica's reserved units: Redis is asked once per batch."""
        count, seconds = limit
        if count <= 0 or self._redis is None:
            return 0.0
        now = time.monotonic()
        bucket = self._buckets.get((name, user_id))
        if bucket is not None and now >= bucket.window_end:
            bucket = None  # a new window: what was left of the old one is gone with it
        if bucket is not None:
            if bucket.units > 0:
                bucket.units -= 1
                return 0.0
            if bucket.refused:
                return float(max(1, math.ceil(bucket.window_end - now)))
        wanted = min(bucket.batch * 2, max(1, min(MAX_BATCH, count // 16))) if bucket else 1
        answer = await self.guard.call(
            lambda: self._reserve(
                keys=[self._rate_key(name, user_id)], args=[count, max(1, int(seconds * 1000)), wanted]
            )
        )
        if answer is None:
            return 0.0  # unchecked: Redis is away
        granted, ttl_ms = answer
        granted, window_end = int(granted), time.monotonic() + int(ttl_ms) / 1000
        current = self._buckets.get((name, user_id))
        if current is not None and current.window_end > now and not current.refused:
            current.units += max(0, granted - 1)  # a concurrent reservation landed first: pool them
            current.batch = max(current.batch, granted)
            current.refused = granted == 0 and current.units == 0
        else:
            self._buckets[(name, user_id)] = _Bucket(max(0, granted - 1), window_end, max(1, granted), granted == 0)
        return 0.0 if granted else float(max(1, math.ceil(int(ttl_ms) / 1000)))

    def _sockets_key(self, user_id: str) -> str:
        return f"{self._prefix}:sockets:{{{user_id}}}"

    async def acquire_socket(self, user_id: str, socket_id: str, limit: int) -> bool:
        """Take one of the user's socket slots; False when all are taken. Renewed by `run` until released."""
        if limit <= 0 or self._redis is None:
            return True
        now_ms = int(time.time() * 1000)
        answer = await self.guard.call(
            lambda: self._acquire(
                keys=[self._sockets_key(user_id)], args=[socket_id, now_ms, int(SOCKET_LEASE_S * 1000), limit]
            )
        )
        admitted = answer is None or bool(answer)  # unchecked when Redis is away; the renewal records it later
        if admitted:
            self._leases[socket_id] = user_id
        return admitted

    async def release_socket(self, user_id: str, socket_id: str) -> None:
        self._leases.pop(socket_id, None)
        if (redis := self._redis) is None:
            return
        await self.guard.call(partial(redis.zrem, self._sockets_key(user_id), socket_id))  # if not, it expires

    async def run(self, renew_s: float = LEASE_RENEW_S) -> None:
        """Renew every socket lease of this replica, and forget buckets of windows that ended."""
        while True:
            await asyncio.sleep(renew_s)
            now = time.monotonic()
            for key in [k for k, b in self._buckets.items() if b.window_end <= now]:
                del self._buckets[key]
            await self.renew_leases()  # when Redis is away, the next round renews (a lease outlives four)

    async def renew_leases(self) -> bool:
        """One pipeline per RENEW_CHUNK users: ZADD of the user's sockets here, then the key's expiry.
        False when Redis did not answer (the guard logged it)."""
        if (redis := self._redis) is None or not self._leases:
            return True
        leases = dict(self._leases)
        by_user: dict[str, list[str]] = {}
        for socket_id, user_id in leases.items():
            by_user.setdefault(user_id, []).append(socket_id)
        deadline = int(time.time() * 1000) + int(SOCKET_LEASE_S * 1000)
        users = list(by_user.items())
        for start in range(0, len(users), RENEW_CHUNK):
            pipe = redis.pipeline(transaction=False)
            for user_id, sockets in users[start : start + RENEW_CHUNK]:
                key = self._sockets_key(user_id)
                pipe.zadd(key, dict.fromkeys(sockets, deadline))
                pipe.pexpire(key, int(SOCKET_LEASE_S * 1000))
            if await self.guard.call(pipe.execute, deadline_s=RENEW_DEADLINE_S, force=True) is None:
                return False
        # A socket released while the pipeline ran may have been renewed after its ZREM: remove it again.
        released = [s for s in leases if s not in self._leases]
        for socket_id in released:
            await self.guard.call(
                partial(redis.zrem, self._sockets_key(leases[socket_id]), socket_id),
                deadline_s=RENEW_DEADLINE_S,
                force=True,
            )
        return True

    async def ping(self) -> bool | None:
        """Whether Redis answers now (None: not configured), for /readyz; always asks, within the deadline."""
        if (redis := self._redis) is None:
            return None
        return await self.guard.call(partial(redis.execute_command, "PING"), force=True) is not None
