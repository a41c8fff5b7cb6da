"""The edge's own series: HTTP requests by route template, open WebSockets, and the delivery lag (an
event's creation to its push onto a client's socket). The edge serves them at its own /metrics."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from chatmesh.metrics import LATENCY_BUCKETS

HTTP_REQUESTS = Counter(
    "chat_http_requests", "Edge HTTP requests, by method, route template and status.", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "chat_http_request_seconds",
    "Time the edge took to answer an HTTP request.",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
WS_CONNECTIONS = Gauge("chat_websocket_connections", "WebSocket connections open at the edge.")

DELIVERY_LAG = Histogram(
    "chat_delivery_lag_seconds",
    "Event creation to push onto a client's socket.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class EdgeMetricsMiddleware:
    """Counts and times HTTP requests by route template (bounded labels, never raw paths), and
    keeps the WebSocket gauge while a socket is served. `route_of(method, path)` names the route."""

    def __init__(self, app: ASGIApp, route_of: Callable[[str, str], str]) -> None:
        self.app = app
        self._route_of = route_of

    async def __call__(
        self, scope: Scope, receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]
    ) -> None:
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
