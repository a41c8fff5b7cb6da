"""A socket's message sends (`chat:message_send`), kept apart from its other frames.

A client expects its own messages in the order it sent them, so a socket's sends go upstream one at
a time, in order (each in a SendMessages call shared with other sockets' sends: send_batch.py).
They are queued and sent by a sender task that exists only while sends are queued, so the
socket's reader goes on with the frames behind them (acknowledgements above all:
an `events_ack` waiting behind the socket's own sends would get its events pushed again). Past
MAX_QUEUED frames the reader waits for the queue to drain, so a client cannot queue without bound.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import json_format
from opentelemetry import trace
from opentelemetry.trace import Span

from chatmesh.auth import Identity
from chatmesh.gen.chat.v1 import message_pb2
from chatmesh.logs import request_id_var
from services.edge.calls import reachable
from services.edge.context import EdgeContext
from services.edge.errors import error_frame, rpc_error_frame
from services.edge.outgoing import Outgoing

MAX_QUEUED = 64  # a socket's sends waiting for their turn; past this its reading pauses
# The request's plain string fields, by proto name: a frame made of only these, with string values,
# becomes the request directly; anything else (JSON names, bytes, enums, nulls) goes through ParseDict.
_PLAIN_FIELDS = frozenset({"conversation_id", "content", "client_message_id", "reply_to_id"})


class Sends:
    __slots__ = ("_ctx", "_out", "_identity", "_queue", "_sender")  # one per socket: kept small

    def __init__(self, ctx: EdgeContext, out: Outgoing, identity: Callable[[], Identity]) -> None:
        self._ctx = ctx
        self._out = out
        self._identity = identity  # the socket's current identity (a re-authentication replaces it)
        # (frame id, data, request id, the frame's span: None unless tracing is on)
        self._queue: deque[tuple[Any, dict[str, Any], str, Span | None]] | None = None
        self._sender: asyncio.Task[None] | None = None

    async def queue(self, request_id: Any, data: Any, upstream_request_id: str, span: Span | None = None) -> None:
        if not isinstance(data, dict):
            self._error(request_id, "BAD_FRAME", "data must be an object")
            if span is not None:
                span.end()
            return
        if self._queue is not None and len(self._queue) >= MAX_QUEUED and self._sender is not None:
            await asyncio.wait([self._sender])  # backpressure: stop reading until this socket's sends are done
        if self._queue is None:
            self._queue = deque()
        self._queue.append((request_id, data, upstream_request_id, span))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_queued())

    def stop(self) -> None:
        """The socket is closing: sends not yet answered are dropped (the client resends them)."""
        for *_, span in self._queue or ():
            if span is not None:
                span.end()
        self._queue = None
        if self._sender is not None and self._sender is not asyncio.current_task():
            self._sender.cancel()

    async def _send_queued(self) -> None:
        try:
            while self._queue:
                request_id, data, upstream_request_id, span = self._queue.popleft()
                request_id_var.set(upstream_request_id)
                if span is None:
                    await self._send(request_id, data)
                else:  # the frame's span: the call carries its trace, and it ends when answered
                    with trace.use_span(span, end_on_exit=True):
                        await self._send(request_id, data)
        finally:
            self._sender = None

    async def _send(self, request_id: Any, data: dict[str, Any]) -> None:
        if data.keys() <= _PLAIN_FIELDS and all(type(v) is str for v in data.values()):
            request = message_pb2.SendMessageRequest(**data)  # the usual send, without json_format's walk
        else:
            request = message_pb2.SendMessageRequest()
            try:
                json_format.ParseDict(data, request)
            except json_format.ParseError as exc:
                self._error(request_id, "INVALID_ARGUMENT", str(exc))
                return
        identity = self._identity()
        if retry_after := await self._ctx.limits.take("messages", identity.user_id, self._ctx.settings.rate_messages):
            self._out.push_reply(
                error_frame(request_id, "RATE_LIMITED", "too many messages; slow down", retry_after=retry_after)
            )
            return
        try:
            await reachable(self._ctx.channels["message"], "message")
            reply = await self._ctx.send_batch.send(identity, request)  # with other sockets' sends: one call
        except grpc.aio.AioRpcError as exc:
            self._out.push_reply(rpc_error_frame(request_id, exc))  # UNAVAILABLE / DEADLINE_EXCEEDED: retryable
            return
        self._out.push_reply(
            {
                "type": "ack",
                "id": request_id,
                "data": json_format.MessageToDict(reply, preserving_proto_field_name=True),
            }
        )

    def _error(self, request_id: Any, code: str, message: str) -> None:
        self._out.push_reply(error_frame(request_id, code, message))
