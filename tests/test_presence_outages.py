"""Presence through a Redis outage, in process on a redis-server of the test's own (stopped, started
again, SIGSTOPped): calls fail at once with an error chatmesh.resilience.is_outage recognizes (the
server answers those UNAVAILABLE), the background loops log the outage once and the recovery once
instead of a traceback per tick, and the pub/sub subscription comes back by itself."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from chatmesh.gen.chat.v1 import common_pb2, conversation_pb2_grpc, presence_pb2
from chatmesh.membership import MembershipCache
from chatmesh.redis_conn import open_pubsub_redis, open_redis
from chatmesh.resilience import is_outage, spawn_supervised
from chatmesh_tools.embedded import EmbeddedRedis, free_port
from services.presence.hub import EventHub
from services.presence.keys import PresenceKeys
from services.presence.presence import Contacts, Presence
from services.presence.store import PresenceStore

TTL_S = 1.5  # 30 s scaled by 0.05
COMMAND_TIMEOUT_S = 0.5  # services use chatmesh.redis_conn's 3 s; shorter here to keep the test quick


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis", free_port())
    server.start()
    yield server
    if server._process is not None and server._process.poll() is None:
        os.kill(server._process.pid, signal.SIGCONT)
    server.stop()


class Replica:
    """What services/presence/__main__.py builds, minus the gRPC server: a store on a client with
    command timeouts, the hub on a pub/sub client of its own, and the supervised sweeper. Nothing
    here changes a user's status, so the conversation service (a port nobody listens on) is never
    asked for contacts."""

    def __init__(self, url: str) -> None:
        self.redis = open_redis(url, timeout_s=COMMAND_TIMEOUT_S)
        self.pubsub = open_pubsub_redis(url)
        keys = PresenceKeys("outage")
        self.store = PresenceStore(self.redis, keys, TTL_S, 0.15)
        self.hub = EventHub(self.redis, self.pubsub, keys)
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}")
        stub = conversation_pb2_grpc.ConversationServiceStub(self.channel)
        self.presence = Presence(
            self.store,
            self.hub,
            Contacts(stub, None),
            MembershipCache(stub, None),  # type: ignore[arg-type]
            TTL_S,
            0.05,
        )

    async def start(self) -> None:
        await self.hub.start()
        self.sweeper = spawn_supervised("presence sweep", self.presence.sweep_forever)

    async def stop(self) -> None:
        self.sweeper.cancel()
        await asyncio.wait([self.sweeper])
        await self.hub.stop()
        await self.channel.close()
        await self.pubsub.aclose()
        await self.redis.aclose()


@pytest.fixture
async def replica(own_redis: EmbeddedRedis) -> AsyncIterator[Replica]:
    running = Replica(own_redis.url)
    await running.start()
    yield running
    await running.stop()


async def edge_stream(hub: EventHub, user_id: str, received: asyncio.Queue[str]) -> None:
    """An edge's StreamPresenceEvents as the hub sees it: subscribe one user, then stay open."""

    async def requests() -> AsyncIterator[presence_pb2.StreamPresenceEventsRequest]:
        yield presence_pb2.StreamPresenceEventsRequest(subscribe_user_id=user_id)
        await asyncio.Event().wait()

    async for response in hub.stream(requests()):
        for batch in response.batches:
            for event in batch.events:
                received.put_nowait(event.presence.user_id)


async def delivered(hub: EventHub, to: str, received: asyncio.Queue[str], timeout: float = 5) -> None:
    """Publish an event for `to` until one reaches its stream (a subscription may still be coming back)."""
    event = common_pb2.Event(type="user:status_changed", presence=common_pb2.PresenceEvent(user_id="probe"))
    async with asyncio.timeout(timeout):
        while True:
            try:
                await hub.publish([to], event)
                await asyncio.wait_for(received.get(), 0.2)
                return
            except (TimeoutError, OSError) as exc:
                if not isinstance(exc, TimeoutError) and not is_outage(exc):
                    raise


def presence_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == level and r.name.startswith(("services.presence", "chatmesh.resilience"))
    ]


async def test_redis_down_then_stalled_fails_calls_fast_and_logs_each_outage_once(
    own_redis: EmbeddedRedis, replica: Replica, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    received: asyncio.Queue[str] = asyncio.Queue()
    stream = asyncio.create_task(edge_stream(replica.hub, "bob", received))
    await delivered(replica.hub, "bob", received)
    alice = [presence_pb2.Connection(user_id="alice", connection_id="tab")]

    # Down: refused connections. An RPC's work fails at once, with an outage error.
    own_redis.stop()
    started = time.monotonic()
    with pytest.raises(Exception) as refused:
        await replica.presence.report("edge-1", alice)
    assert is_outage(refused.value), repr(refused.value)
    assert time.monotonic() - started < 1
    await asyncio.sleep(1.5)  # some 30 sweeper ticks, and pub/sub retries
    warnings = presence_lines(caplog, logging.WARNING)
    assert len(warnings) == 2, warnings  # the sweep's and the subscription's, once each
    assert any(w.startswith("presence sweep: Redis") for w in warnings)
    assert any(w.startswith("presence pub/sub: Redis") for w in warnings)

    # Back (with its data, as after a restart): both loops say so once, events flow again.
    own_redis.start()
    await delivered(replica.hub, "bob", received)
    async with asyncio.timeout(5):
        while len(presence_lines(caplog, logging.INFO)) < 2:
            await asyncio.sleep(0.05)
    assert all("recovered after" in line for line in presence_lines(caplog, logging.INFO))
    assert not (await replica.store.read(["alice"]))[0].online

    # Stalled: connections accepted, nothing answered. A call fails within the command timeout
    # (twice it: one quick retry on a fresh connection) instead of hanging the RPC.
    assert own_redis._process is not None
    os.kill(own_redis._process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(Exception) as stalled:
            await replica.presence.report("edge-1", alice)
        assert is_outage(stalled.value), repr(stalled.value)
        assert time.monotonic() - started < 3 * COMMAND_TIMEOUT_S + 0.5
    finally:
        os.kill(own_redis._process.pid, signal.SIGCONT)
    # The idle subscription outlived the stall: nothing to resubscribe, and an event gets through.
    await delivered(replica.hub, "bob", received)
    assert not any(w.startswith("presence pub/sub") for w in presence_lines(caplog, logging.WARNING)[2:])
    # No traceback anywhere: an outage is not a bug.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []

    stream.cancel()
    await asyncio.wait([stream])
