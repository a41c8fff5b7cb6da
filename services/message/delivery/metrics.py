"""The events stream's series (the message service samples and reports them): entries fan-out has
read but not acknowledged, the streams' lengths, and the events moved to the dead-letter stream."""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
import redis.exceptions
from prometheus_client import Counter, Gauge

log = logging.getLogger(__name__)

STREAM_PENDING = Gauge(
    "chat_stream_pending", "Entries delivered to a consumer group but not acknowledged.", ["stream", "group"]
)
STREAM_LENGTH = Gauge(
    "chat_stream_length", "Entries in a Redis stream (the events and dead-letter streams).", ["stream"]
)
DEAD_LETTER = Counter("chat_dead_letter", "Events moved to the dead-letter stream after their retries.")


class StreamSampler:
    """Samples the events stream's pending count for a group and the streams' lengths every few
    seconds (gauges are cheap to read, so sampling beats hooks in the hot path)."""

    def __init__(
        self, redis_client: aioredis.Redis, stream: str, group: str, dead_stream: str, interval_s: float = 5.0
    ) -> None:
        self._redis = redis_client
        self._stream = stream
        self._group = group
        self._dead = dead_stream
        self._interval_s = interval_s

    async def sample(self) -> None:
        try:
            summary = await self._redis.xpending(self._stream, self._group)
            STREAM_PENDING.labels(self._stream, self._group).set(int(summary["pending"]))
        except redis.exceptions.ResponseError:  # the group does not exist yet
            STREAM_PENDING.labels(self._stream, self._group).set(0)
        for stream in (self._stream, self._dead):
            STREAM_LENGTH.labels(stream).set(await self._redis.xlen(stream))

    async def run(self) -> None:
        while True:
            try:
                await self.sample()
            except (redis.exceptions.RedisError, OSError) as exc:
                log.debug("stream sampler: %s", exc)
            await asyncio.sleep(self._interval_s)
