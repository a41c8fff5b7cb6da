"""Order and liveness under delivery faults: a partly published or republished batch never overtakes
an earlier seq, a subscription whose replay fails is retried rather than left deaf, and a resync's
offline buffer agrees with the inbox about the reader's own messages."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from chatmesh.gen.chat.v1 import common_pb2
from chatmesh.redis_conn import Keys
from chatmesh_tools.embedded import EmbeddedRedis, free_port
from chatmesh_tools.launcher import Mesh
from tests.helpers import Socket, collect, direct_conversation, new_user_id, register, send
from tests.test_delivery_faults import chat, private_mesh, running  # noqa: F401 - the fixture


@pytest.fixture
async def redis_client(redis_server: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server)
    yield client
    await client.aclose()


def received(conversation_id: str, sender: str, seq: int) -> bytes:
    """A message's event as the relay publishes it (serialized `chat:message_received`)."""
    message_id = str(uuid.uuid4())
    return common_pb2.Event(
        event_id=f"received:{message_id}",
        type="chat:message_received",
        conversation_id=conversation_id,
        message=common_pb2.Message(
            message_id=message_id, conversation_id=conversation_id, sender_id=sender, content=f"s{seq}", seq=seq
        ),
    ).SerializeToString()


async def test_a_partial_publish_then_a_republish_cannot_reorder(
    http: httpx.AsyncClient, mesh: Mesh, make_token, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    """The stream as a partly refused batch leaves it: seq 1, 3, 4 landed, then the whole batch again
    (2, 3, 4). Fan-out holds 3 and 4 until 2 is in: bob sees 1, 2, 3, 4, once each."""
    alice, bob = new_user_id("alice"), new_user_id("bob")
    await register(http, make_token(bob))
    conversation_id = await direct_conversation(http, make_token(alice), bob)
    bob_socket = await Socket.open(mesh.edge_url, make_token(bob))
    events = {seq: received(conversation_id, alice, seq) for seq in (1, 2, 3, 4)}
    stream = Keys(redis_prefix).events_of(conversation_id)
    for seq in (1, 3, 4):
        await redis_client.xadd(stream, {b"e": events[seq]})
    await asyncio.sleep(0.3)  # fan-out reads the partial batch on its own, before the republish
    for seq in (2, 3, 4):
        await redis_client.xadd(stream, {b"e": events[seq]})

    frames = await collect(bob_socket, "chat:message_received", 4, timeout=15)
    assert [int(f["data"]["seq"]) for f in frames] == [1, 2, 3, 4]
    inbox = await redis_client.xrange(Keys(redis_prefix).inbox(bob))
    seqs = [common_pb2.Event.FromString(fields[b"e"]).message.seq for _, fields in inbox]
    assert [s for s in seqs if s in events] == [1, 2, 3, 4]  # once each, in order, for every later resume too


async def test_a_subscription_whose_replay_fails_is_retried_not_left_deaf(
    isolated_env, tmp_path: Path, running, make_token
) -> None:
    """bob connects while Redis is down: his subscription's replay fails. Once Redis is back, it goes
    live by itself and bob's open socket receives what alice sends (it used to stay deaf for good)."""
    redis_server = EmbeddedRedis(tmp_path / "redis", free_port())
    url = redis_server.start()
    mesh = private_mesh(isolated_env(CHAT_REDIS_URL=url, CHAT_RATE_REST="0", CHAT_RATE_MESSAGES="0"), tmp_path / "logs")
    running.append(mesh)
    try:
        mesh.start()
        http, alice_token, bob_token, conversation_id = await chat(mesh.edge_url, make_token)
        redis_server.stop()
        bob = await Socket.open(mesh.edge_url, bob_token)
        await asyncio.sleep(0.5)  # the replay has failed by now (and been retried)
        redis_server.start()

        started = time.monotonic()
        await send(http, alice_token, conversation_id, "after the outage")
        frame = await bob.next_of("chat:message_received", timeout=15)
        assert frame["data"]["content"] == "after the outage"
        assert time.monotonic() - started < 10
        await http.aclose()
    finally:
        redis_server.stop()


async def test_after_a_resync_the_readers_own_message_keeps_its_place(
    isolated_env, tmp_path: Path, running, make_token, redis_server: str
) -> None:
    """Redis loses its data; bob resumes with his old token and gets `resync_required`, then the offline
    buffer. His own message between alice's comes in seq order with them, not after."""
    mesh = private_mesh(isolated_env(), tmp_path / "logs")
    running.append(mesh)
    mesh.start()
    http, alice_token, bob_token, conversation_id = await chat(mesh.edge_url, make_token)
    bob = await Socket.open(mesh.edge_url, bob_token)
    await send(http, alice_token, conversation_id, "one")
    token = (await bob.next_of("chat:message_received"))["resume_token"]
    await bob.close()
    await send(http, alice_token, conversation_id, "two")
    await send(http, bob_token, conversation_id, "three (bob's own)")
    await send(http, alice_token, conversation_id, "four")

    client = aioredis.Redis.from_url(redis_server)
    prefix = mesh.env["CHAT_REDIS_PREFIX"]
    await asyncio.sleep(0.5)  # fanned out, then lost
    async for key in client.scan_iter(match=f"{prefix}:*"):
        await client.delete(key)
    await client.aclose()

    resumed = await Socket.open(mesh.edge_url, bob_token, resume_token=token)
    assert (await resumed.next_of("resync_required"))["data"]["reason"] == "epoch_changed"
    frames = await collect(resumed, "chat:message_received", 4, timeout=15)
    assert [f["data"]["content"] for f in frames] == ["one", "two", "three (bob's own)", "four"]
    await http.aclose()


async def test_resuming_from_the_middle_of_the_offline_buffer_gets_the_rest(
    http: httpx.AsyncClient, mesh: Mesh, make_token
) -> None:
    """bob gets three messages from his offline buffer, acknowledges the first and drops: resuming with
    its token replays what is left of the buffer (it used to resume past it, at the inbox position
    the buffer was read at)."""
    alice, bob = new_user_id("alice"), new_user_id("bob")
    await register(http, make_token(bob))
    conversation_id = await direct_conversation(http, make_token(alice), bob)
    for n in range(3):
        await send(http, make_token(alice), conversation_id, f"m{n}")
    first = await Socket.open(mesh.edge_url, make_token(bob))
    frames = await collect(first, "chat:message_received", 3)
    assert [f["data"]["content"] for f in frames] == ["m0", "m1", "m2"]
    await first.request("chat:message_delivered", {"message_id": frames[0]["data"]["message_id"]})
    await first.close()

    resumed = await Socket.open(mesh.edge_url, make_token(bob), resume_token=frames[0]["resume_token"])
    rest = await collect(resumed, "chat:message_received", 2)
    assert [f["data"]["content"] for f in rest] == ["m1", "m2"]


async def test_a_live_socket_learns_that_redis_lost_its_data(
    isolated_env, tmp_path: Path, running, make_token, redis_server: str
) -> None:
    """Redis empties under a live socket: the socket gets `resync_required` and the offline buffer from
    PostgreSQL, without reconnecting. It used to read the new inbox under its old epoch, silently past
    whatever was lost with the data."""
    mesh = private_mesh(isolated_env(), tmp_path / "logs")
    running.append(mesh)
    mesh.start()
    http, alice_token, bob_token, conversation_id = await chat(mesh.edge_url, make_token)
    bob = await Socket.open(mesh.edge_url, bob_token)
    await send(http, alice_token, conversation_id, "one")
    one = await bob.next_of("chat:message_received")
    await bob.request("chat:message_delivered", {"message_id": one["data"]["message_id"]})

    client = aioredis.Redis.from_url(redis_server)
    async for key in client.scan_iter(match=f"{mesh.env['CHAT_REDIS_PREFIX']}:*"):
        await client.delete(key)
    await client.aclose()
    await send(http, alice_token, conversation_id, "two")

    frame = await bob.next_of("resync_required", timeout=15)
    assert frame["data"]["reason"] == "epoch_changed"
    after = await bob.next_of("chat:message_received", timeout=15)
    assert after["data"]["content"] == "two"
    assert after["resume_token"].split(":")[0] != one["resume_token"].split(":")[0]  # under the new epoch
    await http.aclose()
