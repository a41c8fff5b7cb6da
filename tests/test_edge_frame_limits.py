"""Every kind of frame a client sends has a limit at the edge (issue 15, item 5): presence toggles,
typing, receipts, acknowledgements (by event id) and sends. Over it, a frame is answered RATE_LIMITED
(retryable, with retry_after) and the socket stays open. Presence toggles are coalesced as well: a
client flapping at 40 per second costs a contact at most one status change per interval."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from chatmesh_tools.embedded import free_port
from chatmesh_tools.launcher import SERVICES, Mesh
from services.edge.calls import unavailable
from services.edge.frame_limits import FrameLimits
from services.edge.presence_toggles import PresenceToggles
from tests.conftest import dump_logs
from tests.helpers import Socket, direct_conversation, new_user_id, register

INTERVAL_S = 1.0  # CHAT_WS_PRESENCE_INTERVAL_S (the default)
LIMITS = {
    "CHAT_WS_RATE_PRESENCE": "20/10",
    "CHAT_WS_RATE_TYPING": "3/60",
    "CHAT_WS_RATE_RECEIPTS": "3/60",
    "CHAT_WS_RATE_ACKS": "50/60",
    "CHAT_RATE_MESSAGES": "3/60",
}


def test_buckets_per_kind_acks_by_id_and_refill() -> None:
    limits = FrameLimits({"presence": (2, 10.0), "typing": (0, 1.0), "receipts": (3, 1.0), "acks": (100, 10.0)})
    now = 1000.0
    assert [limits.take("presence:online", {}, now), limits.take("presence:offline", {}, now)] == [0, 0]
    assert limits.take("presence:online", {}, now) == 5.0  # one unit at 2 per 10 s
    assert limits.take("chat:typing", {}, now) == 0 and limits.take("ping", {}, now) == 0  # no limit
    assert limits.take("chat:message_send", {}, now) == 0  # sends: per user, in Redis
    ids = {"event_ids": [f"e{n}" for n in range(60)]}
    assert limits.take("events_ack", ids, now) == 0 and limits.take("events_ack", ids, now) == 2.0  # 20 short
    assert limits.take("events_ack", {"event_ids": list(range(500))}, now + 10) == 0  # capped at the budget
    assert [limits.take("chat:message_delivered", {}, now) for _ in range(4)][-1] == 0.4
    assert limits.take("chat:message_read", {}, now + 1) == 0  # refilled (3 a second)


async def test_toggles_go_at_most_once_per_interval_and_the_last_wins() -> None:
    calls: list[tuple[float, str, str]] = []
    fail = False

    async def set_presence(kind: str, metadata: tuple[tuple[str, str], ...]) -> dict[str, Any]:
        if fail:
            raise unavailable("no presence replica is reachable")
        calls.append((time.monotonic(), metadata[0][1], kind))
        return {"status": kind}

    toggles = PresenceToggles(set_presence, 0.1)
    replies: list[dict[str, Any]] = []
    started = time.monotonic()
    for n in range(50):  # 0.25 s of flapping, two sockets of one user
        kind = "presence:offline" if n % 2 == 0 else "presence:online"
        toggles.toggle("u1", kind, (("user", "u1"),), n if n % 3 else None, replies.append)
        await asyncio.sleep(0.005)
    toggles.toggle("u2", "presence:offline", (("user", "u2"),), "x", replies.append)  # another user: at once
    await asyncio.sleep(0.25)
    assert toggles.users == 0  # a quiet interval ends the user's entry
    u1 = [(at, kind) for at, user, kind in calls if user == "u1"]
    assert len(u1) <= (time.monotonic() - started) / 0.1 + 1 and u1[-1][1] == "presence:online"  # the last wins
    assert all(b - a >= 0.099 for (a, _), (b, _) in zip(u1, u1[1:], strict=False))  # an interval apart
    assert [user for _, user, _ in calls].count("u2") == 1
    answered = sorted(str(r["id"]) for r in replies if r["type"] == "ack")
    assert answered == sorted([str(n) for n in range(50) if n % 3] + ["x"])  # every toggle with an id, once

    fail, replies = True, []
    toggles.toggle("u3", "presence:online", (("user", "u3"),), "y", replies.append)
    toggles.toggle("u3", "presence:offline", (("user", "u3"),), None, replies.append)
    await asyncio.sleep(0.25)
    assert [(r["id"], r["data"]["code"], r["data"]["retryable"]) for r in replies] == [
        ("y", "UNAVAILABLE", True),
        (None, "UNAVAILABLE", True),
    ]


@pytest.fixture(scope="module")
def limits_mesh(
    request: pytest.FixtureRequest,
    mesh_env: dict[str, str],
    make_database: Callable[[], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Mesh]:
    env = {
        **mesh_env,
        "CHAT_DATABASE_URL": make_database(),
        "CHAT_REDIS_PREFIX": f"test-{secrets.token_hex(6)}",
        **LIMITS,
    }
    mesh = Mesh(env=env, ports={name: free_port() for name in SERVICES}, log_dir=tmp_path_factory.mktemp("limits"))
    failed_before = request.session.testsfailed
    mesh.start()
    yield mesh
    mesh.stop()
    if request.session.testsfailed > failed_before:
        dump_logs(mesh.log_dir)


async def pair(mesh: Mesh, make_token) -> tuple[httpx.AsyncClient, str, str, str, str]:  # type: ignore[no-untyped-def]
    """(http, alice, alice's token, bob's token, their conversation)."""
    http = httpx.AsyncClient(base_url=mesh.edge_url, timeout=20)
    alice, bob = new_user_id("alice"), new_user_id("bob")
    await register(http, make_token(bob))
    conversation_id = await direct_conversation(http, make_token(alice), bob)
    return http, alice, make_token(alice), make_token(bob), conversation_id


async def answers(
    socket: Socket, frames: list[tuple[str, dict[str, Any]]], gap_s: float = 0.03
) -> list[dict[str, Any]]:
    """Send frames with ids (at most ~33 a second, under the socket's frame rate) and return each one's answer."""
    ids = [uuid.uuid4().hex for _ in frames]
    for request_id, (kind, data) in zip(ids, frames, strict=True):
        await socket.ws.send(json.dumps({"type": kind, "id": request_id, "data": data}))
        await asyncio.sleep(gap_s)
    got: dict[str, dict[str, Any]] = {}
    async with asyncio.timeout(15):
        while len(got) < len(ids):
            frame = await socket.recv()
            if frame.get("id") in ids:
                got[frame["id"]] = frame
    return [got[request_id] for request_id in ids]


def limited(frame: dict[str, Any]) -> bool:
    if frame["type"] != "error" or frame["data"]["code"] != "RATE_LIMITED":
        return False
    assert frame["data"]["retryable"] is True and frame["data"]["retry_after"] > 0, frame
    return True


async def test_each_kind_over_its_limit_is_rate_limited_and_the_socket_stays_open(
    limits_mesh: Mesh, make_token
) -> None:
    http, _, alice_token, bob_token, conversation_id = await pair(limits_mesh, make_token)
    alice = await Socket.open(limits_mesh.edge_url, alice_token)
    cases: dict[str, tuple[int, list[tuple[str, dict[str, Any]]]]] = {  # kind: (frames allowed, frames sent)
        "typing": (3, [("chat:typing", {"conversation_id": conversation_id, "is_typing": True})] * 4),
        "receipts": (3, [("chat:message_delivered", {"message_id": f"m{n}"}) for n in range(4)]),
        "acks": (1, [("events_ack", {"event_ids": [f"e{n}" for n in range(30)]})] * 2),  # 30 + 30 ids > 50
        "sends": (
            3,
            [("chat:message_send", {"conversation_id": conversation_id, "content": f"hi {n}"}) for n in range(4)],
        ),
        "presence": (20, [("presence:offline" if n % 2 else "presence:online", {}) for n in range(25)]),
    }
    for kind, (allowed, frames) in cases.items():
        replies = await answers(alice, frames)
        assert all(r["type"] == "ack" for r in replies[:allowed]), (kind, replies)
        assert limited(replies[-1]) and all(r["type"] == "ack" or limited(r) for r in replies), (kind, replies)
        assert (await alice.request("ping", {}))["type"] == "pong", kind  # still open
    # The limits are per socket (sends: per user): another socket of the same user has its own.
    again = await Socket.open(limits_mesh.edge_url, alice_token)
    assert (await again.request("chat:typing", {"conversation_id": conversation_id, "is_typing": False}))[
        "type"
    ] == "ack"
    await Socket.open(limits_mesh.edge_url, bob_token)
    await http.aclose()


async def test_a_flapping_client_costs_a_contact_one_status_change_per_interval(limits_mesh: Mesh, make_token) -> None:
    http, alice_id, alice_token, bob_token, _ = await pair(limits_mesh, make_token)
    bob = await Socket.open(limits_mesh.edge_url, bob_token)
    alice = await Socket.open(limits_mesh.edge_url, alice_token)
    await bob.next_of("user:status_changed")  # alice comes online
    await asyncio.sleep(INTERVAL_S)

    statuses: list[tuple[float, str]] = []

    async def watch() -> None:
        while True:
            frame = await bob.next_of("user:status_changed", timeout=60)
            if frame["data"]["user_id"] == alice_id:
                statuses.append((time.monotonic(), frame["data"]["status"]))

    watcher = asyncio.create_task(watch())
    toggles = [("presence:offline" if n % 2 == 0 else "presence:online", {}) for n in range(120)]
    started = time.monotonic()
    replies = await answers(alice, toggles, gap_s=1 / 40)  # 120 toggles at 40 a second
    duration = time.monotonic() - started
    # The last toggle the edge accepted wins (later ones may have been refused by the frame limit).
    last_accepted = max(n for n, r in enumerate(replies) if r["type"] == "ack")
    wanted = "offline" if toggles[last_accepted][0] == "presence:offline" else "online"
    async with asyncio.timeout(INTERVAL_S + 5.0):  # it goes when its interval ends
        while not statuses or statuses[-1][1] != wanted:
            await asyncio.sleep(0.05)
    await asyncio.sleep(INTERVAL_S)  # and nothing more comes after it
    watcher.cancel()

    assert 1 <= len(statuses) <= duration / INTERVAL_S + 1, (duration, len(statuses), statuses)
    assert statuses[-1][1] == wanted
    assert all(r["type"] == "ack" or limited(r) for r in replies), replies
    assert any(limited(r) for r in replies) and replies[0]["type"] == "ack"  # past 20 in 10 s (this mesh's limit)
    assert (await alice.request("ping", {}))["type"] == "pong"
    await http.aclose()
