"""The presence scripts on a real Redis, without processes: transitions are reported exactly once
however many replicas race, only the sweeper expires, and a grace follows a sweeper outage."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from chatmesh.redis_conn import open_redis
from services.presence.keys import PresenceKeys
from services.presence.store import PresenceStore, Status

TTL_S = 0.3


@pytest.fixture
async def store(redis_server: str, redis_prefix: str) -> AsyncIterator[PresenceStore]:
    client: aioredis.Redis = open_redis(redis_server)
    yield PresenceStore(client, PresenceKeys(f"{redis_prefix}:store{secrets.token_hex(4)}"), TTL_S, 0.15)
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

    # No sweeper ran recently: the first tick opens a grace. Alice's overdue open connection is kept
    # until it ends (its heartbeats may have been lost while presence was down): nothing changes.
    users, _ = await store.tick(swept_ms=200, grace_ms=400, limit=100)
    started = asyncio.get_running_loop().time()
    assert [s.changed for s in await store.sweep(users)] == [False] * len(users)
    assert (await store.read([alice]))[0].online
    # A sweeper keeps ticking; once the grace is over, alice's overdue connection is due.
    users = []
    async with asyncio.timeout(5):
        while alice not in users:
            await asyncio.sleep(0.05)
            users, _ = await store.tick(swept_ms=200, grace_ms=400, limit=100)
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


async def sweep_until_offline(store: PresenceStore, user_id: str, timeout: float = 5) -> tuple[float, Status]:
    """Tick and sweep as the sweeper does (every 20 ms) until the user goes offline: (when, status)."""
    async with asyncio.timeout(timeout):
        while True:
            users, _ = await store.tick(swept_ms=1000, grace_ms=60_000, limit=100)
            for status in await store.sweep(users):
                if status.user_id == user_id and status.changed:
                    assert not status.online
                    return asyncio.get_running_loop().time(), status
            await asyncio.sleep(0.02)


async def test_devices_closing_apart_go_offline_once_a_linger_after_the_last(store: PresenceStore) -> None:
    alice, linger_ms = user(), 100
    await store.tick(swept_ms=1000, grace_ms=1, limit=100)  # the first tick opens a 1 ms grace
    await asyncio.sleep(0.01)
    await store.report({alice: ["edge1:phone", "edge2:laptop"]})
    assert [s.changed for s in await store.drop({alice: ["edge2:laptop"]}, linger_ms)] == [False]
    await asyncio.sleep(0.2)  # longer than the linger: the laptop's is over, the phone keeps alice online
    assert [s.changed for s in await store.sweep([alice])] == [False]
    closed = await store.drop({alice: ["edge1:phone"]}, linger_ms)
    closed_at = asyncio.get_running_loop().time()
    assert [s.changed for s in closed] == [False] and closed[0].online
    offline_at, offline = await sweep_until_offline(store, alice)
    assert linger_ms / 1000 - 0.02 <= offline_at - closed_at <= linger_ms / 1000 + 0.15
    assert abs(offline.last_seen_ms - closed[0].last_seen_ms) < 10  # the later close, not the first
    assert [s.changed for s in await store.sweep([alice])] == [False]  # once


async def test_a_late_heartbeat_does_not_revive_a_closed_connection(store: PresenceStore) -> None:
    alice = user()
    await store.tick(swept_ms=1000, grace_ms=1, limit=100)
    await asyncio.sleep(0.01)
    await store.report({alice: ["edge1:tab"]})
    dropped = await store.drop({alice: ["edge1:tab"]}, 100)
    dropped_at = asyncio.get_running_loop().time()
    # A heartbeat that was in flight when the tab closed lands after the drop.
    assert [s.changed for s in await store.report({alice: ["edge1:tab"]})] == [False]
    offline_at, offline = await sweep_until_offline(store, alice)
    assert offline_at - dropped_at < 0.1 + 0.1  # the linger, not the TTL (0.3 s) from the late heartbeat
    assert offline.last_seen_ms == dropped[0].last_seen_ms
    # A repeated drop (the edge retrying) changes nothing, last seen included.
    assert [s.changed for s in await store.drop({alice: ["edge1:tab"]}, 100)] == [False]
    assert (await store.read([alice]))[0] == Status(alice, False, offline.last_seen_ms)


async def test_in_a_grace_closed_connections_still_go_and_open_ones_wait(store: PresenceStore) -> None:
    alice, bob = user(), user()
    await store.report({alice: ["edge1:a1", "edge2:a2"], bob: ["edge1:b"]})
    await asyncio.sleep(TTL_S + 0.05)  # bob's edge missed its heartbeats (presence was down, say)
    users, _ = await store.tick(swept_ms=1000, grace_ms=1500, limit=100)  # no sweeper before: a grace
    assert not any(s.changed for s in await store.sweep(users))
    await store.report({alice: ["edge1:a1", "edge2:a2"]})  # alice's edges are back; bob's is not
    await store.drop({alice: ["edge1:a1"]}, 100)
    await asyncio.sleep(0.05)
    closed = await store.drop({alice: ["edge2:a2"]}, 100)
    closed_at = asyncio.get_running_loop().time()
    offline_at, offline = await sweep_until_offline(store, alice)
    assert offline_at - closed_at < 0.1 + 0.1  # the linger, in the grace (1.5 s) all the same
    assert offline.last_seen_ms == closed[0].last_seen_ms
    assert (await store.read([bob]))[0].online  # kept until the grace ends, in case its edge is alive
