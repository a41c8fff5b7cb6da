"""Staying up while a dependency is not: jittered backoff, one log line per change of state, and
background loops that are supervised instead of fire-and-forget.

Every retry loop in the mesh (the outbox relay, fan-out, the live hub, presence's sweep, the edge's
streams) uses these, so an outage looks the same everywhere: retries spread out in time (no storm of
replicas retrying in step), one warning when a dependency is lost and one line when it is back (not
one per attempt), and a background task that dies is logged once with its traceback, counted, and
started again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import psycopg
import psycopg_pool
import redis.exceptions
from prometheus_client import Counter

log = logging.getLogger(__name__)

BACKGROUND_RESTARTS = Counter("chat_background_restarts", "Background loops that failed and were restarted.", ["task"])

# What an unreachable, restarting, stalled or overloaded dependency raises. Anything else is a bug.
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    psycopg.OperationalError,
    psycopg_pool.PoolTimeout,
    OSError,
    TimeoutError,
)


def is_outage(exc: BaseException) -> bool:
    """Whether an exception means a dependency is unavailable (retry later), not a bug."""
    if isinstance(exc, redis.exceptions.ResponseError):
        # A Redis that is loading its data, or a script killed mid-run, answers with an error reply.
        return str(exc).startswith(("LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN"))
    return isinstance(exc, OUTAGE_ERRORS)


class Backoff:
    """Exponential delays with full jitter between `start_s` and `cap_s`; `reset()` after a success."""

    def __init__(self, start_s: float = 0.1, cap_s: float = 5.0) -> None:
        self.start_s = start_s
        self.cap_s = cap_s
        self._next = start_s

    def reset(self) -> None:
        self._next = self.start_s

    def next_delay(self) -> float:
        delay = self._next * (0.5 + random.random() / 2)
        self._next = min(self._next * 2, self.cap_s)
        return delay

    async def sleep(self) -> None:
        await asyncio.sleep(self.next_delay())


class OutageLog:
    """Logs a dependency's state changes, not its attempts: one warning when the first failure comes,
    one info line with the count of failed attempts when it answers again."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._log = logger
        self._what = what
        self.failures = 0

    @property
    def down(self) -> bool:
        return self.failures > 0

    def failed(self, exc: BaseException) -> None:
        if self.failures == 0:
            self._log.warning("%s: %s: %s; retrying with backoff", self._what, type(exc).__name__, exc)
        self.failures += 1

    def recovered(self) -> None:
        if self.failures:
            self._log.info("%s: recovered after %d failed attempts", self._what, self.failures)
            self.failures = 0


class SampledLog:
    """For failures on a request path, where there is no loop to hold a state: at most one line per
    key every `interval_s`, saying how many like it were left out meanwhile (an outage under load
    would otherwise log one line per request)."""

    def __init__(self, logger: logging.Logger, interval_s: float = 5.0) -> None:
        self._log = logger
        self._interval_s = interval_s
        self._last: dict[str, tuple[float, int]] = {}  # key -> (logged at, left out since)

    def warning(self, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        logged_at, left_out = self._last.get(key, (-self._interval_s, 0))
        if now - logged_at < self._interval_s:
            self._last[key] = (logged_at, left_out + 1)
            return
        self._last[key] = (now, 0)
        suffix = f" (and {left_out} more like it in the last {now - logged_at:.0f} s)" if left_out else ""
        self._log.warning(msg + suffix, *args)


async def supervise(name: str, run: Callable[[], Awaitable[None]], *, backoff: Backoff | None = None) -> None:
    """Run a background loop for the life of the process: when it raises, log it once with its
    traceback, count it (`chat_background_restarts{task}`) and start it again after a backoff."""
    backoff = backoff or Backoff(0.5, 10.0)
    while True:
        try:
            await run()
            log.error("background task %s returned; starting it again", name)
        except asyncio.CancelledError:
            if (task := asyncio.current_task()) is None or task.cancelling():
                raise  # the supervisor itself is being stopped
            # A cancellation that leaked out of a callee (not ours to obey) must not end the loop.
            log.exception("background task %s was cancelled from within; starting it again", name)
        except Exception:  # noqa: BLE001 - a loop must outlive its bugs; each is logged and counted
            log.exception("background task %s failed; starting it again", name)
        BACKGROUND_RESTARTS.labels(name).inc()
        await backoff.sleep()


STOP_WAIT_S = 2.0
STOP_ATTEMPTS = 5


async def stop_all(tasks: Iterable[asyncio.Task[Any]], wait_s: float = STOP_WAIT_S) -> None:
    """Cancel a service's background tasks and wait until they end, for a clean stop.

    A callee can swallow a cancellation (a library that turns it into an error the loop takes for an
    outage, and the loop goes on): waited for plainly, such a task held a stopping presence service
    forever (tests/test_drain.py, now and then on a loaded machine). A task still running after
    `wait_s` is logged and cancelled again, a few times; the event loop's own shutdown cancels
    whatever is left after that."""
    pending = {task for task in tasks if not task.done()}
    for task in pending:
        task.cancel()
    for _ in range(STOP_ATTEMPTS):
        if not pending:
            return
        _, pending = await asyncio.wait(pending, timeout=wait_s)
        for task in pending:
            log.warning("background task %s went on after its cancellation; cancelling it again", task.get_name())
            task.cancel()


def spawn_supervised(name: str, run: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
    return asyncio.create_task(supervise(name, run), name=name)
