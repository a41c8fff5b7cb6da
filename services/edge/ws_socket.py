"""The socket interface ws.Connection is written against, and what /ws shares across an edge (wire.py
serves the sockets): the Endpoint the app's lifespan hands to the protocol, with its ping wheel."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

from websockets.datastructures import Headers
from websockets.extensions.base import ServerExtensionFactory
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

CLOSE_TIMEOUT_S = 10.0  # after our close frame, how long the peer has to answer before the TCP connection is dropped
PING_SLOTS = 16  # the ping wheel's slots: each ping interval is spread over this many ticks


class Pinged(Protocol):
    def keepalive(self) -> None: ...


class SocketClosed(Exception):
    """The socket closed (by the peer, by us, or the connection dropped); `code` as the peer would see it."""

    def __init__(self, code: int) -> None:
        super().__init__(f"WebSocket closed ({code})")
        self.code = code


class Socket(Protocol):
    """What ws.Connection needs of a socket (EdgeWebSocketProtocol is the one the edge serves)."""

    headers: Headers

    def write_text(self, text: str) -> bool: ...
    async def drained(self) -> None: ...
    async def receive_text(self) -> str: ...
    def close(self, code: int, reason: str = "", timeout_s: float = CLOSE_TIMEOUT_S) -> None: ...
    def authenticated(self) -> None: ...


class Pings:
    """One timer for the keepalive pings of every socket of an edge: each tick pings one slot's sockets
    and closes (1011) those that left their previous ping, one interval ago, unanswered."""

    def __init__(self) -> None:
        self.interval_s: float | None = None  # set by the protocol from uvicorn's config (it has it)
        self._slots: list[set[Pinged]] = [set() for _ in range(PING_SLOTS)]
        self._next_slot = 0
        self._tick = 0
        self._timer: asyncio.TimerHandle | None = None

    def configure(self, ping_interval_s: float | None) -> None:
        """uvicorn's ws_ping_interval (None or 0: no pings). Not scaled by CHAT_TIME_SCALE: clients (and
        tests) that stop reading for seconds are slow readers, for the slow-reader rules, not dead."""
        self.interval_s = ping_interval_s or None

    def add(self, sock: Pinged) -> None:
        if not self.interval_s:
            return
        self._slots[self._next_slot].add(sock)
        self._next_slot = (self._next_slot + 1) % PING_SLOTS
        if self._timer is None:
            self._schedule()

    def discard(self, sock: Pinged) -> None:
        for slot in self._slots:
            if sock in slot:
                slot.discard(sock)
                return

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule(self) -> None:
        assert self.interval_s
        self._timer = asyncio.get_running_loop().call_later(self.interval_s / PING_SLOTS, self._ping_slot)

    def _ping_slot(self) -> None:
        slot, self._tick = self._slots[self._tick], (self._tick + 1) % PING_SLOTS
        for sock in list(slot):
            sock.keepalive()
        if any(self._slots):
            self._schedule()
        else:
            self._timer = None


class Endpoint:
    """What /ws needs from the app, made once per edge in its lifespan: the origin rule, compression,
    the ping wheel and the coroutine that serves an accepted socket."""

    def __init__(
        self,
        serve: Callable[[Socket], Coroutine[Any, Any, None]],
        origin_allowed: Callable[[str | None, str | None], bool],
        compression: bool,
    ) -> None:
        self.serve = serve
        self.origin_allowed = origin_allowed
        self.pings = Pings()
        self.extensions: Sequence[ServerExtensionFactory] = (
            [
                ServerPerMessageDeflateFactory(
                    server_max_window_bits=12, client_max_window_bits=12, compress_settings={"memLevel": 5}
                )
            ]
            if compression
            else []
        )
