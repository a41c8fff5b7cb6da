"""uvicorn's HTTP protocol with the edge's limits on a request head, which no app sees (an upgrade to
/ws is handed on to wire.py, which answers what the WebSocket parser refuses the same way).

Why the stock ones are not enough:
- h11's `max_incomplete_event_size` (16 KiB) bounds only a head that is still incomplete: a head that
  arrives whole in one read is parsed at any size (a 67 KB `Authorization` went through). Here every
  head is measured before h11 parses it: a request line over MAX_LINE_BYTES is 414, a header line over
  MAX_LINE_BYTES, more than MAX_HEADER_FIELDS fields or a head over MAX_HEAD_BYTES is 431, in the one
  error body, and the connection is closed. The line limit is the one the WebSocket parser
  (`websockets`, 8 KiB) applies, so REST and /ws refuse the same heads the same way.
- uvicorn's own WebSocket protocol left a handshake its parser refused (a line over 8 KiB, a method
  other than GET) open with no answer at all; wire.py writes the answer and closes.
- uvicorn has no header-read timeout: a client that connects and sends its head a byte at a time (or
  nothing) holds a descriptor forever. A head must be complete HEADER_TIMEOUT_S after its first byte
  (on a new connection: after the connect), or the connection is closed.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from http import HTTPStatus
from typing import Any

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

MAX_LINE_BYTES = 8 * 1024  # the request line, and each header line
MAX_HEAD_BYTES = 16 * 1024  # the whole head (h11's own figure, now enforced)
MAX_HEADER_FIELDS = 100
HEADER_TIMEOUT_S = 5.0  # from a head's first byte (or the connect) to its end; scaled by CHAT_TIME_SCALE
MIN_HEADER_TIMEOUT_S = 1.0  # however scaled

_HEAD_END = re.compile(rb"\n\r?\n")  # h11's own end-of-head rule (it accepts bare LF)

Refusal = tuple[int, str, str]  # HTTP status, machine-readable code, message


def head_problem(buffered: bytes) -> Refusal | None:
    """Why the request head at the start of `buffered` (complete or not yet) is refused, or None."""
    window = buffered[: MAX_HEAD_BYTES + 1]
    end = _HEAD_END.search(window)
    head = window[: end.start()] if end else window
    if len(head) > MAX_HEAD_BYTES:
        return 431, "HEADERS_TOO_LARGE", f"request heads are limited to {MAX_HEAD_BYTES} bytes"
    request_line, *fields = head.split(b"\n")
    if len(request_line) > MAX_LINE_BYTES:
        return 414, "URI_TOO_LONG", f"the request line is limited to {MAX_LINE_BYTES} bytes"
    if any(len(field) > MAX_LINE_BYTES for field in fields):
        return 431, "HEADERS_TOO_LARGE", f"header lines are limited to {MAX_LINE_BYTES} bytes"
    if len(fields) > MAX_HEADER_FIELDS:
        return 431, "HEADERS_TOO_LARGE", f"at most {MAX_HEADER_FIELDS} header fields"
    return None


def error_bytes(status: int, code: str, message: str) -> bytes:
    """A whole HTTP/1.1 response in the edge's one error body, for answers written below the app."""
    request_id = uuid.uuid4().hex
    body = json.dumps(
        {"error": {"code": code, "message": message, "status": status, "request_id": request_id}}
    ).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\nx-request-id: {request_id}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class _HeadRefused(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal[2])
        self.refusal = refusal


class _BoundedConnection(h11.Connection):
    """h11 that measures each request head before parsing it."""

    def next_event(self) -> Any:
        if self.their_state is h11.IDLE and (refusal := head_problem(self.trailing_data[0])) is not None:
            raise _HeadRefused(refusal)
        return super().next_event()


class EdgeHttpProtocol(H11Protocol):
    """H11Protocol with head limits, the head timeout, and its errors in the edge's error body."""

    header_timeout_s = HEADER_TIMEOUT_S

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # h11's own limit now bounds only what follows a head (chunk-size lines): heads are measured above.
        self.conn = _BoundedConnection(h11.SERVER, config.h11_max_incomplete_event_size or MAX_HEAD_BYTES)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE and self._head_timer is None:  # a new head begins
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the head is in (or refused, or upgraded away)
            self._stop_head_timer()

    def handle_events(self) -> None:
        try:
            super().handle_events()
        except _HeadRefused as refused:
            self._refuse(*refused.refusal)

    def send_400_response(self, msg: str) -> None:
        """What h11 cannot parse: the same 400, in the one error body."""
        self._refuse(400, "BAD_HTTP_REQUEST", msg)

    def _refuse(self, status: int, code: str, message: str) -> None:
        self._stop_head_timer()
        if not self.transport.is_closing():
            self.transport.write(error_bytes(status, code, message))
            self.transport.close()

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        """No complete head in time: closed without an answer (the peer may be no HTTP client at all)."""
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def http_protocol(time_scale: float) -> type[EdgeHttpProtocol]:
    """EdgeHttpProtocol with its head timeout scaled (tests run the mesh at a fraction of real time)."""
    timeout = max(HEADER_TIMEOUT_S * time_scale, MIN_HEADER_TIMEOUT_S)
    return type("EdgeHttpProtocol", (EdgeHttpProtocol,), {"header_timeout_s": timeout})
