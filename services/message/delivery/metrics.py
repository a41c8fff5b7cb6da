"""The events streams' series (the message service samples and reports them): entries fan-out has
read but not acknowledged and the streams' lengths, per partition stream (sum them for the mesh), the
events moved to the dead-letter stream, and this replica's share of the fan-out work."""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
import redis.exceptions
from prometheus_client import Counter, Gauge

from chatmesh.redis_conn import Keys

log = logging.getLogger(__name__)

STREAM_PENDING = Gauge(
    "chat_stream_pending", "Entries delivered to a consumer group but not acknowledged.", ["stream", "group"]
)
STREAM_LENGTH = Gauge(
    "chat_stream_length", "Entries in a Redis stream (the events and dead-letter streams).", ["stream"]
)
DEAD_LETTER = Counter("chat_dead_letter", "Events moved to the dead-letter stream after their retries.")
FANNED_OUT = Counter(
    "chat_fanout_events", "Events this replica fanned out (its share of the work: compare it across replicas)."
)
PARTITIONS_HELD = Gauge("chat_fanout_partitions_held", "Events partitions whose fan-out lease this replica holds.")


class StreamSampler:
    """Samples each events partition's pending count for a group and the streams' lengths every few
    seconds (gauges are cheap to read, so sampling beats hooks in the hot path). Every replica reports
    the same, mesh-wide numbers. The legacy stream is sampled while an upgrade has left it."""

    def __init__(self, redis_client: aioredis.Redis, keys: Keys, group: str, interval_s: float = 5.0) -> None:
        self._redis = redis_client
        self._keys = keys
        self._group = group
        self._interval_s = interval_s

    async def sample(self) -> None:
        streams = self._keys.event_streams
        if await self._redis.exists(self._keys.legacy_events):
            streams = [*streams, self._keys.legacy_events]
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xpending(stream, self._group)
            for stream in [*streams, self._keys.dead_letter]:
                pipe.xlen(stream)
            replies = await pipe.execute(raise_on_error=False)
        for stream, summary in zip(streams, replies, strict=False):
            # An error: the group does not exist yet.
            STREAM_PENDING.labels(stream, self._group).set(0 if isinstance(summary, Exception) else summary["pending"])
        for stream, length in zip([*streams, self._keys.dead_letter], replies[len(streams) :], strict=True):
            STREAM_LENGTH.labels(stream).set(0 if isinstance(length, Exception) else length)

    async def run(self) -> None:
        while True:
            try:
                await self.sample()
            except (redis.exceptions.RedisError, OSError) as exc:
                log.debug("stream sampler: %s", exc)
            await asyncio.sleep(self._interval_s)
