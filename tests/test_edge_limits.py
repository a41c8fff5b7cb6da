"""The edge's limits against real Redis: WebSocket sends take from local buckets that never admit
past the budget the replicas share with REST, and one pipeline renews every socket lease of a
replica without bringing back a socket that was released meanwhile."""

from __future__ import annotations

import asyncio
import secrets

import redis.asyncio as aioredis

from services.edge.ratelimit import RateLimiter


async def test_send_buckets_never_admit_past_the_shared_budget(redis_server: str) -> None:
    prefix = f"test-{secrets.token_hex(6)}"
    one, two = RateLimiter(redis_server, prefix), RateLimiter(redis_server, prefix)  # two edge replicas
    reservations = 0
    reserve = one._reserve

    async def counted(keys: list[str], args: list[object]) -> object:
        nonlocal reservations
        reservations += 1
        return await reserve(keys=keys, args=args)

    one._reserve = counted  # type: ignore[method-assign]
    try:
        limit = (600, 60.0)
        assert [await one.take("messages", "u1", limit) for _ in range(100)] == [0.0] * 100
        assert reservations <= 10  # batches, not a round trip per send
        allowed_two = sum([await two.take("messages", "u1", limit) == 0.0 for _ in range(600)])
        refused = await two.take("messages", "u1", limit)
        assert 1 <= refused <= 60  # RATE_LIMITED's retry_after: the window's end
        assert 600 - 100 - 600 // 16 <= allowed_two <= 500  # never past the budget, at most a batch early
        assert await one.hit("messages", "u1", limit) > 0  # REST shares the counter

        small = (4, 60.0)  # a small budget is counted exactly: batches of one
        assert [await one.take("messages", "u2", small) == 0.0 for _ in range(3)] == [True] * 3
        assert await one.hit("messages", "u2", small) == 0.0
        assert await two.take("messages", "u2", small) > 0 and await one.take("messages", "u2", small) > 0
    finally:
        await one.close()
        await two.close()


async def test_one_renewal_extends_every_lease_of_the_replica(redis_server: str) -> None:
    prefix = f"test-{secrets.token_hex(6)}"
    limits, client = RateLimiter(redis_server, prefix), aioredis.Redis.from_url(redis_server)
    key = limits._sockets_key
    try:
        assert await limits.acquire_socket("u1", "s1", 2) and await limits.acquire_socket("u1", "s2", 2)
        assert await limits.acquire_socket("u2", "s3", 2)
        assert not await limits.acquire_socket("u1", "s4", 2)  # the limit still holds
        before = {s: await client.zscore(key(u), s) for u, s in (("u1", "s1"), ("u2", "s3"))}
        await limits.release_socket("u1", "s2")
        await asyncio.sleep(0.01)
        await limits.renew_leases()
        after = {s: await client.zscore(key(u), s) for u, s in (("u1", "s1"), ("u2", "s3"))}
        assert all(after[s] > before[s] for s in before), (before, after)
        assert await client.zscore(key("u1"), "s2") is None  # released: not renewed back
        assert await client.pttl(key("u1")) > 0 and await client.pttl(key("u2")) > 0
    finally:
        await limits.close()
        await client.aclose()
