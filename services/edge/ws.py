"""The WebSocket protocol: JSON frames {"type", "id"?, "data"}.

A socket authenticates with `Authorization: Bearer` on the upgrade or with its first frame
{"type": "auth", "data": {"token", "resume_token"?}}, and gets {"type": "ready"}. Requests are
answered with {"type": "ack", "id"} or {"type": "error", "id", "data": {"code", "message"}}. Events
arrive as {"type": <event name>, "data": ..., "event_id", "resume_token", "conversation_id"}.
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

log = logging.getLogger(__name__)

AUTH_TIMEOUT_S = 5.0
SEND_QUEUE = 1000
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
        self._out: asyncio.Queue[dict[str, Any]] = asyncio.Queue(SEND_QUEUE)
        self._subscription_id = uuid.uuid4().hex
        self._too_slow = False

    async def serve(self) -> None:
        await self._ws.accept()
        resume_token = await self._authenticate()
        if self._identity is None:
            return
        identity = self._identity
        await self._ctx.ensure_user(identity)
        await self._ws.send_json({"type": "ready", "data": {"user_id": identity.user_id}})
        sender = asyncio.create_task(self._send_loop())
        self._ctx.router.subscribe(self._subscription_id, identity.user_id, resume_token, self._on_event)
        try:
            await self._receive_loop()
        except WebSocketDisconnect:
            pass
        finally:
            self._ctx.router.unsubscribe(self._subscription_id)
            sender.cancel()

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
        try:
            self._out.put_nowait(event_frame(event))
        except asyncio.QueueFull:
            self._too_slow = True

    async def _send_loop(self) -> None:
        while True:
            frame = await self._out.get()
            if self._too_slow:
                await self._ws.close(CLOSE_TOO_SLOW, "too slow: reconnect with your last resume_token")
                return
            await self._ws.send_text(json.dumps(frame, ensure_ascii=False))

    async def _receive_loop(self) -> None:
        while True:
            raw = await self._ws.receive_text()
            try:
                frame = json.loads(raw)
            except ValueError:
                await self._error(None, "BAD_FRAME", "frames must be JSON objects")
                continue
            if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
                await self._error(None, "BAD_FRAME", "frames must be JSON objects with a string type")
                continue
            await self._handle(frame.get("id"), frame["type"], frame.get("data") or {})

    async def _handle(self, request_id: Any, kind: str, data: Any) -> None:
        if not isinstance(data, dict):
            await self._error(request_id, "BAD_FRAME", "data must be an object")
            return
        if kind == "ping":
            await self._reply({"type": "pong", "id": request_id})
        elif kind == "chat:message_send":
            await self._send_message(request_id, data)
        else:
            await self._error(request_id, "UNKNOWN_TYPE", f"unknown frame type {kind!r}")

    async def _send_message(self, request_id: Any, data: dict[str, Any]) -> None:
        request = message_pb2.SendMessageRequest()
        try:
            json_format.ParseDict(data, request)
        except json_format.ParseError as exc:
            await self._error(request_id, "INVALID_ARGUMENT", str(exc))
            return
        try:
            assert self._identity is not None
            reply = await self._ctx.message.SendMessage(request, metadata=self._ctx.metadata(self._identity),
                                                        timeout=10, wait_for_ready=True)
        except grpc.aio.AioRpcError as exc:
            _, code, message = from_rpc_error(exc)
            await self._error(request_id, code, message)
            return
        await self._reply({"type": "ack", "id": request_id,
                           "data": json_format.MessageToDict(reply, preserving_proto_field_name=True)})

    async def _reply(self, frame: dict[str, Any]) -> None:
        await self._ws.send_text(json.dumps(frame, ensure_ascii=False))

    async def _error(self, request_id: Any, code: str, message: str) -> None:
        await self._reply({"type": "error", "id": request_id, "data": {"code": code, "message": message}})
