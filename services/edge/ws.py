"""The WebSocket protocol: JSON frames {"type", "id"?, "data"}.

A socket authenticates with `Authorization: Bearer` on the upgrade or with its first frame
{"type": "auth", "data": {"token", "resume_token"?}}, and gets {"type": "ready"}. Requests are
answered with {"type": "ack", "id"} or {"type": "error", "id", "data": {"code", "message"}}; an error
worth sending again as it was (an upstream away or slow, a rate limit) says `"retryable": true`. Events
arrive as {"type": <event name>, "data": ..., "event_id", "resume_token", "conversation_id"}; the
client acknowledges durable ones with {"type": "chat:message_delivered", "data": {"message_id"}} (which
also advances the user's delivered position) or {"type": "events_ack", "data": {"event_ids": [...]}}.

Limits (abuse): a browser's `Origin` must be allowed (CHAT_WS_ALLOWED_ORIGINS; unset: the edge's own
host) or the upgrade is refused with 403; a user holds at most CHAT_WS_MAX_SOCKETS sockets across
replicas (more: error TOO_MANY_SOCKETS, close 1008); a frame over CHAT_WS_MAX_FRAME_BYTES gets error
FRAME_TOO_LARGE, one over 16 times that is closed by the server with 1009; past
CHAT_WS_MAX_FRAMES_PER_S a frame gets error RATE_LIMITED, and a socket that keeps flooding is closed
with 1008; message sends share the user's REST send limit (RATE_LIMITED with `retry_after`), and
presence toggles, typing, receipts and acknowledged ids have budgets of their own per socket
(frame_limits.py; RATE_LIMITED with `retry_after`, the socket stays open). A client that reads too
slowly, or fills its queue, is closed with 4008 and resumes from its token (outgoing.py, backlog.py). JSON
nested deeper than 32 levels gets error JSON_TOO_DEEP (bounded_json.py); a first frame that is too
large, too deep or names a user id the rule refuses is a failed authentication (close 1008).

Token expiry: `token_expiring` ({"expires_at"}) arrives TOKEN_WARNING_S before the token's `exp`; the
client may send a new {"type": "auth", "data": {"token"}} for the same user (answered with an ack),
otherwise the socket is closed with 4001 when the token expires.

A socket's message sends are answered in the order it sent them, one at a time; its other frames
(acknowledgements above all) are handled while its sends are in flight. If the user directory cannot
be reached at connect (the conversation service is overloaded or down), the socket is closed with
1013, try again later.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import secrets
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import grpc
from opentelemetry import trace

from chatmesh import tracing
from chatmesh.auth import AuthError, Identity
from chatmesh.gen.chat.v1 import common_pb2
from chatmesh.logs import request_id_var
from services.edge import bounded_json
from services.edge.call_frames import CALL_FRAMES, SocketCalls
from services.edge.context import EdgeContext
from services.edge.delivered import DeliveredReporter
from services.edge.errors import error_frame, from_rpc_error
from services.edge.frame_limits import FrameLimits
from services.edge.frames import RenderedEvent
from services.edge.metrics import DELIVERY_LAG
from services.edge.outgoing import Outgoing
from services.edge.presence_link import PRESENCE_FRAMES
from services.edge.sends import Sends
from services.edge.ws_socket import Socket, SocketClosed

log = logging.getLogger(__name__)

AUTH_TIMEOUT_S = 5.0
MIN_AUTH_TIMEOUT_S = 1.0  # however scaled: a loaded machine (or browser) must get its auth frame in
SLOW_CLOSE_TIMEOUT_S = 60.0
CLOSE_POLICY = 1008  # policy violation: bad or missing credentials
CLOSE_TRY_AGAIN_LATER = 1013  # an upstream the socket needs is overloaded or down
CLOSE_TOO_SLOW = 4008  # the client read too slowly; resume with the last resume_token
CLOSE_TOKEN_EXPIRED = 4001  # the token expired without an in-band re-authentication
WS_HARD_CAP_FACTOR = 16  # frames over max_frame_bytes * this are closed by the parser with 1009
TOKEN_WARNING_S = 60.0  # token_expiring comes this long before exp (scaled by CHAT_TIME_SCALE)
FLOOD_CLOSE_FACTOR = 4  # refused frames in one second, in multiples of the limit, before the socket is closed
# gRPC statuses meaning "not now" rather than "never": an overloaded or unreachable upstream.
_TRY_AGAIN_LATER = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED)


# Frame types a span is named after (tracing on); any other type a client makes up is traced as `unknown`.
_FRAME_TYPES = frozenset(
    {"chat:message_send", "ping", "auth", "chat:message_delivered", "events_ack", *PRESENCE_FRAMES, *CALL_FRAMES}
)
_REQUEST_ID_PREFIX = secrets.token_hex(8)  # this process's; a counter makes each frame's id (uuid4 costs more)
_request_ids = itertools.count()


def _next_request_id() -> str:
    return f"{_REQUEST_ID_PREFIX}{next(_request_ids):016x}"


def origin_allowed(origin: str | None, host: str | None, allowed: tuple[str, ...]) -> bool:
    """No Origin: not a browser, so no cross-site hijacking. Otherwise the allow-list, or the same host."""
    if origin is None:
        return True
    if "*" in allowed or origin in allowed:
        return True
    return not allowed and urlsplit(origin).netloc == (host or "")


def _dumps(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


class Connection:
    """One socket. Idle, it holds one task, its reader: redelivery and lease renewal are per edge,
    token expiry is two timer handles, keepalive pings one wheel per edge (wire.py), and its writer,
    the sender of its message sends and the delivered-position reporter exist only while they have work.
    The socket itself (wire.py) is accepted before this runs: its origin was checked at the handshake."""

    def __init__(self, ctx: EdgeContext, ws: Socket) -> None:
        self._ctx = ctx
        self._ws = ws
        self._identity: Identity | None = None
        self._out = Outgoing(
            ctx.settings.ws_send_queue,
            ctx.settings.time_scale,
            ctx.redelivery,
            self._too_slow,
            self._wake_writer,
            byte_limit=ctx.settings.ws_send_queue_bytes,
            budget=ctx.send_budget,
            on_full=lambda: ctx.router.unsubscribe(self._subscription_id),
        )  # it drains, then 4008
        self._frame_limits = FrameLimits(ctx.frame_rates)  # per kind: presence, typing, receipts, acks
        self._subscription_id = uuid.uuid4().hex
        self._delivered = DeliveredReporter(ctx, self._current_identity)
        self._sends = Sends(ctx, self._out, self._current_identity)
        self._calls = SocketCalls(
            ctx.presence, ctx.channels["presence"], lambda: ctx.metadata(self._current_identity())
        )
        self._writer: asyncio.Task[None] | None = None
        self._writing = False  # from `ready` until the socket stops
        self._expiry: tuple[asyncio.TimerHandle, asyncio.TimerHandle] | None = None
        self._closing: asyncio.Task[None] | None = None

    def _send(self, frame: dict[str, Any]) -> None:
        self._ws.write_text(_dumps(frame))

    async def serve(self) -> None:
        settings = self._ctx.settings
        resume_token = await self._authenticate()
        self._ws.authenticated()
        if self._identity is None:
            return
        identity = self._identity
        if not await self._ctx.limits.acquire_socket(identity.user_id, self._subscription_id, settings.ws_max_sockets):
            self._send(error_frame(None, "TOO_MANY_SOCKETS", f"at most {settings.ws_max_sockets} sockets per user"))
            self._ws.close(CLOSE_POLICY, "too many sockets")
            return
        try:
            await self._serve(identity, resume_token)
        finally:
            await self._ctx.limits.release_socket(identity.user_id, self._subscription_id)

    async def _serve(self, identity: Identity, resume_token: str) -> None:
        try:
            await self._ctx.ensure_user(identity)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in _TRY_AGAIN_LATER:  # refused for good (a user id the directory refuses)
                _, code, message = from_rpc_error(exc)
                log.info("WebSocket of %s refused: the user directory answered %s", identity.user_id, code)
                self._send(error_frame(None, code, message))
                self._ws.close(CLOSE_POLICY, "refused")
                return
            log.warning("WebSocket of %s refused: the user directory answered %s", identity.user_id, exc.code().name)
            self._send(error_frame(None, "UNAVAILABLE", "the service is busy; reconnect in a moment"))
            self._ws.close(CLOSE_TRY_AGAIN_LATER, "try again later")
            return
        self._send({"type": "ready", "data": {"user_id": identity.user_id}})
        self._writing = True
        self._wake_writer()
        self._arm_expiry()
        self._ctx.router.subscribe(self._subscription_id, identity.user_id, resume_token, self._on_event)
        self._ctx.presence_link.register(self._subscription_id, identity.user_id, self._out.push_ephemeral)
        try:
            await self._receive_loop()
        except SocketClosed:
            pass
        finally:
            self._ctx.router.unsubscribe(self._subscription_id)
            self._ctx.presence_link.unregister(self._subscription_id)
            self._stop()
            # Acknowledgements that arrived just before the close still advance the delivered position.
            await self._delivered.flush()
            await self._calls.close(self._identity)  # its calls end with it

    def _stop(self) -> None:
        """Stop everything that writes to the socket (not the reporter: it talks to the message service)."""
        self._writing = False
        self._out.close()
        if self._expiry is not None:
            for handle in self._expiry:
                handle.cancel()
        if self._writer is not None and self._writer is not asyncio.current_task():
            self._writer.cancel()
        self._sends.stop()

    async def _authenticate(self) -> str:
        header = self._ws.headers.get("authorization")
        try:
            if header:
                self._identity = self._user(await self._ctx.verifier.averify_bearer(header))
                return ""
            raw = await asyncio.wait_for(
                self._ws.receive_text(), max(AUTH_TIMEOUT_S * self._ctx.settings.time_scale, MIN_AUTH_TIMEOUT_S)
            )
            if len(raw) > self._ctx.settings.ws_max_frame_bytes:  # a token this long is refused anyway
                raise AuthError(f"frames are limited to {self._ctx.settings.ws_max_frame_bytes} bytes")
            frame = bounded_json.loads(raw)
            if not isinstance(frame, dict) or frame.get("type") != "auth" or not isinstance(frame.get("data"), dict):
                raise AuthError('the first frame must be {"type": "auth", "data": {"token": ...}}')
            self._identity = self._user(await self._ctx.verifier.averify(str(frame["data"].get("token", ""))))
            return str(frame["data"].get("resume_token") or "")
        except (AuthError, ValueError, TimeoutError) as exc:
            reason = "authentication timed out" if isinstance(exc, TimeoutError) else str(exc)
            self._send(error_frame(None, "UNAUTHENTICATED", reason))
            self._ws.close(CLOSE_POLICY, "unauthenticated")
            return ""
        except SocketClosed:
            return ""

    def _current_identity(self) -> Identity:
        assert self._identity is not None
        return self._identity

    @staticmethod
    def _user(identity: Identity) -> Identity:
        if identity.is_service:
            raise AuthError("service tokens are not accepted at the edge")
        return identity

    def _arm_expiry(self) -> None:
        """token_expiring before exp, then close with 4001 unless a new token arrived (which re-arms this)."""
        assert self._identity is not None
        if self._expiry is not None:
            for handle in self._expiry:
                handle.cancel()
        loop = asyncio.get_running_loop()
        expires_at = self._identity.expires_at
        warning = TOKEN_WARNING_S * self._ctx.settings.time_scale
        now = time.time()
        self._expiry = (
            loop.call_later(
                max(0.0, expires_at - warning - now),
                self._out.push_reply,
                {"type": "token_expiring", "data": {"expires_at": int(expires_at)}},
            ),
            loop.call_later(max(0.0, expires_at - now), self._expired),
        )

    def _expired(self) -> None:
        if self._closing is None:
            self._closing = asyncio.create_task(self._close_expired())

    async def _close_expired(self) -> None:
        log.info("closing the WebSocket of %s: token expired", self._identity.user_id if self._identity else "?")
        self._stop()
        self._send(error_frame(None, "TOKEN_EXPIRED", "the token expired; reconnect"))
        self._ws.close(CLOSE_TOKEN_EXPIRED, "token expired")  # its reader sees the close and ends the socket

    async def _reauthenticate(self, request_id: Any, data: dict[str, Any]) -> None:
        assert self._identity is not None
        try:
            identity = self._user(await self._ctx.verifier.averify(str(data.get("token", ""))))
        except AuthError as exc:
            self._error(request_id, "UNAUTHENTICATED", str(exc))
            return
        if identity.user_id != self._identity.user_id:
            self._error(request_id, "UNAUTHENTICATED", "a socket cannot change user; open a new one")
            return
        if self._closing is not None:
            return  # too late: the socket is closing
        self._identity = identity
        self._arm_expiry()
        self._out.push_reply({"type": "ack", "id": request_id, "data": {"expires_at": int(identity.expires_at)}})

    def _on_event(self, event: common_pb2.Event, rendered: RenderedEvent) -> None:
        if event.created_at.seconds:  # catch-up replays count too: that is lag a user sees
            DELIVERY_LAG.observe(max(time.time() - event.created_at.ToNanoseconds() / 1e9, 0.0))
        if not self._out.push_rendered(rendered, event.resume_token):
            self._too_slow()

    def _too_slow(self) -> None:
        if self._closing is None:
            self._closing = asyncio.create_task(self._close_too_slow())

    def _wake_writer(self) -> None:
        if self._writer is None and self._writing:
            self._writer = asyncio.get_running_loop().create_task(self._write_queued())

    async def _write_queued(self) -> None:
        """The socket's writer: it exists while frames are queued, so an idle socket holds no task for it."""
        timeout = self._ctx.settings.ws_send_timeout
        try:
            # Straight to the transport; only a full one is waited on (with a timeout), never a frame.
            while (text := self._out.next_frame()) is not None:
                if not self._ws.write_text(text):
                    async with asyncio.timeout(timeout):
                        await self._ws.drained()
        except TimeoutError:  # the client's buffers have been full for that long: it is not reading
            self._too_slow()
        finally:
            self._writer = None

    async def _close_too_slow(self) -> None:
        """The client reads slower than its events arrive: close it (it resumes from its token) rather
        than buffer without bound. The writer may be waiting on a full socket, so it is cancelled first;
        the close frame goes out behind what is buffered, and the connection is dropped if the client
        has not answered it SLOW_CLOSE_TIMEOUT_S later. Its reader sees the close and ends the socket."""
        log.info("closing a slow WebSocket of %s", self._identity.user_id if self._identity else "?")
        self._ctx.router.unsubscribe(self._subscription_id)
        self._stop()
        self._ws.close(CLOSE_TOO_SLOW, "too slow: reconnect with your last resume_token", SLOW_CLOSE_TIMEOUT_S)

    async def _receive_loop(self) -> None:
        settings = self._ctx.settings
        window_start, in_window = time.monotonic(), 0
        while True:
            raw = await self._ws.receive_text()
            now = time.monotonic()
            if now - window_start >= 1.0:
                window_start, in_window = now, 0
            in_window += 1
            if in_window > settings.ws_max_frames_per_s:
                if in_window > settings.ws_max_frames_per_s * FLOOD_CLOSE_FACTOR:
                    log.info("closing a flooding WebSocket of %s", self._identity.user_id if self._identity else "?")
                    self._ws.close(CLOSE_POLICY, "too many frames")
                    return
                self._error(None, "RATE_LIMITED", f"at most {settings.ws_max_frames_per_s} frames per second")
                continue
            if len(raw) > settings.ws_max_frame_bytes:
                self._error(None, "FRAME_TOO_LARGE", f"frames are limited to {settings.ws_max_frame_bytes} bytes")
                continue
            try:
                frame = bounded_json.loads(raw)
            except bounded_json.JsonTooDeep as exc:
                self._error(None, "JSON_TOO_DEEP", str(exc))
                continue
            except ValueError:
                self._error(None, "BAD_FRAME", "frames must be JSON objects")
                continue
            if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
                self._error(None, "BAD_FRAME", "frames must be JSON objects with a string type")
                continue
            if retry_after := self._frame_limits.take(frame["type"], frame.get("data"), now):
                self._out.push_reply(
                    error_frame(
                        frame.get("id"), "RATE_LIMITED", f"too many {frame['type']} frames", retry_after=retry_after
                    )
                )
                continue
            request_id = _next_request_id()  # each frame's upstream calls get their own request id
            request_id_var.set(request_id)
            span = tracing.frame_span(frame["type"], _FRAME_TYPES)  # None unless tracing is on
            if frame["type"] == "chat:message_send":  # its span ends when the send is answered
                await self._sends.queue(frame.get("id"), frame.get("data") or {}, request_id, span)
            elif span is None:
                await self._handle(frame.get("id"), frame["type"], frame.get("data") or {})
            else:
                with trace.use_span(span, end_on_exit=True):
                    await self._handle(frame.get("id"), frame["type"], frame.get("data") or {})

    async def _handle(self, request_id: Any, kind: str, data: Any) -> None:
        if not isinstance(data, dict):
            self._error(request_id, "BAD_FRAME", "data must be an object")
            return
        if kind == "ping":
            self._out.push_reply({"type": "pong", "id": request_id})
        elif kind == "auth":
            await self._reauthenticate(request_id, data)
        elif kind == "chat:message_delivered":
            self._acknowledge_message(request_id, data)
        elif kind == "events_ack":
            self._acknowledge_events(request_id, data)
        elif kind in ("presence:online", "presence:offline"):  # at most one per user per interval goes on
            assert self._identity is not None
            self._ctx.presence_toggles.toggle(
                self._identity.user_id, kind, self._ctx.metadata(self._identity), request_id, self._out.push_reply
            )
        elif kind in PRESENCE_FRAMES:
            assert self._identity is not None
            if reply := await self._ctx.presence_link.handle_frame(
                request_id, kind, data, self._ctx.metadata(self._identity)
            ):
                self._out.push_reply(reply)
        elif kind in CALL_FRAMES:
            if reply := await self._calls.handle(request_id, kind, data):
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
            self._delivered.note(conversation_id, seq, message_id)
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

    def _error(self, request_id: Any, code: str, message: str) -> None:
        self._out.push_reply(error_frame(request_id, code, message))
