"""A long-lived bidirectional gRPC call that survives its upstream: the edge's one multiplexed stream
per service (message events, presence events).

When the call breaks (an upstream replica restarts), it reconnects with jittered exponential backoff
and first re-sends what `initial()` returns (every current subscription), then forwards requests as
they are sent. Reads and writes run concurrently: writes from a task with `call.write`, reads by
iterating the call (a request generator would race grpc's own close of it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

import grpc

from chatmesh.resilience import Backoff, OutageLog

log = logging.getLogger(__name__)

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")

BACKOFF_START_S = 0.1
BACKOFF_CAP_S = 5.0


class ResilientStream(Generic[RequestT, ResponseT]):
    def __init__(
        self,
        name: str,
        open_call: Callable[[], grpc.aio.StreamStreamCall[RequestT, ResponseT]],
        initial: Callable[[], Iterable[RequestT]],
        on_response: Callable[[ResponseT], None],
    ) -> None:
        self._name = name
        self._open_call = open_call
        self._initial = initial
        self._on_response = on_response
        self._requests: asyncio.Queue[RequestT] = asyncio.Queue()
        self.connected = asyncio.Event()
        self._outage = OutageLog(log, name)

    def send(self, request: RequestT) -> None:
        """Queue a request for the current call (a request lost with a broken call is re-sent by
        `initial()` on the next one, so callers update their state before sending)."""
        self._requests.put_nowait(request)

    async def run(self) -> None:
        backoff = Backoff(BACKOFF_START_S, BACKOFF_CAP_S)
        while True:
            call = self._open_call()
            writer = asyncio.create_task(self._write(call, backoff))
            # Its failure is the call's, reported by the read below: mark it retrieved.
            writer.add_done_callback(lambda task: task.cancelled() or task.exception())
            try:
                async for response in call:
                    self._on_response(response)
                log.info("%s ended (its upstream is draining); reconnecting", self._name)
            except grpc.aio.AioRpcError as exc:
                self._outage.failed(exc)
            finally:
                writer.cancel()
                self.connected.clear()
            await backoff.sleep()

    async def _write(self, call: grpc.aio.StreamStreamCall[RequestT, ResponseT], backoff: Backoff) -> None:
        self._requests = asyncio.Queue()
        for request in self._initial():
            self._requests.put_nowait(request)
        await call.wait_for_connection()
        self.connected.set()
        self._outage.recovered()
        backoff.reset()
        while True:
            await call.write(await self._requests.get())
