"""The edge's send budget in bytes, without sockets: a socket that drains under the minimum rate over
a whole window is closed, one that keeps up is not, and when the edge is over its total budget the
slowest sockets (longest to drain their backlog) go first, until it is under again."""

from __future__ import annotations

import asyncio
import time

from services.edge.backlog import SendBudget
from services.edge.outgoing import Outgoing

KB = 1024


def event(n: int, size: int = 10 * KB) -> dict:
    return {
        "type": "chat:message_received",
        "event_id": f"e{n}",
        "resume_token": f"t:{n}",
        "conversation_id": "c",
        "data": {"message_id": f"m{n}", "seq": str(n), "content": "x" * size},
    }


def socket(budget: SendBudget, closed: list[str], name: str) -> Outgoing:
    return Outgoing(10_000, budget=budget, byte_limit=10 << 20, on_overflow=lambda: closed.append(name))


async def test_bytes_are_counted_per_socket_and_for_the_edge() -> None:
    budget = SendBudget(100 << 20, 0, 0)
    one, two = socket(budget, [], "one"), socket(budget, [], "two")
    for n in range(10):
        one.push_event(event(n))
    two.push_event(event(1))
    assert 100 * KB < one.queued_bytes < 110 * KB and budget.total == one.queued_bytes + two.queued_bytes
    one.next_frame()
    assert one.drained_bytes > 10 * KB and budget.total == one.queued_bytes + two.queued_bytes
    one.close()
    assert budget.total == two.queued_bytes and one.queued_bytes == 0
    two.shed()
    assert budget.total == 0


async def test_a_socket_that_drains_too_slowly_is_closed_one_that_keeps_up_is_not() -> None:
    budget = SendBudget(100 << 20, min_drain_bytes_per_s=20 * KB, window_s=1.0)  # watched from 20 KB queued
    closed: list[str] = []
    slow, fast, small = socket(budget, closed, "slow"), socket(budget, closed, "fast"), socket(budget, closed, "small")
    for n in range(10):
        slow.push_event(event(n))
        fast.push_event(event(n))
    small.push_event(event(1))  # under one window's minimum: not watched at all
    assert slow.watched and fast.watched and not small.watched
    start = time.monotonic()
    budget.check(start)
    for _ in range(3):
        fast.next_frame()  # 30 KB in the window: above 20 KB/s
    slow.next_frame()  # 10 KB: below
    budget.check(start + 1.01)
    assert closed == ["slow"] and slow.overflowed and slow.queued_bytes == 0 and not fast.overflowed
    for _ in range(6):
        fast.next_frame()
    budget.check(start + 2.02)  # caught up (under the threshold): no longer watched
    assert not fast.watched and closed == ["slow"]
    assert budget.closed_slow == 1


async def test_over_budget_the_slowest_go_first_until_it_is_under() -> None:
    budget = SendBudget(250 * KB, min_drain_bytes_per_s=20 * KB, window_s=1.0)
    closed: list[str] = []
    names = ("stuck", "slow", "quick", "tiny")
    outs = {name: socket(budget, closed, name) for name in names}
    for n in range(12):
        outs["stuck"].push_event(event(n))
        outs["slow"].push_event(event(n))
        outs["quick"].push_event(event(n))
    outs["tiny"].push_event(event(1, 100))
    now = time.monotonic()
    for _ in range(3):
        outs["slow"].next_frame()
    for _ in range(10):
        outs["quick"].next_frame()
    budget.check(now + 1.01)  # rates: stuck 0, slow 30 KB/s, quick 100 KB/s; nobody under the minimum but stuck
    assert closed == ["stuck"]
    for n in range(12, 30):
        outs["quick"].push_event(event(n))
    assert budget.total > budget.limit
    budget.check(now + 1.2)
    # slow: ~90 KB at 30 KB/s (3 s); quick: ~200 KB at 100 KB/s (2 s); tiny: nothing to speak of.
    assert closed == ["stuck", "slow"] and budget.total <= budget.limit and budget.closed_shed == 1


async def test_the_checker_runs_only_while_there_is_something_to_check() -> None:
    budget = SendBudget(50 * KB, min_drain_bytes_per_s=10 * KB, window_s=0.1)
    closed: list[str] = []
    out = socket(budget, closed, "one")
    assert budget._task is None
    for n in range(3):
        out.push_event(event(n))
    assert budget._task is not None
    while out.next_frame() is not None:
        pass
    await asyncio.sleep(0.1)
    assert budget._task is None and closed == []
    for n in range(8):  # over the total: the next tick sheds it
        out.push_event(event(n))
    await asyncio.sleep(0.1)
    assert closed == ["one"] and budget.total == 0
