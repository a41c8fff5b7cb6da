"""The live path: fan-out publishes each batch with, per recipient, the inbox entry it follows, and a
hub hands an entry straight to a live subscription that sent exactly the one before it, without
reading the inbox. Anything else (a batch lost or late, another epoch) is repaired from the inbox,
with nothing lost or repeated even when both paths race; and an event reaching several subscriptions
of one gRPC stream crosses it once.

Most tests run fan-out and the hub in-process against a real Redis (membership and the offline
buffer are stood in for, as in test_tracing_hops.py), so they can lose a batch on purpose and read
the hub's counters; the last ones use the mesh and the edge's router."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from chatmesh.auth import ServiceCredentials
from chatmesh.gen.chat.v1 import common_pb2, message_pb2, message_pb2_grpc
from chatmesh.membership import Membership
from chatmesh.redis_conn import Keys, open_pubsub_redis, open_redis
from chatmesh_tools.launcher import Mesh
from services.edge.frames import RenderedEvent
from services.edge.upstream import EventRouter
from services.message.delivery.fanout import GROUP, Fanout
from services.message.delivery.hub import Hub
from services.message.delivery.inbox import Inboxes, Token, live_channel
from services.message.delivery.subscription import Item, Outbox, Subscription
from tests.helpers import direct_conversation, new_user_id, register, send

ALICE, BOB, CAROL = "live-alice", "live-bob", "live-carol"
CONVERSATION = str(uuid.uuid4())
REPAIRS = ("gap", "wake", "more", "reconnect", "retry")  # every read but a subscription's own start


class _Roles:
    async def get(self, conversation_id: str) -> Membership:
        return Membership(conversation_id, True, {ALICE: "member", BOB: "member", CAROL: "member"}, 1)


def reads(reason: str) -> float:
    return REGISTRY.get_sample_value("chat_hub_inbox_reads_total", {"reason": reason}) or 0.0


def live_entries() -> float:
    return REGISTRY.get_sample_value("chat_hub_live_entries_total") or 0.0


def received(conversation_id: str, seq: int) -> common_pb2.Event:
    message_id = str(uuid.uuid4())
    return common_pb2.Event(
        event_id=f"received:{message_id}",
        type="chat:message_received",
        conversation_id=conversation_id,
        message=common_pb2.Message(message_id=message_id, conversation_id=conversation_id, content=f"m{seq}", seq=seq),
    )


@dataclass
class _Live:
    redis: aioredis.Redis
    pubsub: aioredis.Redis
    keys: Keys
    fanout: Fanout
    hub: Hub
    epoch: str
    committed: list[common_pb2.Event] = field(default_factory=list)  # what PostgreSQL would hold
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    async def send(self, seq: int) -> common_pb2.Event:
        """A message as the relay publishes it, fanned out as one batch."""
        event = received(CONVERSATION, seq)
        self.committed.append(event)
        await self.redis.xadd(self.keys.event_partition(0), {b"e": event.SerializeToString()})
        reply = await self.redis.xreadgroup(GROUP, "test", {self.keys.event_partition(0): ">"}, count=10)
        await self.fanout.process([entry for _, batch in reply for entry in batch])
        return event

    async def subscribe(self, subscription_id: str, user_id: str, out: Outbox) -> Subscription:
        """A subscription resuming from the start of an empty inbox: live once this returns."""
        sub = Subscription(subscription_id, user_id, out)
        await self.hub.subscribe(sub, Token(self.epoch, "0").encode())
        return sub

    async def inbox_ids(self, user_id: str) -> list[str]:
        return [entry_id.decode() for entry_id, _ in await self.redis.xrange(self.keys.inbox(user_id))]


@pytest.fixture
async def live(redis_server: str) -> AsyncIterator[_Live]:
    client, pubsub = open_redis(redis_server), open_pubsub_redis(redis_server)
    keys = Keys(f"test-live-{secrets.token_hex(6)}", 1)
    await client.xgroup_create(keys.event_partition(0), GROUP, id="0", mkstream=True)
    env: _Live

    async def offline(user_id: str) -> list[common_pb2.Event]:
        return list(env.committed)

    hub = Hub(client, pubsub, keys, offline)
    env = _Live(
        client,
        pubsub,
        keys,
        Fanout(client, keys, _Roles(), "test", stream=keys.event_partition(0)),
        hub,
        await Inboxes(client, keys).epoch(),
    )  # type: ignore[arg-type]
    yield env
    for task in env.tasks:
        task.cancel()
    await hub.stop()
    for key in [key async for key in client.scan_iter(match=f"{keys.prefix}:*")]:
        await client.delete(key)
    await client.aclose()
    await pubsub.aclose()


async def listening(env: _Live) -> None:
    """Start the hub and wait until its pub/sub connection hears the live channel."""
    await env.hub.start()
    async with asyncio.timeout(10):
        while not (await env.redis.pubsub_numsub(live_channel(env.keys)))[0][1]:
            await asyncio.sleep(0.01)


async def take(out: Outbox, count: int) -> list[Item]:
    items = []
    async with asyncio.timeout(10):
        while len(items) < count:
            item = await out.get()
            assert item is not None
            items.append(item)
    return items


def seqs(items: list[Item]) -> list[int]:
    return [
        (common_pb2.Event.FromString(event) if isinstance(event, bytes) else event).message.seq for event, _ in items
    ]


async def test_a_live_subscription_gets_each_event_with_its_token_without_an_inbox_read(live: _Live) -> None:
    """Bob's two sockets and Carol's on one edge stream, Alice's on another: each message goes to each
    stream once, for all its subscriptions there, each with the token of its own inbox's entry; and
    no inbox is read for it."""
    await listening(live)
    edge1: Outbox = asyncio.Queue()
    edge2: Outbox = asyncio.Queue()
    for sid, user in (("bob-1", BOB), ("bob-2", BOB), ("carol", CAROL)):
        await live.subscribe(sid, user, edge1)
    await live.subscribe("alice", ALICE, edge2)
    await live.send(1)  # the first entry of an inbox follows none a batch could name: read from the inbox
    first = await take(edge1, 3)
    assert sorted(sid for _, to in first for sid, _ in to) == ["bob-1", "bob-2", "carol"]
    await take(edge2, 1)
    before = {reason: reads(reason) for reason in REPAIRS}
    handed = live_entries()

    for seq in range(2, 7):
        await live.send(seq)
    one_stream = await take(edge1, 5)
    other = await take(edge2, 5)

    assert seqs(one_stream) == seqs(other) == [2, 3, 4, 5, 6]
    bob_ids, carol_ids, alice_ids = [await live.inbox_ids(u) for u in (BOB, CAROL, ALICE)]
    assert [sorted(to) for _, to in one_stream] == [
        [
            ("bob-1", Token(live.epoch, bob_ids[i]).encode()),
            ("bob-2", Token(live.epoch, bob_ids[i]).encode()),
            ("carol", Token(live.epoch, carol_ids[i]).encode()),
        ]
        for i in range(1, 6)
    ]
    assert [to for _, to in other] == [[("alice", Token(live.epoch, alice_ids[i]).encode())] for i in range(1, 6)]
    assert {reason: reads(reason) for reason in REPAIRS} == before
    assert live_entries() - handed == 20
    assert edge1.empty() and edge2.empty()


class _Batches:
    """The live batches fan-out publishes, heard on a pub/sub connection of the test's own: the hub
    under test (its pump running, its pub/sub reader not) is handed them one by one, or not at all."""

    def __init__(self, env: _Live) -> None:
        self._env = env
        self._capture = env.pubsub.pubsub(ignore_subscribe_messages=True)

    async def start(self) -> None:
        await self._capture.subscribe(live_channel(self._env.keys))
        async with asyncio.timeout(10):
            while not (await self._env.redis.pubsub_numsub(live_channel(self._env.keys)))[0][1]:
                await asyncio.sleep(0.01)

    async def send(self, seq: int) -> bytes:
        """Send a message; the batch fan-out published for it."""
        await self._env.send(seq)
        async with asyncio.timeout(10):
            while (message := await self._capture.get_message(timeout=10)) is None:
                pass
        data: bytes = message["data"]
        return data

    async def close(self) -> None:
        await self._capture.aclose()


async def pumped(env: _Live, user_id: str, out: Outbox) -> tuple[Subscription, _Batches]:
    """The hub's pump alone, and a live subscription whose first read (of an empty inbox) is done."""
    env.tasks.append(asyncio.create_task(env.hub._pump()))
    heard = _Batches(env)
    await heard.start()
    went_live = reads("live")
    sub = await env.subscribe(user_id, user_id, out)
    await settled(went_live, "live")
    return sub, heard


