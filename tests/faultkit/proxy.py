"""A TCP proxy between the edge and the message service that the suite can partition.

It runs its own event loop in a thread: the load's loop in the test process is busy parsing frames,
and a proxy waiting behind it would add latency that is the harness's, not the mesh's.

A partition is what a network split looks like to the edge: every open connection is reset, and new
ones are accepted by the kernel but never answered (blackholed: the client's HTTP/2 handshake hangs
until its own timeout), until `heal` closes them and forwarding resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any


class Proxy:
    def __init__(self, listen_port: int, upstream_port: int) -> None:
        self.listen_port = listen_port
        self.upstream_port = upstream_port
        self.partitioned = False
        self.connections = 0  # accepted and forwarded, over its life
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()  # both ends of every forwarded connection
        self._held: set[asyncio.StreamWriter] = set()  # blackholed while partitioned
        self._healed: asyncio.Event | None = None

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def start(self) -> None:
        self._thread.start()
        self._call(self._start())

    async def _start(self) -> None:
        self._healed = asyncio.Event()
        self._healed.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.listen_port)

    def partition(self) -> None:
        self._call(self._partition())

    def heal(self) -> None:
        self._call(self._heal())

    def stop(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self._call(self._stop())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    async def _partition(self) -> None:
        assert self._healed is not None
        self.partitioned = True
        self._healed.clear()
        for writer in list(self._open):
            writer.transport.abort()  # RST: the peer learns at once, as from a dropped route plus a reset
        self._open.clear()

    async def _heal(self) -> None:
        assert self._healed is not None
        self.partitioned = False
        self._healed.set()
        for writer in list(self._held):
            writer.transport.abort()  # the blackholed client retries and now gets through
        self._held.clear()

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in [*self._open, *self._held]:
            writer.transport.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._healed is not None
        if self.partitioned:
            self._held.add(writer)  # read nothing, answer nothing
            await self._healed.wait()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()  # the message service is down: the edge sees a refused connection
            return
        if self.partitioned:  # a partition began while connecting
            writer.transport.abort()
            up_writer.transport.abort()
            return
        self.connections += 1
        self._open.update((writer, up_writer))
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            for end in (writer, up_writer):
                self._open.discard(end)
                end.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (OSError, RuntimeError):
            writer.transport.abort()
        except asyncio.CancelledError:
            writer.transport.abort()
            raise
