"""The pieces every retry loop stands on: a shared lookup outlives a cancelled caller, and a
supervised loop outlives a cancellation that leaks out of a callee, and a stopping service does not
hang on a loop that swallowed its cancellation."""

from __future__ import annotations

import asyncio

from chatmesh.membership import _SingleFlight
from chatmesh.resilience import stop_all, supervise


async def test_a_shared_lookup_outlives_the_caller_that_started_it() -> None:
    """An RPC whose deadline passes is cancelled mid-lookup; fan-out, waiting on the same lookup, gets
    the answer (it used to get the RPC's cancellation, which ended its loop)."""
    flight: _SingleFlight[str] = _SingleFlight()
    release = asyncio.Event()
    calls = 0

    async def lookup() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "members"

    first = asyncio.create_task(flight.run("c1", lookup))
    await asyncio.sleep(0)
    second = asyncio.create_task(flight.run("c1", lookup))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.wait_for(second, 1) == "members"
    assert first.cancelled() and calls == 1


async def test_a_loop_cancelled_from_within_is_started_again() -> None:
    runs = 0
    third = asyncio.Event()

    async def loop() -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            third.set()
            await asyncio.Event().wait()
        raise asyncio.CancelledError  # what a callee's leaked cancellation looks like

    task = asyncio.create_task(supervise("test loop", loop))
    try:
        await asyncio.wait_for(third.wait(), 10)
    finally:
        task.cancel()
    assert runs == 3


async def test_a_stop_ends_a_loop_that_swallowed_its_cancellation() -> None:
    """As a callee that turns a cancellation into an error the loop takes for an outage: the loop goes
    on, and a plain wait for it would hold the process forever."""
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # the first cancellation is lost

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    await asyncio.wait_for(stop_all([task], wait_s=0.05), 5)
    assert task.cancelled() and swallowed == 1
