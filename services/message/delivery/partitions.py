"""The fan-out worker of a message replica: it fans out the events partitions it leases.

The events are spread over K streams by conversation (chatmesh/redis_conn.py `partition_of`), each
fanned out by one replica at a time (services/message/delivery/leases.py: a lease per partition,
about K/N per replica). So adding message replicas adds fan-out capacity, while a conversation's
events still go through one worker, in order. Per round: give up the leases beyond the fair share
(between batches, never in the middle of one), take over each newly leased partition (finishing its
pending entries, in stream order, before anything new), then ONE XREADGROUP over every held
partition (chatmesh/event_streams.py) and one script call for what it brought from all of them
(`fan_out_together`: one round trip and one live batch per round, whatever K is).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import redis.asyncio as aioredis

from chatmesh.event_streams import GroupReader, keep_reading
from chatmesh.membership import MembershipCache
from chatmesh.redis_conn import Keys
from chatmesh.resilience import Backoff
from services.message.delivery.fanout import BACKOFF_S, BATCH, GROUP, LEASE_S, MIN_LEASE_S, Fanout, fan_out_together
from services.message.delivery.leases import PartitionLeases
from services.message.delivery.metrics import PARTITIONS_HELD

log = logging.getLogger(__name__)


class FanoutWorker:
    def __init__(
        self,
        redis_client: aioredis.Redis,
        keys: Keys,
        membership: MembershipCache,
        consumer: str,
        time_scale: float = 1.0,
    ) -> None:
        self._redis = redis_client
        self._keys = keys
        self._membership = membership
        self._consumer = consumer
        self._scale = time_scale
        self.leases = PartitionLeases(redis_client, keys, consumer, max(LEASE_S * time_scale, MIN_LEASE_S))
        self._reader = GroupReader(redis_client, keys, GROUP, consumer, start="0")
        self._lanes: dict[str, Fanout] = {}  # stream -> its fan-out, for every stream being read
        self._block_ms = max(int(self.leases.ttl_s * 1000 / 3), 10)
        self._last_retry_scan = 0.0

    @property
    def partitions(self) -> list[int]:
        """The partitions this worker is fanning out (read by the tests and the gauge)."""
        return sorted(p for p in range(self._keys.partitions) if self._keys.event_partition(p) in self._lanes)

    async def run(self) -> None:
        """Fan out the leased partitions until cancelled; on a clean stop give the leases up at once."""
        keeper = asyncio.create_task(self.leases.keep())
        try:
            await keep_reading(
                "fan-out",
                self._round,
                logger=log,
                backoff=Backoff(0.1, max(5.0 * self._scale, 0.5)),
                reader=self._reader,
                on_lost=self._lanes.clear,  # the streams were lost: take every partition over afresh
            )
        finally:
            keeper.cancel()
            PARTITIONS_HELD.set(0)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await asyncio.gather(keeper, return_exceptions=True)
                    await self.leases.leave()

    async def _round(self) -> None:
        await self._rebalance()
        if not self._lanes:
            await asyncio.sleep(self.leases.ttl_s / 3)
            return
        reply = dict(await self._reader.read(list(self._lanes), count=BATCH, block_ms=self._block_ms))
        batches = [
            lane.prepare(entries)
            for stream, lane in self._lanes.items()
            if (entries := reply.get(stream, [])) or lane.holding
        ]
        if batches:
            await fan_out_together(batches)  # every partition's batch in one script call
        if time.monotonic() - self._last_retry_scan >= BACKOFF_S * self._scale / 2:
            self._last_retry_scan = time.monotonic()
            for lane in list(self._lanes.values()):
                await lane.retry_pending()

    async def _rebalance(self) -> None:
        """Match the streams read to the leases: give up the surplus, drop what was lost, take over
        what was gained."""
        await self.leases.release(self.leases.surplus())
        wanted = [self._keys.event_partition(p) for p in sorted(self.leases.held)]
        if self.leases.legacy:
            wanted = await self._reader.with_legacy(wanted)
        for stream in [s for s in self._lanes if s not in wanted]:
            # Given up or lapsed: its next holder claims what is pending here, held entries included.
            del self._lanes[stream]
            log.info("fan-out of %s stopped on this replica", stream)
        for stream in wanted:
            if stream in self._lanes:
                continue
            lane = Fanout(self._redis, self._keys, self._membership, self._consumer, self._scale, stream=stream)
            await self._reader.ensure([stream])
            await lane.take_over()
            self._lanes[stream] = lane
            log.info("fan-out of %s started on this replica", stream)
        PARTITIONS_HELD.set(len(self.leases.held))
