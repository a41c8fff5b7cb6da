"""The one-statement send and the relay it wakes: idempotent under concurrency without a seq gap,
published without a NOTIFY per send when the relay runs in the process, and published promptly
when another replica's relay holds the lock. The domain and a relay run in-process against a real
PostgreSQL database of their own and a real Redis stream; only membership is stood in for."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable

import psycopg
import pytest

from chatmesh import errors, outbox
from chatmesh.gen.chat.v1 import common_pb2
from chatmesh.outbox import OutboxRelay
from chatmesh.roles import Role
from services.message import store
from services.message.store import NewMessage
from tests.message_domain import DomainEnv, Roles, domain_env, new_message

ALICE, BOB = "sp-alice", "sp-bob"
ROLES = Roles({ALICE: Role.MEMBER, BOB: Role.MEMBER})


@pytest.fixture
async def env(make_database: Callable[[], str], redis_server: str) -> AsyncIterator[DomainEnv]:
    """A database of its own (so the relay sees only this test's outbox) and a fresh stream key."""
    async with domain_env(make_database(), redis_server, ROLES, max_size=12) as env:
        yield env


def _new(cid: str, content: str, client_id: str | None = None, sender: str = ALICE) -> NewMessage:
    return new_message(cid, content, sender=sender, client_id=client_id)


async def _published(env: DomainEnv, count: int, within_s: float) -> list[common_pb2.Event]:
    """The stream's events once it holds `count` of them; fails after `within_s`."""
    deadline = time.monotonic() + within_s
    while True:
        entries = await env.redis.xrange(env.stream)
        if len(entries) >= count or time.monotonic() > deadline:
            return [common_pb2.Event.FromString(fields[b"e"]) for _, fields in entries]
        await asyncio.sleep(0.01)


@pytest.fixture
async def notifications(env: DomainEnv) -> AsyncIterator[list[str]]:
    """Every NOTIFY on the message outbox channel while the test runs."""
    seen: list[str] = []
    conn = await psycopg.AsyncConnection.connect(env.url, autocommit=True)
    await conn.execute(f"LISTEN {store.SCHEMA}_outbox")

    async def collect() -> None:
        async for note in conn.notifies():
            seen.append(note.channel)

    task = asyncio.create_task(collect())
    yield seen
    task.cancel()
    await conn.close()


async def _start_relay(env: DomainEnv, time_scale: float = 1.0) -> asyncio.Task[None]:
    task = asyncio.create_task(OutboxRelay(env.pool, env.url, store.SCHEMA, env.redis, env.keys, time_scale).run())
    while outbox.needs_notify(store.SCHEMA):  # registered once it runs
        await asyncio.sleep(0.001)
    return task


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_concurrent_duplicates_return_the_original_without_a_seq_gap(env: DomainEnv) -> None:
    cid = str(uuid.uuid4())
    await env.messages.send(ALICE, _new(cid, "before"))
    # Twenty copies of one send race with other senders in the same conversation: every copy that
    # loses (the pre-check, or the insert after waiting for the winner) must give its seq back.
    results = await asyncio.gather(
        *(env.messages.send(ALICE, _new(cid, "once", client_id="dup-1")) for _ in range(20)),
        *(env.messages.send(BOB, _new(cid, f"other {i}")) for i in range(5)),
    )
    copies = results[:20]
    assert sorted(created for _, created in copies) == [False] * 19 + [True]
    assert len({row.message_id for row, _ in copies}) == 1
    assert {row.seq for row, _ in copies} == {next(row.seq for row, created in copies if created)}
    after, created = await env.messages.send(ALICE, _new(cid, "after"))
    assert (after.seq, created) == (8, True)  # 1 + one copy + five others + this one: no gap
    with psycopg.connect(env.url) as conn:
        seqs = [
            r[0]
            for r in conn.execute("SELECT seq FROM message.messages WHERE conversation_id = %s ORDER BY seq", (cid,))
        ]
        events = conn.execute("SELECT count(*) FROM message.outbox").fetchone()
    assert seqs == list(range(1, 9))
    assert events == (8,)  # one event per stored message, none for a duplicate
    # The same client id in another conversation, even racing, is a conflict, never a second message.
    other = str(uuid.uuid4())
    outcomes = await asyncio.gather(
        *(env.messages.send(ALICE, _new(other, "once", client_id="dup-1")) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(o, errors.ChatError) and o.code == "CLIENT_MESSAGE_ID_REUSED" for o in outcomes)


async def test_sends_reach_the_stream_in_order_without_a_notify_per_send(
    env: DomainEnv, notifications: list[str]
) -> None:
    relay = await _start_relay(env, time_scale=5.0)  # a 10 s poll: only the direct wake-up can be in time
    try:
        cid = str(uuid.uuid4())
        for i in range(10):
            await env.messages.send(ALICE, _new(cid, f"m{i}"))
        events = await _published(env, 10, within_s=3)
        assert [(e.type, e.message.seq, e.message.content) for e in events] == [
            ("chat:message_received", i + 1, f"m{i}") for i in range(10)
        ]
        with psycopg.connect(env.url) as conn:
            row = conn.execute("SELECT message_id::text, created_at FROM message.messages WHERE seq = 3").fetchone()
        assert row is not None
        assert events[2].event_id == f"received:{row[0]}"  # the event carries the row's id and time
        assert events[2].message.created_at.ToDatetime().timestamp() == pytest.approx(row[1].timestamp(), abs=1e-6)
        assert notifications == []
    finally:
        await _stop(relay)
    # Without a relay in this process, a send NOTIFYs, so a relay elsewhere still hears of it.
    await env.messages.send(ALICE, _new(str(uuid.uuid4()), "no local relay"))
    for _ in range(300):
        if notifications:
            break
        await asyncio.sleep(0.01)
    assert notifications == [f"{store.SCHEMA}_outbox"]


async def test_a_send_is_published_promptly_while_another_relay_holds_the_lock(env: DomainEnv) -> None:
    """Another replica's relay is mid-batch (it holds the advisory lock) when our send commits: the
    local relay cannot publish yet, and retries within milliseconds instead of waiting for its poll."""
    relay = await _start_relay(env, time_scale=5.0)  # a 10 s poll
    try:
        await env.messages.send(ALICE, _new(str(uuid.uuid4()), "warm-up"))
        assert len(await _published(env, 1, within_s=3)) == 1
        lock_key = OutboxRelay(env.pool, env.url, store.SCHEMA, env.redis, env.keys)._lock_key
        async with await psycopg.AsyncConnection.connect(env.url) as other_replica:
            await other_replica.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key,))
            await env.messages.send(ALICE, _new(str(uuid.uuid4()), "while locked"))
            await asyncio.sleep(0.3)
            assert len(await env.redis.xrange(env.stream)) == 1  # nobody could publish meanwhile
            await other_replica.commit()  # the other relay's batch is done: the lock is free
            released = time.monotonic()
        events = await _published(env, 2, within_s=5)
        assert [e.message.content for e in events] == ["warm-up", "while locked"]
        assert time.monotonic() - released < 2.5  # a quarter of the poll; the retries back off from 25 ms
    finally:
        await _stop(relay)


