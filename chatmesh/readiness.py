"""Readiness from dependencies: a service is ready while the stores on its request path answer.

A `Readiness` pings each dependency every few seconds (each ping bounded by a timeout) and reports
the result to a callback; `chatmesh.grpc_server.serve` turns it into the health service's
SERVING / NOT_SERVING, which Kubernetes' gRPC readiness probe reads. Liveness is a separate health
name that a lost dependency never touches, so an outage of PostgreSQL or Redis takes pods out of
rotation instead of restarting them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import cast

import psycopg
import redis.asyncio as aioredis

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[object]]
INTERVAL_S = 2.0
TIMEOUT_S = 1.0


def redis_check(client: aioredis.Redis) -> Check:
    async def ping() -> object:
        return await cast(Awaitable[object], client.ping())  # the asyncio client's ping is awaitable

    return ping


def postgres_check(url: str) -> Check:
    """SELECT 1 on a connection of its own, so a busy pool never reads as an outage."""
    conn: psycopg.AsyncConnection[object] | None = None

    async def ping() -> object:
        nonlocal conn
        try:
            if conn is None or conn.closed:
                conn = await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=2)
            return await conn.execute("SELECT 1")
        except BaseException:
            if conn is not None:
                await conn.close()
                conn = None
            raise

    return ping


class Readiness:
    """Named dependency checks run every `interval_s`; `ready` is True while all of them pass."""

    def __init__(
        self, checks: dict[str, Check], *, interval_s: float = INTERVAL_S, timeout_s: float = TIMEOUT_S
    ) -> None:
        self.checks = checks
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.ready = True
        self.failing: dict[str, str] = {}

    async def _one(self, name: str, check: Check) -> tuple[str, str | None]:
        try:
            await asyncio.wait_for(check(), self.timeout_s)
            return name, None
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of a ping is an outage of that dependency
            return name, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    async def check_once(self) -> bool:
        results = await asyncio.gather(*(self._one(n, c) for n, c in self.checks.items()))
        self.failing = {name: error for name, error in results if error is not None}
        return not self.failing

    async def watch(self, on_change: Callable[[bool], Awaitable[None]]) -> None:
        """Check forever; call `on_change(ready)` whenever readiness flips."""
        while True:
            ready = await self.check_once()
            if ready != self.ready:
                self.ready = ready
                if ready:
                    log.warning("dependencies are back: ready")
                else:
                    log.warning("not ready: %s", "; ".join(f"{n}: {e}" for n, e in self.failing.items()))
                await on_change(ready)
            await asyncio.sleep(self.interval_s)


def of(
    *, postgres_url: str | None = None, redis_client: aioredis.Redis | None = None, time_scale: float = 1.0
) -> Readiness:
    """A service's readiness: the stores it names (those on its request path)."""
    checks: dict[str, Check] = {}
    if postgres_url:
        checks["postgres"] = postgres_check(postgres_url)
    if redis_client is not None:
        checks["redis"] = redis_check(redis_client)
    return Readiness(checks, interval_s=INTERVAL_S * time_scale)