async def settled(count_before: float, reason: str = "gap") -> None:
    """Until the pump has done one more read for `reason` (its results are handed on in the same step)."""
    async with asyncio.timeout(10):
        while reads(reason) <= count_before:
            await asyncio.sleep(0.005)


async def test_a_lost_batch_is_repaired_from_the_inbox_with_nothing_lost_or_repeated(live: _Live) -> None:
    out: Outbox = asyncio.Queue()
    sub, heard = await pumped(live, BOB, out)
    send = heard.send
    gaps = reads("gap")
    live.hub._on_batch(await send(1))  # follows no entry the batch can name: repaired
    await settled(gaps)
    assert seqs(await take(out, 1)) == [1]
    gaps = reads("gap")
    live.hub._on_batch(await send(2))  # follows what bob sent: handed on at once, nothing read
    assert seqs([out.get_nowait()]) == [2]
    lost = await send(3)  # never reaches the hub
    live.hub._on_batch(await send(4))  # follows 3, which bob never got: a gap, read from the inbox
    assert out.empty()
    await settled(gaps)
    live.hub._on_batch(await send(5))
    live.hub._on_batch(lost)  # the lost batch, late after all: already sent
    gaps = reads("gap")
    await settled(gaps)

    items = await take(out, 3)
    assert seqs(items) == [3, 4, 5]
    ids = await live.inbox_ids(BOB)
    assert [to for _, to in items] == [[(BOB, Token(live.epoch, ids[i]).encode())] for i in (2, 3, 4)]
    assert out.empty() and sub.last_id == ids[-1]
    await heard.close()


