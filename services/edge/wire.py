"""/ws below ASGI: uvicorn's `ws=` class, driving the `websockets` library's sans-I/O ServerProtocol itself.

Why not uvicorn's own WebSocket protocol: every frame went through an ASGI message dict, a send
coroutine and Starlette's WebSocket (~16% of the edge's CPU), and each idle socket held an
asyncio.Queue, an Event, two timer handles, an ASGI scope (a copy of its headers and of the app's
state), the middleware's frames and two tasks (~36 KB). Here uvicorn still parses the request head
(with the edge's head limits and timeout, protocols.py) and hands over the transport; this class
answers the handshake (origin check, websockets' own 4xx for a bad upgrade, the edge's error body for
a head the WebSocket parser refuses), then writes frames straight to the transport.

Per socket: the parser, a reference to the request headers until the socket has authenticated, and
at most one pending read. An idle socket has no timer of its own: one ping wheel per edge (Pings)
pings every socket once per ping interval and closes with 1011 a socket that left the previous ping
unanswered (not one with frames waiting to go out: the slow-reader rules, 4008, own those).
Compression (permessage-deflate) is off unless CHAT_WS_COMPRESSION is set: its zlib contexts cost
tens of KB per socket, and most frames are small JSON.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, cast

from uvicorn.config import Config
from uvicorn.server import ServerState
from websockets.datastructures import Headers
from websockets.exceptions import HeaderLineTooLong, RequestLineTooLong, TooManyHeaders
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from services.edge.protocols import Refusal, error_bytes
from services.edge.ws_socket import CLOSE_TIMEOUT_S, Endpoint, SocketClosed

log = logging.getLogger(__name__)
_frames_log = logging.getLogger(f"{__name__}.frames")  # websockets' own per-connection chatter ("connection open")
_frames_log.setLevel(logging.WARNING)

WS_PATH = "/ws"
ENDPOINT_KEY = "edge_ws_endpoint"  # where the app's lifespan state carries the Endpoint to this protocol
CLOSE_SERVICE_RESTART = 1012
_PING_PAYLOAD = b"edge"


def _refusal_of(failed: Exception) -> Refusal:
    if isinstance(failed, RequestLineTooLong):
        return 414, "URI_TOO_LONG", str(failed)
    if isinstance(failed, (HeaderLineTooLong, TooManyHeaders)):
        return 431, "HEADERS_TOO_LARGE", str(failed)
    return 400, "BAD_HANDSHAKE", f"not a valid WebSocket handshake: {failed.__cause__ or failed}"


class EdgeWebSocketProtocol(asyncio.Protocol):
    """One upgraded connection: the handshake, then the socket interface ws.Connection uses
    (`headers`, `write_text`, `drained`, `receive_text`, `close`)."""

    __slots__ = (
        "_server_state",
        "_endpoint",
        "_max_size",
        "_conn",
        "_transport",
        "headers",
        "_inbox",
        "_waiter",
        "_drain",
        "_fragments",
        "_closed_code",
        "_close_timer",
        "_read_paused",
        "_ping_unanswered",
    )

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._server_state = server_state
        self._endpoint: Endpoint | None = app_state.get(ENDPOINT_KEY)
        if self._endpoint is not None:
            self._endpoint.pings.configure(config.ws_ping_interval)
        self._conn = ServerProtocol(
            extensions=self._endpoint.extensions if self._endpoint else None,
            max_size=config.ws_max_size,
            logger=_frames_log,
        )
        self._max_size: int | None = config.ws_max_size
        self._transport: asyncio.Transport | None = None
        self.headers: Headers = Headers()  # the upgrade request's, until ws.Connection has authenticated
        self._inbox: deque[str] | None = None  # frames received and not yet read (reading is paused meanwhile)
        self._waiter: asyncio.Future[str] | None = None  # a pending receive_text
        self._drain: asyncio.Future[None] | None = None  # a pending drained() while the transport is full
        self._fragments: bytearray | None = None
        self._closed_code: int | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._read_paused = False
        self._ping_unanswered = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._server_state.connections.add(self)  # type: ignore[arg-type]  # uvicorn shuts it down with the rest

    def connection_lost(self, exc: Exception | None) -> None:
        self._server_state.connections.discard(self)
        if self._endpoint is not None:
            self._endpoint.pings.discard(self)
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        rcvd = self._conn.close_rcvd
        self._closed(rcvd.code if rcvd is not None else 1006)
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)  # asyncio never resumes writing on a lost transport

    def pause_writing(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._drain = None

    def data_received(self, data: bytes) -> None:
        conn = self._conn
        conn.receive_data(data)
        if conn.state is State.CONNECTING:
            if conn.handshake_exc is not None:  # websockets refused the head (a line too long, not a GET...)
                conn.data_to_send()  # its plain-text answer, unsent: ours replaces it
                self._refuse(_refusal_of(conn.handshake_exc))
                return
        for event in conn.events_received():
            if isinstance(event, Request):
                self._handshake(event)
            elif isinstance(event, Frame):
                self._frame(event)
        if conn.parser_exc is not None:  # a frame over the hard cap (1009), bad UTF-8, a protocol error
            self._flush()
            self._closed(conn.close_sent.code if conn.close_sent else 1006)
            self._transport_close()
            return
        self._flush()

    def eof_received(self) -> bool | None:
        self._conn.receive_eof()
        self._flush()
        return None  # the transport closes itself

    # uvicorn's shutdown: every open socket is closed with 1012 (service restart); clients reconnect elsewhere.

    def shutdown(self) -> None:
        if self._conn.state is State.OPEN:
            self._conn.send_close(CLOSE_SERVICE_RESTART)
            self._flush()
            self._closed(CLOSE_SERVICE_RESTART)
        self._transport_close()

    # the socket interface

    def write_text(self, text: str) -> bool:
        """Write one text frame; False when the transport is over its high-water mark (await drained()).
        A socket already closing drops it: the reader learns of the close and durable events are redelivered."""
        if self._conn.state is State.OPEN:
            self._conn.send_text(text.encode())
            self._flush()
        return self._drain is None

    async def drained(self) -> None:
        if self._drain is not None:
            await asyncio.shield(self._drain)

    async def receive_text(self) -> str:
        """The next frame (binary ones decoded as UTF-8 with replacement); SocketClosed once closed."""
        if self._inbox:
            text = self._inbox.popleft()
            if not self._inbox:
                self._inbox = None
                self._resume_reading()
            return text
        if self._closed_code is not None:
            raise SocketClosed(self._closed_code)
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            return await self._waiter
        finally:
            self._waiter = None

    def close(self, code: int, reason: str = "", timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Send a close frame (behind whatever is still buffered); the peer has `timeout_s` to answer before
        the connection is dropped. A pending or later receive_text raises SocketClosed(code) at once."""
        if self._conn.state is State.OPEN:
            self._conn.send_close(code, reason)
            self._flush()
            self._resume_reading()  # to read the peer's answer
            self._close_timer = asyncio.get_running_loop().call_later(timeout_s, self._transport_abort)
        self._closed(code)

    def authenticated(self) -> None:
        """The request headers are no longer needed: an idle socket keeps no copy of them."""
        self.headers = _NO_HEADERS

    def keepalive(self) -> None:
        """The ping wheel's turn for this socket: close it if the previous ping went unanswered, else ping."""
        transport = self._transport
        if self._conn.state is not State.OPEN or transport is None:
            return
        if self._read_paused or transport.get_write_buffer_size():
            # Not the peer's fault, or not this rule's: the edge is not reading it (its frames wait, so its
            # pong could not be seen), or frames wait to go out to it (a slow reader: 4008 is for that).
            return
        if self._ping_unanswered:
            interval = self._endpoint.pings.interval_s if self._endpoint else None
            log.info("closing a WebSocket that did not answer a ping within %s s", interval)
            self._conn.fail(1011, "keepalive ping timeout")
            self._flush()
            self._closed(1011)
            self._transport_close()
            return
        self._ping_unanswered = True
        self._conn.send_ping(_PING_PAYLOAD)
        self._flush()

    # internals

    def _handshake(self, request: Request) -> None:
        endpoint = self._endpoint
        path = request.path.partition("?")[0]
        if path != WS_PATH:
            self._refuse((404, "NOT_FOUND", f"no WebSocket endpoint at {path}; it is {WS_PATH}"))
            return
        if endpoint is None:  # the app has not started (or is not the edge's)
            self._refuse((503, "UNAVAILABLE", "the edge is starting"))
            return
        origin = request.headers.get("Origin")
        if not endpoint.origin_allowed(origin, request.headers.get("Host")):
            log.info("WebSocket from origin %r refused", origin)
            self._refuse((403, "ORIGIN_NOT_ALLOWED", f"WebSockets from origin {origin!r} are not allowed"))
            return
        response = self._conn.accept(request)
        response.headers.pop("Server", None)  # no library versions on the wire
        self._conn.send_response(response)
        if response.status_code != 101:  # websockets' own 4xx for a bad upgrade (version, key)
            self._flush()
            self._transport_close()
            return
        self._flush()
        self.headers = request.headers
        endpoint.pings.add(self)
        task = asyncio.get_running_loop().create_task(endpoint.serve(self))
        self._server_state.tasks.add(task)  # uvicorn's shutdown waits for it (its acknowledgements are flushed)
        task.add_done_callback(self._served)

    def _served(self, task: asyncio.Task[None]) -> None:
        """The socket's serving ended: a socket it left open (a bug) is closed with 1011, not kept idle."""
        self._server_state.tasks.discard(task)
        if not task.cancelled() and (failed := task.exception()) is not None:
            log.error("WebSocket handler failed", exc_info=failed)
        if self._conn.state is State.OPEN:
            self.close(1011, "internal error")

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                self._message(frame.data, opcode is Opcode.TEXT)
            else:  # a fragmented message: the first byte says text or binary
                self._fragments = bytearray(b"T" if opcode is Opcode.TEXT else b"B") + frame.data
        elif opcode is Opcode.CONT and self._fragments is not None:
            self._fragments += frame.data
            if self._max_size is not None and len(self._fragments) > self._max_size + 1:
                # websockets bounds each frame; the message as a whole is bounded here, with the same 1009
                self._fragments = None
                self._conn.fail(1009, "message too big")
                self._closed(1009)
                return
            if frame.fin:
                message, self._fragments = self._fragments, None
                self._message(memoryview(message)[1:], message[0] == ord("T"))
        elif opcode is Opcode.PONG:
            self._ping_unanswered = False
        elif opcode is Opcode.CLOSE:
            rcvd = self._conn.close_rcvd
            self._closed(rcvd.code if rcvd is not None else 1005)
        # PING: websockets queued the pong; it goes out with _flush

    def _message(self, data: bytes | bytearray | memoryview, is_text: bool) -> None:
        if self._closed_code is not None:
            return  # past our close: read on only to see the peer's answer
        try:
            text = bytes(data).decode("utf-8") if is_text else bytes(data).decode("utf-8", "replace")
        except UnicodeDecodeError:
            self._conn.fail(1007, "invalid UTF-8")
            self._closed(1007)
            return
        self._ping_unanswered = False  # a peer that talks is alive
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(text)
            return
        if self._inbox is None:
            self._inbox = deque()
        self._inbox.append(text)
        if not self._read_paused and self._transport is not None:  # one frame waits; the rest stay in the kernel
            self._read_paused = True
            self._transport.pause_reading()

    def _closed(self, code: int) -> None:
        if self._closed_code is None:
            self._closed_code = code
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(SocketClosed(self._closed_code))

    def _resume_reading(self) -> None:
        if self._read_paused and self._transport is not None and not self._transport.is_closing():
            self._read_paused = False
            self._transport.resume_reading()

    def _flush(self) -> None:
        """Write what websockets has queued; its empty chunk means "close the TCP connection now" (as a
        server, once the closing handshake is done or the connection failed)."""
        data = self._conn.data_to_send()
        transport = self._transport
        if not data or transport is None or transport.is_closing():
            return
        if len(data) == 1 and data[0]:  # the common case: one frame
            transport.write(data[0])
            return
        transport.write(b"".join(data))
        if not data[-1]:
            transport.close()

    def _refuse(self, refusal: Refusal) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(error_bytes(*refusal))
        self._transport_close()

    def _transport_close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _transport_abort(self) -> None:
        self._close_timer = None
        if self._transport is not None:
            self._transport.abort()


_NO_HEADERS = Headers()
