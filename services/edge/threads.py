"""chat:thread_updated frames, built at the edge from the reply events that carry their thread.

A reply's chat:message_received (and a deleted reply's chat:message_deleted) carries `Event.thread`:
the root's id, its live reply count and last reply time right after the change (set in the message
service's transaction, services/message/threads.py). Each socket that gets such an event gets,
right after it, a `chat:thread_updated` frame:

    {"type": "chat:thread_updated", "conversation_id": ...,
     "data": {"root_message_id", "reply_count", "last_reply_at"?, "reply": {the reply}}}

so a client with the thread open, or showing the root's "3 replies", stays current without a read.
The frame is ephemeral (no event id, no resume token, nothing to acknowledge, dropped first from a
full send queue): the reply itself is the durable event, and the count is absolute, so the last
frame wins and a missed one is put right by the next, or by reading the thread (ListThread). An
inbox replay repeats them with their events; the offline buffer (rebuilt from PostgreSQL) has none.

Each is rendered once per event per edge, like every frame (frames.py), however many sockets it reaches.
"""

from __future__ import annotations

from google.protobuf import json_format

from chatmesh.gen.chat.v1 import common_pb2
from services.edge.frames import RenderedEvent, render

THREAD_UPDATED = "chat:thread_updated"
CACHE_SIZE = 1024  # recent replies; a burst's recipients arrive within a few batches of each other

# What a socket's sink is handed with the rendering: no resume token (ephemeral), no created_at (the
# reply's own frame already counted its delivery lag).
EVENT = common_pb2.Event(type=THREAD_UPDATED)


def thread_data(event: common_pb2.Event) -> dict[str, object]:
    """The frame's data: the event's thread with the event's message as `reply`."""
    update = common_pb2.ThreadUpdate()
    update.CopyFrom(event.thread)
    update.reply.CopyFrom(event.message)
    data = json_format.MessageToDict(update, preserving_proto_field_name=True)
    data.setdefault("reply_count", 0)  # the last reply deleted: say 0 rather than leave it out
    return data


class ThreadFrames:
    """Renderings of recent thread frames, keyed by the event they come from."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self._size = size
        self._cache: dict[tuple[str, str, bytes], RenderedEvent] = {}

    def render(self, event: common_pb2.Event) -> RenderedEvent:
        key = (event.event_id, event.type, event.thread.SerializeToString(deterministic=True))
        if (rendered := self._cache.get(key)) is None:
            rendered = render(
                {"type": THREAD_UPDATED, "data": thread_data(event), "conversation_id": event.conversation_id}
            )
            if len(self._cache) >= self._size:
                del self._cache[next(iter(self._cache))]  # the oldest: dicts keep insertion order
            self._cache[key] = rendered
        return rendered
