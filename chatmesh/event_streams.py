"""One consumer-group reader over the events streams, for every service that follows them.

Durable events go to K partition streams (`Keys.event_partition`, a conversation always to the same
one). Three consumer groups follow them: fan-out ("fanout", message service: only the partitions its
replica leases), the conversation projection and the push notifier (every partition). Each used to
carry its own copy of the same plumbing; this is the one copy:

- **the group** is made on a stream the first time it is read (`BUSYGROUP` is fine), at the reader's
  `start` id ("0": the stream's history too; "$": only what comes next) — except on a stream that
  does not exist yet, which starts at "0" (whatever a writer adds before the first read is new);
- **Redis lost its data** (`NOGROUP`, or a read `UNBLOCKED` because its stream was deleted): every
  group is forgotten and made again, at "0" whatever `start` was (everything in a new stream is new),
  and the caller hears it as `GroupLost` (fan-out takes its partitions over again);
- **one XREADGROUP** reads every stream the caller names, new entries (">") or, with `backlog`, what
  this consumer read before and did not acknowledge ("0");
- **pending entries** idle past a time are claimed (`claim`): those of dead consumers, or failures
  to retry; entries trimmed from the stream while pending come back empty and are acknowledged;
- **outages** (`keep_reading`): retried with jittered backoff, logged once per outage;
- **the legacy stream**: the single `<prefix>:events` of releases before partitioning. While it
  exists (an upgrade left entries in it) `with_legacy` adds it to the streams read, so its entries
  are still applied; its group is never made with MKSTREAM, so a drained stream an operator deleted
  stays deleted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import NoReturn

import redis.asyncio as aioredis
import redis.exceptions

from chatmesh.redis_conn import Keys
from chatmesh.resilience import Backoff, OutageLog, is_outage

log = logging.getLogger(__name__)

Entry = tuple[bytes, dict[bytes, bytes]]
LEGACY_CHECK_S = 5.0  # how often a reader looks whether the legacy stream (still) exists


class GroupLost(Exception):
    """The streams' groups were lost with Redis' data; they are made again on the next read."""


def _group_lost(exc: redis.exceptions.ResponseError) -> bool:
    return str(exc).startswith(("NOGROUP", "UNBLOCKED"))


class GroupReader:
    """A consumer of one group over a set of events streams (see the module's docstring)."""

    def __init__(
        self, redis_client: aioredis.Redis, keys: Keys, group: str, consumer: str, *, start: str = "0"
    ) -> None:
        self.redis = redis_client
        self.keys = keys
        self.group = group
        self.consumer = consumer
        self._start = start
        self._grouped: set[str] = set()
        self._legacy = False
        self._legacy_checked = -LEGACY_CHECK_S

    async def ensure(self, streams: Iterable[str]) -> None:
        """Make the group on every stream that has not got it yet (from this reader's point of view)."""
        for stream in streams:
            if stream in self._grouped:
                continue
            legacy = stream == self.keys.legacy_events
            start = self._start if await self.redis.exists(stream) else "0"
            try:
                await self.redis.xgroup_create(stream, self.group, id=start, mkstream=not legacy)
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    if legacy and "requires the key to exist" in str(exc):
                        self._legacy = False  # deleted meanwhile: nothing left to read there
                        continue
                    raise
            self._grouped.add(stream)

    def lost(self) -> None:
        """Forget every group (Redis lost them): they are made again, from "0", on the next read."""
        self._grouped.clear()
        self._start = "0"
        self._legacy_checked = -LEGACY_CHECK_S

    async def with_legacy(self, streams: Sequence[str]) -> list[str]:
        """`streams`, and the legacy stream while it exists (looked at every LEGACY_CHECK_S)."""
        now = time.monotonic()
        if now - self._legacy_checked >= LEGACY_CHECK_S:
            self._legacy_checked = now
            self._legacy = bool(await self.redis.exists(self.keys.legacy_events))
            if not self._legacy:
                self._grouped.discard(self.keys.legacy_events)
        return [*streams, self.keys.legacy_events] if self._legacy else list(streams)

    async def read(
        self, streams: Sequence[str], *, count: int, block_ms: int | None = None, backlog: bool = False
    ) -> list[tuple[str, list[Entry]]]:
        """One XREADGROUP over `streams`: (stream, entries) for each stream that had any. Raises
        `GroupLost` when Redis lost the groups (after forgetting them)."""
        if not streams:
            return []
        await self.ensure(streams)
        if self.keys.legacy_events in streams and self.keys.legacy_events not in self._grouped:
            streams = [s for s in streams if s != self.keys.legacy_events]  # it was deleted meanwhile
        try:
            reply = await self.redis.xreadgroup(
                self.group,
                self.consumer,
                {stream: "0" if backlog else ">" for stream in streams},
                count=count,
                block=None if backlog else block_ms,
            )
        except redis.exceptions.ResponseError as exc:
            if _group_lost(exc):
                self.lost()
                raise GroupLost(str(exc)) from exc
            raise
        return [(name.decode(), entries) for name, entries in reply or [] if entries]

    async def ack(self, stream: str, entry_ids: Sequence[bytes | str]) -> None:
        if entry_ids:
            await self.redis.xack(stream, self.group, *entry_ids)

    async def claim(
        self, stream: str, *, idle_ms: int, count: int, others_only: bool = False, exclude: Iterable[bytes] = ()
    ) -> list[Entry]:
        """Claim the stream's entries pending for at least `idle_ms` (only other consumers' with
        `others_only`, never those in `exclude`), in stream order. Entries trimmed from the stream
        while pending are acknowledged: there is nothing left of them to apply."""
        pending = await self.redis.xpending_range(stream, self.group, min="-", max="+", count=count, idle=idle_ms)
        skip = set(exclude)
        ids = [
            p["message_id"]
            for p in pending
            if p["message_id"] not in skip and not (others_only and p["consumer"].decode() == self.consumer)
        ]
        if not ids:
            return []
        claimed = await self.redis.xclaim(stream, self.group, self.consumer, min_idle_time=idle_ms, message_ids=ids)
        trimmed = [entry_id for entry_id, fields in claimed if not fields]
        await self.ack(stream, trimmed)
        return [(entry_id, fields) for entry_id, fields in claimed if fields]


async def keep_reading(
    what: str,
    step: Callable[[], Awaitable[object]],
    *,
    logger: logging.Logger,
    backoff: Backoff,
    reader: GroupReader | None = None,
    on_lost: Callable[[], None] | None = None,
    on_outage: Callable[[], None] | None = None,
    also_outages: tuple[type[BaseException], ...] = (),
) -> NoReturn:
    """Run a reader's `step` forever: after a lost group go on at once (`reader` forgets its groups,
    then `on_lost`); on an outage (or one of `also_outages`) log once, call `on_outage` and back off
    with jitter; a bug raises (the loop's supervisor logs and restarts it).

    A group is lost wherever the step finds it gone, not only in its read: a claim or a pending scan
    right after Redis lost its data answers NOGROUP too, and must make the group again, not fail the
    loop (whose restarts back off for seconds while nothing is fanned out: the redis-emptied fault)."""
    outage = OutageLog(logger, what)
    while True:
        try:
            await step()
        except Exception as exc:
            if isinstance(exc, GroupLost) or (isinstance(exc, redis.exceptions.ResponseError) and _group_lost(exc)):
                if reader is not None:
                    reader.lost()
                if on_lost is not None:
                    on_lost()
                continue
            if not (is_outage(exc) or isinstance(exc, also_outages)):
                raise
            outage.failed(exc)
            if on_outage is not None:
                on_outage()
            await backoff.sleep()
            continue
        outage.recovered()
        backoff.reset()
        await asyncio.sleep(0)  # a step that returns at once must not starve the loop
