"""The delivery path on the shared mesh: offline buffer, resume tokens, acknowledgements and
redelivery, resync, dead letters."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import redis.asyncio as aioredis

from chatmesh.gen.chat.v1 import common_pb2
from chatmesh.redis_conn import Keys
from chatmesh_tools.launcher import Mesh
from tests.helpers import Socket, collect, direct_conversation, new_user_id, quiet, register, send, unique


@pytest.fixture
async def pair(http: httpx.AsyncClient, make_token) -> tuple[str, str, str, str, str]:  # type: ignore[no-untyped-def]
    """(alice token, bob, bob token, conversation id, alice)"""
    alice, bob = new_user_id("alice"), new_user_id("bob")
    await register(http, make_token(bob))
    conversation_id = await direct_conversation(http, make_token(alice), bob)
    return make_token(alice), bob, make_token(bob), conversation_id, alice


@pytest.fixture
async def redis_client(redis_server: str) -> aioredis.Redis:
    client = aioredis.Redis.from_url(redis_server)
    yield client
    await client.aclose()


def contents(frames: list[dict]) -> list[str]:
    return [f["data"]["content"] for f in frames]


async def test_offline_user_gets_every_message_in_order_then_only_new_ones(http, mesh: Mesh, pair) -> None:
    alice_token, _, bob_token, conversation_id, _ = pair
    for i in range(5):
        await send(http, alice_token, conversation_id, f"m{i}")

    bob = await Socket.open(mesh.edge_url, bob_token)
    frames = await collect(bob, "chat:message_received", 5)
    assert contents(frames) == [f"m{i}" for i in range(5)]
    assert [int(f["data"]["seq"]) for f in frames] == [1, 2, 3, 4, 5]
    for frame in frames:
        ack = await bob.request("chat:message_delivered", {"message_id": frame["data"]["message_id"]})
        assert ack["type"] == "ack"
    await bob.close()

    await send(http, alice_token, conversation_id, "m5")
    # Without a token, a new connection gets what the user has not acknowledged: only m5.
    deadline = time.monotonic() + 10
    while True:
        again = await Socket.open(mesh.edge_url, bob_token)
        got = contents(unique(await quiet(again, "chat:message_received", 0.3)))
        await again.close()
        if got == ["m5"] or time.monotonic() > deadline:
            break
    assert got == ["m5"]


async def test_resume_token_gets_exactly_what_was_missed(http, mesh: Mesh, pair) -> None:
    alice_token, _, bob_token, conversation_id, _ = pair
    bob = await Socket.open(mesh.edge_url, bob_token)
    for i in range(3):
        await send(http, alice_token, conversation_id, f"before{i}")
    seen = await collect(bob, "chat:message_received", 3)
    token = seen[-1]["resume_token"]
    await bob.close()

    for i in range(3):
        await send(http, alice_token, conversation_id, f"after{i}")
    resumed = await Socket.open(mesh.edge_url, bob_token, resume_token=token)
    await send(http, alice_token, conversation_id, "live")
    frames = unique(await quiet(resumed, "chat:message_received", 1.0))
    assert contents(frames) == ["after0", "after1", "after2", "live"]  # exactly the missed ones, then live
    await resumed.close()


async def test_token_older_than_the_inbox_gets_resync_required(
    http, mesh: Mesh, pair, redis_client, redis_prefix: str
) -> None:
    alice_token, bob_id, bob_token, conversation_id, _ = pair
    bob = await Socket.open(mesh.edge_url, bob_token)
    await send(http, alice_token, conversation_id, "old")
    token = (await bob.next_of("chat:message_received"))["resume_token"]
    await bob.close()
    await send(http, alice_token, conversation_id, "new")
    inbox = Keys(redis_prefix).inbox(bob_id)
    async with asyncio.timeout(10):  # fan-out is asynchronous: wait until "new" is in bob's inbox
        while (
            not (last := await redis_client.xrevrange(inbox, count=1))
            or common_pb2.Event.FromString(last[0][1][b"e"]).message.content != "new"
        ):
            await asyncio.sleep(0.02)
    await redis_client.xtrim(inbox, maxlen=1, approximate=False)  # the inbox no longer holds what follows the token

    resumed = await Socket.open(mesh.edge_url, bob_token, resume_token=token)
    frame = await resumed.next_of("resync_required")
    assert frame["data"]["reason"] == "token_expired"
    await resumed.close()


async def test_malformed_token_gets_resync_required(mesh: Mesh, pair) -> None:
    _, _, bob_token, _, _ = pair
    resumed = await Socket.open(mesh.edge_url, bob_token, resume_token="garbage")
    assert (await resumed.next_of("resync_required"))["data"]["reason"] == "token_invalid"
    await resumed.close()


async def test_unacknowledged_event_is_pushed_again_three_times(http, mesh: Mesh, pair) -> None:
    alice_token, _, bob_token, conversation_id, _ = pair
    bob = await Socket.open(mesh.edge_url, bob_token)
    await send(http, alice_token, conversation_id, "ack me")
    first = await bob.next_of("chat:message_received")
    # Scaled 2 s, 4 s, 8 s (x0.05): three more pushes within a second or so, then no more.
    frames = await quiet(bob, "chat:message_received", 2.0)
    assert [f["event_id"] for f in frames] == [first["event_id"]] * 3

    await send(http, alice_token, conversation_id, "acked")
    acked = await bob.next_of("chat:message_received")
    await bob.request("chat:message_delivered", {"message_id": acked["data"]["message_id"]})
    assert await quiet(bob, "chat:message_received", 1.0) == []
    await bob.close()


async def test_poison_event_is_dead_lettered_after_three_retries(
    http, mesh: Mesh, pair, redis_client, redis_prefix: str
) -> None:
    keys = Keys(redis_prefix)
    poison = keys.event_partition(0)  # where the relay puts a payload it cannot read
    poison_id = (await redis_client.xadd(poison, {b"e": b"\xff not an event"})).decode()
    started = time.monotonic()
    # Delivery keeps flowing meanwhile.
    alice_token, _, bob_token, conversation_id, _ = pair
    bob = await Socket.open(mesh.edge_url, bob_token)
    await send(http, alice_token, conversation_id, "still flowing")
    assert (await bob.next_of("chat:message_received"))["data"]["content"] == "still flowing"
    await bob.close()

    async with asyncio.timeout(15):
        while not (
            dead := [e for e in await redis_client.xrange(keys.dead_letter) if e[1][b"entry"].decode() == poison_id]
        ):
            await asyncio.sleep(0.05)
    waited = time.monotonic() - started
    assert waited >= (2 + 4 + 8) * 0.05 * 0.9  # the backoff was honoured (scaled)
    assert b"DecodeError" in dead[0][1][b"reason"] or b"Error" in dead[0][1][b"reason"]
    assert dead[0][1][b"stream"] == poison.encode()
    pending = await redis_client.xpending(poison, "fanout")
    assert poison_id not in json.dumps(str(pending))


async def test_websocket_ack_frames_are_validated(mesh: Mesh, pair) -> None:
    _, _, bob_token, _, _ = pair
    bob = await Socket.open(mesh.edge_url, bob_token)
    bad = await bob.request("chat:message_delivered", {})
    assert bad["type"] == "error" and bad["data"]["code"] == "INVALID_ARGUMENT"
    bad = await bob.request("events_ack", {"event_ids": "nope"})
    assert bad["type"] == "error" and bad["data"]["code"] == "INVALID_ARGUMENT"
    ok = await bob.request("events_ack", {"event_ids": ["unknown"]})
    assert ok["type"] == "ack"
    await bob.close()


async def test_dead_letters_can_be_listed_and_replayed(
    mesh_env: dict[str, str], redis_client, redis_prefix: str, http, mesh: Mesh, pair
) -> None:
    """A dead-lettered event whose cause is gone (here: a valid event parked by hand) is delivered on replay."""
    import subprocess
    import sys

    alice_token, _, bob_token, conversation_id, _ = pair
    sent = await send(http, alice_token, conversation_id, "parked")
    bob = await Socket.open(mesh.edge_url, bob_token)
    await bob.next_of("chat:message_received")  # the original delivery
    event = common_pb2.Event(
        event_id="replayed-" + sent["message_id"], type="chat:message_received", conversation_id=conversation_id
    )
    event.message.message_id, event.message.content = sent["message_id"], "parked"
    keys = Keys(redis_prefix)
    await redis_client.xadd(
        keys.dead_letter, {b"e": event.SerializeToString(), b"entry": b"0-1", b"reason": b"test: upstream was down"}
    )
    env = {**mesh_env, "PATH": ""}

    def cli(action: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "chatmesh_tools.cli", "dead-letter", action],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    listed = await asyncio.to_thread(cli, "list")
    assert "test: upstream was down" in listed
    replayed = await asyncio.to_thread(cli, "replay")
    assert replayed.startswith("replayed ")
    async with asyncio.timeout(10):
        while (await bob.next_of("chat:message_received"))["event_id"] != event.event_id:
            pass
    assert not [e for e in await redis_client.xrange(keys.dead_letter) if e[1][b"entry"] == b"0-1"]
    await bob.close()


async def test_an_event_published_twice_reaches_the_inbox_once(
    redis_client, redis_prefix: str, http, mesh: Mesh, pair
) -> None:
    """The relay can publish a row twice (it died between its XADD and its commit): fan-out's
    done-marker keeps the second copy out of every inbox, so a resume never replays it twice."""
    alice_token, bob, bob_token, conversation_id, _ = pair
    bob_socket = await Socket.open(mesh.edge_url, bob_token)
    first = await send(http, alice_token, conversation_id, "once")
    received = await bob_socket.next_of("chat:message_received")
    keys = Keys(redis_prefix)
    copy = next(
        fields
        for _, fields in reversed(await redis_client.xrange(keys.events_of(conversation_id)))
        if common_pb2.Event.FromString(fields[b"e"]).message.message_id == first["message_id"]
    )
    await redis_client.xadd(keys.events_of(conversation_id), {b"e": copy[b"e"]})  # the relay's second publish
    second = await send(http, alice_token, conversation_id, "after")  # fanned out after the copy
    async with asyncio.timeout(10):
        while (await bob_socket.next_of("chat:message_received"))["data"]["message_id"] != second["message_id"]:
            pass
    await bob_socket.close()

    inbox = [common_pb2.Event.FromString(fields[b"e"]) for _, fields in await redis_client.xrange(keys.inbox(bob))]
    assert [e.message.message_id for e in inbox if e.type == "chat:message_received"] == [
        first["message_id"],
        second["message_id"],
    ]
    resumed = await Socket.open(mesh.edge_url, bob_token, resume_token=received["resume_token"])
    assert [f["data"]["message_id"] for f in await collect(resumed, "chat:message_received", 1)] == [
        second["message_id"]
    ]
    await resumed.close()
