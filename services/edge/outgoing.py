"""A socket's send side: a bounded queue that drops ephemeral events first, and redelivery of the
durable events the client has not acknowledged.

Durable events (those with a resume_token) wait for the client's acknowledgement: a message by
`chat:message_delivered`, anything else by `events_ack`. One not acknowledged is pushed again after
2 s, 4 s and 8 s (scaled by CHAT_TIME_SCALE), then left for the client's next resume. When the queue
is full, ephemeral frames (typing, presence) are dropped first; if a durable frame would have to be
dropped, the socket is over its budget and the caller closes it, so the client resumes from its token.

Redelivery is driven by one `RedeliveryTimer` per edge process, which visits only the sockets that
have unacknowledged events (an idle socket costs no timer at all), and runs only while there are any.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.edge.frames import RenderedEvent, dumps, render

REDELIVERY_DELAYS_S = (2.0, 4.0, 8.0)
REDELIVERY_TICK_S = 0.5
SENT_MESSAGES_KEPT = 10_000


@dataclass(slots=True)
class _Pending:
    text: str
    message_id: str
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
                    if not out.redeliver_due() and out.on_overflow is not None:
                        out.on_overflow()
                    if not out.unacknowledged:
                        self._watched.pop(out, None)
        finally:
            self._task = None

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


class Outgoing:
    def __init__(self, limit: int, time_scale: float = 1.0, timer: RedeliveryTimer | None = None,
                 on_overflow: Callable[[], object] | None = None, on_frame: Callable[[], object] | None = None
                 ) -> None:
        self._limit = limit
        self._delays = tuple(d * time_scale for d in REDELIVERY_DELAYS_S)
        self._timer = timer
        self.on_overflow = on_overflow  # called when a redelivery finds the queue over its budget
        self.on_frame = on_frame  # called when a frame is queued: the socket starts its writer if it has none
        self._frames: deque[tuple[str, bool]] = deque()  # (text, durable)
        self._pending: dict[str, _Pending] = {}
        self._by_message: dict[str, str] = {}  # message id -> event id, while pending
        # Messages sent on this socket, so a late acknowledgement still advances the delivered position.
        self._sent_messages: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self.overflowed = False

    def push_event(self, frame: dict[str, Any]) -> bool:
        """Queue an event frame given as a dict; False when a durable frame did not fit (close the socket)."""
        return self.push_rendered(render(frame), str(frame.get("resume_token") or ""))

    def push_rendered(self, event: RenderedEvent, resume_token: str) -> bool:
        """Queue an event rendered once for all its sockets, with this socket's resume token spliced in;
        False when a durable frame did not fit (close the socket)."""
        text = event.text(resume_token)
        durable = bool(resume_token)
        if durable and event.event_id:
            if not self._pending and self._timer is not None:
                self._timer.watch(self)
            message_id = event.message_id
            self._pending[event.event_id] = _Pending(text, message_id, 0, time.monotonic() + self._delays[0])
            if message_id:
                self._by_message[message_id] = event.event_id
                self._sent_messages[message_id] = (event.conversation_id, event.seq)
                if len(self._sent_messages) > SENT_MESSAGES_KEPT:
                    self._sent_messages.popitem(last=False)
        return self._enqueue(text, durable)

    def push_ephemeral(self, text: str) -> bool:
        """A frame rendered once for many sockets (typing, presence): the first to go when the queue is full."""
        return self._enqueue(text, False)

    def push_reply(self, frame: dict[str, Any]) -> bool:
        """Acks, errors and pongs: never dropped in favour of events, bounded all the same."""
        return self._enqueue(dumps(frame), True)

    def _enqueue(self, text: str, durable: bool) -> bool:
        if len(self._frames) >= self._limit:
            if not durable:
                return True  # an ephemeral frame is dropped: typing and presence are not worth a socket
            for index, (_, queued_durable) in enumerate(self._frames):
                if not queued_durable:
                    del self._frames[index]
                    break
            else:
                self.overflowed = True
                return False
        self._frames.append((text, durable))
        if self.on_frame is not None:
            self.on_frame()
        return True

    def next_frame(self) -> str | None:
        """The next frame to write; None when there is none, or once the queue overflowed (close the socket)."""
        if not self._frames or self.overflowed:
            return None
        return self._frames.popleft()[0]

    def ack_events(self, event_ids: list[str]) -> None:
        for event_id in event_ids:
            if pending := self._pending.pop(event_id, None):
                self._by_message.pop(pending.message_id, None)

    def ack_message(self, message_id: str) -> tuple[str, int] | None:
        """Acknowledge a message's event; (conversation_id, seq) when this socket delivered it."""
        if event_id := self._by_message.pop(message_id, None):
            self._pending.pop(event_id, None)
        return self._sent_messages.get(message_id)

    def redeliver_due(self) -> bool:
        """Push again the events whose acknowledgement is overdue; forget them after the last try.
        False when the queue overflowed (close the socket)."""
        now = time.monotonic()
        for event_id, pending in list(self._pending.items()):
            if pending.due > now:
                continue
            pending.attempt += 1
            if pending.attempt >= len(self._delays):  # the last push: after it, the next resume
                del self._pending[event_id]
                self._by_message.pop(pending.message_id, None)
            else:
                pending.due = now + self._delays[pending.attempt]
            if not self._enqueue(pending.text, True):
                return False
        return True

    def close(self) -> None:
        """The socket is gone: stop redelivering to it."""
        if self._timer is not None:
            self._timer.forget(self)

    @property
    def unacknowledged(self) -> int:
        return len(self._pending)
