"""Two small bounds the client keeps: ids remembered for deduplication, and frames sent per second.

Both exist because the client lives long: a bot connected for weeks must not remember every event id
it ever saw, and a burst of sends, acknowledgements and typing frames must not trip the edge's
per-socket frame limit (past it the edge refuses frames, and closes a socket that keeps flooding).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque

SEEN_KEPT = 50_000  # event and message ids remembered for deduplication


class SeenIds:
    """A bounded set, oldest forgotten first."""

    def __init__(self, limit: int = SEEN_KEPT) -> None:
        self._items: OrderedDict[str, None] = OrderedDict()
        self._limit = limit

    def add(self, key: str) -> bool:
        """True when the key is new."""
        if key in self._items:
            return False
        self._items[key] = None
        if len(self._items) > self._limit:
            self._items.popitem(last=False)
        return True

    def __contains__(self, key: object) -> bool:
        return key in self._items


class FrameBudget:
    """At most `limit` frames in any second: a sender waits for room instead of being refused."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._sent: deque[float] = deque()

    async def take(self) -> None:
        if self._limit <= 0:
            return
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            while self._sent and now - self._sent[0] >= 1.0:
                self._sent.popleft()
            if len(self._sent) < self._limit:
                self._sent.append(now)
                return
            await asyncio.sleep(1.0 - (now - self._sent[0]))