@pytest.mark.parametrize("yields", [0, 1, 2, 3, 5, 8])
async def test_a_repair_read_racing_live_batches_sends_each_entry_once(live: _Live, yields: int) -> None:
    """The pump reads bob's inbox while the batches of the same entries arrive, at every point of its
    read (`yields` turns of the loop after it was woken): whichever path hands an entry on first, the
    other skips it."""
    out: Outbox = asyncio.Queue()
    sub, heard = await pumped(live, BOB, out)
    gaps = reads("gap")
    live.hub._on_batch(await heard.send(1))  # the inbox's first entry: repaired
    await settled(gaps)
    await take(out, 1)

    published = [await heard.send(seq) for seq in (2, 3, 4)]
    gaps = reads("gap")
    live.hub._notify(sub, "gap")  # a read from after seq 1, racing the batches of 2, 3 and 4
    for _ in range(yields):
        await asyncio.sleep(0)
    for data in published:
        live.hub._on_batch(data)
    await settled(gaps)
    await asyncio.sleep(0.05)  # any read the batches' arrival caused after it
    items = []
    while not out.empty():
        item = out.get_nowait()
        assert item is not None
        items.append(item)
    ids = await live.inbox_ids(BOB)
    assert seqs(items) == [2, 3, 4]
    assert [to for _, to in items] == [[(BOB, Token(live.epoch, ids[i]).encode())] for i in (1, 2, 3)]
    await heard.close()


async def test_a_batch_under_a_new_epoch_gets_resync_required(live: _Live) -> None:
    """Redis lost its data (a new epoch) under a live subscription: the next batch is not handed on
    under the old epoch's tokens; the subscription gets resync_required, then the offline buffer in
    the new epoch."""
    await listening(live)
    out: Outbox = asyncio.Queue()
    await live.subscribe("bob", BOB, out)
    await live.send(1)
    assert seqs(await take(out, 1)) == [1]
    await live.redis.set(live.keys.epoch, "new-epoch")
    await live.send(2)
    control, buffered = await take(out, 2)
    assert isinstance(control[0], common_pb2.Event) and control[0].type == "resync_required"
    assert control[0].resync.reason == "epoch_changed"
    assert seqs([buffered]) == [2]  # seq 1 went out on this connection already
    [(_, token)] = buffered[1]
    assert token.startswith("new-epoch:")
    await asyncio.sleep(0.05)
    assert out.empty()


async def test_an_append_by_a_fan_out_worker_of_the_previous_version_is_not_skipped(live: _Live) -> None:
    """A rolling upgrade: a fan-out worker of the previous version appends to Bob's inbox without
    keeping its last-id key, and wakes the hubs on the old channel. The next live batch names a stale
    previous entry (the one before that append), which Bob did send: he must still get the append
    before the new entry, not the new entry past it."""
    out: Outbox = asyncio.Queue()
    _, heard = await pumped(live, BOB, out)
    gaps = reads("gap")
    live.hub._on_batch(await heard.send(1))
    await settled(gaps)
    await take(out, 1)
    other = received(str(uuid.uuid4()), 1)
    fields = {b"e": other.SerializeToString(), b"i": other.event_id, b"s": b"1", b"c": other.conversation_id}
    await live.redis.xadd(live.keys.inbox(BOB), fields)  # type: ignore[arg-type]
    batch = await heard.send(2)
    wakes = reads("wake")
    live.hub._on_wake(json.dumps([BOB]).encode())  # the old worker's wake-up, then the new batch, at once
    live.hub._on_batch(batch)
    await settled(wakes, "wake")
    items = await take(out, 2)
    parsed = [common_pb2.Event.FromString(event) for event, _ in items if isinstance(event, bytes)]
    assert [(e.conversation_id, e.message.seq) for e in parsed] == [(other.conversation_id, 1), (CONVERSATION, 2)]
    ids = await live.inbox_ids(BOB)
    assert [to for _, to in items] == [[(BOB, Token(live.epoch, ids[i]).encode())] for i in (1, 2)]
    await asyncio.sleep(0.05)
    assert out.empty()
    await heard.close()


