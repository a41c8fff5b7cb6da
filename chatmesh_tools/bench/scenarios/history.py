"""history: paged reads of a long conversation, GET /api/messages/{id}?limit=50&before_seq=<random>.

The conversation (a group of the sender and 100 readers, who take turns, since the edge limits each
user's REST requests per minute) is made through the API; its messages are a benchmark fixture seeded with COPY
by the message service's own SQL (services/message/seed_store.py: rows with consecutive seqs, the
conversation's seq moved to the last one), because sending 100,000 messages through the mesh first
would measure sends, not history. Seeded rows are exactly what a send stores, minus the outbox event
(nothing is delivered for them). Without --database-url the conversation is filled through the
API instead (slower). Readers run in their own process (a minimal keep-alive HTTP client, not
httpx, whose CPU per request exceeds the edge's): first one at a time (latency), then several
concurrently (pages/s).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from array import array
from typing import Any

import httpx

from chatmesh_tools.bench import fixtures, procstats
from chatmesh_tools.bench.lean_http import LeanHTTP
from chatmesh_tools.bench.loadgen import loads
from chatmesh_tools.bench.pool import log
from chatmesh_tools.bench.progress import Progress
from chatmesh_tools.bench.stats import percentiles
from chatmesh_tools.bench.target import Target

READERS = 100


def seed_copy(database_url: str, conversation_id: str, sender: str, count: int) -> float:
    import psycopg

    from services.message import seed_store

    async def run() -> None:
        async with await psycopg.AsyncConnection.connect(database_url) as conn, conn.transaction():
            await seed_store.seed_history(conn, conversation_id, sender, count)

    started = time.monotonic()
    asyncio.run(run())
    return time.monotonic() - started


def seed_api(target: Target, conversation_id: str, token: str, count: int) -> float:
    async def run() -> None:
        limit = asyncio.Semaphore(32)
        async with httpx.AsyncClient(
            base_url=target.url, timeout=60, headers={"Authorization": f"Bearer {token}"}
        ) as client:

            async def one(i: int) -> None:
                async with limit:
                    r = await client.post(
                        "/api/messages",
                        json={
                            "conversation_id": conversation_id,
                            "content": f"history message {i}",
                            "client_message_id": f"seed-{i}",
                        },
                    )
                    r.raise_for_status()

            await asyncio.gather(*(one(i) for i in range(count)))

    started = time.monotonic()
    asyncio.run(run())
    return time.monotonic() - started


def _reader(
    url: str,
    tokens: list[str],
    conversation_id: str,
    last_seq: int,
    page: int,
    concurrency: int,
    duration_s: float,
    out: Any,
) -> None:
    import uvloop

    async def run() -> tuple[bytes, int, float]:
        lat = array("d")
        errors = 0
        stop_at = time.monotonic() + duration_s
        path = f"/api/messages/{conversation_id}"

        async def loop(seed: int) -> None:
            nonlocal errors
            rnd = random.Random(seed)
            client = LeanHTTP(url, {})
            await client.get(path, {"limit": page}, tokens[seed % len(tokens)])  # warm up: connect, first request
            k = seed
            try:
                while time.monotonic() < stop_at:
                    before = rnd.randint(page + 1, last_seq + 1)
                    t = time.monotonic_ns()
                    k += 1
                    status, body = await client.get(
                        path, {"limit": page, "before_seq": before}, tokens[k % len(tokens)]
                    )
                    lat.append((time.monotonic_ns() - t) / 1e6)
                    if status != 200 or len(loads(body).get("messages", [])) != page:
                        errors += 1
            finally:
                await client.close()

        cpu_before = time.process_time()
        await asyncio.gather(*(loop(i) for i in range(concurrency)))
        return lat.tobytes(), errors, time.process_time() - cpu_before

    out.send(uvloop.run(run()))


def run(target: Target, *, messages: int, page: int, duration_s: float, concurrency: list[int]) -> dict[str, Any]:
    # Readers take turns among many users: the edge limits each user's REST requests (CHAT_RATE_REST).
    users, conversations = fixtures.make(target, f"hist{int(time.time())}", READERS + 1, READERS + 1)
    (sender, sender_token), reader_tokens = users[0], [t for _, t in users[1:]]
    cid = conversations[0]
    if target.database_url:
        seeded_by = "COPY into message.messages"
        seed_s = seed_copy(target.database_url, cid, sender, messages)
    else:
        seeded_by = "POST /api/messages"
        seed_s = seed_api(target, cid, sender_token, messages)
    log(f"  seeded {messages:,} messages in {seed_s:.1f}s ({seeded_by})")
    ctx = multiprocessing.get_context("spawn")
    phases = []
    for c in concurrency:
        parent, child = ctx.Pipe()
        load = procstats.machine_load()
        proc = ctx.Process(
            target=_reader, args=(target.url, reader_tokens, cid, messages, page, c, duration_s, child), daemon=True
        )
        pids = {**target.pids, "loadgen": 0}
        proc.start()
        pids["loadgen"] = proc.pid or 0
        before = procstats.sample(pids)
        progress = Progress(f"history c={c}", duration_s, "s")
        started = time.monotonic()
        while not parent.poll(0.5):
            progress.update(time.monotonic() - started)
            if not proc.is_alive():
                raise RuntimeError("the history reader died")
        after = procstats.sample(pids)
        raw, errors, loadgen_cpu = parent.recv()
        proc.join()
        progress.done()
        lat = array("d")
        lat.frombytes(raw)
        cpu = procstats.delta(before, after)
        cpu["loadgen"] = round(loadgen_cpu, 3)  # its own count: the process's start-up is not the benchmark
        phase = {
            "concurrency": c,
            "pages": len(lat),
            "errors": errors,
            "pages_per_s": round(len(lat) / duration_s, 1),
            "latency_ms": percentiles(lat),
            "cpu_s": cpu,
            "cpu_ms_per_page": {k: round(1000 * v / max(1, len(lat)), 3) for k, v in cpu.items()},
            "machine_load": load,
        }
        log(
            f"  c={c}: {phase['pages_per_s']:,.0f} pages/s, p50/p99 {phase['latency_ms'].get('p50')}/"
            f"{phase['latency_ms'].get('p99')} ms, errors {errors}, load {load['load1']}"
        )
        phases.append(phase)
    return {"messages": messages, "page": page, "seeded_by": seeded_by, "seed_s": round(seed_s, 1), "phases": phases}
