"""Event frames are rendered once per event and shared by every socket it reaches; each socket gets
its own resume token, and the frame reads exactly as the proto3 JSON of the event."""

from __future__ import annotations

import json

from google.protobuf import json_format

from chatmesh.gen.chat.v1 import common_pb2
from services.edge.frames import FrameCache, render
from services.edge.outgoing import Outgoing


def message_event(token: str, content: str = 'héllo "there"') -> common_pb2.Event:
    event = common_pb2.Event(
        event_id="received:m1", type="chat:message_received", resume_token=token, conversation_id="c1"
    )
    event.message.message_id = "m1"
    event.message.conversation_id = "c1"
    event.message.seq = 42
    event.message.content = content
    return event


def test_one_rendering_per_event_with_each_sockets_token_spliced_in() -> None:
    cache = FrameCache()
    first, second = message_event("ep:1-0"), message_event("ep:7-3")
    rendered = cache.render(first)
    assert cache.render(second) is rendered  # the second socket reuses the first one's rendering
    frame = json.loads(rendered.text(second.resume_token))
    assert frame == {
        "type": "chat:message_received",
        "event_id": "received:m1",
        "resume_token": "ep:7-3",
        "conversation_id": "c1",
        "data": json_format.MessageToDict(second.message, preserving_proto_field_name=True),
    }
    assert frame["data"]["seq"] == "42" and frame["data"]["content"] == 'héllo "there"'
    assert (rendered.message_id, rendered.conversation_id, rendered.seq) == ("m1", "c1", 42)
    assert "resume_token" not in json.loads(rendered.text(""))
    odd = 'a"b\\c'  # not a token the hub makes, but it must still be valid JSON
    assert json.loads(rendered.text(odd))["resume_token"] == odd


def test_same_event_id_with_other_content_is_rendered_again() -> None:
    cache = FrameCache()
    original = cache.render(message_event("ep:1-0"))
    edited = cache.render(message_event("ep:1-0", content="edited"))
    assert edited is not original and json.loads(edited.text(""))["data"]["content"] == "edited"


def test_the_cache_is_bounded() -> None:
    cache = FrameCache(size=2)
    for n in range(5):
        event = message_event("ep:1-0")
        event.event_id = f"received:m{n}"
        cache.render(event)
    assert len(cache._cache) == 2


def test_a_dict_frame_and_a_rendered_event_queue_the_same_text() -> None:
    frame = {
        "type": "chat:message_received",
        "event_id": "e1",
        "resume_token": "t:1",
        "conversation_id": "c",
        "data": {"message_id": "m1", "seq": "1"},
    }
    one, two = Outgoing(limit=10), Outgoing(limit=10)
    one.push_event(frame)
    two.push_rendered(render(frame), "t:1")
    text = one.next_frame()
    assert text is not None and text == two.next_frame()
    assert json.loads(text) == frame
    assert one.ack_message("m1") == ("c", 1) and two.ack_message("m1") == ("c", 1)
