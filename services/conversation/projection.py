"""The conversation list's live parts, projected from the message service's events.

`last_message_at`, the last-message preview and each participant's read position (hence the unread
count) belong to the conversation list, but messages and receipts belong to the message service.
Rather than read its schema, this service follows the events streams (all K partitions, through
chatmesh/event_streams.py) with its own consumer group ("conversation-projection"): each replica
reads a share of the entries, applies each stream's batch in one transaction and acknowledges it
after the commit.

A batch is folded first (the newest message per conversation, the highest read per participant)
and applied with a few set-based statements, so its cost hardly grows with its size; while entries
trickle in, reads are at least BATCH_WINDOW_S apart so that batches have more than one entry.

Idempotent and order-safe: a replayed entry (the relay may publish twice; a crash between commit
and XACK redelivers) changes nothing, and state only moves forward by seq, so entries applied out
of order by two replicas end in the same state. Unread = last seq − read seq − the reader's own
messages past their read position, the last counted once per seq in `own_messages`.

Entries that cannot be parsed are acknowledged and logged (retrying would not help); entries whose
transaction fails stay pending and are claimed again after CLAIM_IDLE_S by any replica.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import psycopg
import redis.asyncio as aioredis
import redis.exceptions
from google.protobuf.message import DecodeError
from psycopg_pool import AsyncConnectionPool

from chatmesh.event_streams import GroupReader, keep_reading
from chatmesh.gen.chat.v1 import common_pb2
from chatmesh.redis_conn import Keys
from chatmesh.resilience import Backoff
from chatmesh.timestamps import to_datetime
from services.conversation import projection_store as sql
from services.conversation.projection_store import Key, Position, SeenMessage

log = logging.getLogger(__name__)

GROUP = "conversation-projection"
BATCH = 200
CLAIM_IDLE_S = 10.0
BATCH_WINDOW_S = 0.05  # the least time between reads while entries trickle in
PREVIEW_CHARS = 100
MESSAGE_EVENTS = ("chat:message_received", "chat:message_updated", "chat:message_deleted")
READ_EVENT = "chat:message_read"

Entry = tuple[bytes, dict[bytes, bytes]]


def _seen(event: common_pb2.Event) -> SeenMessage:
    m = event.message
    deleted = m.deleted or event.type == "chat:message_deleted"
    return SeenMessage(
        conversation_id=m.conversation_id or event.conversation_id,
        message_id=m.message_id,
        seq=m.seq,
        sender_id=m.sender_id,
        preview=None if deleted else m.content[:PREVIEW_CHARS],
        deleted=deleted,
        sent_at=to_datetime(m.created_at) if m.HasField("created_at") else None,
        edited_at=to_datetime(m.edited_at) if m.HasField("edited_at") else None,
    )


def relevant(event: common_pb2.Event) -> bool:
    if event.type in MESSAGE_EVENTS:
        return event.HasField("message") and event.message.seq > 0 and bool(event.message.message_id)
    return event.type == READ_EVENT and event.HasField("receipt") and event.receipt.seq > 0


@dataclass
class _Fold:
    """A batch reduced to what it changes: per conversation the first event at its highest seq (any
    event at a lower seq is overwritten by that one) and the edits/deletions at that seq, in stream
    order; per participant the highest read; and the senders' own messages."""

    last: dict[str, SeenMessage] = field(default_factory=dict)
    changed: dict[str, list[SeenMessage]] = field(default_factory=dict)
    reads: dict[Key, int] = field(default_factory=dict)
    own: set[Position] = field(default_factory=set)

    def add(self, event: common_pb2.Event) -> None:
        if event.type == READ_EVENT:
            r = event.receipt
            key = (r.conversation_id or event.conversation_id, r.user_id)
            self.reads[key] = max(self.reads.get(key, 0), r.seq)
            return
        seen = _seen(event)
        current = self.last.get(seen.conversation_id)
        if current is None or seen.seq > current.seq:
            self.last[seen.conversation_id] = seen
        if event.type == "chat:message_received":
            self.own.add((seen.conversation_id, seen.sender_id, seen.seq))
        else:
            self.changed.setdefault(seen.conversation_id, []).append(seen)

    def refreshes(self) -> list[SeenMessage]:
        """Edits and deletions of each conversation's newest message in the batch, in stream order
        within a conversation and conversations in lock order. Replaying the one that became the last
        message is a no-op, so it need not be told apart."""
        return [m for cid, seen in sorted(self.changed.items()) for m in seen if m.seq == self.last[cid].seq]


