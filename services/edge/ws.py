"""The WebSocket protocol: JSON frames {"type", "id"?, "data"}.

A socket authenticates with `Authorization: Bearer` on the upgrade or with its first frame
{"type": "auth", "data": {"token", "resume_token"?}}, and gets {"type": "ready"}. Requests are
answered with {"type": "ack", "id"} or {"type": "error", "id", "data": {"code", "message"}}. Events
arrive as {"type": <event name>, "data": ..., "event_id", "resume_token", "conversation_id"}; the
client acknowledges durable ones with {"type": "chat:message_delivered", "data": {"message_id"}} (which
also advances the user's delivered position) or {"type": "events_ack", "data": {"event_ids": [...]}}.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

import grpc
from google.protobuf import json_format
from starlette.websockets import WebSocket, WebSocketDisconnect

from chatmesh.auth import AuthError, Identity
from chatmesh.gen.chat.v1 import common_pb2, message_pb2
from services.edge.context import EdgeContext
from services.edge.errors import from_rpc_error
from services.edge.outgoing import Outgoing
from services.edge.presence_link import PRESENCE_FRAMES

log = logging.getLogger(__name__)

AUTH_TIMEOUT_S = 5.0
REDELIVERY_TICK_S = 0.5
DELIVERED_FLUSH_TIMEOUT_S = 10.0
SLOW_CLOSE_TIMEOUT_S = 60.0
CLOSE_POLICY = 1008  # policy violation: bad or missing credentials
CLOSE_TOO_SLOW = 4008  # the client read too slowly; resume with the last resume_token


def event_frame(event: common_pb2.Event) -> dict[str, Any]:
    payload = event.WhichOneof("payload")
    data = json_format.MessageToDict(getattr(event, payload), preserving_proto_field_name=True) if payload else {}
    frame: dict[str, Any] = {"type": event.type, "data": data}
    for key in ("event_id", "resume_token", "conversation_id"):
        if value := getattr(event, key):
            frame[key] = value
    return frame


class Connection:
    def __init__(self, ctx: EdgeContext, ws: WebSocket) -> None:
        self._ctx = ctx
        self._ws = ws
        self._identity: Identity | None = None
        self._out = Outgoing(ctx.settings.ws_send_queue, ctx.settings.time_scale)
        self._subscription_id = uuid.uuid4().hex
        self._delivered: dict[str, tuple[int, str]] = {}  # conversation -> (highest seq, message id) to report
        self._delivered_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing: asyncio.Task[None] | None = None
        self._open = True
        self._receiver: asyncio.Task[None] | None = None

    async def serve(self) -> None:
        await self._ws.accept()
        resume_token = await self._authenticate()
        if self._identity is None:
            return
        identity = self._identity
        await self._ctx.ensure_user(identity)
        await self._ws.send_json({"type": "ready", "data": {"user_id": identity.user_id}})
        self._tasks = [asyncio.create_task(self._send_loop()), asyncio.create_task(self._redeliver_loop())]
        reporter = asyncio.create_task(self._report_delivered_loop())
        self._ctx.router.subscribe(self._subscription_id, identity.user_id, resume_token, self._on_event)
        self._ctx.presence_link.register(self._subscription_id, identity.user_id, self._out.push_event)
        self._receiver = asyncio.create_task(self._receive_loop())
        try:
            await self._receiver
        except (WebSocketDisconnect, asyncio.CancelledError):
            pass
        finally:
            self._ctx.router.unsubscribe(self._subscription_id)
            self._ctx.presence_link.unregister(self._subscription_id)
            for task in self._tasks:
                task.cancel()
            # Acknowledgements that arrived just before the close still advance the delivered position.
            self._open = False
            self._delivered_ready.set()
            await asyncio.wait_for(reporter, DELIVERED_FLUSH_TIMEOUT_S)

    async def _authenticate(self) -> str:
        header = self._ws.headers.get("authorization")
        try:
            if header:
                self._identity = self._ctx.verifier.verify_bearer(header)
                return ""
            raw = await asyncio.wait_for(self._ws.receive_text(), AUTH_TIMEOUT_S * self._ctx.settings.time_scale)
            frame = json.loads(raw)
            if not isinstance(frame, dict) or frame.get("type") != "auth" or not isinstance(frame.get("data"), dict):
                raise AuthError("the first frame must be {\"type\": \"auth\", \"data\": {\"token\": ...}}")
            self._identity = self._ctx.verifier.verify(str(frame["data"].get("token", "")))
            return str(frame["data"].get("resume_token") or "")
        except (AuthError, ValueError, TimeoutError) as exc:
            message = "authentication timed out" if isinstance(exc, TimeoutError) else str(exc)
            await self._ws.send_json({"type": "error", "data": {"code": "UNAUTHENTICATED", "message": message}})
            await self._ws.close(CLOSE_POLICY, "unauthenticated")
            return ""
        except WebSocketDisconnect:
            return ""

    def _on_event(self, event: common_pb2.Event) -> None:
        if not self._out.push_event(event_frame(event)) and self._closing is None:
            self._closing = asyncio.create_task(self._close_too_slow())

    async def _send_loop(self) -> None:
        while (text := await self._out.next_frame()) is not None:
            try:
                await asyncio.wait_for(self._ws.send_text(text), self._ctx.settings.ws_send_timeout)
            except TimeoutError:  # the client's buffers have been full for that long: it is not reading
                if self._closing is None:
                    self._closing = asyncio.create_task(self._close_too_slow())
                return

    async def _close_too_slow(self) -> None:
        """The client reads slower than its events arrive: close it (it resumes from its token) rather
        than buffer without bound. The writer may be stuck on a full socket, so it is cancelled first;
        the close frame waits for room in the socket's buffer for a while, then the connection is dropped."""
        log.info("closing a slow WebSocket of %s", self._identity.user_id if self._identity else "?")
        self._ctx.router.unsubscribe(self._subscription_id)
        for task in self._tasks:
            task.cancel()
        try:
            await asyncio.wait_for(self._ws.close(CLOSE_TOO_SLOW, "too slow: reconnect with your last resume_token"),
                                   SLOW_CLOSE_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - the peer may be gone or stuck; the socket is dropped either way
            log.info("slow WebSocket dropped without a close frame: %r", exc)
        if self._receiver:
            self._receiver.cancel()

    async def _redeliver_loop(self) -> None:
        tick = REDELIVERY_TICK_S * self._ctx.settings.time_scale
        while True:
            await asyncio.sleep(tick)
            self._out.redeliver_due()

    async def _report_delivered_loop(self) -> None:
        """Advance the user's delivered position, once per conversation for a burst of acknowledgements."""
        while True:
            await self._delivered_ready.wait()
            self._delivered_ready.clear()
            await self._flush_delivered()
            if not self._open and not self._delivered:
                return

    async def _flush_delivered(self) -> None:
        assert self._identity is not None
        batch, self._delivered = self._delivered, {}
        for _, message_id in batch.values():
            try:
                await self._ctx.message.UpdateMessageStatus(
                    message_pb2.UpdateMessageStatusRequest(message_id=message_id,
                                                           status=common_pb2.MESSAGE_STATUS_DELIVERED),
                    metadata=self._ctx.metadata(self._identity), timeout=10, wait_for_ready=True)
            except grpc.aio.AioRpcError as exc:
                log.warning("could not record delivery of %s: %s", message_id, exc.code().name)

    async def _receive_loop(self) -> None:
        while True:
            raw = await self._ws.receive_text()
            try:
                frame = json.loads(raw)
            except ValueError:
                self._error(None, "BAD_FRAME", "frames must be JSON objects")
                continue
            if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
                self._error(None, "BAD_FRAME", "frames must be JSON objects with a string type")
                continue
            await self._handle(frame.get("id"), frame["type"], frame.get("data") or {})

    async def _handle(self, request_id: Any, kind: str, data: Any) -> None:
        if not isinstance(data, dict):
            self._error(request_id, "BAD_FRAME", "data must be an object")
            return
        if kind == "ping":
            self._out.push_reply({"type": "pong", "id": request_id})
        elif kind == "chat:message_send":
            await self._send_message(request_id, data)
        elif kind == "chat:message_delivered":
            self._acknowledge_message(request_id, data)
        elif kind == "events_ack":
            self._acknowledge_events(request_id, data)
        elif kind in PRESENCE_FRAMES:
            assert self._identity is not None
            if reply := await self._ctx.presence_link.handle_frame(request_id, kind, data,
                                                                   self._ctx.metadata(self._identity)):
                self._out.push_reply(reply)
        else:
            self._error(request_id, "UNKNOWN_TYPE", f"unknown frame type {kind!r}")

    def _acknowledge_message(self, request_id: Any, data: dict[str, Any]) -> None:
        message_id = data.get("message_id")
        if not isinstance(message_id, str) or not message_id:
            self._error(request_id, "INVALID_ARGUMENT", "message_id is required")
            return
        if (found := self._out.ack_message(message_id)) is not None:
            conversation_id, seq = found
            if seq > self._delivered.get(conversation_id, (0, ""))[0]:
                self._delivered[conversation_id] = (seq, message_id)
                self._delivered_ready.set()
        if request_id is not None:
            self._out.push_reply({"type": "ack", "id": request_id, "data": {}})

    def _acknowledge_events(self, request_id: Any, data: dict[str, Any]) -> None:
        event_ids = data.get("event_ids")
        if not isinstance(event_ids, list) or not all(isinstance(e, str) for e in event_ids):
            self._error(request_id, "INVALID_ARGUMENT", "event_ids must be a list of strings")
            return
        self._out.ack_events(event_ids)
        if request_id is not None:
            self._out.push_reply({"type": "ack", "id": request_id, "data": {}})

    async def _send_message(self, request_id: Any, data: dict[str, Any]) -> None:
        request = message_pb2.SendMessageRequest()
        try:
            json_format.ParseDict(data, request)
        except json_format.ParseError as exc:
            self._error(request_id, "INVALID_ARGUMENT", str(exc))
            return
        try:
            assert self._identity is not None
            reply = await self._ctx.message.SendMessage(request, metadata=self._ctx.metadata(self._identity),
                                                        timeout=10, wait_for_ready=True)
        except grpc.aio.AioRpcError as exc:
            _, code, message = from_rpc_error(exc)
            self._error(request_id, code, message)
            return
        self._out.push_reply({"type": "ack", "id": request_id,
                              "data": json_format.MessageToDict(reply, preserving_proto_field_name=True)})

    def _error(self, request_id: Any, code: str, message: str) -> None:
        self._out.push_reply({"type": "error", "id": request_id, "data": {"code": code, "message": message}})
