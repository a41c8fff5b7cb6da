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
import random
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

import grpc

log = logging.getLogger(__name__)

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")

BACKOFF_START_S = 0.1
BACKOFF_CAP_S = 5.0


class ResilientStream(Generic[RequestT, ResponseT]):
    def __init__(self, name: str, open_call: Callable[[], grpc.aio.StreamStreamCall],
                 initial: Callable[[], Iterable[RequestT]], on_response: Callable[[ResponseT], None]) -> None:
        self._name = name
        self._open_call = open_call
        self._initial = initial
        self._on_response = on_response
        self._requests: asyncio.Queue[RequestT] = asyncio.Queue()
        self.connected = asyncio.Event()

    def send(self, request: RequestT) -> None:
        """Queue a request for the current call (a request lost with a broken call is re-sent by
        `initial()` on the next one, so callers update their state before sending)."""
        self._requests.put_nowait(request)

    async def run(self) -> None:
        delay = BACKOFF_START_S
        while True:
            call = self._open_call()
            writer = asyncio.create_task(self._write(call))
            try:
                async for response in call:
                    delay = BACKOFF_START_S
                    self._on_response(response)
                log.warning("%s ended; reconnecting", self._name)
            except grpc.aio.AioRpcError as exc:
                log.warning("%s failed (%s); reconnecting", self._name, exc.code().name)
            finally:
                writer.cancel()
                self.connected.clear()
            await asyncio.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, BACKOFF_CAP_S)

    async def _write(self, call: grpc.aio.StreamStreamCall) -> None:
        self._requests = asyncio.Queue()
        for request in self._initial():
            self._requests.put_nowait(request)
        await call.wait_for_connection()
        self.connected.set()
        while True:
            await call.write(await self._requests.get())
