"""Retrying idempotent requests: which failures are worth another try, and how long to wait first.

Only work that is safe to repeat is retried: a send (it carries its client_message_id, so the server
stores it once however many times it arrives) and receipts (a position only moves forward). Waits
are exponential with full jitter, so many clients that failed together do not come back together,
and never shorter than what the edge asked for (`Retry-After` on a 429 or 503, `retry_after` in a
RATE_LIMITED frame).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from chatmesh_client.errors import RETRYABLE, ChatError

log = logging.getLogger("chatmesh_client")

T = TypeVar("T")


def retryable(exc: BaseException) -> bool:
    """A failure that may go away by itself: a retryable code, or no answer in time."""
    if isinstance(exc, ChatError):
        return exc.code in RETRYABLE
    return isinstance(exc, TimeoutError)


def retry_delay(exc: BaseException, attempt: int, initial: float, cap: float) -> float:
    """Seconds to wait before retry number `attempt + 1` (0 for the first retry)."""
    ceiling = min(cap, initial * 2**attempt)
    delay = random.uniform(ceiling / 2, ceiling)
    return max(delay, exc.retry_after if isinstance(exc, ChatError) else 0.0)


async def retrying(what: str, call: Callable[[], Awaitable[T]], *, attempts: int, initial: float, cap: float) -> T:
    """`call()`, tried up to `attempts` times while it fails retryably; the last failure is raised."""
    attempts = max(1, attempts)
    for attempt in range(attempts):
        try:
            return await call()
        except (ChatError, TimeoutError) as exc:
            if not retryable(exc) or attempt == attempts - 1:
                raise
            delay = retry_delay(exc, attempt, initial, cap)
            log.info("%s: attempt %d failed (%r), retrying in %.2f s", what, attempt + 1, exc, delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")
