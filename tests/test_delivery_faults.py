"""Delivery under faults, on private meshes of real processes: replicas, killed workers and edges,
Redis down or emptied, slow readers."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import redis.asyncio as aioredis
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode

from chatmesh_tools.embedded import EmbeddedRedis, free_port
from chatmesh_tools.launcher import SERVICES, Mesh
from tests.conftest import dump_logs
from tests.helpers import Socket, collect, direct_conversation, new_user_id, quiet, raw_socket, register, send


def private_mesh(env: dict[str, str], log_dir: Path, names: tuple[str, ...] = SERVICES) -> Mesh:
    """A mesh of its own (see isolated_env) that a test may kill parts of."""
    return Mesh(env=env, ports={name: free_port() for name in names}, log_dir=log_dir)


@pytest.fixture
def running(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[Mesh]]:
    """Meshes a test starts; stopped (and their logs shown on failure) at the end."""
    meshes: list[Mesh] = []
    failed_before = request.session.testsfailed
    yield meshes
    for mesh in meshes:
        mesh.stop(sig=signal.SIGKILL, timeout_s=5)
        if request.session.testsfailed > failed_before:
            dump_logs(mesh.log_dir)


async def chat(edge_url: str, make_token) -> tuple[httpx.AsyncClient, str, str, str]:  # type: ignore[no-untyped-def]
    """(client, alice token, bob token, conversation id) on a mesh."""
    client = httpx.AsyncClient(base_url=edge_url, timeout=20)
    alice, bob = new_user_id("alice"), new_user_id("bob")
    await register(client, make_token(bob))
    conversation_id = await direct_conversation(client, make_token(alice), bob)
    return client, make_token(alice), make_token(bob), conversation_id


class StalledClient:
    """A WebSocket client that authenticates and then reads nothing, with a tiny kernel buffer: the
    sans-I/O protocol of the websockets package over a raw socket, so nothing reads on its behalf."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, protocol: ClientProtocol) -> None:
        self._reader = reader
        self._writer = writer  # held: a collected StreamWriter closes its socket
        self._protocol = protocol

    @classmethod
    async def open(cls, port: int, token: str) -> StalledClient:
        reader, writer, protocol = await raw_socket(port, token)
        return cls(reader, writer, protocol)

    async def read_until_close(self, timeout: float = 60) -> int | None:
        """Read everything the server sent; the close code, once its close frame arrives."""
        async with asyncio.timeout(timeout):
            while data := await self._reader.read(1 << 16):
                self._protocol.receive_data(data)
                for frame in self._protocol.events_received():
                    if isinstance(frame, Frame) and frame.opcode is Opcode.CLOSE:
                        self._writer.close()
                        return Close.parse(frame.data).code
        self._writer.close()
        return None


def contents(frames: list[dict]) -> list[str]:
    return [f["data"]["content"] for f in frames]


REPLICATED = ("conversation", "message", "message-2", "presence", "edge", "edge-2")


async def test_two_edges_and_two_message_services_deliver_each_event_once(
    isolated_env, tmp_path, running, make_token
) -> None:
    mesh = private_mesh(isolated_env(), tmp_path / "logs", REPLICATED)
    running.append(mesh)
    mesh.start()
    http, alice_token, bob_token, conversation_id = await chat(mesh.url_of("edge"), make_token)
    bob_on_1 = await Socket.open(mesh.url_of("edge"), bob_token)
    bob_on_2 = await Socket.open(mesh.url_of("edge-2"), bob_token)
    http2 = httpx.AsyncClient(base_url=mesh.url_of("edge-2"), timeout=20)
    for i in range(20):
        await send(http if i % 2 else http2, alice_token, conversation_id, f"m{i}")
    expected = [f"m{i}" for i in range(20)]
    for sock in (bob_on_1, bob_on_2):
        frames = await collect(sock, "chat:message_received", 20)
        assert contents(frames) == expected
        seen = {f["event_id"] for f in frames}
        later = await quiet(sock, "chat:message_received", 0.3)
        assert [f for f in later if f["event_id"] not in seen] == []  # only redeliveries of the same events

    # Resume on the other replica: exactly what was missed, nothing again.
    token = frames[9]["resume_token"]
    resumed = await Socket.open(mesh.url_of("edge"), bob_token, resume_token=token)
    assert contents(await collect(resumed, "chat:message_received", 10)) == expected[10:]
    await http.aclose()
    await http2.aclose()


