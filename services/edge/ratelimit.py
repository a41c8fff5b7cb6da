"""Per-user abuse limits held in Redis, so they hold across every edge replica.

Rates are fixed windows (`count` per `seconds`): one atomic script increments the user's counter and
returns how long until the window ends, which is the client's `Retry-After`. Concurrent sockets are
a sorted set per user scored by a heartbeat deadline, so a replica that dies without cleaning up
frees its slots when they expire. Redis being unreachable fails open (logged): limits protect the
mesh, they must not take it down.

Typing frames are limited by the presence service itself (across edges, in the same Redis); the edge
passes its RATE_LIMITED answer on as an error frame or a 429.
"""

from __future__ import annotations

import logging
import math
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

SOCKET_LEASE_S = 120.0  # a socket's slot outlives its replica by at most this long

# KEYS: counter. ARGV: limit, window_ms. Returns {allowed, ms until the window ends}.
_RATE = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]); ttl = tonumber(ARGV[2]) end
if n > tonumber(ARGV[1]) then return {0, ttl} end
return {1, ttl}
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


class RateLimiter:
    def __init__(self, redis_url: str, prefix: str) -> None:
        self._redis = aioredis.Redis.from_url(redis_url) if redis_url else None
        self._prefix = f"{prefix}:edge"
        if self._redis is None:
            log.warning("CHAT_REDIS_URL is not set: per-user rate and socket limits are off")
        if self._redis is not None:
            self._rate = self._redis.register_script(_RATE)
            self._acquire = self._redis.register_script(_ACQUIRE)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    async def hit(self, name: str, user_id: str, limit: tuple[int, float]) -> float:
        """0 when allowed; otherwise the seconds to wait (a whole number, at least 1)."""
        count, seconds = limit
        if count <= 0 or self._redis is None:
            return 0.0
        key = f"{self._prefix}:rate:{name}:{{{user_id}}}"
        try:
            allowed, ttl_ms = await self._rate(keys=[key], args=[count, max(1, int(seconds * 1000))])
        except RedisError as exc:
            log.warning("rate limit %s unchecked (Redis: %r)", name, exc)
            return 0.0
        return 0.0 if allowed else float(max(1, math.ceil(int(ttl_ms) / 1000)))

    def _sockets_key(self, user_id: str) -> str:
        return f"{self._prefix}:sockets:{{{user_id}}}"

    async def acquire_socket(self, user_id: str, socket_id: str, limit: int) -> bool:
        """Take (or renew) one of the user's socket slots; False when all are taken."""
        if limit <= 0 or self._redis is None:
            return True
        now_ms = int(time.time() * 1000)
        try:
            return bool(await self._acquire(keys=[self._sockets_key(user_id)],
                                            args=[socket_id, now_ms, int(SOCKET_LEASE_S * 1000), limit]))
        except RedisError as exc:
            log.warning("socket limit unchecked (Redis: %r)", exc)
            return True

    async def release_socket(self, user_id: str, socket_id: str) -> None:
        if self._redis is None:
            return
        try:
            await self._redis.zrem(self._sockets_key(user_id), socket_id)
        except RedisError as exc:
            log.warning("socket slot not released (Redis: %r); it expires", exc)
