"""Notifications to push workers: a Redis stream read through consumer groups, at least once.

`StreamNotifications` serves one worker (a consumer of a group). It streams first what this
consumer received before and did not acknowledge (a worker that reconnects under its name resumes),
then, as they come, new notifications and those another worker of the group left unacknowledged
past the claim timeout (it died, or hangs): so several workers share a group's notifications, and
none is lost when one is killed mid-stream. A worker has at most `max_in_flight` unacknowledged at
a time, so a slow one holds back only itself. An entry streamed MAX_DELIVERIES times without an
acknowledgement is dead-lettered (a notification that crashes every worker must not circle forever).

Each notification carries its user's devices as they are when it is streamed, so a device
registered or removed after the notification was recorded is honoured.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
import redis.exceptions
from psycopg_pool import AsyncConnectionPool

from chatmesh import errors
from chatmesh.gen.chat.v1 import notification_pb2 as pb
from chatmesh.redis_conn import Keys
from chatmesh.resilience import Backoff, OutageLog, is_outage
from services.message import devices, notify_store
from services.message.delivery.metrics import DEAD_LETTER

log = logging.getLogger(__name__)

DEFAULT_GROUP = "push"
DEFAULT_IN_FLIGHT = 100
MAX_IN_FLIGHT = 1000
MAX_IDS = 1000
MAX_DELIVERIES = 10
READ_BATCH = 100
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_ENTRY_ID = re.compile(r"\d{1,20}-\d{1,20}")

# Dead-letter one entry if it is still pending: copy it with its reason, then acknowledge it; one
# script, so an entry acknowledged meanwhile is not dead-lettered too.
_DEAD_LETTER = """
local rows = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
local payload = ''
if rows[1] then payload = rows[1][2][2] end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', 100000, '*', 'n', payload, 'entry', ARGV[2], 'group', ARGV[1],
           'reason', ARGV[3])