async def test_killed_fanout_worker_loses_nothing(isolated_env, tmp_path, running, make_token) -> None:
    mesh = private_mesh(isolated_env(), tmp_path / "logs", REPLICATED)
    running.append(mesh)
    mesh.start()
    http, alice_token, bob_token, conversation_id = await chat(mesh.edge_url, make_token)
    bob = await Socket.open(mesh.edge_url, bob_token)

    async def burst(start: int) -> None:
        """A client's sends: a call caught in the killed replica fails (503) and is retried with its id."""
        for i in range(start, start + 30):
            for _ in range(20):
                reply = await http.post(
                    "/api/messages",
                    headers={"Authorization": f"Bearer {alice_token}"},
                    json={"conversation_id": conversation_id, "content": f"m{i}", "client_message_id": f"cm-{i}"},
                )
                if reply.status_code == 200:
                    break
                assert reply.status_code >= 500, reply.text
                await asyncio.sleep(0.05)

    sending = asyncio.create_task(burst(0))
    await asyncio.sleep(0.2)
    mesh.stop("message-2", sig=signal.SIGKILL)  # dies with whatever it had read but not acknowledged
    await sending
    await burst(30)
    frames = await collect(bob, "chat:message_received", 60, timeout=30)
    by_content = {f["data"]["content"]: f for f in frames}
    assert sorted(by_content, key=lambda c: int(c[1:])) == [f"m{i}" for i in range(60)]
    seqs = [int(f["data"]["seq"]) for f in frames]
    assert sorted(set(seqs)) == list(range(1, 61))
    await http.aclose()


async def test_sends_succeed_while_redis_is_down_and_arrive_when_it_returns(
    isolated_env, tmp_path, running, make_token
) -> None:
    redis_server = EmbeddedRedis(tmp_path / "redis", free_port())
    url = redis_server.start()
    mesh = private_mesh(isolated_env(CHAT_REDIS_URL=url), tmp_path / "logs")
    running.append(mesh)
    try:
        mesh.start()
        http, alice_token, bob_token, conversation_id = await chat(mesh.edge_url, make_token)
        bob = await Socket.open(mesh.edge_url, bob_token)
        await send(http, alice_token, conversation_id, "before")
        before = await bob.next_of("chat:message_received")
        assert before["data"]["content"] == "before"
        await bob.request("chat:message_delivered", {"message_id": before["data"]["message_id"]})

        redis_server.stop()
        sent = [await send(http, alice_token, conversation_id, f"during{i}") for i in range(5)]
        assert [m["seq"] for m in sent] == ["2", "3", "4", "5", "6"]  # accepted and stored
        redis_server.start()

        frames = await collect(bob, "chat:message_received", 5, timeout=30)
        assert contents(frames) == [f"during{i}" for i in range(5)]
        await http.aclose()
    finally:
        redis_server.stop()


async def test_redis_emptied_means_resync_not_a_silent_gap(
    isolated_env, tmp_path, running, make_token, redis_server: str
) -> None:
    mesh = private_mesh(isolated_env(), tmp_path / "logs")
    running.append(mesh)
    mesh.start()
    http, alice_token, bob_token, conversation_id = await chat(mesh.edge_url, make_token)
    bob = await Socket.open(mesh.edge_url, bob_token)
    await send(http, alice_token, conversation_id, "one")
    token = (await bob.next_of("chat:message_received"))["resume_token"]
    await bob.close()

    client = aioredis.Redis.from_url(redis_server)
    prefix = mesh.env["CHAT_REDIS_PREFIX"]
    async for key in client.scan_iter(match=f"{prefix}:*"):  # everything the mesh had in Redis is gone
        await client.delete(key)
    await client.aclose()

    await send(http, alice_token, conversation_id, "two")
    resumed = await Socket.open(mesh.edge_url, bob_token, resume_token=token)
    frame = await resumed.next_of("resync_required")
    assert frame["data"]["reason"] == "epoch_changed"
    history = await http.get(f"/api/messages/{conversation_id}", headers={"Authorization": f"Bearer {bob_token}"})
    assert [m["content"] for m in history.json()["messages"]] == ["one", "two"]  # the slower path loses nothing
    await http.aclose()


