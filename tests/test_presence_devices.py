"""A user with several devices: whatever order their sockets close in, contacts see one offline, a
linger after the last close (1 s at CHAT_TIME_SCALE=0.05: 5 s scaled, but never under 1 s), with
that close as last seen. Real processes through the edge's WebSockets, as in tests/test_presence.py.

GitHub issue 14 found the offline arriving a TTL-sized time late. The sweeper's grace after an outage
(presence or Redis down, so edges could not heartbeat) held back every expiry, the closed sockets'
lingers included; a presence that has just started is in that grace, which the second test uses.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from chatmesh_tools.embedded import free_port
from chatmesh_tools.launcher import Mesh
from tests.conftest import dump_logs
from tests.helpers import Socket, quiet
from tests.test_presence import pair, presence_of, status_frame, wait_status

LINGER_S = 1.0  # services/presence RECONNECT_GRACE_S (5 s) scaled by 0.05, raised to MIN_RECONNECT_GRACE_S
GAP_S = 1.5  # between the two closes: the first device's linger is over before the second closes
SLACK_S = 1.0  # the sweep tick (50 ms), the edge's drop call and a loaded 2-core machine


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


async def two_devices_close_apart(
    http: httpx.AsyncClient,
    edge_url: str,
    make_token,  # type: ignore[no-untyped-def]
    last_opened_closes_first: bool,
) -> None:
    """Alice opens two sockets, closes one, then the other GAP_S later; her contact bob sees one
    offline a linger after the second close, with it as last seen."""
    alice, alice_token, bob, bob_token, _ = await pair(http, make_token)
    watcher = await Socket.open(edge_url, bob_token)
    await wait_status(http, alice_token, bob, "PRESENCE_STATUS_ONLINE")
    devices = [await Socket.open(edge_url, alice_token) for _ in range(2)]
    assert (await status_frame(watcher, alice))["data"]["status"] == "online"
    if last_opened_closes_first:
        devices.reverse()

    def of_alice(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [f for f in frames if f["data"]["user_id"] == alice]

    first_closed = time.time()
    await devices[0].close()
    # The other device keeps alice online past the first one's linger.
    assert of_alice(await quiet(watcher, "user:status_changed", GAP_S)) == []
    last_closed, closed_at = time.time(), time.monotonic()
    await devices[1].close()

    offline = await status_frame(watcher, alice, timeout=LINGER_S + SLACK_S)
    waited = time.monotonic() - closed_at
    assert offline["data"]["status"] == "offline"
    assert waited >= LINGER_S - 0.1, f"offline {waited:.2f} s after the last close: before the linger"
    last_seen = _epoch(offline["data"]["last_seen_at"])
    # The later close, not the first one (GAP_S earlier).
    after_first, after_last = last_seen - first_closed, last_seen - last_closed
    assert -0.1 <= after_last <= 0.5, f"last seen: first close + {after_first:.2f}, last + {after_last:.2f}"
    # Exactly one, and what a query reads agrees.
    assert of_alice(await quiet(watcher, "user:status_changed", 1.0)) == []
    seen = (await presence_of(http, bob_token, alice))[alice]
    assert seen["status"] == "PRESENCE_STATUS_OFFLINE" and _epoch(seen["last_seen_at"]) == last_seen
    await watcher.close()


async def test_devices_closing_apart_in_either_order_go_offline_once_after_the_last(
    http: httpx.AsyncClient, mesh: Mesh, make_token
) -> None:  # type: ignore[no-untyped-def]
    await asyncio.gather(
        two_devices_close_apart(http, mesh.edge_url, make_token, last_opened_closes_first=False),
        two_devices_close_apart(http, mesh.edge_url, make_token, last_opened_closes_first=True),
    )


# Long enough that the grace of a just-started presence (2 × TTL = 20 s) outlasts the test by far.
TTL_S = 200.0


@pytest.fixture
def just_started(
    request: pytest.FixtureRequest, mesh: Mesh, mesh_env: dict[str, str], redis_prefix: str, workdir: Path
) -> Iterator[Mesh]:
    """A presence service and an edge of their own, just started on a Redis prefix of their own, as
    after a presence restart: no sweeper ran before, so the first one opens the grace. Conversations
    come from the session mesh's services."""
    env = {
        **mesh_env,
        "CHAT_REDIS_PREFIX": f"{redis_prefix}:devices{secrets.token_hex(4)}",
        "CHAT_PRESENCE_TTL_S": str(TTL_S),
    }
    own = Mesh(
        env=env,
        ports={**mesh.ports, "presence": free_port(), "edge": free_port()},
        log_dir=workdir / f"devices-{secrets.token_hex(4)}",
    )
    failed_before = request.session.testsfailed
    own.start("presence", "edge")
    yield own
    own.stop()
    if request.session.testsfailed > failed_before:
        dump_logs(own.log_dir)


@pytest.fixture
async def just_started_http(just_started: Mesh) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=just_started.edge_url, timeout=10) as client:
        yield client


async def test_in_the_grace_after_a_restart_closed_devices_still_go_offline_after_the_linger(
    just_started: Mesh, just_started_http: httpx.AsyncClient, redis_server: str, make_token
) -> None:  # type: ignore[no-untyped-def]
    """The grace keeps overdue open connections (their heartbeats may have been lost while presence
    was down), not closed ones: alice's devices go offline a linger after the last close, not when
    the grace ends."""
    prefix = just_started.env["CHAT_REDIS_PREFIX"]
    with redis.Redis.from_url(redis_server) as client:
        assert client.pttl(f"{prefix}:presence:grace") > 10_000  # the scenario: in the grace, for a while yet
    await two_devices_close_apart(just_started_http, just_started.edge_url, make_token, last_opened_closes_first=True)
