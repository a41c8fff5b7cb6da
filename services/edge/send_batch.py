"""The edge's WebSocket sends, of every socket, coalesced into `SendMessages` calls.

One call is in flight at a time; the sends that arrive meanwhile gather and go together in the
next one (at most MAX_BATCH), so a lone send goes at once and a busy edge makes one call where it
made one per send. The message service commits such a batch in one transaction (group commit), and
answers each send alone. A socket's own order still holds: its sender task awaits each send's answer
before it hands over the next (services/edge/sends.py).

Each send carries its user's own token, as SendMessage carries it in its metadata; the call itself
is the edge's (its service identity, allow-listed for SendMessages only). A send's error comes back
as the error SendMessage would have raised, so the edge maps it to the same frame.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from dataclasses import dataclass

import grpc
from prometheus_client import Histogram

from chatmesh import tracing
from chatmesh.auth import Identity, ServiceCredentials
from chatmesh.errors import ERROR_CODE_KEY
from chatmesh.gen.chat.v1 import message_pb2, message_pb2_grpc
from chatmesh.logs import request_id_var
from services.edge.calls import CALL_TIMEOUT_S

MAX_BATCH = 128  # sends per call (the service takes up to 256)

BATCH_SIZE = Histogram(
    "chat_edge_send_batch_size",
    "WebSocket sends per SendMessages call to the message service",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)


@dataclass
class _Queued:
    send: message_pb2.BatchedSend
    future: asyncio.Future[message_pb2.SendMessageResponse]


class SendBatcher:
    def __init__(
        self, stub: message_pb2_grpc.MessageServiceStub, credentials: ServiceCredentials, max_batch: int = MAX_BATCH
    ) -> None:
        self._stub = stub
        self._credentials = credentials
        self._max_batch = max_batch
        self._queue: deque[_Queued] = deque()
        self._caller: asyncio.Task[None] | None = None

    async def send(
        self, identity: Identity, request: message_pb2.SendMessageRequest
    ) -> message_pb2.SendMessageResponse:
        """Send as `identity`, with the sends arriving meanwhile; SendMessage's reply, or its error
        (a grpc.aio.AioRpcError, with the service's error code in its trailing metadata)."""
        send = message_pb2.BatchedSend(
            user_token=identity.token,
            request=request,
            request_id=request_id_var.get() or "",
            traceparent=tracing.traceparent() or "",  # the frame's span, when traced
        )
        future: asyncio.Future[message_pb2.SendMessageResponse] = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(send, future))
        if self._caller is None:
            # A context of its own: the call is no one socket's (its request id and span stay its own).
            self._caller = asyncio.create_task(self._call_queued(), context=contextvars.Context())
        return await future

    async def _call_queued(self) -> None:
        try:
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(self._max_batch, len(self._queue)))]
                batch = [q for q in batch if not q.future.done()]  # sockets closed meanwhile: not sent
                if batch:
                    await self._call(batch)
        except asyncio.CancelledError:
            for queued in self._queue:
                queued.future.cancel()
            self._queue.clear()
            raise
        finally:
            self._caller = None

    async def _call(self, batch: list[_Queued]) -> None:
        BATCH_SIZE.observe(len(batch))
        try:
            reply = await self._stub.SendMessages(
                message_pb2.SendMessagesRequest(sends=[q.send for q in batch]),
                metadata=self._credentials.metadata(),
                timeout=CALL_TIMEOUT_S,
                wait_for_ready=True,
            )
        except asyncio.CancelledError:
            for queued in batch:
                queued.future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - the whole call failed: so did each of its sends
            for queued in batch:
                if not queued.future.done():
                    queued.future.set_exception(exc)
            return
        for queued, result in zip(batch, reply.results, strict=True):
            if queued.future.done():
                continue
            if result.HasField("error"):
                queued.future.set_exception(_rpc_error(result.error))
            else:
                queued.future.set_result(result.response)


def _rpc_error(error: message_pb2.SendError) -> grpc.aio.AioRpcError:
    """The error SendMessage would have raised: its status, message and error code trailer."""
    status = next((s for s in grpc.StatusCode if s.value[0] == error.code), grpc.StatusCode.UNKNOWN)
    return grpc.aio.AioRpcError(
        status,
        grpc.aio.Metadata(),
        grpc.aio.Metadata((ERROR_CODE_KEY, error.reason)),
        details=error.message,
    )
