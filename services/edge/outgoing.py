"""A socket's send side: a bounded queue that drops ephemeral events first, and redelivery of the
durable events the client has not acknowledged.

Durable events (those with a resume_token) wait for the client's acknowledgement: a message by
`chat:message_delivered`, anything else by `events_ack`. One not acknowledged is pushed again after
2 s, 4 s and 8 s (scaled by CHAT_TIME_SCALE), then left for the client's next resume. When the queue
is full, ephemeral frames (typing, presence) are dropped first; if a durable frame would have to be
dropped, the socket is over its budget and the caller closes it, so the client resumes from its token.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

REDELIVERY_DELAYS_S = (2.0, 4.0, 8.0)
SENT_MESSAGES_KEPT = 10_000


@dataclass
class _Pending:
    text: str
    message_id: str
    attempt: int
    due: float


class Outgoing:
    def __init__(self, limit: int, time_scale: float = 1.0) -> None:
        self._limit = limit
        self._delays = tuple(d * time_scale for d in REDELIVERY_DELAYS_S)
        self._frames: deque[tuple[str, bool]] = deque()  # (text, durable)
        self._ready = asyncio.Event()
        self._pending: dict[str, _Pending] = {}
        self._by_message: dict[str, str] = {}  # message id -> event id, while pending
        # Messages sent on this socket, so a late acknowledgement still advances the delivered position.
        self._sent_messages: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self.overflowed = False

    def push_event(self, frame: dict[str, Any]) -> bool:
        """Queue an event frame; False when a durable frame did not fit (close the socket)."""
        text = json.dumps(frame, ensure_ascii=False)
        durable = bool(frame.get("resume_token"))
        if durable and frame.get("event_id"):
            data = frame.get("data") or {}
            message_id = data.get("message_id", "") if frame["type"] == "chat:message_received" else ""
            self._pending[frame["event_id"]] = _Pending(text, message_id, 0, time.monotonic() + self._delays[0])
            if message_id:
                self._by_message[message_id] = frame["event_id"]
                self._sent_messages[message_id] = (frame.get("conversation_id", ""), int(data.get("seq") or 0))
                if len(self._sent_messages) > SENT_MESSAGES_KEPT:
                    self._sent_messages.popitem(last=False)
        return self._enqueue(text, durable)

    def push_reply(self, frame: dict[str, Any]) -> bool:
        """Acks, errors and pongs: never dropped in favour of events, bounded all the same."""
        return self._enqueue(json.dumps(frame, ensure_ascii=False), True)

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
                self._ready.set()
                return False
        self._frames.append((text, durable))
        self._ready.set()
        return True

    async def next_frame(self) -> str | None:
        """The next frame to write; None once the queue overflowed (close the socket)."""
        while not self._frames or self.overflowed:
            if self.overflowed:
                return None
            self._ready.clear()
            await self._ready.wait()
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

    def redeliver_due(self) -> None:
        """Push again the events whose acknowledgement is overdue; forget them after the last try."""
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
                return

    @property
    def unacknowledged(self) -> int:
        return len(self._pending)
