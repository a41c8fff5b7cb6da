"""A socket's send side: a bounded queue that drops ephemeral events first, and redelivery of the
durable events the client has not acknowledged.

Durable events (those with a resume_token) wait for the client's acknowledgement: a message by
`chat:message_delivered`, anything else by `events_ack`. One not acknowledged is pushed again after
2 s, 4 s and 8 s (scaled by CHAT_TIME_SCALE), then left for the client's next resume. The queue is
bounded by frames and by bytes (CHAT_WS_SEND_QUEUE, CHAT_WS_SEND_QUEUE_BYTES). When it is full,
ephemeral frames (typing, presence) are dropped first; if a durable event does not fit, the socket
*drains*: it takes no more events (they stay in the user's inbox), writes out what it has queued and
then closes with 4008, so the client resumes from the last token it got and nothing is lost. A client
that sends frames and never reads overflows with replies instead: its queue is dropped at once and
the socket closed, as it is when the edge sheds it (backlog.py).

An event is queued as its shared rendering plus this socket's resume token, spliced together only
when the writer takes it (frames.py), and an unacknowledged event is kept the same way for
redelivery: ten slow sockets of one user hold one copy of each event. The queue's bytes are the
socket's cost all the same (the rendering's size plus the token), kept as running counters, O(1) per
frame; `SendBudget` (backlog.py) reads them to close sockets that drain too slowly and to keep the
edge under its total budget.

Redelivery is driven by one `RedeliveryTimer` per edge process, which visits only the sockets that
have unacknowledged events (an idle socket costs no timer at all), and runs only while there are any.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.edge.backlog import SendBudget
from services.edge.frames import RenderedEvent, dumps, render

REDELIVERY_DELAYS_S = (2.0, 4.0, 8.0)
REDELIVERY_TICK_S = 0.5
SENT_MESSAGES_KEPT = 10_000
REPLY_ROOM = 1000  # replies a full queue still takes (past CHAT_WS_SEND_QUEUE), so a draining socket answers


# A queued frame: (the shared rendering or the frame's text, this socket's resume token, ephemeral, bytes).
_Frame = tuple[RenderedEvent | str, str, bool, int]
_EVENT, _EPHEMERAL, _REPLY = 0, 1, 2  # what a frame is, for what a full queue does with it


@dataclass(slots=True)
class _Pending:
    event: RenderedEvent
    token: str
    attempt: int
    due: float


class RedeliveryTimer:
    """One timer per edge for every socket's overdue events. A socket is watched from its first
    unacknowledged event until it has none left (or closes); the timer's task exists only while some
    socket is watched."""

    def __init__(self, tick_s: float) -> None:
        self._tick_s = tick_s
        self._watched: dict[Outgoing, None] = {}  # insertion-ordered set
        self._task: asyncio.Task[None] | None = None

    def watch(self, out: Outgoing) -> None:
        self._watched[out] = None
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def forget(self, out: Outgoing) -> None:
        self._watched.pop(out, None)

    @property
    def watched(self) -> int:
        return len(self._watched)

    async def _run(self) -> None:
        try:
            while self._watched:
                await asyncio.sleep(self._tick_s)
                for out in list(self._watched):
                    out.redeliver_due()  # a socket that must close is closed by its on_overflow
                    if not out.unacknowledged:
                        self._watched.pop(out, None)
        finally:
            self._task = None

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


class Outgoing:
    __slots__ = (
        "_limit",
        "_byte_limit",
        "_delays",
        "_timer",
        "_budget",
        "on_overflow",
        "on_frame",
        "on_full",
        "_frames",
        "_pending",
        "_by_message",
        "_sent_messages",
        "overflowed",
        "draining",
        "closed",
        "watched",
        "queued_bytes",
        "drained_bytes",
        "_counted",
    )

    def __init__(
        self,
        limit: int,
        time_scale: float = 1.0,
        timer: RedeliveryTimer | None = None,
        on_overflow: Callable[[], object] | None = None,
        on_frame: Callable[[], object] | None = None,
        *,
        byte_limit: int = 0,
        budget: SendBudget | None = None,
        on_full: Callable[[], object] | None = None,
    ) -> None:
        self._limit = limit
        self._byte_limit = byte_limit if byte_limit > 0 else sys.maxsize
        self._delays = tuple(d * time_scale for d in REDELIVERY_DELAYS_S)
        self._timer = timer
        self._budget = budget
        self.on_overflow = on_overflow  # close the socket now (4008): its queue was dropped
        self.on_frame = on_frame  # called when a frame is queued: the socket starts its writer if it has none
        self.on_full = on_full  # the queue is full of events: the socket takes no more (it unsubscribes)
        self._frames: deque[_Frame] = deque()
        self._pending: dict[str, _Pending] = {}
        self._by_message: dict[str, str] = {}  # message id -> event id, while pending
        # Messages sent on this socket, so a late acknowledgement still advances the delivered position.
        self._sent_messages: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self.overflowed = False  # the queue was dropped: nothing more is written, the socket closes
        self.draining = False  # full: no more events, the queue is written out, then the socket closes
        self.closed = False
        self.watched = False  # by the budget, for its drain rate
        self.queued_bytes = 0
        self.drained_bytes = 0  # taken by the writer since the socket opened
        self._counted = False  # known to the budget (from its first frame until close)

    def push_event(self, frame: dict[str, Any]) -> bool:
        """Queue an event frame given as a dict; False once the socket must close."""
        return self.push_rendered(render(frame), str(frame.get("resume_token") or ""))

    def push_rendered(self, event: RenderedEvent, resume_token: str) -> bool:
        """Queue an event rendered once for all its sockets, with this socket's resume token (spliced in
        when written); False once the socket must close.

        A durable event that does not fit makes the socket *drain*: it takes no more events, writes
        what it has queued (the client gets every event up to one resume token), then closes with 4008;
        the client resumes from its token, and the inbox replays the rest. So each round trip makes a
        whole queue's worth of progress however large the catch-up, and memory stays bounded."""
        durable = bool(resume_token)
        if (
            self._enqueue(event, resume_token, _EVENT if durable else _EPHEMERAL, event.size + len(resume_token))
            and durable
            and event.event_id
        ):
            if not self._pending and self._timer is not None:
                self._timer.watch(self)
            message_id = event.message_id
            self._pending[event.event_id] = _Pending(event, resume_token, 0, time.monotonic() + self._delays[0])
            if message_id:
                self._by_message[message_id] = event.event_id
                self._sent_messages[message_id] = (event.conversation_id, event.seq)
                if len(self._sent_messages) > SENT_MESSAGES_KEPT:
                    self._sent_messages.popitem(last=False)
        return not self.overflowed

    def push_ephemeral(self, text: str) -> bool:
        """A frame rendered once for many sockets (typing, presence): the first to go when the queue is full."""
        self._enqueue(text, "", _EPHEMERAL, sys.getsizeof(text))
        return not self.overflowed

    def push_reply(self, frame: dict[str, Any]) -> bool:
        """Acks, errors and pongs: never dropped in favour of events, and queued while the socket drains
        (a client catching up acknowledges as it reads); bounded by the frame count plus REPLY_ROOM,
        past which the client is not reading what it asked for and the socket closes."""
        text = dumps(frame)
        self._enqueue(text, "", _REPLY, sys.getsizeof(text))
        return not self.overflowed

    def _enqueue(self, item: RenderedEvent | str, token: str, kind: int, size: int) -> bool:
        """Queue a frame; False when it was not (dropped, or the socket drains or closes)."""
        if self.closed or self.overflowed or (self.draining and kind != _REPLY):
            return False
        if kind == _REPLY:
            full = len(self._frames) >= self._limit + REPLY_ROOM
        else:
            full = len(self._frames) >= self._limit or self.queued_bytes + size > self._byte_limit
        if full:
            if kind == _EPHEMERAL:
                return False  # typing and presence are not worth a socket
            if not self._make_room(size, kind == _REPLY):
                if kind == _REPLY:
                    self._overflow()  # a client that sends and never reads
                else:
                    self.draining = True
                    if self.on_full is not None:
                        self.on_full()
                return False
        self._frames.append((item, token, kind == _EPHEMERAL, size))
        self.queued_bytes += size
        if (budget := self._budget) is not None:
            if not self._counted:
                self._counted = True
                budget.add(self)
            budget.total += size
            if budget.total > budget.limit:
                budget.over()
            if self.queued_bytes >= budget.watch_bytes and not self.watched:
                budget.watch(self)
        if self.on_frame is not None:
            self.on_frame()
        return True

    def _make_room(self, size: int, count_only: bool) -> bool:
        """Drop the oldest ephemeral frames until a frame of `size` fits; False (nothing dropped) when
        even dropping all of them would not do. O(queue), but only on a full queue."""
        excess_frames = len(self._frames) + 1 - self._limit - (REPLY_ROOM if count_only else 0)
        excess_bytes = 0 if count_only else self.queued_bytes + size - self._byte_limit
        dropped: set[int] = set()
        for index, (_, _, ephemeral, frame_size) in enumerate(self._frames):
            if excess_frames <= 0 and excess_bytes <= 0:
                break
            if ephemeral:
                dropped.add(index)
                excess_frames -= 1
                excess_bytes -= frame_size
        if excess_frames > 0 or excess_bytes > 0:
            return False
        freed = sum(frame[3] for index, frame in enumerate(self._frames) if index in dropped)
        self._frames = deque(frame for index, frame in enumerate(self._frames) if index not in dropped)
        self._release(freed)
        return True

    def _release(self, size: int) -> None:
        self.queued_bytes -= size
        if self._budget is not None:
            self._budget.total -= size

    def _overflow(self) -> None:
        """Drop the queue now (its memory goes at once), write nothing more, and close the socket."""
        if self.overflowed or self.closed:
            return
        self.overflowed = True
        self._frames.clear()
        self._release(self.queued_bytes)
        if self.on_overflow is not None:
            self.on_overflow()

    def shed(self) -> None:
        """Closed by the edge's budget (too slow, or the slowest while the edge is over budget)."""
        self._overflow()

    def next_frame(self) -> str | None:
        """The next frame to write; None when there is none, or once the queue was dropped. A draining
        socket that has written everything closes here."""
        if not self._frames or self.overflowed:
            if self.draining and not self.overflowed:
                self._overflow()
            return None
        item, token, _, size = self._frames.popleft()
        self.queued_bytes -= size
        self.drained_bytes += size
        if self._budget is not None:
            self._budget.total -= size
        return item if isinstance(item, str) else item.text(token)

    def ack_events(self, event_ids: list[str]) -> None:
        for event_id in event_ids:
            if pending := self._pending.pop(event_id, None):
                self._by_message.pop(pending.event.message_id, None)

    def ack_message(self, message_id: str) -> tuple[str, int] | None:
        """Acknowledge a message's event; (conversation_id, seq) when this socket delivered it."""
        if event_id := self._by_message.pop(message_id, None):
            self._pending.pop(event_id, None)
        return self._sent_messages.get(message_id)

    def redeliver_due(self) -> bool:
        """Push again the events whose acknowledgement is overdue; forget them after the last try (a
        push that finds the queue full is not retried: the next resume replays it). False once the
        socket must close."""
        now = time.monotonic()
        for event_id, pending in list(self._pending.items()):
            if pending.due > now:
                continue
            pending.attempt += 1
            if pending.attempt >= len(self._delays):  # the last push: after it, the next resume
                del self._pending[event_id]
                self._by_message.pop(pending.event.message_id, None)
            else:
                pending.due = now + self._delays[pending.attempt]
            self._enqueue(pending.event, pending.token, _EVENT, pending.event.size + len(pending.token))
        return not self.overflowed

    def close(self) -> None:
        """The socket is gone: stop redelivering to it, and give its queued bytes back."""
        if self.closed:
            return
        self.closed = True
        self._frames.clear()
        self._release(self.queued_bytes)
        self._pending.clear()
        self._by_message.clear()
        if self._timer is not None:
            self._timer.forget(self)
        if self._budget is not None:
            self._budget.remove(self)

    @property
    def unacknowledged(self) -> int:
        return len(self._pending)
