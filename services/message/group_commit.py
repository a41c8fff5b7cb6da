"""Group commit: the sends that arrive together share one statement, one transaction and one commit.

A commit costs a round trip and a WAL flush whatever it holds, so under load the service spent most
of a send on them. Here a send waits only while the batch before it commits: a lone send goes at
once (no timer, no added latency when idle), and the sends that arrive meanwhile go together in the
next batch, at most MAX_BATCH of them. One batch is in flight per process.

Each send is still acknowledged only after its commit, and each fails alone: the batch statement
(`store.send_messages`, migration 0007) runs every send in a subtransaction of its own and answers
per send. A batch is ordered by conversation (its own order kept within one), so batches committing
at once on several replicas lock the conversations' counter rows in the same order and cannot
deadlock each other. Within a conversation, seqs stay gapless and its outbox rows keep seq order, as
with single sends. A whole batch that fails (the database away) fails each of its sends with that
error, and, when it is an outage, the sends queued behind it too. The relay is woken once per batch.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.trace import Span
from prometheus_client import Histogram
from psycopg_pool import AsyncConnectionPool

from chatmesh import outbox
from chatmesh.resilience import is_outage
from services.message import store
from services.message.store import Draft, Sent

MAX_BATCH = 128  # sends per statement: bounds the transaction (and the locks it holds) and the reply

BATCH_SIZE = Histogram(
    "chat_message_send_batch_size",
    "Sends committed together in one transaction (group commit)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)


@dataclass
class _Queued:
    draft: Draft
    span: Span  # the sender's current span: a batch's statement is traced under its first traced send's
    future: asyncio.Future[Sent]


class GroupCommit:
    def __init__(self, pool: AsyncConnectionPool, max_batch: int = MAX_BATCH) -> None:
        self._pool = pool
        self._max_batch = max_batch
        self._queue: deque[_Queued] = deque()
        self._committer: asyncio.Task[None] | None = None

    async def send(self, draft: Draft) -> Sent:
        """Commit `draft` with whatever sends arrive with it; its own outcome once committed."""
        future: asyncio.Future[Sent] = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(draft, trace.get_current_span(), future))
        if self._committer is None:
            # A context of its own: the batch is no one sender's (request id, identity, span).
            self._committer = asyncio.create_task(self._commit_queued(), context=contextvars.Context())
        return await future

    async def _commit_queued(self) -> None:
        try:
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(self._max_batch, len(self._queue)))]
                batch = [q for q in batch if not q.future.done()]  # callers gone before their turn: not sent
                if not batch:
                    continue
                try:
                    results = await self._commit(batch)
                except asyncio.CancelledError:
                    for queued in (*batch, *self._queue):
                        queued.future.cancel()
                    self._queue.clear()
                    raise
                except Exception as exc:  # noqa: BLE001 - each send of the batch fails with it
                    failed = list(batch)
                    if is_outage(exc):
                        # The database is away: the sends queued meanwhile fail with it too, at once,
                        # instead of each waiting a pool timeout of its own behind it (two in a row
                        # outlast the caller's deadline: the client would hear DEADLINE_EXCEEDED, not
                        # UNAVAILABLE, tests/test_outage_codes.py). Sends arriving later try afresh.
                        failed.extend(self._queue)
                        self._queue.clear()
                    for queued in failed:
                        if not queued.future.done():
                            queued.future.set_exception(exc)
                    continue
                for queued, result in zip(batch, results, strict=True):
                    if not queued.future.done():  # a caller that went away: its send committed all the same
                        queued.future.set_result(result)
        finally:
            self._committer = None

    async def _commit(self, batch: list[_Queued]) -> list[Sent]:
        order = sorted(range(len(batch)), key=lambda i: batch[i].draft.new.conversation_id)  # stable
        traced = next((q.span for q in batch if q.span.is_recording()), None)
        async with self._pool.connection() as conn:
            with trace.use_span(traced or trace.INVALID_SPAN, end_on_exit=False):
                sent = await store.send_messages(
                    conn, [batch[i].draft for i in order], notify=outbox.needs_notify(store.SCHEMA)
                )
        BATCH_SIZE.observe(len(batch))
        results: list[Sent | None] = [None] * len(batch)
        for position, index in enumerate(order):
            results[index] = sent[position]
        if any(r is not None and r.created for r in results):
            outbox.wake(store.SCHEMA)
        return [r for r in results if r is not None]
