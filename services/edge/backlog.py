"""What every socket of this edge has queued, in bytes: the slow-drain rule and load shedding.

A socket's send queue is bounded in bytes (`CHAT_WS_SEND_QUEUE_BYTES`) by the socket itself
(`Outgoing`); this module adds the two rules that need a clock or a view of every socket:

- **Slow drain.** A socket whose backlog holds more than it should write in one window
  (`CHAT_WS_MIN_DRAIN_BYTES_PER_S` x `CHAT_WS_DRAIN_WINDOW_S`) is watched; if over a whole window it
  wrote less than the minimum rate, it is closed with 4008 and resumes from its token. A client that
  reads 12 KB/s never trips the per-frame write timeout, but it holds memory while its backlog grows;
  a client catching up at network speed empties its backlog well within a window.
- **The edge's budget.** The sum of every socket's queued bytes is kept against
  `CHAT_WS_SEND_BUDGET_BYTES`; when it is over at a check, the slowest sockets (the longest time to
  drain their backlog at the rate they showed: large backlogs and low rates first) are closed with
  4008 until it is not. The check runs on a tick, not on the frame that crossed the line, so a burst
  that sockets write at once (a group message reaching a thousand sockets) does not shed anyone.

Bytes are counted per socket as if its queue were its own, although sockets share their events'
renderings (frames.py): a budget in these bytes bounds memory from above. Per frame this costs a few
integer updates in `Outgoing`; a check visits only the watched sockets, and shedding (rare) sorts the
sockets that have a backlog. The checker's task exists only while some socket is watched or the edge
is over budget.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.edge.outgoing import Outgoing

log = logging.getLogger(__name__)

MAX_TICK_S = 0.25  # how often a check runs while there is something to check


@dataclass(slots=True)
class _Watch:
    since: float  # when this measuring window started (monotonic)
    drained_at: int  # the socket's drained_bytes then
    rate: float | None = None  # bytes per second over its last whole window


class SendBudget:
    def __init__(self, limit_bytes: int, min_drain_bytes_per_s: float, window_s: float) -> None:
        self.total = 0  # bytes queued on every socket of this edge, kept by Outgoing
        self.limit = limit_bytes if limit_bytes > 0 else sys.maxsize
        self._min_rate = float(min_drain_bytes_per_s)
        self._window_s = window_s
        slow_rule = min_drain_bytes_per_s > 0 and window_s > 0
        # A backlog smaller than one window's minimum drain costs little, and may be just a burst.
        self.watch_bytes = max(1, int(min_drain_bytes_per_s * window_s)) if slow_rule else sys.maxsize
        self._tick_s = min(MAX_TICK_S, window_s / 4) if window_s > 0 else MAX_TICK_S
        self._sockets: dict[Outgoing, None] = {}  # every open socket (insertion-ordered set)
        self._watched: dict[Outgoing, _Watch] = {}
        self._task: asyncio.Task[None] | None = None
        self.closed_slow = 0  # sockets closed for draining too slowly
        self.closed_shed = 0  # sockets closed to bring the edge back under its budget

    def add(self, out: Outgoing) -> None:
        self._sockets[out] = None

    def remove(self, out: Outgoing) -> None:
        self._sockets.pop(out, None)
        self._watched.pop(out, None)

    def watch(self, out: Outgoing) -> None:
        """The socket's backlog reached `watch_bytes`: measure how fast it drains from now on."""
        out.watched = True
        self._watched[out] = _Watch(time.monotonic(), out.drained_bytes)
        self._ensure_running()

    def over(self) -> None:
        """The total passed the limit: check (and shed) at the next tick."""
        if self._task is None:
            self._ensure_running()

    def _ensure_running(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while self._watched or self.total > self.limit:
                await asyncio.sleep(self._tick_s)
                self.check(time.monotonic())
        finally:
            self._task = None

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def check(self, now: float) -> None:
        """Close the sockets that drained too slowly over a whole window, then shed while over budget."""
        for out, watch in list(self._watched.items()):
            if out.closed or out.queued_bytes < self.watch_bytes:
                self._forget(out)  # caught up (or gone)
                continue
            elapsed = now - watch.since
            if elapsed < self._window_s:
                continue
            rate = (out.drained_bytes - watch.drained_at) / elapsed
            if rate < self._min_rate:
                log.info(
                    "closing a WebSocket that drained %.0f B/s for %.1f s with %d bytes queued",
                    rate,
                    elapsed,
                    out.queued_bytes,
                )
                self.closed_slow += 1
                self._forget(out)
                out.shed()
                continue
            watch.since, watch.drained_at, watch.rate = now, out.drained_bytes, rate
        if self.total > self.limit:
            self._shed(now)

    def _forget(self, out: Outgoing) -> None:
        out.watched = False
        self._watched.pop(out, None)

    def _drain_time(self, out: Outgoing, now: float) -> float:
        """Seconds the socket would take to write its backlog at the rate it showed (unknown: the minimum)."""
        rate = self._min_rate or 1.0
        if (watch := self._watched.get(out)) is not None:
            if watch.rate is not None:
                rate = watch.rate
            elif now - watch.since >= self._tick_s:
                rate = (out.drained_bytes - watch.drained_at) / (now - watch.since)
        return out.queued_bytes / max(rate, 1.0)

    def _shed(self, now: float) -> None:
        before, closed = self.total, 0
        backlogged = [out for out in self._sockets if out.queued_bytes > 0 and not out.closed]
        backlogged.sort(key=lambda out: self._drain_time(out, now), reverse=True)
        for out in backlogged:
            if self.total <= self.limit:
                break
            self._forget(out)
            out.shed()  # releases its bytes at once; the socket closes with 4008
            closed += 1
        self.closed_shed += closed
        log.warning(
            "over the send budget (%d of %d bytes queued): closed the %d slowest WebSockets, %d bytes queued now",
            before,
            self.limit,
            closed,
            self.total,
        )
