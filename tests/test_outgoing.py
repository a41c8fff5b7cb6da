"""A socket's send queue: what is dropped first when a client falls behind, and when it is redelivered."""

from __future__ import annotations

import asyncio
import json

from services.edge.outgoing import REPLY_ROOM, Outgoing


def durable(n: int) -> dict:
    return {
        "type": "chat:message_received",
        "event_id": f"e{n}",
        "resume_token": f"t:{n}",
        "conversation_id": "c",
        "data": {"message_id": f"m{n}", "seq": str(n)},
    }


def typing(n: int) -> dict:
    return {"type": "chat:user_typing", "data": {"n": n}}


def drain(out: Outgoing) -> list[str]:
    frames = []
    while (frame := out.next_frame()) is not None:
        frames.append(frame)
    return frames


async def test_ephemeral_frames_go_first_and_a_full_queue_drains_then_closes() -> None:
    full, closed = [], []
    out = Outgoing(limit=3, on_overflow=lambda: closed.append(1), on_full=lambda: full.append(1))
    assert out.push_event(typing(1)) and out.push_event(durable(1)) and out.push_event(typing(2))
    assert out.push_event(typing(3))  # full: a new ephemeral frame is dropped, not queued
    assert out.push_event(durable(2))  # full: the oldest ephemeral frame makes room
    frames = drain(out)
    assert [('"e1"' in f, '"e2"' in f, '"n":2' in f) for f in frames] == [
        (True, False, False),
        (False, False, True),
        (False, True, False),
    ]

    for n in range(3, 6):
        out.push_event(durable(n))
    out.push_event(durable(6))  # no ephemeral frame left to drop: the socket takes no more events
    assert out.draining and full == [1] and not closed
    out.push_event(durable(7))
    out.push_reply({"type": "ack", "id": 1})  # replies still go: a client acknowledges as it catches up
    assert [json.loads(f).get("event_id", "ack") for f in drain(out)] == ["e3", "e4", "e5", "ack"]  # no e6, e7
    assert closed == [1] and out.overflowed  # written out: now it closes (4008), and resumes from e5's token
    assert out.unacknowledged == 5 and out.ack_message("m6") is None  # e1 to e5; e6 and e7 were never sent


async def test_the_queue_is_bounded_in_bytes_and_replies_that_never_get_read_close_it() -> None:
    big = durable(1) | {"data": {"message_id": "m1", "seq": "1", "content": "x" * 10_000}}
    out = Outgoing(limit=100, byte_limit=25_000)
    assert out.push_event(big) and out.push_event(big | {"event_id": "e2"}) and out.queued_bytes > 20_000
    assert out.push_event(typing(1)) is True and out.queued_bytes < 25_000  # over the bytes: dropped
    out.push_event(big | {"event_id": "e3"})
    assert out.draining and out.queued_bytes < 25_000
    drain(out)
    assert out.queued_bytes == 0 and out.drained_bytes > 20_000

    closed = []
    out = Outgoing(limit=5, on_overflow=lambda: closed.append(1))
    for _ in range(5 + REPLY_ROOM):
        out.push_reply({"type": "pong"})
    assert not closed
    out.push_reply({"type": "pong"})
    assert closed == [1] and out.overflowed and out.queued_bytes == 0 and out.next_frame() is None


async def test_unacknowledged_events_are_pushed_again_after_2_4_8_then_left() -> None:
    out = Outgoing(limit=100, time_scale=0.01)  # 20 ms, 40 ms, 80 ms
    out.push_event(durable(1))
    out.push_event(durable(2))
    assert out.ack_message("m2") == ("c", 2)
    pushes = len(drain(out))
    for _ in range(40):
        await asyncio.sleep(0.01)
        out.redeliver_due()
        pushes += len(drain(out))
    assert pushes == 2 + 3  # each sent once, then e1 three more times
    assert out.unacknowledged == 0
    assert out.ack_message("m1") == ("c", 1)  # a late acknowledgement still names its position


async def test_a_queued_frame_wakes_the_writer_once_per_frame() -> None:
    woken: list[int] = []
    out = Outgoing(limit=10, on_frame=lambda: woken.append(1))
    out.push_event(typing(1))
    out.push_reply({"type": "pong"})
    assert len(woken) == 2 and len(drain(out)) == 2 and out.next_frame() is None