return 1
"""


def group_name(value: str) -> str:
    value = value or DEFAULT_GROUP
    if not _NAME.fullmatch(value):
        raise errors.invalid("INVALID_GROUP", "group must be 1 to 128 letters, digits or _ . : -")
    return value


def entry_ids(values: list[str]) -> list[str]:
    if len(values) > MAX_IDS:
        raise errors.invalid("TOO_MANY_IDS", f"at most {MAX_IDS} notification ids per call")
    for value in values:
        if not _ENTRY_ID.fullmatch(value):
            raise errors.invalid("INVALID_NOTIFICATION_ID", f"{value!r} is not a notification id")
    return values


class NotificationStreams:
    def __init__(
        self,
        redis_client: aioredis.Redis,
        keys: Keys,
        pool: AsyncConnectionPool,
        *,
        claim_s: float,
        time_scale: float = 1.0,
    ) -> None:
        self._redis = redis_client
        self._keys = keys
        self._pool = pool
        self._claim_ms = max(int(claim_s * 1000), 100)
        self._block_ms = max(min(1000, self._claim_ms // 4), 10)
        self._backoff_cap_s = max(5.0 * time_scale, 0.5)
        self._dead_letter = redis_client.register_script(_DEAD_LETTER)
        self._stopping = asyncio.Event()

    def end_streams(self) -> None:
        """On drain: every stream ends after what it already sent; workers reconnect to another replica
        under their names and get what they had not acknowledged."""
        self._stopping.set()

    async def ensure_group(self, group: str) -> None:
        """A new group starts at the stream's beginning: notifications recorded before any worker of
        it connected are delivered too."""
        try:
            await self._redis.xgroup_create(self._keys.notifications, group, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def stream(self, request: pb.StreamNotificationsRequest) -> AsyncIterator[list[pb.Notification]]:
        group = group_name(request.group)
        consumer = request.consumer or f"conn-{uuid.uuid4().hex}"
        if not _NAME.fullmatch(consumer):
            raise errors.invalid("INVALID_CONSUMER", "consumer must be 1 to 128 letters, digits or _ . : -")
        in_flight = request.max_in_flight or DEFAULT_IN_FLIGHT
        if not 1 <= in_flight <= MAX_IN_FLIGHT:
            raise errors.invalid("INVALID_MAX_IN_FLIGHT", f"max_in_flight must be 1 to {MAX_IN_FLIGHT}")
        outage = OutageLog(log, f"notification stream {group}/{consumer}")
        backoff = Backoff(0.1, self._backoff_cap_s)
        resume: str | None = "0"  # first this consumer's own unacknowledged notifications, after this id
        last_claim = 0.0
        grouped = False
        while not self._stopping.is_set():
            try:
                if not grouped:
                    await self.ensure_group(group)
                    grouped = True
                if resume is not None:
                    batch, resume = await self._read(group, consumer, resume, READ_BATCH, block=False)
                else:
                    room = in_flight - await self._pending_of(group, consumer)
                    batch = []
                    if room > 0 and time.monotonic() - last_claim >= self._claim_ms / 4000:
                        last_claim = time.monotonic()
                        batch = await self._claim(group, consumer, room)
                    if room > 0 and not batch:
                        batch, _ = await self._read(group, consumer, ">", min(room, READ_BATCH), block=True)
                    elif room <= 0:
                        await asyncio.sleep(self._block_ms / 1000)
                if batch:
                    yield await self._with_devices(batch)
                outage.recovered()
                backoff.reset()
            except errors.ChatError:
                raise
            except Exception as exc:
                if isinstance(exc, redis.exceptions.ResponseError) and str(exc).startswith("NOGROUP"):
                    grouped = False  # the stream was lost with Redis' data: the group is made again
                    continue
                if not is_outage(exc):
                    raise
                outage.failed(exc)
                resume = "0"  # whatever was read but not yet sent goes out again
                await backoff.sleep()

    async def _pending_of(self, group: str, consumer: str) -> int:
        summary = await self._redis.xpending(self._keys.notifications, group)
        for entry in summary.get("consumers") or []:
            if entry["name"].decode() == consumer:
                return int(entry["pending"])
        return 0

    async def _read(
        self, group: str, consumer: str, start: str, count: int, *, block: bool
    ) -> tuple[list[pb.Notification], str | None]:
        """New notifications (start ">"), or this consumer's pending ones after `start`; with the id to
        read its pending ones after next (None: no more of them)."""
        reply = await self._redis.xreadgroup(
            group, consumer, {self._keys.notifications: start}, count=count, block=self._block_ms if block else None
        )
        rows = [row for _, batch in reply or [] for row in batch]
        counts = await self._delivery_counts(group, consumer, rows) if start != ">" else {}
        after = rows[-1][0].decode() if rows and start != ">" else None
        return await self._parse(group, rows, counts, 1), after

    async def _claim(self, group: str, consumer: str, room: int) -> list[pb.Notification]:
        """Notifications other workers of the group left unacknowledged past the claim timeout."""
        pending = await self._redis.xpending_range(
            self._keys.notifications, group, min="-", max="+", count=min(room, READ_BATCH), idle=self._claim_ms
        )
        pending = [p for p in pending if p["consumer"].decode() != consumer]
        dead = [p["message_id"].decode() for p in pending if p["times_delivered"] >= MAX_DELIVERIES]
        for entry_id in dead:
            await self.dead_letter(group, [entry_id], f"not acknowledged after {MAX_DELIVERIES} deliveries")
        wanted = {p["message_id"]: p["times_delivered"] + 1 for p in pending if p["times_delivered"] < MAX_DELIVERIES}
        if not wanted:
            return []
        rows = await self._redis.xclaim(
            self._keys.notifications, group, consumer, min_idle_time=self._claim_ms, message_ids=list(wanted)
        )
        await self._forget_idle_consumers(group)
        return await self._parse(group, rows, wanted, 2)

    async def _forget_idle_consumers(self, group: str) -> None:
        """Workers that left nothing pending and were not seen for a long while: every connection
        without a name of its own is a consumer, and the group would keep them all."""
        for consumer in await self._redis.xinfo_consumers(self._keys.notifications, group):
            if consumer["pending"] == 0 and consumer["idle"] > max(self._claim_ms * 10, 3_600_000):
                await self._redis.xgroup_delconsumer(self._keys.notifications, group, consumer["name"])

    async def _parse(
        self, group: str, rows: list[tuple[bytes, dict[bytes, bytes]]], counts: dict[bytes, int], default_count: int
    ) -> list[pb.Notification]:
        """Entries as notifications with their ids and delivery counts; an unreadable one (not written
        by the notifier) is dead-lettered rather than left pending, where it would hold a slot."""
        notes = []
        for entry_id, fields in rows:
            if not fields:  # deleted from the stream (trimmed) while pending
                await self.ack(group, [entry_id.decode()])
                continue
            try:
                note = pb.Notification.FromString(fields.get(b"n", b""))
            except Exception:  # noqa: BLE001 - any garbage: not a notification
                await self.dead_letter(group, [entry_id.decode()], "not a notification")
                continue
            note.notification_id = entry_id.decode()
            note.delivery_count = counts.get(entry_id, default_count)
            notes.append(note)
        return notes

    async def _delivery_counts(
        self, group: str, consumer: str, rows: list[tuple[bytes, dict[bytes, bytes]]]
    ) -> dict[bytes, int]:
        if not rows:
            return {}
        pending = await self._redis.xpending_range(
            self._keys.notifications, group, min=rows[0][0], max=rows[-1][0], count=len(rows), consumername=consumer
        )
        return {p["message_id"]: int(p["times_delivered"]) for p in pending}

    async def _with_devices(self, batch: list[pb.Notification]) -> list[pb.Notification]:
        async with self._pool.connection() as conn:
            found = await notify_store.devices_of(conn, sorted({n.user_id for n in batch}))
        for note in batch:
            note.devices.extend(devices.to_proto(row) for row in found.get(note.user_id, []))
        return batch

    async def ack(self, group: str, ids: list[str]) -> int:
        group, ids = group_name(group), entry_ids(ids)
        return int(await self._redis.xack(self._keys.notifications, group, *ids)) if ids else 0

    async def dead_letter(self, group: str, ids: list[str], reason: str) -> int:
        group, ids = group_name(group), entry_ids(ids)
        moved = 0
        for entry_id in ids:
            if await self._dead_letter(
                keys=[self._keys.notifications, self._keys.notifications_dead],
                args=[group, entry_id, reason[:1000] or "given up"],
            ):
                moved += 1
                DEAD_LETTER.inc()
                log.error("notification %s of group %s dead-lettered: %s", entry_id, group, reason[:200])
        return moved
