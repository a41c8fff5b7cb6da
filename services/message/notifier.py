"""The notifier: push notifications for recipients who did not acknowledge a message in time.

Off the delivery path on purpose. Fan-out, the hub and the edge gain nothing: the notifier reads the
events streams (all K partitions, through chatmesh/event_streams.py) in a consumer group of its own
(`notify`), after fan-out or beside it, and its work
per message is one upsert of the conversation's row in `notify_due` (O(1), whatever the group's
size). The per-recipient work happens once per conversation and delay, in the background:

1. **Ingest** (`run_ingest`): each `chat:message_received` marks its conversation due at the
   message's time plus `CHAT_NOTIFY_DELAY_S`; the batch is acknowledged (XACK) only after the upsert
   commits, so a crash re-reads it (the upsert is idempotent). A replica that died leaves pending
   entries, which another claims after IDLE_S.
2. **Check** (`run_checks`): every replica claims due conversations with a lease (`FOR UPDATE SKIP
   LOCKED`, the due time moved forward), takes the participants and who muted the conversation from
   the membership cache (versioned: a mute bumps the membership version, so it counts at once), and
   compares each recipient's delivered position (what their devices acknowledged) and how far
   notifications already went with the messages that have waited the delay. A recipient with a
   message of someone else still unacknowledged gets one notification for it and every later one
   (a count, the latest message, the strongest reason: mention, reply, thread reply, message), so a
   burst is one notification; an online user whose device acknowledged gets nothing. One already
   notified within `CHAT_NOTIFY_COLLAPSE_S` waits for the window's end, and what came meanwhile
   collapses into that next notification. Muted recipients are passed over (their messages count as
   checked, so unmuting does not notify the past).
3. **Record**: notifications are appended to the Redis stream `<prefix>:notifications` (which
   `StreamNotifications` serves to push workers) before the recipients' marks commit; a crash in
   between records them again when the lease lapses: at least once, never lost.

A user with no live connection cannot acknowledge, so they are notified the delay after the
message; no presence lookup is needed, and a device that reconnects and acknowledges within the
delay is not disturbed.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import psycopg
import redis.asyncio as aioredis
from prometheus_client import Counter
from psycopg_pool import AsyncConnectionPool

from chatmesh.config import Settings
from chatmesh.errors import ChatError
from chatmesh.event_streams import Entry, GroupReader, keep_reading
from chatmesh.gen.chat.v1 import common_pb2
from chatmesh.gen.chat.v1 import notification_pb2 as pb
from chatmesh.membership import MembershipCache
from chatmesh.redis_conn import Keys
from chatmesh.resilience import Backoff, OutageLog, is_outage
from chatmesh.timestamps import timestamp
from services.message import notify_store, store
from services.message.notify_store import PendingMessage, RecipientMark

log = logging.getLogger(__name__)

GROUP = "notify"
READ_BATCH = 500
CHECK_BATCH = 50
LEASE_S = 30.0  # scaled: a replica that dies mid-check leaves its conversations to another this long
IDLE_S = 30.0  # scaled: events a dead replica read and never acknowledged are claimed after this
MAX_SCAN = 500  # messages read per conversation check: a count beyond it reads as MAX_SCAN
TEXT_CHARS = 200
NO_END = 2**62
STREAM_MAXLEN = 100_000

RECORDED = Counter("chat_notifications_recorded", "Push notifications recorded, by kind.", ["kind"])


@dataclass(frozen=True)
class NotifyPolicy:
    delay: timedelta
    collapse: timedelta
    include_text: bool
    time_scale: float

    @classmethod
    def of(cls, settings: Settings) -> NotifyPolicy:
        scale = settings.time_scale
        return cls(
            timedelta(seconds=settings.notify_delay_s * scale),
            timedelta(seconds=settings.notify_collapse_s * scale),
            settings.notify_include_text,
            scale,
        )


def _mentions(content: str, user_id: str) -> bool:
    return re.search(r"(?<!\S)@" + re.escape(user_id) + r"(?=$|[\s,.:;!?)])", content) is not None


def kind_of(message: PendingMessage, user_id: str, threads: dict[str, set[str]]) -> int:
    if not message.encrypted and _mentions(message.content, user_id):
        return pb.NOTIFICATION_KIND_MENTION
    if message.reply_to_sender == user_id:
        return pb.NOTIFICATION_KIND_REPLY
    if message.reply_to_id and user_id in threads.get(message.reply_to_id, ()):
        return pb.NOTIFICATION_KIND_THREAD_REPLY
    return pb.NOTIFICATION_KIND_MESSAGE


class Notifier:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        redis_client: aioredis.Redis,
        keys: Keys,
        membership: MembershipCache,
        policy: NotifyPolicy,
        consumer: str,
    ) -> None:
        self._pool = pool
        self._redis = redis_client
        self._keys = keys
        self._membership = membership
        self._policy = policy
        self._consumer = consumer
        scale = policy.time_scale
        self._lease_s = max(LEASE_S * scale, 1.0)
        self._idle_ms = int(max(IDLE_S * scale, 1.0) * 1000)
        self._poll_s = min(max(policy.delay.total_seconds() / 5, 0.05), 1.0)
        self._backoff_cap_s = max(5.0 * scale, 0.5)
        # "$": a new group skips what the streams held before the notifier existed.
        self._reader = GroupReader(redis_client, keys, GROUP, consumer, start="$")
        self._backlog = True  # first what this consumer read before and did not acknowledge
        self._last_claim = 0.0

    async def ensure_group(self) -> None:
        """From the streams' end on first creation: messages from before the notifier existed are not
        notified. Called at start, before the service answers, so no message of this run is missed."""
        await self._reader.ensure(self._keys.event_streams)

    # --- ingest ------------------------------------------------------------------------------------

    async def run_ingest(self) -> None:
        await keep_reading(
            "notifier: reading events",
            self._ingest_round,
            logger=log,
            backoff=Backoff(0.1, self._backoff_cap_s),
            on_outage=self._read_backlog,
            reader=self._reader,
        )

    def _read_backlog(self) -> None:
        self._backlog = True  # first what this consumer read before and did not acknowledge

    async def _ingest_round(self) -> None:
        streams = await self._reader.with_legacy(self._keys.event_streams)
        reply = await self._reader.read(streams, count=READ_BATCH, block_ms=1000, backlog=self._backlog)
        read = sum(len(entries) for _, entries in reply)
        if self._backlog and not read:
            self._backlog = False
        if read:
            await self.ingest(reply)
        if read and read < READ_BATCH and not self._backlog:
            # Caught up: read again in a while, not per commit. A notification waits the delay
            # anyway, and one read (and one statement) for a poll's worth of events costs the
            # send path far less than one per event under load; it makes a notification at
            # most a poll (a fifth of the delay) late.
            await asyncio.sleep(self._poll_s)
        if time.monotonic() - self._last_claim >= self._idle_ms / 2000:
            self._last_claim = time.monotonic()
            for stream in streams:
                claimed = await self._reader.claim(stream, idle_ms=self._idle_ms, count=READ_BATCH, others_only=True)
                if claimed:  # another replica read them and died before acknowledging
                    await self.ingest([(stream, claimed)])

    async def ingest(self, batches: list[tuple[str, list[Entry]]]) -> None:
        """Mark the batches' conversations due (one statement), then acknowledge them, per stream."""
        due: dict[str, tuple[int, datetime]] = {}
        for entry_id, fields in (entry for _, entries in batches for entry in entries):
            try:
                event = common_pb2.Event.FromString(fields.get(b"e", b""))
            except Exception:  # noqa: BLE001 - a poison payload is fan-out's to dead-letter; nothing to notify
                log.warning("notifier: entry %s is not an event; skipped", entry_id)
                continue
            if event.type != "chat:message_received" or not event.message.seq:
                continue
            sent = event.message.created_at.ToDatetime(tzinfo=UTC)
            seq, first = due.get(event.conversation_id, (0, sent))
            due[event.conversation_id] = (max(seq, event.message.seq), min(first, sent))
        if due:
            delay = self._policy.delay
            async with self._pool.connection() as conn:
                await notify_store.mark_due(
                    conn, list(due), [seq for seq, _ in due.values()], [sent + delay for _, sent in due.values()]
                )
        for stream, entries in batches:
            await self._reader.ack(stream, [entry_id for entry_id, _ in entries])

    # --- check -------------------------------------------------------------------------------------

    async def run_checks(self) -> None:
        outage = OutageLog(log, "notifier: checking due conversations")
        backoff = Backoff(0.1, self._backoff_cap_s)
        while True:
            try:
                checked = await self.check_due()
                outage.recovered()
                backoff.reset()
            except Exception as exc:
                if not (is_outage(exc) or _rpc_outage(exc)):
                    raise
                outage.failed(exc)  # the claimed conversations come back when their lease lapses
                await backoff.sleep()
                continue
            if checked < CHECK_BATCH:
                await asyncio.sleep(self._poll_s)

    async def check_due(self) -> int:
        now = datetime.now(UTC)
        async with self._pool.connection() as conn:
            claimed = await notify_store.claim_due(conn, now, CHECK_BATCH, self._lease_s)
        for conversation_id in claimed:
            await self.check(conversation_id, now)
        return len(claimed)

    async def check(self, conversation_id: str, now: datetime) -> None:
        """Notify the recipients of the conversation's messages that waited the delay unacknowledged."""
        try:
            membership = await self._membership.get(conversation_id)
            participants = sorted(membership.roles) if membership.active else []
            muted = set(membership.muted)
        except ChatError as exc:  # NOT_FOUND / INVALID_ARGUMENT: no such conversation, nobody to tell
            log.warning("notifier: conversation %s: %s", conversation_id, exc.code)
            participants, muted = [], set()
        async with self._pool.connection() as conn:
            through = await notify_store.checked_through(conn, conversation_id, now - self._policy.delay)
            marks = await notify_store.recipient_marks(conn, conversation_id, participants) if through else []
            notes, checked, wait_until = await self._decide(conn, conversation_id, now, through, marks, muted)
        if notes:
            async with self._redis.pipeline(transaction=False) as pipe:
                for note in notes:
                    pipe.xadd(
                        self._keys.notifications,
                        {b"n": note.SerializeToString()},
                        maxlen=STREAM_MAXLEN,
                        approximate=True,
                    )
                await pipe.execute()
            for note in notes:
                RECORDED.labels(pb.NotificationKind.Name(note.kind)).inc()
        async with self._pool.connection() as conn, conn.transaction():
            if checked:
                await notify_store.mark_notified(
                    conn,
                    conversation_id,
                    now,
                    [c[0] for c in checked],
                    [c[1] for c in checked],
                    [c[2] for c in checked],
                )
            await self._finish(conn, conversation_id, now, through, wait_until)

    async def _decide(
        self,
        conn: psycopg.AsyncConnection,
        conversation_id: str,
        now: datetime,
        through: int,
        marks: list[RecipientMark],
        muted: set[str],
    ) -> tuple[list[pb.Notification], list[tuple[str, int, bool]], datetime | None]:
        """(notifications; (user, seq, notified): the user's messages up to seq are checked; when a
        recipient still in their collapse window may be notified).

        A recipient is notified when a message of someone else up to `through` (it waited the delay)
        is past their delivered position; the notification then takes in every later message too, so
        a burst is one notification, not one for its first message and one for the rest."""
        unchecked = [m for m in marks if max(m.delivered_seq, m.notified_seq) < through]
        checked = [(m.user_id, through, False) for m in unchecked if m.user_id in muted]
        wait_until: datetime | None = None
        ready: list[RecipientMark] = []
        for mark in (m for m in unchecked if m.user_id not in muted):
            if mark.notified_at is not None and mark.notified_at + self._policy.collapse > now:
                window_end = mark.notified_at + self._policy.collapse
                wait_until = window_end if wait_until is None else min(wait_until, window_end)
            else:
                ready.append(mark)
        if not ready:
            return [], checked, wait_until
        low = min(max(m.delivered_seq, m.notified_seq) for m in ready)
        messages = await notify_store.messages_between(conn, conversation_id, low, NO_END, MAX_SCAN)
        latest = max([through, *(m.seq for m in messages)])
        roots = sorted({m.reply_to_id for m in messages if m.reply_to_id})
        threads = {root: set(await store.thread_participants(conn, root)) for root in roots}
        notes = []
        for mark in ready:
            seen = max(mark.delivered_seq, mark.notified_seq)
            theirs = [m for m in messages if m.seq > seen and m.sender_id != mark.user_id]
            if any(m.seq <= through for m in theirs):
                notes.append(self._notification(conversation_id, mark.user_id, theirs, threads))
                checked.append((mark.user_id, latest, True))
            else:  # only their own messages waited the delay: nothing to tell them up to `through`
                checked.append((mark.user_id, through, False))
        return notes, checked, wait_until

    def _notification(
        self, conversation_id: str, user_id: str, messages: list[PendingMessage], threads: dict[str, set[str]]
    ) -> pb.Notification:
        latest = messages[0]  # newest first
        text = latest.content[:TEXT_CHARS] if self._policy.include_text and not latest.encrypted else ""
        return pb.Notification(
            user_id=user_id,
            conversation_id=conversation_id,
            collapse_key=conversation_id,
            kind=max(kind_of(m, user_id, threads) for m in messages),  # type: ignore[arg-type]
            message_id=latest.message_id,
            sender_id=latest.sender_id,
            seq=latest.seq,
            message_count=len(messages),
            text=text,
            created_at=timestamp(latest.created_at),
        )

    async def _finish(
        self,
        conn: psycopg.AsyncConnection,
        conversation_id: str,
        now: datetime,
        through: int,
        wait_until: datetime | None,
    ) -> None:
        """Due again when the oldest message past `through` has waited the delay, or a recipient's
        collapse window ends; forgotten when neither (unless a message came in meanwhile)."""
        oldest = await notify_store.oldest_after(conn, conversation_id, through)
        candidates = [t for t in (oldest + self._policy.delay if oldest else None, wait_until) if t is not None]
        if candidates:
            await notify_store.reschedule(conn, conversation_id, min(candidates))
        elif not await notify_store.forget_due(conn, conversation_id, through):
            await notify_store.reschedule(conn, conversation_id, now + self._policy.delay)


def _rpc_outage(exc: BaseException) -> bool:
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
    )
