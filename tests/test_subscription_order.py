"""A subscription's order rule, on its own: on one connection, a conversation's messages go out in
seq order, whether they come from the offline buffer, from the inbox, or from both at once."""

from __future__ import annotations

import asyncio
import uuid

from chatmesh.gen.chat.v1 import common_pb2
from services.message.delivery.inbox import Token
from services.message.delivery.subscription import Entry, Outbox, Subscription

CONVERSATION = str(uuid.uuid4())


def received(seq: int) -> common_pb2.Event:
    message_id = str(uuid.uuid4())
    return common_pb2.Event(
        event_id=f"received:{message_id}",
        type="chat:message_received",
        conversation_id=CONVERSATION,
        message=common_pb2.Message(message_id=message_id, conversation_id=CONVERSATION, seq=seq),
    )


def entry(entry_id: str, event: common_pb2.Event) -> Entry:
    """An inbox row as fan-out writes it: the payload, the event id, the seq and the conversation."""
    return entry_id.encode(), {
        b"e": event.SerializeToString(),
        b"i": event.event_id.encode(),
        b"s": str(event.message.seq).encode(),
        b"c": event.conversation_id.encode(),
    }


def sent(out: Outbox) -> list[tuple[int, str]]:
    """(seq, resume token) of what went out, in order."""
    items = []
    while not out.empty():
        event, [(_, token)] = out.get_nowait()
        parsed = common_pb2.Event.FromString(event) if isinstance(event, bytes) else event
        items.append((parsed.message.seq, token))
    return items


def test_an_entry_appended_while_the_buffer_was_read_keeps_its_place() -> None:
    """Another device acknowledged seq 1 while this one read its buffer: the buffer starts at seq 2,
    and seq 1's inbox entry, appended meanwhile, goes out before it, not after."""
    out: Outbox = asyncio.Queue()
    sub = Subscription("s", "bob", out)
    sub.epoch = "e1"
    one, two = received(1), received(2)
    sub.emit_buffer([two], [entry("5-0", one), entry("6-0", two)])
    token = Token("e1", "6-0", buffered=True).encode()
    assert sent(out) == [(1, token), (2, token)]
    assert sub.last_id == "6-0"


def test_an_older_message_after_a_newer_one_is_not_sent_again() -> None:
    out: Outbox = asyncio.Queue()
    sub = Subscription("s", "bob", out)
    sub.epoch = "e1"
    one, two, three = received(1), received(2), received(3)
    sub.emit_buffer([one, two], [])
    sent(out)
    sub.emit_entries([entry("7-0", one), entry("8-0", three), entry("9-0", two)])
    assert [seq for seq, _ in sent(out)] == [3]
    assert sub.last_id == "9-0"
