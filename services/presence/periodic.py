"""The loop behind presence's timers (the sweeper in presence.py, the call ringing timeouts in
calls.py): a batch of due work at a time, through Redis outages."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import NoReturn

from chatmesh.resilience import Backoff, OutageLog, is_outage


async def repeat(
    step: Callable[[], Awaitable[bool]], *, tick_s: float, outage: OutageLog, backoff: Backoff
) -> NoReturn:
    """Run `step` for ever: again at once while it reports more due work (a full batch), else after
    `tick_s`. An outage is retried with `backoff` and logged once each way (`outage`); anything else
    escapes, to the supervisor (chatmesh.resilience.supervise) that runs this."""
    while True:
        try:
            more = await step()
        except Exception as exc:
            if not is_outage(exc):
                raise
            outage.failed(exc)
            await backoff.sleep()
            continue
        outage.recovered()
        backoff.reset()
        if not more:
            await asyncio.sleep(tick_s)
