"""The presence scripts on a real Redis, without processes: transitions are reported exactly once
however many replicas race, only the sweeper expires, and a grace follows a sweeper outage."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from chatmesh.redis_conn import Keys, open_redis
from services.presence.store import PresenceStore, Status

TTL_S = 0.3


@pytest.fixture
async def store(redis_server: str, redis_prefix: str) -> AsyncIterator[PresenceStore]:
    client: aioredis.Redis = open_redis(redis_server)
    yield PresenceStore(client, Keys(f"{redis_prefix}:store{secrets.token_hex(4)}"), TTL_S, 0.15)
    await client.aclose()


def user() -> str:
    return f"u-{uuid.uuid4().hex[:8]}"


async def test_tabs_and_edges_change_status_once(store: PresenceStore) -> None:
    alice = user()
    first = await store.report({alice: ["edge1:c1"]})
    again = await store.report({alice: ["edge1:c1", "edge1:c2"]})
    other_edge = await store.report({alice: ["edge2:c3"]})
    assert [s.changed for s in first + again + other_edge] == [True, False, False]
    assert first[0].online
    assert [s.changed for s in await store.drop({alice: ["edge1:c1", "edge1:c2"]}, 0)] == [False]
    gone = await store.drop({alice: ["edge2:c3"]}, 0)
    assert gone[0].changed and not gone[0].online and gone[0].last_seen_ms > 0
    assert [s.changed for s in await store.drop({alice: ["edge2:c3"]}, 0)] == [False]  # a repeated drop


async def test_racing_replicas_announce_each_transition_once(store: PresenceStore) -> None:
    users = [user() for _ in range(20)]
    reports = await asyncio.gather(*(store.report({u: [f"e:{u}"]}) for u in users for _ in range(5)))
    assert sum(s.changed for batch in reports for s in batch) == len(users)
    await asyncio.sleep(TTL_S + 0.05)
    await store.tick(1000, 1, 100)  # first tick: no sweeper ran before, so a grace starts...
    await asyncio.sleep(0.01)
    sweeps = await asyncio.gather(*(store.sweep(users) for _ in range(5)))  # ...of 1 ms; five sweepers race
    assert sum(s.changed for batch in sweeps for s in batch) == len(users)
    assert all(not s.online for s in await store.read(users))


async def test_only_the_sweeper_expires_and_not_during_grace(store: PresenceStore) -> None:
    alice = user()
    await store.report({alice: ["edge1:old", "edge2:live"]})
    await asyncio.sleep(TTL_S + 0.05)
    # edge2 heartbeats; edge1's connection is overdue but a drop elsewhere must not take alice offline.
    await store.report({alice: ["edge2:live"]})
    assert [s.changed for s in await store.drop({alice: ["edge2:live"]}, 0)] == [False]
    assert (await store.read([alice]))[0].online

    # No sweeper ran recently: the first tick opens a grace and expires nobody.
    users, _ = await store.tick(swept_ms=200, grace_ms=400, limit=100)
    assert users == []
    assert [s.changed for s in await store.sweep([alice])] == [False]
    # A sweeper keeps ticking; once the grace is over, alice's overdue connections are due.
    started = asyncio.get_running_loop().time()
    async with asyncio.timeout(5):
        while not users:
            await asyncio.sleep(0.05)
            users, _ = await store.tick(swept_ms=200, grace_ms=400, limit=100)
    assert users == [alice]
    assert asyncio.get_running_loop().time() - started >= 0.35
    swept = await store.sweep(users)
    assert swept[0].changed and not swept[0].online
    users, _ = await store.tick(swept_ms=200, grace_ms=400, limit=100)
    assert alice not in users


async def test_invisible_wins_and_typing_coalesces(store: PresenceStore) -> None:
    alice = user()
    await store.report({alice: ["e:c"]})
    hidden = await store.set_explicit(alice, "offline")
    assert hidden.changed and not hidden.online
    assert [s.changed for s in await store.report({alice: ["e:c2"]})] == [False]
    shown = await store.set_explicit(alice, "")
    assert shown.changed and shown.online

    member = f"{uuid.uuid4()}|{alice}"
    assert await store.typing_on(member) is True
    assert await store.typing_on(member) is False  # coalesced
    await asyncio.sleep(0.2)
    _, ended = await store.tick(1000, 1, 100)
    assert member in ended
    assert await store.typing_off(member) is False  # already ended: nothing more to announce


async def test_a_closed_connection_lingers_so_a_reconnect_does_not_flap(store: PresenceStore) -> None:
    alice, bob = user(), user()
    await store.report({alice: ["edge1:tab"], bob: ["edge1:tab"]})
    # Both close; alice reconnects (a page reload) within the linger, bob does not.
    assert [s.changed for s in await store.drop({alice: ["edge1:tab"], bob: ["edge1:tab"]}, 150)] == [False, False]
    closed_ms = (await store.read([bob]))[0].last_seen_ms
    assert [s.changed for s in await store.report({alice: ["edge2:reloaded"]})] == [False]
    assert all(s.online for s in await store.read([alice, bob]))  # nobody offline yet
    await asyncio.sleep(0.2)  # the linger, shorter than the TTL (0.3 s), is over
    await store.tick(swept_ms=1000, grace_ms=1, limit=100)  # the first tick opens a 1 ms grace
    await asyncio.sleep(0.01)
    users, _ = await store.tick(swept_ms=1000, grace_ms=1, limit=100)
    swept = {s.user_id: s for s in await store.sweep(users)}
    assert swept[bob].changed and not swept[bob].online
    assert abs(swept[bob].last_seen_ms - closed_ms) < 100  # last seen when the tab closed, not a TTL earlier
    assert not swept.get(alice, Status(alice, True, 0)).changed
    assert [s.online for s in await store.read([alice, bob])] == [True, False]