async def test_the_edge_renders_a_delivery_once_for_each_of_its_sockets() -> None:
    """One delivery for three sockets: each sink gets the same rendering with its own token; a
    response of a message replica of the previous version (`batches`) is still delivered."""
    router = EventRouter(
        message_pb2_grpc.MessageServiceStub(grpc.aio.insecure_channel("127.0.0.1:1")),
        ServiceCredentials.__new__(ServiceCredentials),
    )
    got: dict[str, list[tuple[str, RenderedEvent]]] = {"a": [], "b": [], "c": []}
    for sid in got:
        router.subscribe(sid, "u", "", lambda event, rendered, sid=sid: got[sid].append((event.resume_token, rendered)))
    event = common_pb2.Event(
        event_id="received:m1",
        type="chat:message_received",
        conversation_id="c1",
        message=common_pb2.Message(message_id="m1", conversation_id="c1", seq=1, content="hi"),
    )
    response = message_pb2.StreamEventsResponse()
    delivery = response.deliveries.add(event=event)
    for sid in ("a", "b", "c"):
        delivery.recipients.add(subscription_id=sid, resume_token=f"e:{sid}")
    router._dispatch(response)
    assert [token for token, _ in got["a"] + got["b"] + got["c"]] == ["e:a", "e:b", "e:c"]
    assert got["a"][0][1] is got["b"][0][1] is got["c"][0][1]
    assert '"content":"hi"' in got["a"][0][1].text("e:a")

    old = message_pb2.StreamEventsResponse()
    old.batches.add(subscription_id="b", events=[common_pb2.Event(event_id="x", type="chat:typing", resume_token="")])
    event.resume_token = "e:old"
    old.batches.add(subscription_id="c", events=[event])
    router._dispatch(old)
    assert [token for token, _ in got["b"][1:]] == [""] and [token for token, _ in got["c"][1:]] == ["e:old"]


async def test_sockets_on_one_edge_get_one_delivery_with_every_recipient(
    http: httpx.AsyncClient, mesh: Mesh, make_token, service_metadata, redis_server: str, redis_prefix: str
) -> None:
    """The mesh's message service, called as the edge does: Bob's three sockets and Alice's share one
    stream, and Alice's message crosses it once, naming all four with their tokens."""
    alice, bob = new_user_id("alice"), new_user_id("bob")
    await register(http, make_token(bob))
    conversation_id = await direct_conversation(http, make_token(alice), bob)
    await send(http, make_token(alice), conversation_id, "first")
    keys = Keys(redis_prefix)
    client = aioredis.Redis.from_url(redis_server)
    try:
        async with asyncio.timeout(10):  # fanned out: a new socket's buffer starts after it in the inbox
            while not (await client.exists(keys.inbox(alice)) and await client.exists(keys.inbox(bob))):
                await asyncio.sleep(0.02)
        subscriptions = {"bob-1": bob, "bob-2": bob, "bob-3": bob, "alice-1": alice}
        done = asyncio.Event()

        async def requests() -> AsyncIterator[message_pb2.StreamEventsRequest]:
            for sid, user in subscriptions.items():
                yield message_pb2.StreamEventsRequest(
                    subscribe=message_pb2.StreamEventsRequest.Subscribe(subscription_id=sid, user_id=user)
                )
            await done.wait()

        async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.ports['message']}") as channel:
            call = message_pb2_grpc.MessageServiceStub(channel).StreamEvents(
                requests(), metadata=service_metadata("edge")
            )
            first: set[str] = set()
            deliveries: list[message_pb2.EventDelivery] = []
            async with asyncio.timeout(15):
                async for response in call:
                    for delivery in response.deliveries:
                        if delivery.event.message.content == "first":
                            first.update(r.subscription_id for r in delivery.recipients)
                            if first == set(subscriptions):  # every socket live, past "first"
                                await send(http, make_token(alice), conversation_id, "second")
                        elif delivery.event.message.content == "second":
                            deliveries.append(delivery)
                    if deliveries:
                        break
            done.set()
            call.cancel()
        assert len(deliveries) == 1
        epoch = (await client.get(keys.epoch)).decode()
        last = {user: (await client.xrevrange(keys.inbox(user), count=1))[0][0].decode() for user in (alice, bob)}
        assert sorted((r.subscription_id, r.resume_token) for r in deliveries[0].recipients) == sorted(
            (sid, Token(epoch, last[user]).encode()) for sid, user in subscriptions.items()
        )
        assert not deliveries[0].event.resume_token
    finally:
        await client.aclose()
