"""Redelivery runs on one timer per edge process: it visits only the sockets that have unacknowledged
events, pushes each again after the scaled 2 s, 4 s and 8 s, stops at a late acknowledgement, and
exists only while some socket is waiting."""

from __future__ import annotations

import asyncio

from services.edge.outgoing import Outgoing, RedeliveryTimer

SCALE = 0.01  # 20 ms, 40 ms, 80 ms


def durable(n: int) -> dict:
    return {
        "type": "chat:message_received",
        "event_id": f"e{n}",
        "resume_token": f"t:{n}",
        "conversation_id": "c",
        "data": {"message_id": f"m{n}", "seq": str(n)},
    }


def drain(out: Outgoing) -> list[str]:
    frames = []
    while (frame := out.next_frame()) is not None:
        frames.append(frame)
    return frames


async def test_one_timer_redelivers_after_2_4_8_and_only_watches_sockets_waiting_for_acks() -> None:
    timer = RedeliveryTimer(tick_s=0.5 * SCALE)
    idle, busy, acked = (Outgoing(100, SCALE, timer) for _ in range(3))
    assert timer._task is None and timer.watched == 0  # idle sockets cost no timer at all
    idle.push_reply({"type": "pong"})
    busy.push_event(durable(1))
    acked.push_event(durable(2))
    assert timer.watched == 2 and timer._task is not None
    assert len(drain(busy)) == 1 and len(drain(acked)) == 1
    assert acked.ack_message("m2") == ("c", 2)

    pushes: list[float] = []
    start = asyncio.get_running_loop().time()
    while timer._task is not None and asyncio.get_running_loop().time() - start < 2:
        await asyncio.sleep(0.002)
        pushes += [asyncio.get_running_loop().time() - start] * len(drain(busy))
        assert drain(acked) == []
    assert len(pushes) == 3  # after 2, then 4, then 8 (scaled): then left for the next resume
    assert 0.015 <= pushes[0] and 0.05 <= pushes[1] and 0.13 <= pushes[2], pushes
    assert timer.watched == 0 and timer._task is None  # nothing left to wait for: the timer is gone
    assert busy.unacknowledged == 0


async def test_a_late_ack_stops_redelivery_and_a_closed_socket_is_forgotten() -> None:
    timer = RedeliveryTimer(tick_s=0.5 * SCALE)
    late, closed = Outgoing(100, SCALE, timer), Outgoing(100, SCALE, timer)
    late.push_event(durable(1))
    closed.push_event(durable(2))
    closed.close()
    assert timer.watched == 1
    drain(late)
    await asyncio.sleep(0.03)  # past the first redelivery
    assert len(drain(late)) == 1
    late.ack_events(["e1"])
    await asyncio.sleep(0.2)  # past the second and third
    assert drain(late) == [] and drain(closed)[1:] == []
    assert timer._task is None


async def test_a_redelivery_that_finds_the_queue_full_drains_the_socket_then_closes_it() -> None:
    timer = RedeliveryTimer(tick_s=0.5 * SCALE)
    overflowed: list[bool] = []
    out = Outgoing(1, SCALE, timer, on_overflow=lambda: overflowed.append(True))
    out.push_event(durable(1))  # queued, never written: the client is not reading
    await asyncio.sleep(0.05)
    assert out.draining and not overflowed  # full: no more events, what is queued is still written
    assert len(drain(out)) == 1 and overflowed and out.overflowed  # then the socket closes (4008)
