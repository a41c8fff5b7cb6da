"""Prometheus metrics shared by every service (prometheus-client, default registry).

gRPC services count and time every business call in the MeshInterceptor (`observe_grpc`, and bugs
alone in `GRPC_INTERNAL_ERRORS`) and serve the registry on `CHAT_METRICS_PORT` (`start_metrics_server`);
the edge counts HTTP requests by route and open WebSockets (`EdgeMetricsMiddleware`) and serves
`/metrics` itself. The delivery hooks (`DELIVERY_LAG`, `OUTBOX_BACKLOG`, `STREAM_PENDING`,
`DEAD_LETTER`) are set by the delivery path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

GRPC_REQUESTS = Counter("chat_grpc_server_requests", "gRPC calls served, by method and status code.",
                        ["service", "method", "code"])
GRPC_ERRORS = Counter("chat_grpc_server_errors", "gRPC calls answered with a status other than OK.",
                      ["service", "method", "code"])
# INTERNAL means a bug and nothing else (an outage is UNAVAILABLE or DEADLINE_EXCEEDED): alert on any.
GRPC_INTERNAL_ERRORS = Counter("chat_grpc_internal_errors", "gRPC calls failed by a bug (answered INTERNAL).",
                               ["service", "method"])
GRPC_LATENCY = Histogram("chat_grpc_server_request_seconds", "Time to answer a gRPC call (a stream: its whole life).",
                         ["service", "method"], buckets=_LATENCY_BUCKETS)

HTTP_REQUESTS = Counter("chat_http_requests", "Edge HTTP requests, by method, route template and status.",
                        ["method", "route", "status"])
HTTP_LATENCY = Histogram("chat_http_request_seconds", "Time the edge took to answer an HTTP request.",
                         ["method", "route"], buckets=_LATENCY_BUCKETS)
WS_CONNECTIONS = Gauge("chat_websocket_connections", "WebSocket connections open at the edge.")

DELIVERY_LAG = Histogram("chat_delivery_lag_seconds", "Event creation to push onto a client's socket.",
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
OUTBOX_BACKLOG = Gauge("chat_outbox_backlog", "Outbox rows not yet published to the events stream.", ["schema"])
STREAM_PENDING = Gauge("chat_stream_pending", "Entries delivered to a consumer group but not acknowledged.",
                       ["stream", "group"])
STREAM_LENGTH = Gauge("chat_stream_length", "Entries in a Redis stream (the events and dead-letter streams).",
                      ["stream"])
DEAD_LETTER = Counter("chat_dead_letter", "Events moved to the dead-letter stream after their retries.")


def service_of(method: str) -> tuple[str, str]:
    """`/chat.v1.MessageService/SendMessage` → (`chat.v1.MessageService`, `SendMessage`)."""
    _, service, name = (method.split("/") + ["", ""])[:3]
    return service, name


def observe_grpc(method: str, code: str, started: float) -> None:
    service, name = service_of(method)
    GRPC_REQUESTS.labels(service, name, code).inc()
    if code != "OK":
        GRPC_ERRORS.labels(service, name, code).inc()
    GRPC_LATENCY.labels(service, name).observe(time.perf_counter() - started)


class MetricsServer:
    """The registry over HTTP on its own thread (prometheus-client's server), for a gRPC service."""

    def __init__(self, host: str, port: int) -> None:
        self._server, self._thread = start_http_server(port, addr=host)
        self.port = int(self._server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(listen: str, port: int | None) -> MetricsServer | None:
    """Serve /metrics on the gRPC listen address's host at `port`; None (no server) when port is unset."""
    if port is None:
        return None
    host = listen.rsplit(":", 1)[0].strip("[]") or "0.0.0.0"
    server = MetricsServer(host, port)
    log.info("metrics on http://%s:%d/metrics", host, server.port)
    return server


def render() -> tuple[bytes, str]:
    """The registry in the text exposition format, with its content type (the edge's /metrics)."""
    return generate_latest(), CONTENT_TYPE_LATEST


Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class EdgeMetricsMiddleware:
    """Counts and times HTTP requests by route template (bounded labels, never raw paths), and
    keeps the WebSocket gauge while a socket is served. `route_of(method, path)` names the route."""

    def __init__(self, app: ASGIApp, route_of: Callable[[str, str], str]) -> None:
        self.app = app
        self._route_of = route_of

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] == "websocket":
            WS_CONNECTIONS.inc()
            try:
                await self.app(scope, receive, send)
            finally:
                WS_CONNECTIONS.dec()
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            method, route = scope["method"], self._route_of(scope["method"], scope["path"])
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_LATENCY.labels(method, route).observe(time.perf_counter() - started)


class StreamSampler:
    """Samples the events stream's pending count for a group and the streams' lengths every few
    seconds (gauges are cheap to read, so sampling beats hooks in the hot path)."""

    def __init__(self, redis_client: aioredis.Redis, stream: str, group: str, dead_stream: str,
                 interval_s: float = 5.0) -> None:
        self._redis = redis_client
        self._stream = stream
        self._group = group
        self._dead = dead_stream
        self._interval_s = interval_s

    async def sample(self) -> None:
        try:
            summary = await self._redis.xpending(self._stream, self._group)
            STREAM_PENDING.labels(self._stream, self._group).set(int(summary["pending"]))
        except redis.exceptions.ResponseError:  # the group does not exist yet
            STREAM_PENDING.labels(self._stream, self._group).set(0)
        for stream in (self._stream, self._dead):
            STREAM_LENGTH.labels(stream).set(await self._redis.xlen(stream))

    async def run(self) -> None:
        while True:
            try:
                await self.sample()
            except (redis.exceptions.RedisError, OSError) as exc:
                log.debug("stream sampler: %s", exc)
            await asyncio.sleep(self._interval_s)