async def test_two_relays_racing_publish_every_event_once_in_seq_order(env: DomainEnv) -> None:
    """Two replicas' relays, both woken by every send, contend for the lock batch after batch."""
    relays = [await _start_relay(env, time_scale=5.0) for _ in range(2)]
    try:
        conversations = [str(uuid.uuid4()) for _ in range(3)]

        async def sender(cid: str) -> None:
            for i in range(20):
                await env.messages.send(ALICE, _new(cid, f"{cid[:4]}-{i}"))

        await asyncio.gather(*(sender(cid) for cid in conversations))
        events = await _published(env, 60, within_s=5)
        await asyncio.sleep(0.2)  # a duplicate, if any, would land right behind
        events = await _published(env, 60, within_s=0)
        assert len(events) == 60
        assert len({e.event_id for e in events}) == 60
        for cid in conversations:
            assert [e.message.seq for e in events if e.conversation_id == cid] == list(range(1, 21))
    finally:
        for relay in relays:
            await _stop(relay)


async def test_published_rows_are_pruned_after_their_retention_and_unpublished_ones_never(env: DomainEnv) -> None:
    """The outbox does not keep a copy of every event forever: rows published longer ago than the
    retention go, recent and unpublished ones stay."""
    cid = str(uuid.uuid4())
    for i in range(5):
        await env.messages.send(ALICE, _new(cid, f"m{i}"))
    relay = OutboxRelay(env.pool, env.url, store.SCHEMA, env.redis, env.keys)
    assert await relay.publish_once() == 5
    await env.messages.send(ALICE, _new(cid, "not yet published"))
    async with env.pool.connection() as conn:  # three of the five were published two hours ago
        await conn.execute(
            "UPDATE message.outbox SET published_at = now() - interval '2 hours'"
            " WHERE id IN (SELECT id FROM message.outbox WHERE published_at IS NOT NULL ORDER BY id LIMIT 3)"
        )

    assert await relay.prune_once() == 3
    assert await relay.prune_once() == 0
    async with env.pool.connection() as conn:
        cur = await conn.execute("SELECT published_at IS NULL FROM message.outbox ORDER BY id")
        assert [row[0] for row in await cur.fetchall()] == [False, False, True]
    assert [e.message.content for e in await _published(env, 5, within_s=0)] == [f"m{i}" for i in range(5)]
