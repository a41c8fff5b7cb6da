"""Presence when processes die: an edge replica killed with SIGKILL, the presence service restarted.

These tests run their own presence service and two edges as real processes (they kill them), on a
Redis key prefix of their own so the session mesh's presence does not sweep for them; conversations
and messages use the session mesh's services (a second message service on the same database would
share its outbox). Connection TTL 30 s scaled by 0.05: 1.5 s.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from chatmesh_tools.embedded import free_port
from chatmesh_tools.launcher import Mesh
from tests.conftest import dump_logs
from tests.helpers import Socket, bearer, direct_conversation, new_user_id, quiet, register
from tests.test_presence import presence_of, status_frame, wait_status

TTL_S = 30 * 0.05


class Replicas:
    """Edges `a` and `b`, each pointing at a presence service: one shared, or one each (`split`)."""

    def __init__(self, mesh: Mesh, env: dict[str, str], log_dir: Path, split: bool = False) -> None:
        self.prefix = env["CHAT_REDIS_PREFIX"]
        self.presences = [
            Mesh(env=env, log_dir=log_dir / f"p{i}", ports={**mesh.ports, "presence": free_port(), "edge": free_port()})
            for i in range(2 if split else 1)
        ]
        self.presence = self.presences[0]
        self.edges: dict[str, Mesh] = {}
        for i, name in enumerate(("a", "b")):
            presence_port = self.presences[i % len(self.presences)].ports["presence"]
            self.edges[name] = Mesh(
                env=env, log_dir=log_dir / name, ports={**mesh.ports, "presence": presence_port, "edge": free_port()}
            )

    def start(self) -> None:
        """Presence replicas, then edges. When one fails to start, the ones that did are stopped: the
        fixture raises before its yield, so its teardown would never stop them."""
        try:
            for presence in self.presences:
                presence.start("presence")
            for edge in self.edges.values():
                edge.start("edge")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for edge in self.edges.values():
            edge.stop()
        for presence in self.presences:
            presence.stop()


def _replicas(
    request: pytest.FixtureRequest, mesh: Mesh, mesh_env: dict[str, str], redis_prefix: str, workdir: Path, split: bool
) -> Iterator[Replicas]:
    log_dir = workdir / f"presence-{secrets.token_hex(4)}"
    running = Replicas(
        mesh, {**mesh_env, "CHAT_REDIS_PREFIX": f"{redis_prefix}:iso{secrets.token_hex(4)}"}, log_dir, split
    )
    running.start()
    yield running
    running.stop()
    if request.session.testsfailed:
        for folder in sorted(p for p in log_dir.iterdir() if p.is_dir()):
            dump_logs(folder)


@pytest.fixture
def replicas(
    request: pytest.FixtureRequest, mesh: Mesh, mesh_env: dict[str, str], redis_prefix: str, workdir: Path
) -> Iterator[Replicas]:
    yield from _replicas(request, mesh, mesh_env, redis_prefix, workdir, split=False)


@pytest.fixture
def split_replicas(
    request: pytest.FixtureRequest, mesh: Mesh, mesh_env: dict[str, str], redis_prefix: str, workdir: Path
) -> Iterator[Replicas]:
    yield from _replicas(request, mesh, mesh_env, redis_prefix, workdir, split=True)


@pytest.fixture
async def edge_a(replicas: Replicas) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=replicas.edges["a"].edge_url, timeout=10) as client:
        yield client


async def contacts(http: httpx.AsyncClient, make_token, watcher: str, *others: str) -> None:  # type: ignore[no-untyped-def]
    await register(http, make_token(watcher))
    for other in others:
        conversation_id = await direct_conversation(http, make_token(other), watcher)
        # The watcher accepts each request, so presence shows both ways.
        accepted = await http.post(
            f"/api/conversations/{conversation_id}/accept", json={}, headers=bearer(make_token(watcher))
        )
        assert accepted.status_code == 200, accepted.text


async def test_edge_killed_without_goodbye_goes_offline_after_ttl(
    replicas: Replicas, edge_a: httpx.AsyncClient, make_token
) -> None:
    bob, alice, carol = new_user_id("bob"), new_user_id("alice"), new_user_id("carol")
    await contacts(edge_a, make_token, bob, alice, carol)
    watcher = await Socket.open(replicas.edges["a"].edge_url, make_token(bob))
    await wait_status(edge_a, make_token(alice), bob, "PRESENCE_STATUS_ONLINE")
    alice_socket = await Socket.open(replicas.edges["b"].edge_url, make_token(alice))
    carol_socket = await Socket.open(replicas.edges["a"].edge_url, make_token(carol))
    assert (await status_frame(watcher, alice))["data"]["status"] == "online"

    replicas.edges["b"].stop("edge", sig=signal.SIGKILL)
    killed_at = time.monotonic()
    offline = await status_frame(watcher, alice, timeout=4 * TTL_S + 10)
    assert offline["data"]["status"] == "offline" and offline["data"]["last_seen_at"]
    assert time.monotonic() - killed_at >= TTL_S / 3  # by expiry: nobody said goodbye
    assert (await presence_of(edge_a, make_token(bob), alice))[alice]["status"] == "PRESENCE_STATUS_OFFLINE"
    # Carol's socket on the surviving edge keeps her online through it all.
    assert (await presence_of(edge_a, make_token(bob), carol))[carol]["status"] == "PRESENCE_STATUS_ONLINE"
    del alice_socket
    await carol_socket.close()
    await watcher.close()


async def test_presence_restart_neither_strands_nor_flaps(
    replicas: Replicas, edge_a: httpx.AsyncClient, make_token, redis_server: str
) -> None:
    bob, alice, carol = new_user_id("bob"), new_user_id("alice"), new_user_id("carol")
    await contacts(edge_a, make_token, bob, alice, carol)
    bob_token = make_token(bob)
    watcher = await Socket.open(replicas.edges["a"].edge_url, bob_token)
    await wait_status(edge_a, make_token(alice), bob, "PRESENCE_STATUS_ONLINE")
    alice_socket = await Socket.open(replicas.edges["a"].edge_url, make_token(alice))  # stays open throughout
    carol_socket = await Socket.open(replicas.edges["b"].edge_url, make_token(carol))  # her edge dies meanwhile
    seen: set[str] = set()
    while seen != {alice, carol}:
        frame = await watcher.next_of("user:status_changed")
        assert frame["data"]["status"] == "online"
        seen.add(frame["data"]["user_id"])

    # Presence is down for longer than the TTL, and carol's edge dies without a goodbye meanwhile.
    replicas.presence.stop("presence", sig=signal.SIGKILL)
    replicas.edges["b"].stop("edge", sig=signal.SIGKILL)
    await asyncio.sleep(TTL_S * 1.5)
    replicas.presence.start("presence")

    # Carol is not online forever: she goes offline once presence expires her connection...
    async with asyncio.timeout(6 * TTL_S + 10):
        while True:
            seen_now = await presence_of(edge_a, bob_token, alice, carol)
            assert seen_now[alice]["status"] == "PRESENCE_STATUS_ONLINE"
            if seen_now[carol]["status"] == "PRESENCE_STATUS_OFFLINE":
                break
            await asyncio.sleep(0.05)
    # ...while alice, whose socket never closed, never flapped offline and back.
    frames = await quiet(watcher, "user:status_changed", 2 * TTL_S)
    assert [f for f in frames if f["data"]["user_id"] == alice] == []
    assert (await presence_of(edge_a, bob_token, alice))[alice]["status"] == "PRESENCE_STATUS_ONLINE"
    # Not even unseen by bob while his stream reconnected: going offline records a last seen time.
    with redis.Redis.from_url(redis_server) as client:
        assert client.hget(f"{replicas.prefix}:presence:state:{{{alice}}}", "last_seen") is None
        assert client.hget(f"{replicas.prefix}:presence:state:{{{carol}}}", "last_seen") is not None

    # The restarted service still serves the edge's stream: alice leaving reaches bob.
    await alice_socket.close()
    assert (await status_frame(watcher, alice))["data"]["status"] == "offline"
    del carol_socket
    await watcher.close()


async def test_two_presence_replicas_deliver_across_and_announce_once(split_replicas: Replicas, make_token) -> None:
    """Edge a talks to presence replica 0, edge b to replica 1; both sweep the same Redis."""
    bob, alice = new_user_id("bob"), new_user_id("alice")
    async with httpx.AsyncClient(base_url=split_replicas.edges["a"].edge_url, timeout=10) as edge_a:
        await contacts(edge_a, make_token, bob, alice)
        conversation_id = await direct_conversation(edge_a, make_token(alice), bob)
        watcher = await Socket.open(split_replicas.edges["a"].edge_url, make_token(bob))
        await wait_status(edge_a, make_token(alice), bob, "PRESENCE_STATUS_ONLINE")
        alice_socket = await Socket.open(split_replicas.edges["b"].edge_url, make_token(alice))
        # Announced by replica 1, delivered over replica 0's stream.
        assert (await status_frame(watcher, alice))["data"]["status"] == "online"
        ack = await alice_socket.request("chat:typing", {"conversation_id": conversation_id, "is_typing": True})
        assert ack["type"] == "ack", ack
        typing = await quiet(watcher, "chat:user_typing", 1.5)
        # Both replicas sweep: the typing state still ends exactly once.
        assert [f["data"]["is_typing"] for f in typing] == [True, False]

        split_replicas.edges["b"].stop("edge", sig=signal.SIGKILL)
        assert (await status_frame(watcher, alice, timeout=4 * TTL_S + 10))["data"]["status"] == "offline"
        # Two sweepers, one announcement.
        assert [
            f for f in await quiet(watcher, "user:status_changed", 2 * TTL_S) if f["data"]["user_id"] == alice
        ] == []
        await watcher.close()
