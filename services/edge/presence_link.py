"""The edge's link to the presence service: its connections and its users' ephemeral events.

- Connections: every socket of this edge replica (one `edge_id` per process) is reported in batches:
  new ones at once, all of them every TTL/3 as heartbeats, closed ones by DropConnections. If this
  process dies without a goodbye, its heartbeats stop and presence expires its connections after the
  TTL.
- Events: one multiplexed StreamPresenceEvents call carries every user with a socket here; presence
  and typing events come back in batches and are turned into frame text once, then pushed to each of
  the user's sockets as ephemeral frames (dropped first when a socket's queue is full). The stream
  reconnects with backoff and resubscribes; events missed meanwhile are not replayed (ephemeral).
- Frames: `chat:typing`, `presence:online`, `presence:offline` from a socket become SetTyping /
  SetPresence calls, answered with ack or error frames. Call signaling (`call:*`) rides the same
  stream back as events; its frames are call_frames.py's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import json_format

from chatmesh.auth import ServiceCredentials
from chatmesh.config import Settings
from chatmesh.gen.chat.v1 import common_pb2, presence_pb2, presence_pb2_grpc
from chatmesh.timestamps import rfc3339
from services.edge.call_frames import call_event_frame
from services.edge.calls import CALL_TIMEOUT_S, reachable
from services.edge.errors import error_frame, rpc_error_frame
from services.edge.frames import dumps
from services.edge.streams import ResilientStream

log = logging.getLogger(__name__)

PRESENCE_FRAMES = ("chat:typing", "presence:online", "presence:offline")
REPORT_BATCH = 5000

Sink = Callable[[str], object]  # takes a frame's JSON text
Metadata = tuple[tuple[str, str], ...]
_STATUS_NAMES = {common_pb2.PRESENCE_STATUS_ONLINE: "online", common_pb2.PRESENCE_STATUS_OFFLINE: "offline"}


def event_frame(event: common_pb2.Event) -> dict[str, Any] | None:
    """The WebSocket frame of an ephemeral event (status as `online`/`offline`, `is_typing` always present)."""
    if event.HasField("presence"):
        p = event.presence
        data: dict[str, Any] = {"user_id": p.user_id, "status": _STATUS_NAMES.get(p.status, "unknown")}
        if p.HasField("last_seen_at"):
            data["last_seen_at"] = rfc3339(p.last_seen_at)
        return {"type": event.type, "data": data}
    if event.HasField("typing"):
        t = event.typing
        return {
            "type": event.type,
            "conversation_id": t.conversation_id,
            "data": {"conversation_id": t.conversation_id, "user_id": t.user_id, "is_typing": t.is_typing},
        }
    if event.HasField("call"):
        return call_event_frame(event)
    return None


class PresenceLink:
    def __init__(
        self,
        stub: presence_pb2_grpc.PresenceServiceStub,
        credentials: ServiceCredentials,
        settings: Settings,
        channel: grpc.aio.Channel,
    ) -> None:
        self._stub = stub
        self._channel = channel  # the stub's, so a frame fails fast while no presence replica is up
        self._credentials = credentials
        self.edge_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._interval_s = settings.presence_ttl_s * settings.time_scale / 3
        self._connections: dict[str, str] = {}  # connection id -> user id
        self._sinks: dict[str, dict[str, Sink]] = {}  # user id -> connection id -> sink
        self._new: set[str] = set()
        self._closed: dict[str, str] = {}  # connection id -> user id, to drop
        self._wake = asyncio.Event()
        self._stream: ResilientStream[
            presence_pb2.StreamPresenceEventsRequest, presence_pb2.StreamPresenceEventsResponse
        ] = ResilientStream(
            "presence event stream",
            lambda: stub.StreamPresenceEvents(metadata=credentials.metadata(), wait_for_ready=True),
            lambda: [presence_pb2.StreamPresenceEventsRequest(subscribe_user_id=u) for u in list(self._sinks)],
            self._dispatch,
        )
        self.connected = self._stream.connected

    # sockets

    def register(self, connection_id: str, user_id: str, sink: Sink) -> None:
        self._connections[connection_id] = user_id
        sinks = self._sinks.setdefault(user_id, {})
        if not sinks:
            self._stream.send(presence_pb2.StreamPresenceEventsRequest(subscribe_user_id=user_id))
        sinks[connection_id] = sink
        self._new.add(connection_id)
        self._wake.set()

    def unregister(self, connection_id: str) -> None:
        user_id = self._connections.pop(connection_id, None)
        if user_id is None:
            return
        sinks = self._sinks.get(user_id, {})
        sinks.pop(connection_id, None)
        if not sinks:
            self._sinks.pop(user_id, None)
            self._stream.send(presence_pb2.StreamPresenceEventsRequest(unsubscribe_user_id=user_id))
        self._new.discard(connection_id)
        self._closed[connection_id] = user_id
        self._wake.set()

    async def run(self) -> None:
        """The event stream and the connection reports; if either fails, both stop (and are restarted
        together by their supervisor), so a dead report loop never leaves the stream running alone."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._stream.run())
            group.create_task(self._report_forever())

    async def close(self) -> None:
        """On a graceful stop: tell presence this edge's sockets are gone rather than wait for the TTL."""
        for connection_id in list(self._connections):
            self.unregister(connection_id)
        try:
            await asyncio.wait_for(self._send_drops(), 2)
        except (TimeoutError, grpc.aio.AioRpcError):
            pass

    # connection reports

    async def _report_forever(self) -> None:
        next_full = 0.0
        failures = 0
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_full - time.monotonic()))
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                if time.monotonic() >= next_full:
                    self._new.clear()
                    await self._report(list(self._connections))
                    next_full = time.monotonic() + self._interval_s
                elif self._new:
                    new, self._new = self._new, set()
                    await self._report([c for c in new if c in self._connections])
                await self._send_drops()  # after the reports, so a drop is never overtaken by its report
                failures = 0
            except grpc.aio.AioRpcError as exc:
                # Everything is reported again soon (a failed report of new sockets included), backing
                # off up to half a heartbeat interval so an outage is neither hammered nor outlasted.
                failures += 1
                if failures == 1 or failures % 50 == 0:
                    log.warning("presence report failed (%s, %d in a row); retrying", exc.code().name, failures)
                retry = min(self._interval_s / 2, 0.05 * 2 ** min(failures, 8))
                next_full = min(next_full, time.monotonic() + retry)
                await asyncio.sleep(min(retry, 0.1))

    async def _report(self, connection_ids: list[str]) -> None:
        for start in range(0, len(connection_ids), REPORT_BATCH):
            chunk = [
                presence_pb2.Connection(connection_id=c, user_id=self._connections[c])
                for c in connection_ids[start : start + REPORT_BATCH]
                if c in self._connections
            ]
            if chunk:
                await self._stub.ReportConnections(
                    presence_pb2.ReportConnectionsRequest(edge_id=self.edge_id, connections=chunk),
                    metadata=self._credentials.metadata(),
                    timeout=max(CALL_TIMEOUT_S, self._interval_s),
                    wait_for_ready=True,
                )

    async def _send_drops(self) -> None:
        while self._closed:
            batch = dict(list(self._closed.items())[:REPORT_BATCH])
            await self._stub.DropConnections(
                presence_pb2.DropConnectionsRequest(
                    edge_id=self.edge_id,
                    connections=[presence_pb2.Connection(connection_id=c, user_id=u) for c, u in batch.items()],
                ),
                metadata=self._credentials.metadata(),
                timeout=CALL_TIMEOUT_S,
                wait_for_ready=True,
            )
            for connection_id in batch:
                self._closed.pop(connection_id, None)

    # ephemeral events

    def _dispatch(self, response: presence_pb2.StreamPresenceEventsResponse) -> None:
        for batch in response.batches:
            sinks = self._sinks.get(batch.user_id)
            if not sinks:
                continue
            for event in batch.events:
                if (frame := event_frame(event)) is not None:
                    text = dumps(frame)
                    for sink in list(sinks.values()):
                        sink(text)

    # frames from sockets

    async def handle_frame(
        self, request_id: Any, kind: str, data: dict[str, Any], metadata: Metadata
    ) -> dict[str, Any] | None:
        """Answer a presence frame: an error frame, an ack when the client gave an id, else None."""
        conversation_id, is_typing = data.get("conversation_id"), data.get("is_typing")
        if kind == "chat:typing" and (
            not isinstance(conversation_id, str) or not conversation_id or not isinstance(is_typing, bool)
        ):
            return error_frame(
                request_id, "INVALID_ARGUMENT", "chat:typing needs data {conversation_id: string, is_typing: boolean}"
            )
        try:
            if kind == "chat:typing":
                await reachable(self._channel, "presence")
                await self._stub.SetTyping(
                    presence_pb2.SetTypingRequest(conversation_id=conversation_id, is_typing=is_typing),
                    metadata=metadata,
                    timeout=CALL_TIMEOUT_S,
                    wait_for_ready=True,
                )
                reply: dict[str, Any] = {}
            else:
                reply = await self.set_presence(kind, metadata)
        except grpc.aio.AioRpcError as exc:
            return rpc_error_frame(request_id, exc)
        return {"type": "ack", "id": request_id, "data": reply} if request_id is not None else None

    async def set_presence(self, kind: str, metadata: Metadata) -> dict[str, Any]:
        """SetPresence for a `presence:online` / `presence:offline` frame; the answer is the ack's data.
        Raises the call's AioRpcError (UNAVAILABLE at once when no presence replica is up)."""
        await reachable(self._channel, "presence")
        status = common_pb2.PRESENCE_STATUS_ONLINE if kind == "presence:online" else common_pb2.PRESENCE_STATUS_OFFLINE
        answer = await self._stub.SetPresence(
            presence_pb2.SetPresenceRequest(status=status),
            metadata=metadata,
            timeout=CALL_TIMEOUT_S,
            wait_for_ready=True,
        )
        return json_format.MessageToDict(answer, preserving_proto_field_name=True)
