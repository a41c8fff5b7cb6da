"""The transactional outbox and its relay, shared by every service that emits durable events.

A service writes an event row in the same transaction as the change it describes (`enqueue`). The
relay (one at a time per schema, by advisory lock, so the stream keeps commit order) copies
unpublished rows to the Redis events streams and marks them published. Each event goes to its
conversation's partition (`Keys.events_of`: crc32 of the conversation id modulo K, partition 0 for an
event without one), so a conversation's events keep their commit order in one stream. If Redis is down, writes still
commit; the relay retries until Redis returns. A poll every few seconds backs up every wake-up, so
nothing is stranded.

Waking the relay. Every replica of a service runs a relay in the same process as its writes, so a
writer whose process runs a relay for the schema wakes it directly after its commit (`wake_after`)
and does not NOTIFY: a commit that notifies takes a database-wide lock, which halves PostgreSQL's
commit rate (docs/performance.md, "Ceiling"). A woken relay that finds another replica's relay
holding the lock retries a few milliseconds later, until it gets the lock and so publishes every
row committed before it looked, so a send is published promptly whichever replica leads. A writer
without a local relay (or one that does not wake it) NOTIFYs inside its transaction as before; every
relay LISTENs for that.

Tracing (chatmesh/tracing.py). A row written while a span records carries that span's traceparent
(NULL otherwise: an untraced write adds nothing); the relay publishes it in a span of its own, a
child of the writer's, whose traceparent rides in the stream entry beside the event (field `t`) for
fan-out to continue. So a send and its fan-out are one trace, though they run apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import psycopg
import redis.asyncio as aioredis
import redis.exceptions
from opentelemetry.trace import Span, SpanKind
from psycopg_pool import AsyncConnectionPool
from redis.typing import EncodableT, FieldT

from chatmesh import db, metrics, tracing
from chatmesh.gen.chat.v1 import common_pb2
from chatmesh.redis_conn import Keys
from chatmesh.resilience import Backoff, OutageLog

log = logging.getLogger(__name__)

# The outbox table, in the schema of each service that emits durable events: every service migrates it
# through this text (db.migrate's `shared_ddl`, before the service's own files), so it is written once.
# Idempotent: databases migrated before it moved here made the same table in their 0001_init.sql. A
# later change to the table is a numbered migration of each schema, as for any applied table.
DDL = """
CREATE TABLE IF NOT EXISTS outbox (
    id           bigserial PRIMARY KEY,
    payload      bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
"""

BATCH = 500
POLL_S = 2.0
RETRY_S = 0.005  # first retry after losing the lock to another relay; doubles up to POLL_S
EVENTS_MAXLEN = 1_000_000  # across the partitions: each keeps about its K-th
BACKLOG_SAMPLE_S = 1.0
# Published rows are kept RETENTION_S (to look into what was sent lately), then deleted, PRUNE_BATCH at
# a time and at most every PRUNE_EVERY_S, by whichever relay holds the lock; without this the table
# would keep a second copy of every event forever.
RETENTION_S = 3600.0
PRUNE_EVERY_S = 60.0
PRUNE_BATCH = 10_000

_local: dict[str, set[OutboxRelay]] = {}  # relays running in this process, by schema


async def enqueue(
    conn: psycopg.AsyncConnection, schema: str, events: list[common_pb2.Event], *, notify: bool = True
) -> None:
    """Add events to the outbox inside the caller's transaction; they publish only if it commits.

    With `notify=False` the caller promises to wake the relay after its commit (`wake_after`)."""
    parent = tracing.traceparent()  # None unless a span records
    async with conn.cursor() as cur:
        await cur.executemany(
            f'INSERT INTO "{schema}".outbox (payload, traceparent) VALUES (%s, %s)',
            [(e.SerializeToString(), parent) for e in events],
        )
    if notify:
        await conn.execute(f"NOTIFY {schema}_outbox")


_UNTRACED: AbstractAsyncContextManager[None] = contextlib.nullcontext()


def carry_trace(conn: psycopg.AsyncConnection) -> AbstractAsyncContextManager[None]:
    """Around a statement that inserts its outbox row itself (message.send_message): while a span
    records, a transaction that sets `chatmesh.traceparent`, which the outbox's traceparent column
    defaults to (message migration 0005). Otherwise nothing at all: no transaction, no round trip."""
    parent = tracing.traceparent()
    return _UNTRACED if parent is None else _traced_transaction(conn, parent)


@asynccontextmanager
async def _traced_transaction(conn: psycopg.AsyncConnection, parent: str) -> AsyncIterator[None]:
    async with conn.transaction():
        await conn.execute("SELECT set_config('chatmesh.traceparent', %s, true)", (parent,))
        yield


def needs_notify(schema: str) -> bool:
    """Whether a writer must NOTIFY in its transaction: only when no relay for `schema` runs in this
    process. Otherwise it calls `wake` after its commit."""
    return not _local.get(schema)


def wake(schema: str) -> None:
    """Wake this process's relays for `schema`; call it after the commit of rows enqueued unnotified."""
    for relay in tuple(_local.get(schema, ())):
        relay.wake()


@asynccontextmanager
async def wake_after(schema: str) -> AsyncIterator[bool]:
    """Around a transaction that enqueues: yields `notify` for `enqueue` (`needs_notify`) and, when
    the block exits without an error, wakes the local relays. Enter it outside `conn.transaction()`,
    so the wake comes after the commit."""
    yield needs_notify(schema)
    wake(schema)


class OutboxRelay:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        url: str,
        schema: str,
        redis_client: aioredis.Redis,
        keys: Keys,
        time_scale: float = 1.0,
    ) -> None:
        self._pool = pool
        self._url = url
        self._schema = schema
        self._redis = redis_client
        self._keys = keys
        self._maxlen = max(EVENTS_MAXLEN // keys.partitions, 10_000)
        self._poll_s = POLL_S * time_scale
        self._retry_s = RETRY_S * time_scale
        self._wake = asyncio.Event()
        self._lock_key = zlib.crc32(f"{schema}.outbox".encode())
        self._sampled_at = -BACKLOG_SAMPLE_S
        self._pruned_at = time.monotonic()  # the first prune a while after start, not in its rush

    def wake(self) -> None:
        """Look for unpublished rows now (a local commit enqueued some)."""
        self._wake.set()

    async def run(self) -> None:
        listener = asyncio.create_task(self._listen())
        _local.setdefault(self._schema, set()).add(self)
        retry = self._retry_s
        outage = OutageLog(log, f"outbox relay for {self._schema}")
        backoff = Backoff(max(self._retry_s, 0.01), max(self._poll_s, 0.1))
        try:
            while True:
                # Cleared before looking, so a commit that lands while a batch is out wakes us again.
                self._wake.clear()
                try:
                    while (published := await self.publish_once()) == BATCH:
                        pass
                except (redis.exceptions.RedisError, OSError, psycopg.Error) as exc:
                    # Redis or PostgreSQL is away: back off (not once per commit that wakes us) and
                    # say so once; the rows wait in the outbox.
                    outage.failed(exc)
                    await asyncio.sleep(backoff.next_delay())
                    continue
                outage.recovered()
                backoff.reset()
                await self._sample_backlog()
                if published is not None and time.monotonic() - self._pruned_at >= PRUNE_EVERY_S:
                    self._pruned_at = time.monotonic()
                    await self.prune_once()
                if published is None:
                    # Another replica's relay holds the lock. It may have looked before our rows
                    # committed, so look again shortly rather than at the next poll.
                    await self._sleep_or_wake(retry)
                    retry = min(retry * 2, self._poll_s)
                    continue
                retry = self._retry_s
                await self._sleep_or_wake(self._poll_s)
        finally:
            _local.get(self._schema, set()).discard(self)
            listener.cancel()

    async def _sleep_or_wake(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            pass

    async def publish_once(self) -> int | None:
        """Publish one batch in commit order; returns how many rows it published, or None when another
        relay holds the lock.

        Two PostgreSQL round trips: BEGIN, the lock and the SELECT pipelined; then, only after every
        XADD of the batch succeeded, the UPDATE and COMMIT pipelined. The SELECT is its own statement
        after the lock's, so when the lock is ours its snapshot is taken with the lock held and sees
        what the previous holder committed. When it is not, the SELECT's own (reentrant) try of the
        lock, evaluated once before the scan, usually fails too and it reads nothing; whatever it
        returns then is ignored.
        """
        async with self._pool.connection() as conn, conn.pipeline() as pipeline, conn.transaction():
            locked = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (self._lock_key,))
            selected = await conn.execute(
                f'SELECT id, payload, traceparent FROM "{self._schema}".outbox'
                " WHERE published_at IS NULL AND (SELECT pg_try_advisory_xact_lock(%s)) ORDER BY id LIMIT %s",
                (self._lock_key, BATCH),
            )
            await pipeline.sync()
            row = await locked.fetchone()
            if not row or not row[0]:
                return None
            rows = await selected.fetchall()
            if not rows:
                return 0
            # MULTI/EXEC: the batch lands whole or not at all, across its partitions. A pipeline without
            # it can be partly refused (a Redis still loading its data answers some commands with LOADING), and the
            # whole batch, published again, would put a conversation's later seqs before earlier ones.
            spans: list[Span] = []  # the traced rows' publish spans
            try:
                async with self._redis.pipeline(transaction=True) as pipe:
                    for _, payload, parent in rows:
                        fields: dict[FieldT, EncodableT] = {b"e": bytes(payload)}
                        if parent is not None:  # written while traced: the trace goes on to fan-out
                            spans.append(tracing.continue_trace("outbox publish", parent, SpanKind.PRODUCER))
                            fields[b"t"] = tracing.traceparent_of(spans[-1])
                        pipe.xadd(self._stream_of(payload), fields, maxlen=self._maxlen, approximate=True)
                    await pipe.execute()
            finally:
                tracing.end_all(spans)
            # No WAL flush to wait for: if a crash loses this mark, the rows are published again, and
            # a second copy is already a no-op downstream (fan-out's done-marker, the projection's
            # idempotent updates, clients' event ids), as when the relay dies right here.
            await conn.execute("SET LOCAL synchronous_commit = off")
            await conn.execute(
                f'UPDATE "{self._schema}".outbox SET published_at = now() WHERE id = ANY(%s)', ([r[0] for r in rows],)
            )
            return len(rows)

    async def prune_once(self, retention_s: float = RETENTION_S) -> int:
        """Delete up to PRUNE_BATCH rows published more than `retention_s` ago; returns how many. The
        oldest ids were published first, so the scan in id order finds them at its start. A failure
        is logged and left to the next prune: nothing waits on it."""
        try:
            async with self._pool.connection(timeout=5) as conn:
                cur = await conn.execute(
                    f'DELETE FROM "{self._schema}".outbox WHERE id IN (SELECT id FROM "{self._schema}".outbox'
                    " WHERE published_at < now() - make_interval(secs => %s) ORDER BY id LIMIT %s)",
                    (retention_s, PRUNE_BATCH),
                )
                return cur.rowcount
        except (OSError, psycopg.Error) as exc:
            log.warning("pruning the %s outbox: %s", self._schema, exc)
            return 0

    def _stream_of(self, payload: bytes) -> str:
        """The event's partition stream. A payload that does not parse goes to partition 0, where
        fan-out dead-letters it as before."""
        try:
            conversation_id = common_pb2.Event.FromString(bytes(payload)).conversation_id
        except Exception:  # noqa: BLE001 - any unreadable payload
            conversation_id = ""
        return self._keys.events_of(conversation_id)

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
                    " LIMIT 1000000) AS unpublished"
                )
                row = await cur.fetchone()
            metrics.OUTBOX_BACKLOG.labels(self._schema).set(row[0] if row else 0)
        except (OSError, psycopg.Error) as exc:
            log.debug("outbox backlog for %s: %s", self._schema, exc)

    async def _listen(self) -> None:
        """Wake the relay on commits of writers that NOTIFY (LISTEN/NOTIFY); reconnects on loss."""
        outage = OutageLog(log, f"outbox listener for {self._schema}")
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True, **db.CONNECT_KWARGS
                ) as conn:
                    await conn.execute(f"LISTEN {self._schema}_outbox")
                    outage.recovered()
                    self._wake.set()
                    async for _ in conn.notifies():
                        self._wake.set()
            except (psycopg.Error, OSError) as exc:
                outage.failed(exc)
                await asyncio.sleep(self._poll_s)
