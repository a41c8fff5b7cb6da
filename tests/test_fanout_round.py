"""One fan-out round over several partitions is one script call: one live batch for the round,
each partition's entries acknowledged in their own stream, and a hold for order in one partition
holds that partition's entry alone, even when another stream has an entry of the same id (entry ids
are unique per stream only). Fan-out runs in-process against a real Redis; membership is stood in
for, as in test_live_path.py."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator

import msgpack
import pytest
import redis.asyncio as aioredis

from chatmesh.membership import Membership
from chatmesh.redis_conn import Keys, open_redis
from services.message.delivery import fanout
from services.message.delivery.fanout import GROUP, Fanout, fan_out_together
from services.message.delivery.inbox import live_channel
from tests.test_live_path import received

READER = "round-bob"


class _Roles:
    async def get(self, conversation_id: str) -> Membership:
        return Membership(conversation_id, True, {READER: "member", "round-alice": "member"}, 1)


def _message(conversation_id: str, seq: int) -> bytes:
    return received(conversation_id, seq).SerializeToString()


def _in_partition(keys: Keys, partition: int) -> str:
    """A conversation id whose events go to `partition`."""
    while keys.events_of(cid := str(uuid.uuid4())) != keys.event_partition(partition):
        pass
    return cid


@pytest.fixture
async def redis_client(redis_server: str) -> AsyncIterator[tuple[aioredis.Redis, Keys]]:
    client = open_redis(redis_server)
    keys = Keys(f"test-round-{secrets.token_hex(6)}", 2)
    for partition in range(2):
        await client.xgroup_create(keys.event_partition(partition), GROUP, id="0", mkstream=True)
    yield client, keys
    for key in [key async for key in client.scan_iter(match=f"{keys.prefix}:*")]:
        await client.delete(key)
    await client.aclose()


async def test_a_round_over_two_partitions_is_one_call_and_holds_only_what_waits(
    redis_client: tuple[aioredis.Redis, Keys], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, keys = redis_client
    first, second = keys.event_partition(0), keys.event_partition(1)
    a, b = _in_partition(keys, 0), _in_partition(keys, 1)
    lanes = [Fanout(client, keys, _Roles(), "test", stream=s) for s in (first, second)]  # type: ignore[arg-type]
    live = client.pubsub(ignore_subscribe_messages=True)
    await live.subscribe(live_channel(keys))

    async def round_(*entries: tuple[str, str, bytes]) -> None:
        """XADD each (stream, entry id, payload), then fan out what one read brings, as the worker does."""
        for stream, entry_id, payload in entries:
            await client.xadd(stream, {b"e": payload}, id=entry_id)
        reply = dict(await client.xreadgroup(GROUP, "test", {first: ">", second: ">"}, count=10) or [])
        await fan_out_together([lane.prepare(reply.get(lane.stream.encode(), [])) for lane in lanes])

    async def batches() -> list[list[int]]:
        """The seqs of each live batch published since the last call: everything before a marker the
        test publishes now (a channel's messages arrive in the order they were published)."""
        await client.publish(live_channel(keys), b"end")
        heard = []
        async with asyncio.timeout(10):
            while (message := await live.get_message(timeout=1)) is None or message["data"] != b"end":
                if message is not None:
                    heard.append([event[2] for event in msgpack.unpackb(message["data"])[1]])
        return heard

    await round_((second, "1-1", _message(b, 1)))
    assert await batches() == [[1]]
    # b's seq 2 is missing: its seq 3 is held; a's seq 1, with the same entry id in the other stream, is not
    await round_((first, "2-1", _message(a, 1)), (second, "2-1", _message(b, 3)))
    assert await batches() == [[1]]
    assert [p["message_id"] for p in await client.xpending_range(first, GROUP, "-", "+", 10)] == []
    assert [p["message_id"] for p in await client.xpending_range(second, GROUP, "-", "+", 10)] == [b"2-1"]
    assert lanes[1].holding and not lanes[0].holding

    await round_((second, "3-1", _message(b, 2)))  # the missing seq: both go, in order, in one batch
    assert await batches() == [[2, 3]]
    assert [p for s in (first, second) for p in await client.xpending_range(s, GROUP, "-", "+", 10)] == []
    await round_((first, "4-1", _message(a, 2)), (second, "4-1", _message(b, 4)))
    assert await batches() == [[2, 4]]  # both partitions' events in the round's one live batch
    inbox = [(fields[b"c"].decode(), int(fields[b"s"])) for _, fields in await client.xrange(keys.inbox(READER))]
    assert inbox == [(b, 1), (a, 1), (b, 2), (b, 3), (a, 2), (b, 4)]

    # A round over the append budget (a catch-up into large groups) is split between partitions:
    # Redis is never held longer than by one partition's batch. Each event here makes two appends.
    monkeypatch.setattr(fanout, "MAX_APPENDS_PER_CALL", 3)
    await round_((first, "5-1", _message(a, 3)), (first, "5-2", _message(a, 4)), (second, "5-1", _message(b, 5)))
    assert await batches() == [[3, 4], [5]]
    assert [p for s in (first, second) for p in await client.xpending_range(s, GROUP, "-", "+", 10)] == []
    await live.aclose()
