"""Redis calls that must not wait for Redis: each within a short deadline, and skipped altogether
while Redis is away.

Two callers need this. The edge's abuse limits protect the mesh and must never stop it, and the
membership caches' version checks (`chatmesh.membership`) must not hold up a send. When Redis is
down, or stalled (it accepts connections and never answers: SIGSTOP, a swapping host, a full
backlog), neither may wait for it. Two bounds apply to every call: the client's own socket timeout
(`open_redis`) and an asyncio deadline around the whole call, which also covers connecting,
redis-py's one retry and a script reload. Cancelling a redis-py command drops its connection, so a
late answer never reaches the next caller.

Once a call fails for an outage the guard trips: calls fail at once without touching Redis (the
caller falls back: fails open, or asks the source of truth), and one call at a time probes Redis
again after a jittered backoff (up to PROBE_CAP_S). A stalled Redis so costs one request in a while a
deadline, not every request, and a caller does not pile connections up in the backlog of a server
that does not read them. The first failure and the recovery are logged once each (OutageLog), not
once per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import RedisError

from chatmesh.resilience import Backoff, OutageLog, is_outage

log = logging.getLogger(__name__)

T = TypeVar("T")

CALL_DEADLINE_S = 0.25  # a healthy Redis answers in a millisecond or two, a busy one well within this
PROBE_START_S = 0.25
PROBE_CAP_S = 1.0


class RedisGuard:
    def __init__(self, what: str, deadline_s: float = CALL_DEADLINE_S) -> None:
        self.deadline_s = deadline_s
        self._outage = OutageLog(log, what)
        self._backoff = Backoff(PROBE_START_S, PROBE_CAP_S)
        self._retry_at = 0.0
        self._probing = False

    @property
    def available(self) -> bool:
        """Whether the last call that reached Redis succeeded."""
        return not self._outage.down

    async def call(
        self, op: Callable[[], Awaitable[T]], *, deadline_s: float | None = None, force: bool = False
    ) -> T | None:
        """`op()`'s result, or None when Redis did not answer in time, failed, or is known to be away
        (the caller fails open). `force` makes the call even then (background work, health probes)."""
        probing = self._outage.down
        if probing and not force:
            if self._probing or time.monotonic() < self._retry_at:
                return None
            self._probing = True
        try:
            async with asyncio.timeout(deadline_s or self.deadline_s):
                result = await op()
        except (RedisError, OSError) as exc:  # TimeoutError, the deadline's, is an OSError
            if not is_outage(exc):  # Redis answered with an error: a bug here, not an outage
                log.warning("Redis call failed: %r", exc)
                return None
            self._outage.failed(exc)
            self._retry_at = time.monotonic() + self._backoff.next_delay()
            return None
        finally:
            if probing and not force:
                self._probing = False
        self._outage.recovered()
        self._backoff.reset()
        return result
