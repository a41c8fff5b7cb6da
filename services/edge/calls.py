"""Deadlines for the edge's calls to its upstreams, and a fast UNAVAILABLE when no upstream is there.

Every unary call the edge makes carries CALL_TIMEOUT_S (its long-lived event streams, in upstream.py
and presence_link.py, do not: they live as long as the edge). Calls pass wait_for_ready=True, so a
call made while an upstream restarts waits for it instead of failing at once (chatmesh/grpc_client.py).
But a call that waits on a channel with no ready upstream (every replica killed, or NOT_SERVING
because its store is gone) only ends at its deadline, as DEADLINE_EXCEEDED: the client waits the
whole deadline and is told the upstream was slow, when it was never reached.

So `reachable` runs first: a channel that is READY costs one state read; one that is not gets
CONNECT_WAIT_S to become READY (a restarted upstream does: channels retry every 2 s at most), and
otherwise the call fails as UNAVAILABLE without being made. The client gets 503 / a retryable error
frame within a couple of seconds and retries; DEADLINE_EXCEEDED is left to what it means, an upstream
that took the call and did not answer in time.
"""

from __future__ import annotations

import asyncio

import grpc

CALL_TIMEOUT_S = 5.0
CONNECT_WAIT_S = 2.0  # at least grpc_client's max_reconnect_backoff_ms, so a restart in progress is waited for

_READY = grpc.ChannelConnectivity.READY
_SHUTDOWN = grpc.ChannelConnectivity.SHUTDOWN


def unavailable(details: str) -> grpc.aio.AioRpcError:
    """The error a call would have failed with, for a call the edge did not make."""
    return grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


async def reachable(channel: grpc.aio.Channel, service: str, wait_s: float = CONNECT_WAIT_S) -> None:
    """Return once the channel has a ready upstream; raise UNAVAILABLE after `wait_s` without one."""
    state = channel.get_state(try_to_connect=True)
    if state is _READY:
        return
    try:
        async with asyncio.timeout(wait_s):
            while state is not _READY and state is not _SHUTDOWN:
                await channel.wait_for_state_change(state)
                state = channel.get_state(try_to_connect=True)
    except TimeoutError:
        pass
    if state is not _READY:
        raise unavailable(f"no {service} replica is reachable ({state.name.lower()})")
