"""A socket's delivered positions, on their way to the message service.

A client acknowledges the messages it received (`chat:message_delivered`); the socket reports, per
conversation, the latest one acknowledged (UpdateMessageStatus DELIVERED), which moves the user's
delivered position and the sender's ticks. A burst of acknowledgements makes one call per
conversation, by a reporter task that exists only while there is something to report.

The update is idempotent (a position only moves forward), so a report that fails because the message
service is away or slow (UNAVAILABLE, DEADLINE_EXCEEDED) is retried with jittered backoff rather than
dropped, for up to RETRY_WINDOW_S; a later acknowledgement for the same conversation replaces it.
When the socket closes, what is left gets FLUSH_TIMEOUT_S more. Any other failure (the message is
gone, the user left the conversation) would fail again, so it is logged and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import grpc

from chatmesh.auth import Identity
from chatmesh.gen.chat.v1 import common_pb2, message_pb2
from chatmesh.resilience import Backoff, OutageLog
from services.edge.calls import CALL_TIMEOUT_S, reachable
from services.edge.context import EdgeContext
from services.edge.errors import RETRY_STATUSES

log = logging.getLogger(__name__)

RETRY_WINDOW_S = 10.0
RETRY_START_S = 0.25
RETRY_CAP_S = 2.0
FLUSH_TIMEOUT_S = 10.0  # after the socket closed

# One line per edge when reports start failing and one when they succeed again, however many sockets retry.
_outage = OutageLog(log, "recording delivered positions (UpdateMessageStatus)")

Position = tuple[int, str]  # (seq, message id) of the latest message acknowledged in a conversation


class DeliveredReporter:
    __slots__ = ("_ctx", "_identity", "_pending", "_task")  # one per socket: kept small

    def __init__(self, ctx: EdgeContext, identity: Callable[[], Identity]) -> None:
        self._ctx = ctx
        self._identity = identity  # the socket's current identity (a re-authentication replaces it)
        self._pending: dict[str, Position] = {}  # conversation -> position to report
        self._task: asyncio.Task[None] | None = None

    def note(self, conversation_id: str, seq: int, message_id: str) -> None:
        """A message of the conversation was acknowledged; report it unless a later one is already due."""
        if seq > self._pending.get(conversation_id, (0, ""))[0]:
            self._pending[conversation_id] = (seq, message_id)
            if self._task is None:
                self._task = asyncio.create_task(self._run())

    async def flush(self, timeout_s: float = FLUSH_TIMEOUT_S) -> None:
        """The socket closed: give what is left (retries included) at most `timeout_s`, then drop it."""
        if self._pending and self._task is None:
            self._task = asyncio.create_task(self._run())
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._task, timeout_s)

    async def _run(self) -> None:
        backoff = Backoff(RETRY_START_S, RETRY_CAP_S)
        failing_since: float | None = None
        try:
            while self._pending:
                batch, self._pending = self._pending, {}
                failed = {cid: position for cid, position in batch.items() if not await self._report(position[1])}
                if not failed:
                    backoff.reset()
                    failing_since = None
                    continue
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since >= RETRY_WINDOW_S:
                    log.info(
                        "delivered positions of %d conversations not recorded after %.0f s of retries",
                        len(failed),
                        now - failing_since,
                    )
                    failing_since = None
                    continue
                for cid, position in failed.items():  # unless a later acknowledgement replaced it meanwhile
                    if position[0] > self._pending.get(cid, (0, ""))[0]:
                        self._pending[cid] = position
                await backoff.sleep()
        finally:
            self._task = None

    async def _report(self, message_id: str) -> bool:
        """False when the report should be tried again."""
        try:
            await reachable(self._ctx.channels["message"], "message")
            await self._ctx.message.UpdateMessageStatus(
                message_pb2.UpdateMessageStatusRequest(
                    message_id=message_id, status=common_pb2.MESSAGE_STATUS_DELIVERED
                ),
                metadata=self._ctx.metadata(self._identity()),
                timeout=CALL_TIMEOUT_S,
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in RETRY_STATUSES:
                _outage.failed(exc)
                return False
            log.warning("could not record delivery of %s: %s", message_id, exc.code().name)
            return True
        _outage.recovered()
        return True
