"""Event frames rendered to JSON once per event, not once per socket.

The same event (one event id, one payload) reaches every socket of every recipient on this replica,
up to a group's size; only its `resume_token` differs per socket. So the frame is rendered once, as
the text before and after the token, and each socket splices its own token in. The cache is keyed by
the payload's bytes as well as the event id, so two events that share an id but differ in content
(a replay after an edit, say) never share a rendering.

Frame: {"type", "data", "event_id"?, "resume_token"?, "conversation_id"?}, keys in that order, data
as proto3 JSON with the proto field names.

Sockets queue the rendering itself and splice their token in only when they write it, so ten slow
sockets of one user hold one copy of a 16 KB message between them, not ten. Each rendering knows its
size in memory (`size`), which a socket's queue counts as its own cost; the cache is bounded by bytes
as well as by count, since one event can hold up to ~18 KB (4,000 four-byte characters).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import orjson
from google.protobuf import json_format

from chatmesh.gen.chat.v1 import common_pb2

CACHE_SIZE = 4096  # distinct events kept; a burst's recipients arrive within a few batches of each other
CACHE_BYTES = 16 << 20  # and at most this much text: 4,096 of the largest messages would be ~74 MB
MESSAGE_RECEIVED = "chat:message_received"
_TOKEN_SAFE = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ:-_.")


def dumps(value: Any) -> str:
    """JSON text (UTF-8, not ASCII-escaped, compact)."""
    return orjson.dumps(value).decode()


@dataclass(frozen=True, slots=True)
class RenderedEvent:
    """An event's frame without its resume token, and what the send queue needs to know about it."""

    head: str  # the text up to where the resume token goes
    tail: str  # the rest: conversation_id and the closing brace
    type: str
    event_id: str
    conversation_id: str
    message_id: str  # a chat:message_received's message, acknowledged by chat:message_delivered
    seq: int
    size: int = 0  # bytes of memory head and tail take (CPython's str: 1, 2 or 4 bytes a character)

    def text(self, resume_token: str) -> str:
        if not resume_token:
            return self.head + self.tail
        if _TOKEN_SAFE.issuperset(resume_token):
            return f'{self.head},"resume_token":"{resume_token}"{self.tail}'
        return f'{self.head},"resume_token":{dumps(resume_token)}{self.tail}'


def render(frame: dict[str, Any]) -> RenderedEvent:
    """A frame given as a dict (its resume_token, if any, is left out: pass it to `text`)."""
    head = {"type": frame["type"], "data": frame.get("data") or {}}
    if event_id := frame.get("event_id"):
        head["event_id"] = event_id
    conversation_id = frame.get("conversation_id") or ""
    data = head["data"]
    message_id, seq = "", 0
    if frame["type"] == MESSAGE_RECEIVED and isinstance(data, dict):
        message_id = str(data.get("message_id") or "")
        seq = int(data.get("seq") or 0)
    tail = f',"conversation_id":{dumps(conversation_id)}}}' if conversation_id else "}"
    text = dumps(head)[:-1]
    return RenderedEvent(
        text,
        tail,
        frame["type"],
        event_id or "",
        conversation_id,
        message_id,
        seq,
        sys.getsizeof(text) + sys.getsizeof(tail),
    )


def _render_event(event: common_pb2.Event, payload: str | None) -> RenderedEvent:
    data = json_format.MessageToDict(getattr(event, payload), preserving_proto_field_name=True) if payload else {}
    return render(
        {"type": event.type, "data": data, "event_id": event.event_id, "conversation_id": event.conversation_id}
    )


class FrameCache:
    """Renderings of recent events, so each is rendered once however many sockets it reaches."""

    def __init__(self, size: int = CACHE_SIZE, max_bytes: int = CACHE_BYTES) -> None:
        self._size = size
        self._max_bytes = max_bytes
        self._bytes = 0
        self._cache: dict[tuple[str, str, str, bytes], RenderedEvent] = {}

    def render(self, event: common_pb2.Event) -> RenderedEvent:
        payload = event.WhichOneof("payload")
        if not event.event_id:
            return _render_event(event, payload)
        body = getattr(event, payload).SerializeToString(deterministic=True) if payload else b""
        key = (event.event_id, event.type, event.conversation_id, body)
        if (rendered := self._cache.get(key)) is None:
            rendered = _render_event(event, payload)
            while self._cache and (len(self._cache) >= self._size or self._bytes + rendered.size > self._max_bytes):
                self._bytes -= self._cache.pop(next(iter(self._cache))).size  # the oldest: dicts keep insertion order
            self._cache[key] = rendered
            self._bytes += rendered.size
        return rendered