async def apply_batch(conn: psycopg.AsyncConnection, events: list[common_pb2.Event]) -> None:
    """Apply relevant events, in stream order, inside the caller's transaction.

    The end state is the one applying them one by one would leave: the last message only moves
    forward by seq (edits and deletions then refresh it), a read position only moves forward and
    drops the reader's own messages it covers, and a sender's own message past their read position
    is counted once. A sender takes part in the conversation from their first message on (their
    presence is shown to its participants), and a recipient's reply accepts a pending direct request.
    Conversations are changed before participants, as membership changes do.
    """
    fold = _Fold()
    for event in events:
        fold.add(event)
    senders = sorted({(c, u) for c, u, _ in fold.own})
    await sql.advance_last_messages(conn, list(fold.last.values()))
    await sql.refresh_last_messages(conn, fold.refreshes())
    await sql.accept_replied_requests(conn, senders)
    keys = sorted(set(fold.reads) | set(senders))
    read_seqs = await sql.lock_read_seqs(conn, keys)  # participants only
    await sql.mark_engaged(conn, [key for key in senders if key in read_seqs])
    reads = [(c, u, seq) for (c, u), seq in fold.reads.items() if (c, u) in read_seqs and seq > read_seqs[c, u]]
    read_to = {(c, u): seq for c, u, seq in reads}
    own = [
        (c, u, seq)
        for c, u, seq in sorted(fold.own)
        if (c, u) in read_seqs and seq > read_to.get((c, u), read_seqs[c, u])
    ]
    await sql.move_positions(conn, reads, own)


class Projection:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        redis_client: aioredis.Redis,
        keys: Keys,
        consumer: str,
        time_scale: float = 1.0,
    ) -> None:
        self._pool = pool
        self._redis = redis_client
        self._keys = keys
        self._consumer = consumer
        self._scale = time_scale
        self._reader = GroupReader(redis_client, keys, GROUP, consumer, start="0")
        self._last_claim = time.monotonic()
        self._next_read = 0.0

    async def run(self) -> None:
        """From the streams' start ("0"), so a new deployment catches up on the history they hold."""
        await keep_reading(
            "projection",
            self._round,
            logger=log,
            backoff=Backoff(max(0.1 * self._scale, 0.05), max(5.0 * self._scale, 0.5)),
            reader=self._reader,
            # PostgreSQL away (or a statement failing) leaves the batch pending, retried later.
            also_outages=(redis.exceptions.ConnectionError, psycopg.Error),
        )

    async def _round(self) -> None:
        if (wait := self._next_read - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        streams = await self._reader.with_legacy(self._keys.event_streams)
        reply = await self._reader.read(streams, count=BATCH, block_ms=max(int(1000 * self._scale), 10))
        read = sum(len(entries) for _, entries in reply)
        # After a short batch, let the next one gather for a moment: a batch costs about what one
        # event does, and the first event after a quiet spell is still applied at once.
        self._next_read = time.monotonic() + BATCH_WINDOW_S * self._scale if 0 < read < BATCH else 0.0
        if reply:
            await self.process(reply)
        if time.monotonic() - self._last_claim >= CLAIM_IDLE_S * self._scale / 2:
            self._last_claim = time.monotonic()
            for stream in streams:
                await self._claim_stale(stream)

    async def leave(self) -> None:
        """On a clean stop, drop this consumer from the group unless it still holds pending entries
        (deleting a consumer drops its pending list, and those entries would never be applied)."""
        try:
            async with asyncio.timeout(2):
                await self._leave()
        except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
            log.warning("projection consumer %s not removed: %r", self._consumer, exc)

    async def _leave(self) -> None:
        for stream in await self._reader.with_legacy(self._keys.event_streams):
            pending = await self._redis.xpending_range(
                stream, GROUP, min="-", max="+", count=1, consumername=self._consumer
            )
            if not pending:
                await self._redis.xgroup_delconsumer(stream, GROUP, self._consumer)

    async def process(self, batches: list[tuple[str, list[Entry]]]) -> None:
        """Apply what one read brought from every partition in one transaction (one per partition
        cost K times the commits under load); if that fails, entry by entry, leaving failures pending.
        A conversation's events are all in one partition, so its order holds."""
        work: list[tuple[str, bytes, common_pb2.Event]] = []
        done: dict[str, list[bytes]] = {stream: [] for stream, _ in batches}
        for stream, entries in batches:
            for entry_id, fields in entries:
                event = _parse(entry_id, fields)
                if event is not None and relevant(event):
                    work.append((stream, entry_id, event))
                else:
                    done[stream].append(entry_id)
        try:
            if work:
                async with self._pool.connection() as conn, conn.transaction():
                    await apply_batch(conn, [event for _, _, event in work])
                for stream, entry_id, _ in work:
                    done[stream].append(entry_id)
        except psycopg.Error as exc:
            log.warning("projection batch failed (%s); applying entry by entry", exc)
            for stream, entry_id, event in work:
                try:
                    async with self._pool.connection() as conn, conn.transaction():
                        await apply_batch(conn, [event])
                    done[stream].append(entry_id)
                except psycopg.Error as one:
                    log.warning("projection of %s failed: %s; it stays pending", entry_id.decode(), one)
        for stream, entry_ids in done.items():
            await self._reader.ack(stream, entry_ids)

    async def _claim_stale(self, stream: str) -> None:
        """Entries a dead replica (or a failed transaction) left pending for CLAIM_IDLE_S."""
        claimed = await self._reader.claim(stream, idle_ms=int(CLAIM_IDLE_S * 1000 * self._scale), count=BATCH)
        if claimed:
            await self.process([(stream, claimed)])


def _parse(entry_id: bytes, fields: dict[bytes, bytes]) -> common_pb2.Event | None:
    try:
        event: common_pb2.Event = common_pb2.Event.FromString(fields[b"e"])
        return event
    except (KeyError, DecodeError) as exc:
        log.error("projection skips unreadable entry %s: %s", entry_id.decode(), exc)
        return None
