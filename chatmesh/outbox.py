"""The transactional outbox and its relay, shared by every service that emits durable events.

A service writes an event row in the same transaction as the change it describes (`enqueue`), and
NOTIFYs the relay. The relay (one at a time per schema, by advisory lock, so the stream keeps commit
order) copies unpublished rows to the Redis events stream and marks them published. If Redis is
down, writes still commit; the relay retries until Redis returns. A poll every few seconds backs up
the NOTIFY, so nothing is stranded.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib

import psycopg
import redis.asyncio as aioredis
import redis.exceptions
from psycopg_pool import AsyncConnectionPool

from chatmesh import metrics
from chatmesh.gen.chat.v1 import common_pb2

log = logging.getLogger(__name__)

BATCH = 500
POLL_S = 2.0
EVENTS_MAXLEN = 1_000_000
BACKLOG_SAMPLE_S = 1.0


async def enqueue(conn: psycopg.AsyncConnection, schema: str, events: list[common_pb2.Event]) -> None:
    """Add events to the outbox inside the caller's transaction; they publish only if it commits."""
    async with conn.cursor() as cur:
        await cur.executemany(f'INSERT INTO "{schema}".outbox (payload) VALUES (%s)',
                              [(e.SerializeToString(),) for e in events])
    await conn.execute(f"NOTIFY {schema}_outbox")


class OutboxRelay:
    def __init__(self, pool: AsyncConnectionPool, url: str, schema: str, redis_client: aioredis.Redis,
                 stream: str, time_scale: float = 1.0) -> None:
        self._pool = pool
        self._url = url
        self._schema = schema
        self._redis = redis_client
        self._stream = stream
        self._poll_s = POLL_S * time_scale
        self._wake = asyncio.Event()
        self._lock_key = zlib.crc32(f"{schema}.outbox".encode())
        self._sampled_at = -BACKLOG_SAMPLE_S

    async def run(self) -> None:
        listener = asyncio.create_task(self._listen())
        try:
            while True:
                try:
                    while await self.publish_once() == BATCH:
                        pass
                except (redis.exceptions.RedisError, OSError, psycopg.Error) as exc:
                    log.warning("outbox relay for %s: %s; retrying", self._schema, exc)
                await self._sample_backlog()
                try:
                    await asyncio.wait_for(self._wake.wait(), self._poll_s)
                except TimeoutError:
                    pass
                self._wake.clear()
        finally:
            listener.cancel()

    async def publish_once(self) -> int:
        """Publish one batch in commit order; returns how many rows it published."""
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (self._lock_key,))
            row = await cur.fetchone()
            if not row or not row[0]:
                return 0
            cur = await conn.execute(
                f'SELECT id, payload FROM "{self._schema}".outbox WHERE published_at IS NULL ORDER BY id LIMIT %s',
                (BATCH,))
            rows = await cur.fetchall()
            if not rows:
                return 0
            async with self._redis.pipeline(transaction=False) as pipe:
                for _, payload in rows:
                    pipe.xadd(self._stream, {b"e": bytes(payload)}, maxlen=EVENTS_MAXLEN, approximate=True)
                await pipe.execute()
            await conn.execute(
                f'UPDATE "{self._schema}".outbox SET published_at = now() WHERE id = ANY(%s)',
                ([r[0] for r in rows],))
            return len(rows)

    async def _sample_backlog(self) -> None:
        """Set the outbox backlog gauge (rows not yet published, counted up to a cap on the partial index),
        at most once a second however often commits wake the relay."""
        now = time.monotonic()
        if now - self._sampled_at < BACKLOG_SAMPLE_S:
            return
        self._sampled_at = now
        try:
            async with self._pool.connection(timeout=5) as conn:
                cur = await conn.execute(
                    f'SELECT count(*) FROM (SELECT 1 FROM "{self._schema}".outbox WHERE published_at IS NULL'
                    " LIMIT 1000000) AS unpublished")
                row = await cur.fetchone()
            metrics.OUTBOX_BACKLOG.labels(self._schema).set(row[0] if row else 0)
        except (OSError, psycopg.Error) as exc:
            log.debug("outbox backlog for %s: %s", self._schema, exc)

    async def _listen(self) -> None:
        """Wake the relay on every commit that enqueued events (LISTEN/NOTIFY); reconnects on loss."""
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {self._schema}_outbox")
                    self._wake.set()
                    async for _ in conn.notifies():
                        self._wake.set()
            except psycopg.Error as exc:
                log.warning("outbox listener for %s lost its connection: %s", self._schema, exc)
                await asyncio.sleep(self._poll_s)
