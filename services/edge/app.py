"""The edge's ASGI app: health, REST (through the transcoder) and the WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chatmesh import metrics, tracing
from chatmesh.auth import AuthError
from chatmesh.config import Settings
from chatmesh.gen.chat.v1 import conversation_pb2, message_pb2, notification_pb2, presence_pb2
from chatmesh.logs import request_id_var
from services.edge import bounded_json
from services.edge.asyncapi import document_for
from services.edge.calls import CALL_TIMEOUT_S, reachable
from services.edge.context import EdgeContext
from services.edge.docs_page import docs_routes
from services.edge.errors import error_response, from_rpc_error
from services.edge.metrics import WS_CONNECTIONS, EdgeMetricsMiddleware
from services.edge.openapi import build_openapi
from services.edge.request_id import RequestIdMiddleware
from services.edge.transcoder import BadRequest, Transcoder, routes_from
from services.edge.uploads import upload_routes
from services.edge.web import web_routes
from services.edge.wire import ENDPOINT_KEY, WS_PATH
from services.edge.ws import Connection, origin_allowed
from services.edge.ws_socket import Endpoint, Socket

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
READYZ_CHECK_S = 1.0  # per upstream, checked together: /readyz answers well within a probe's timeout
SEND_MESSAGE = "/chat.v1.MessageService/SendMessage"


class _BodyTooLarge(Exception):
    pass


async def _read_body(request: Request) -> bytes:
    """The body, refused as soon as it passes MAX_BODY (never buffered whole)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise _BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(settings: Settings) -> Starlette:
    """The app; its lifespan hands /ws's Endpoint to the WebSocket protocol (wire.py) through uvicorn's
    app state, since /ws is served below ASGI."""
    methods_all = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    ctx = EdgeContext(settings)
    transcoder = Transcoder(routes_from([conversation_pb2, message_pb2, presence_pb2, notification_pb2]))
    openapi_document = build_openapi(transcoder.routes)
    callables: dict[str, grpc.aio.UnaryUnaryMultiCallable[Any, Any]] = {}
    services = {r.grpc_path: ctx.service_of(r.method.containing_service.full_name) for r in transcoder.routes}

    async def serve_socket(socket: Socket) -> None:
        request_id_var.set(uuid.uuid4().hex)  # the socket's logs until its first frame (each frame gets its own)
        WS_CONNECTIONS.inc()
        try:
            await Connection(ctx, socket).serve()
        finally:
            WS_CONNECTIONS.dec()

    endpoint = Endpoint(
        serve_socket,
        lambda origin, host: origin_allowed(origin, host, settings.ws_allowed_origins),
        settings.ws_compression,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        await ctx.start()
        callables.update(
            {
                r.grpc_path: transcoder.callable_for(ctx.channel_for(r.method.containing_service.full_name), r)
                for r in transcoder.routes
            }
        )
        try:
            yield {ENDPOINT_KEY: endpoint}
        finally:
            endpoint.pings.stop()
            await ctx.close()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        async def check(name: str, channel: grpc.aio.Channel) -> tuple[str, bool]:
            try:
                # types-grpcio-health-checking's HealthStub declares no methods (grpc adds them at run time).
                stub = health_pb2_grpc.HealthStub(channel)
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=READYZ_CHECK_S)  # type: ignore[attr-defined]
                return name, reply.status == health_pb2.HealthCheckResponse.SERVING
            except grpc.aio.AioRpcError:
                return name, False

        # Ready once started, whatever the upstreams say: an upstream outage hits every edge replica
        # alike, so taking them out of rotation would only turn a partial outage (sends down, reads
        # and presence up, or the reverse) into a total one. The body says what this replica can do
        # now, each check asked live and within a deadline (a stalled dependency reads as down, not as
        # a hung probe): each upstream's health, its two event streams, and whether Redis answers
        # (false: rate and socket limits are failing open; null: not configured).
        results, redis = await asyncio.gather(
            asyncio.gather(*(check(n, c) for n, c in ctx.channels.items())), ctx.limits.ping()
        )
        return JSONResponse(
            {
                "ready": True,
                "upstreams": dict(results),
                "event_stream": ctx.router.connected.is_set(),
                "presence_stream": ctx.presence_link.connected.is_set(),
                "redis": redis,
            }
        )

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document)

    async def asyncapi(request: Request) -> Response:  # the WebSocket's contract, naming the host asked on
        return JSONResponse(document_for(request.headers.get("host"), request.url.scheme == "https"))

    async def rest(request: Request) -> Response:
        route, path_vars, path_known = transcoder.match(request.method, request.url.path)
        if route is None:
            if path_known:
                allowed = ", ".join(transcoder.allowed_methods(request.url.path))
                return error_response(
                    405,
                    "METHOD_NOT_ALLOWED",
                    f"{request.method} is not allowed here (only {allowed})",
                    {"Allow": allowed},
                )
            return error_response(404, "NOT_FOUND", f"no endpoint at {request.url.path}")
        try:
            identity = await ctx.verifier.averify_bearer(request.headers.get("authorization"))
        except AuthError as exc:
            return error_response(401, "UNAUTHENTICATED", str(exc), {"WWW-Authenticate": "Bearer"})
        if identity.is_service:
            return error_response(
                401, "UNAUTHENTICATED", "service tokens are not accepted at the edge", {"WWW-Authenticate": "Bearer"}
            )
        limits: list[tuple[str, tuple[int, float]]] = [("rest", ctx.settings.rate_rest)]
        if route.grpc_path == SEND_MESSAGE:
            limits.append(("messages", ctx.settings.rate_messages))
        for name, limit in limits:
            if retry_after := await ctx.limits.hit(name, identity.user_id, limit):
                return error_response(
                    429,
                    "RATE_LIMITED",
                    f"too many {name} requests; retry in {retry_after:.0f} s",
                    {"Retry-After": f"{retry_after:.0f}"},
                )
        try:
            raw = await _read_body(request)
        except _BodyTooLarge:
            return error_response(413, "BODY_TOO_LARGE", f"request bodies are limited to {MAX_BODY} bytes")
        except ClientDisconnect:
            return error_response(400, "CLIENT_DISCONNECTED", "the client went away")
        try:
            body: Any = bounded_json.loads(raw) if raw.strip() else None
            grpc_request = transcoder.build_request(route, path_vars, list(request.query_params.multi_items()), body)
        except bounded_json.JsonTooDeep as exc:
            return error_response(400, "JSON_TOO_DEEP", str(exc))
        except ValueError as exc:
            return error_response(400, "INVALID_JSON", f"the body is not valid JSON: {exc}")
        except BadRequest as exc:
            return error_response(400, exc.code, str(exc))
        try:
            await ctx.ensure_user(identity)
            service = services[route.grpc_path]
            await reachable(ctx.channels[service], service)
            reply = await callables[route.grpc_path](
                grpc_request, metadata=ctx.metadata(identity), timeout=CALL_TIMEOUT_S, wait_for_ready=True
            )
        except grpc.aio.AioRpcError as exc:
            status, code, message = from_rpc_error(exc)  # 503 (with Retry-After) for UNAVAILABLE / DEADLINE_EXCEEDED
            if status >= 500:
                log.error(
                    "%s %s failed upstream: %s %s", request.method, request.url.path, exc.code().name, exc.details()
                )
            return error_response(status, code, message)
        return Response(transcoder.render_json(reply), media_type="application/json")

    async def websocket_only(request: Request) -> Response:
        """/ws without an upgrade (an upgrade never gets here: wire.py serves it below ASGI)."""
        return error_response(426, "UPGRADE_REQUIRED", f"{WS_PATH} is a WebSocket", {"Upgrade": "websocket"})

    async def metrics_endpoint(request: Request) -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    def route_of(method: str, path: str) -> str:
        """A request's route template for metric labels (bounded: never the raw path)."""
        if path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/asyncapi.json", "/docs", "/favicon.ico"):
            return path
        if path.startswith("/files/"):
            return "/files/{attachment_id}"
        route, _, _ = transcoder.match(method, path)
        return route.template if route else "unmatched"

    async def crash(request: Request, exc: Exception) -> Response:
        """A bug: logged with its request id, answered without internals."""
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "INTERNAL", "internal error", {"x-request-id": request_id_var.get()})

    async def http_error(request: Request, exc: Exception) -> Response:
        """Starlette's own 404/405 (paths outside /api) in the one error body."""
        assert isinstance(exc, HTTPException)
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "HTTP_ERROR")
        return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))

    cors: list[Middleware] = []
    if settings.cors_origins:
        cors = [
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=methods_all,
                allow_headers=["authorization", "content-type", "x-request-id"],
                expose_headers=["x-request-id", "retry-after"],
                max_age=600,
            )
        ]

    return Starlette(
        exception_handlers={Exception: crash, HTTPException: http_error},
        routes=[
            Route("/openapi.json", openapi),
            Route("/asyncapi.json", asyncapi),
            *docs_routes(),  # /docs (the API reference) and /favicon.ico, from packaged files
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
            Route(WS_PATH, websocket_only),
            # Every method reaches `rest`, so a 405 names the methods of that path (OPTIONS included:
            # a preflight is answered by the CORS middleware before it gets here).
            Route("/api/{path:path}", rest, methods=[*methods_all, "OPTIONS"]),
            *upload_routes(ctx),
            *web_routes(settings),  # the browser page at / (last: it serves any other path)
        ],
        lifespan=lifespan,
        middleware=[
            *tracing.http_middleware(route_of),
            Middleware(RequestIdMiddleware),
            *cors,
            Middleware(EdgeMetricsMiddleware, route_of=route_of),
        ],
    )
