"""ceiling: what the storage underneath allows on this machine, measured in the same run.

PostgreSQL: the durable work of one send with the same rows and the same durability (the server's
own settings: fsync on, synchronous_commit as configured): one transaction that bumps the
conversation's seq row, inserts the message row and its outbox row, and NOTIFYs, into copies of the
message service's tables (a scratch schema, `CREATE TABLE ... (LIKE message.x INCLUDING ALL)`), from
many connections at once, each transaction one round trip. Redis: the same entries per message as
the delivery path writes (XADD to the events stream; per recipient an inbox XADD; a done-marker SET;
one wake-up PUBLISH per batch), pipelined. The mesh's throughput is then reported as a fraction of each. The
PostgreSQL work runs a second time without the NOTIFY: a transaction that notifies takes a
database-wide lock at commit, so notifying commits are serialized on the WAL flush.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
import uuid
from typing import Any

from chatmesh.gen.chat.v1 import common_pb2
from chatmesh_tools.bench import procstats
from chatmesh_tools.bench.pool import log
from chatmesh_tools.bench.progress import Progress
from chatmesh_tools.bench.target import Target

SCHEMA = "bench_ceiling"


def _payload(conversation_id: str, seq: int, content: str) -> bytes:
    event = common_pb2.Event(
        type="chat:message_received", conversation_id=conversation_id, event_id=f"received:{uuid.uuid4()}"
    )
    event.message.message_id = str(uuid.uuid4())
    event.message.conversation_id = conversation_id
    event.message.seq = seq
    event.message.sender_id = "tp-sender-u1"
    event.message.content = content
    event.message.client_message_id = "tp-sender-u1-1-1"
    return event.SerializeToString()


def _pg_worker(url: str, connections: int, duration_s: float, conversations: list[str], notify: bool, out: Any) -> None:
    import psycopg
    import uvloop

    async def run() -> int:
        stop_at = time.monotonic() + duration_s
        count = 0

        async def one(i: int) -> None:
            nonlocal count
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                k = 0
                while time.monotonic() < stop_at:
                    k += 1
                    cid = conversations[(i + k * connections) % len(conversations)]
                    payload = _payload(cid, k, "bench x " + "x" * 40).hex()
                    await conn.execute(
                        f"""BEGIN;
                        INSERT INTO {SCHEMA}.conversation_seq AS s (conversation_id, last_seq) VALUES ('{cid}', 1)
                          ON CONFLICT (conversation_id) DO UPDATE SET last_seq = s.last_seq + 1;
                        INSERT INTO {SCHEMA}.messages (conversation_id, seq, sender_id, content, client_message_id)
                          SELECT '{cid}', last_seq, 'ceiling-{i}-{int(notify)}', 'bench x {"x" * 40}', 'c{i}-{k}'
                          FROM {SCHEMA}.conversation_seq WHERE conversation_id = '{cid}';
                        INSERT INTO {SCHEMA}.outbox (payload) VALUES ('\\x{payload}'::bytea);
                        {f"NOTIFY {SCHEMA}_outbox;" if notify else ""}
                        COMMIT;""".encode()
                    )
                    count += 1

        await asyncio.gather(*(one(i) for i in range(connections)))
        return count

    out.send(uvloop.run(run()))


def _redis_worker(url: str, prefix: str, duration_s: float, group_size: int, out: Any) -> None:
    import redis.asyncio as aioredis
    import uvloop

    async def run() -> int:
        client = aioredis.from_url(url)
        stop_at = time.monotonic() + duration_s
        count = 0
        cid = str(uuid.uuid4())
        members = [f"u{i}" for i in range(group_size)]
        batch = 50
        try:
            while time.monotonic() < stop_at:
                async with client.pipeline(transaction=False) as pipe:
                    for _ in range(batch):
                        pipe.xadd(
                            f"{prefix}:ceiling:events",  # a stream nothing reads: the cost of the XADD alone
                            {b"e": _payload(cid, count, "bench x " + "x" * 40)},
                            maxlen=100_000,
                            approximate=True,
                        )
                    await pipe.execute()
                async with client.pipeline(transaction=True) as tx:
                    data = _payload(cid, count, "bench x " + "x" * 40)
                    for _ in range(batch):
                        for m in members:
                            tx.xadd(
                                f"{prefix}:inbox:{m}", {b"e": data, b"i": b"event-id"}, maxlen=10_000, approximate=True
                            )
                        tx.set(f"{prefix}:fanned:{uuid.uuid4()}", b"1", ex=600)
                    await tx.execute()
                await client.publish(f"{prefix}:wake", json.dumps(members))
                count += batch
            await client.delete(*[f"{prefix}:inbox:{m}" for m in members], f"{prefix}:ceiling:events")
        finally:
            await client.aclose()
        return count

    out.send(uvloop.run(run()))


def _prepare_pg(url: str, conversations: int) -> list[str]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        conn.execute(f"CREATE SCHEMA {SCHEMA}")
        for table in ("conversation_seq", "messages", "outbox"):
            conn.execute(f"CREATE TABLE {SCHEMA}.{table} (LIKE message.{table} INCLUDING ALL)")
        settings: dict[str, str] = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'wal_sync_method')"
            ).fetchall()
        )
        log(f"  PostgreSQL durability: {settings}")
    return [str(uuid.uuid4()) for _ in range(conversations)]


def _drop_pg(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


def _measure(
    label: str, target_fn: Any, args: tuple[Any, ...], duration_s: float, pids: dict[str, int]
) -> tuple[int, dict[str, float], dict[str, float]]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    load = procstats.machine_load()
    proc = ctx.Process(target=target_fn, args=(*args, child), daemon=True)
    proc.start()
    pids = {**pids, "loadgen": proc.pid or 0}
    before = procstats.sample(pids)
    progress = Progress(label, duration_s, "s")
    started = time.monotonic()
    while not parent.poll(0.5):
        progress.update(time.monotonic() - started)
        if not proc.is_alive():
            raise RuntimeError(f"the {label} worker died")
    after = procstats.sample(pids)
    count = parent.recv()
    proc.join()
    progress.done()
    return count, procstats.delta(before, after), load


def run(target: Target, *, duration_s: float, pg_connections: int, group_size: int) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if target.database_url:
        conversations = _prepare_pg(target.database_url, 100)
        pids = {k: v for k, v in target.pids.items() if k == "postgres"}
        try:
            for notify in (True, False):
                label = "postgres" if notify else "postgres_without_notify"
                count, cpu, load = _measure(
                    f"ceiling pg{'' if notify else ' -notify'}",
                    _pg_worker,
                    (target.database_url, pg_connections, duration_s, conversations, notify),
                    duration_s,
                    pids,
                )
                result[label] = {
                    "commits": count,
                    "commits_per_s": round(count / duration_s, 1),
                    "connections": pg_connections,
                    "cpu_s": cpu,
                    "machine_load": load,
                    "what": "BEGIN; seq upsert; message insert; outbox insert; "
                    + ("NOTIFY; " if notify else "")
                    + "COMMIT",
                }
                log(
                    f"  PostgreSQL{'' if notify else ' without NOTIFY'}: {result[label]['commits_per_s']:,.0f} "
                    f"send transactions/s ({pg_connections} connections), load {load['load1']}"
                )
        finally:
            _drop_pg(target.database_url)
    if target.redis_url:
        pids = {k: v for k, v in target.pids.items() if k == "redis"}
        count, cpu, load = _measure(
            "ceiling redis",
            _redis_worker,
            (target.redis_url, f"benchceiling{int(time.time())}", duration_s, group_size),
            duration_s,
            pids,
        )
        result["redis"] = {
            "messages": count,
            "messages_per_s": round(count / duration_s, 1),
            "deliveries_per_s": round(count * group_size / duration_s, 1),
            "group_size": group_size,
            "cpu_s": cpu,
            "machine_load": load,
            "what": f"per message: XADD events; MULTI {group_size}x XADD inbox + SET; "
            "one PUBLISH per 50 messages; pipelined 50 messages at a time, one client process",
        }
        log(
            f"  Redis: {result['redis']['messages_per_s']:,.0f} messages/s into groups of {group_size} "
            f"({result['redis']['deliveries_per_s']:,.0f} inbox entries/s), load {load['load1']}"
        )
    return result