async def test_resend_after_edge_died_between_commit_and_ack_is_stored_once(
    isolated_env, tmp_path, running, make_token
) -> None:
    mesh = private_mesh(isolated_env(), tmp_path / "logs")
    running.append(mesh)
    mesh.start()
    http, alice_token, bob_token, conversation_id = await chat(mesh.edge_url, make_token)
    bob_http = httpx.AsyncClient(base_url=mesh.edge_url, timeout=20)
    alice = await Socket.open(mesh.edge_url, alice_token)
    await alice.ws.send(
        json.dumps(
            {
                "type": "chat:message_send",
                "id": "1",
                "data": {"conversation_id": conversation_id, "content": "once", "client_message_id": "cm-1"},
            }
        )
    )
    await asyncio.sleep(0.05)
    mesh.stop("edge", sig=signal.SIGKILL)  # the ack may or may not have been written
    mesh.start("edge")

    alice = await Socket.open(mesh.edge_url, alice_token)
    ack = await alice.request(
        "chat:message_send", {"conversation_id": conversation_id, "content": "once", "client_message_id": "cm-1"}
    )
    assert ack["type"] == "ack"
    bob = await Socket.open(mesh.edge_url, bob_token)
    frames = await collect(bob, "chat:message_received", 1)
    assert contents(frames) == ["once"]
    assert [f for f in await quiet(bob, "chat:message_received", 0.3) if f["event_id"] != frames[0]["event_id"]] == []
    with psycopg.connect(mesh.env["CHAT_DATABASE_URL"]) as conn:
        count = conn.execute(
            "SELECT count(*) FROM message.messages WHERE client_message_id = 'cm-1' AND conversation_id = %s",
            (conversation_id,),
        ).fetchone()
    assert count == (1,)
    await http.aclose()
    await bob_http.aclose()


async def test_slow_reader_is_disconnected_while_others_keep_up(isolated_env, tmp_path, running, make_token) -> None:
    mesh = private_mesh(isolated_env(CHAT_WS_SEND_TIMEOUT="2"), tmp_path / "logs")
    running.append(mesh)
    mesh.start()
    http, alice_token, bob_token, conversation_id = await chat(mesh.edge_url, make_token)
    carol = new_user_id("carol")
    await register(http, make_token(carol))
    carol_conversation = await direct_conversation(http, alice_token, carol)

    slow = await StalledClient.open(mesh.ports["edge"], bob_token)
    fast = await Socket.open(mesh.edge_url, make_token(carol))

    # ~15 KB frames (3,900 four-byte characters): enough to fill the kernel's buffers (up to 4 MB) and more.
    big = "\U0001f600" * 3900
    total = 400
    for start in range(0, total, 10):
        await asyncio.gather(
            *(send(http, alice_token, conversation_id, f"{i} {big}") for i in range(start, start + 10))
        )
    await send(http, alice_token, carol_conversation, "for carol")
    frame = await fast.next_of("chat:message_received", timeout=5)  # carol is served meanwhile
    assert frame["data"]["content"] == "for carol"

    assert await slow.read_until_close() == 4008
    await fast.close()
    # bob resumes and loses nothing: the offline buffer holds them all.
    again = await Socket.open(mesh.edge_url, bob_token)
    frames = await collect(again, "chat:message_received", total, timeout=60)
    assert [int(f["data"]["seq"]) for f in frames] == list(range(1, total + 1))
    await http.aclose()
