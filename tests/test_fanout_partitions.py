"""Partitioned fan-out, on private meshes of real processes: events spread over K partition streams
by conversation, message replicas share the partitions (and the work) fairly, a stopped replica's
partitions move to another with nothing lost, and what an upgrade left in the pre-partitioning
stream is still delivered."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from chatmesh.gen.chat.v1 import common_pb2
from chatmesh.redis_conn import Keys
from chatmesh_tools.embedded import free_port
from chatmesh_tools.launcher import Mesh
from tests.helpers import Socket, collect, direct_conversation, new_user_id, register, send
from tests.test_delivery_faults import REPLICATED, running  # noqa: F401 - the fixture

K = 8
CONVERSATIONS = 12
PER_CONVERSATION = 5


def replicated_mesh(env: dict[str, str], log_dir: Path) -> Mesh:
    """Two message replicas, each with a metrics port (`service_metrics_ports`: a base and the next three)."""
    return Mesh(env=env, ports={name: free_port() for name in REPLICATED}, log_dir=log_dir, metrics_base=_free_run(4))


def _free_run(count: int) -> int:
    """The first of `count` consecutive ports free now."""
    while True:
        base = free_port()
        try:
            for port in range(base, base + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue


def consumer_of(mesh: Mesh, name: str) -> bytes:
    return f"{socket.gethostname()}-{mesh.processes[name].pid}".encode()


async def lease_holders(client: aioredis.Redis, keys: Keys) -> list[bytes | None]:
    return [await client.get(keys.fanout_lease(p)) for p in range(keys.partitions)]


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float = 20) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.1)


def fanned_out(mesh: Mesh, name: str) -> float:
    """chat_fanout_events_total of one message replica: the events it fanned out."""
    url = f"http://127.0.0.1:{mesh.service_metrics_ports[name]}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "chat_fanout_events_total"
    )


async def many_conversations(http: httpx.AsyncClient, make_token) -> tuple[str, list[tuple[str, str]]]:  # type: ignore[no-untyped-def]
    """bob, and (sender's token, conversation id) for CONVERSATIONS direct conversations with him."""
    bob = new_user_id("bob")
    await register(http, make_token(bob))
    chats = []
    for i in range(CONVERSATIONS):
        token = make_token(new_user_id(f"sender{i}"))
        chats.append((token, await direct_conversation(http, token, bob)))
    return bob, chats


async def burst(http: httpx.AsyncClient, chats: list[tuple[str, str]], round_: int) -> None:
    """PER_CONVERSATION messages in every conversation, the conversations concurrently; a send caught
    in a replica that is stopping fails (503) and is retried with its client id."""

    async def one(token: str, conversation_id: str) -> None:
        for i in range(PER_CONVERSATION):
            for _ in range(40):
                reply = await http.post(
                    "/api/messages",
                    headers={"Authorization": f"Bearer {token}"},
                    json={
                        "conversation_id": conversation_id,
                        "content": f"r{round_}m{i}",
                        "client_message_id": f"{conversation_id}-{round_}-{i}",
                    },
                )
                if reply.status_code == 200:
                    break
                assert reply.status_code >= 500, reply.text
                await asyncio.sleep(0.05)

    await asyncio.gather(*(one(token, cid) for token, cid in chats))


def in_seq_order(frames: list[dict], conversations: list[str]) -> dict[str, list[int]]:
    """Each conversation's seqs as the socket received them."""
    seqs: dict[str, list[int]] = {cid: [] for cid in conversations}
    for frame in frames:
        seqs[frame["data"]["conversation_id"]].append(int(frame["data"]["seq"]))
    return seqs


async def test_conversations_spread_over_partitions_in_order_and_both_replicas_share_the_work(
    isolated_env, tmp_path: Path, running: list[Mesh], make_token, redis_server: str
) -> None:
    env = isolated_env(CHAT_RATE_REST="0", CHAT_RATE_MESSAGES="0")
    mesh = replicated_mesh(env, tmp_path / "logs")
    running.append(mesh)
    mesh.start()
    keys = Keys(env["CHAT_REDIS_PREFIX"], K)
    client = aioredis.Redis.from_url(redis_server)
    http = httpx.AsyncClient(base_url=mesh.edge_url, timeout=20)
    try:
        replicas = {consumer_of(mesh, "message"), consumer_of(mesh, "message-2")}

        async def shared_fairly() -> bool:
            holders = await lease_holders(client, keys)
            return {h: holders.count(h) for h in holders} == dict.fromkeys(replicas, K // 2)

        await eventually(shared_fairly)  # within a few lease periods of the second replica's start

        bob, chats = await many_conversations(http, make_token)
        socket_ = await Socket.open(mesh.edge_url, make_token(bob))
        await burst(http, chats, 0)
        total = CONVERSATIONS * PER_CONVERSATION
        frames = await collect(socket_, "chat:message_received", total, timeout=30)
        conversations = [cid for _, cid in chats]
        seqs = in_seq_order(frames, conversations)
        assert seqs == {cid: list(range(1, PER_CONVERSATION + 1)) for cid in conversations}

        used = {keys.partition_of(cid) for cid in conversations}
        assert len(used) >= 3  # 12 conversations over 8 partitions
        assert all([await client.xlen(keys.event_partition(p)) for p in used])
        # Each replica fanned out a share (its partitions' events), and together all of them; the
        # conversations' creation events count too.
        work = {name: fanned_out(mesh, name) for name in ("message", "message-2")}
        assert all(done > 0 for done in work.values()), work
        assert sum(work.values()) >= total
    finally:
        await http.aclose()
        await client.aclose()


async def test_a_stopped_replica_hands_its_partitions_over_and_nothing_is_lost(
    isolated_env, tmp_path: Path, running: list[Mesh], make_token, redis_server: str
) -> None:
    """message-2 is killed in the middle of a burst over twelve conversations: within the lease's TTL
    the other replica holds every partition, finishes what the dead one had read, and bob gets every
    message of every conversation, in seq order."""
    env = isolated_env(CHAT_RATE_REST="0", CHAT_RATE_MESSAGES="0")
    mesh = replicated_mesh(env, tmp_path / "logs")
    running.append(mesh)
    mesh.start()
    keys = Keys(env["CHAT_REDIS_PREFIX"], K)
    client = aioredis.Redis.from_url(redis_server)
    http = httpx.AsyncClient(base_url=mesh.edge_url, timeout=20)
    try:
        survivor, dead = consumer_of(mesh, "message"), consumer_of(mesh, "message-2")

        async def both_hold() -> bool:
            return set(await lease_holders(client, keys)) == {survivor, dead}

        await eventually(both_hold)
        bob, chats = await many_conversations(http, make_token)
        socket_ = await Socket.open(mesh.edge_url, make_token(bob))
        sending = asyncio.create_task(burst(http, chats, 0))
        await asyncio.sleep(0.2)
        mesh.stop("message-2", sig=signal.SIGKILL)  # dies with whatever it had read but not acknowledged
        await sending
        killed_at = time.monotonic()

        async def survivor_holds_all() -> bool:
            return await lease_holders(client, keys) == [survivor] * K

        await eventually(survivor_holds_all)
        assert time.monotonic() - killed_at < 5  # the TTL (1 s at this time scale) and a tick or two
        await burst(http, chats, 1)

        total = 2 * CONVERSATIONS * PER_CONVERSATION
        frames = await collect(socket_, "chat:message_received", total, timeout=30)
        conversations = [cid for _, cid in chats]
        seqs = in_seq_order(frames, conversations)
        assert seqs == {cid: list(range(1, 2 * PER_CONVERSATION + 1)) for cid in conversations}
        for p in range(K):  # nothing left pending anywhere
            stream = keys.event_partition(p)
            if await client.exists(stream):
                assert (await client.xpending(stream, "fanout"))["pending"] == 0
    finally:
        await http.aclose()
        await client.aclose()


async def test_events_left_in_the_pre_partitioning_stream_are_still_delivered(
    isolated_env, tmp_path: Path, running: list[Mesh], make_token, redis_server: str
) -> None:
    """An upgrade: the old single stream `<prefix>:events` still holds an event (with the old fan-out's
    group, never read). The replica holding partition 0 drains it under the old lease key."""
    env = isolated_env()
    prefix = env["CHAT_REDIS_PREFIX"]
    names = ("conversation", "message", "presence", "edge")
    mesh = Mesh(env=env, ports={name: free_port() for name in names}, log_dir=tmp_path / "logs")
    running.append(mesh)
    client = aioredis.Redis.from_url(redis_server)
    http = httpx.AsyncClient(base_url=mesh.edge_url, timeout=20)
    try:
        mesh.start()
        alice, bob = new_user_id("alice"), new_user_id("bob")
        await register(http, make_token(bob))
        conversation_id = await direct_conversation(http, make_token(alice), bob)
        first = await send(http, make_token(alice), conversation_id, "partitioned")
        socket_ = await Socket.open(mesh.edge_url, make_token(bob))
        assert (await socket_.next_of("chat:message_received"))["data"]["message_id"] == first["message_id"]

        legacy = Keys(prefix).legacy_events
        left = common_pb2.Event(
            event_id="received:left-over", type="chat:message_received", conversation_id=conversation_id
        )
        left.message.message_id, left.message.conversation_id = "left-over", conversation_id
        left.message.sender_id, left.message.content, left.message.seq = alice, "left in the old stream", 2
        await client.xgroup_create(legacy, "fanout", id="$", mkstream=True)  # the old release's group
        await client.xadd(legacy, {b"e": left.SerializeToString()})

        async with asyncio.timeout(15):  # (the first message is pushed again meanwhile: not acknowledged)
            while (await socket_.next_of("chat:message_received"))["data"]["content"] != "left in the old stream":
                pass
        assert await client.get(f"{prefix}:fanout:leader") == consumer_of(mesh, "message")
        await eventually(lambda: _drained(client, legacy))
    finally:
        await http.aclose()
        await client.aclose()


async def _drained(client: aioredis.Redis, stream: str) -> bool:
    groups = {g["name"]: g for g in await client.xinfo_groups(stream)}
    return groups[b"fanout"]["pending"] == 0 and groups[b"fanout"]["last-delivered-id"] != b"0-0"
