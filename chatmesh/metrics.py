"""Prometheus metrics shared by the services (prometheus-client, default registry).

gRPC services count and time every business call in the MeshInterceptor (`observe_grpc`, and bugs
alone in `GRPC_INTERNAL_ERRORS`) and serve the registry on `CHAT_METRICS_PORT` (`start_metrics_server`);
both outbox relays report `OUTBOX_BACKLOG`. A series one service alone reports lives in that service:
the edge's HTTP, WebSocket and delivery-lag series in services/edge/metrics.py, the events stream's
in services/message/delivery/metrics.py.
"""

from __future__ import annotations

import logging
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

GRPC_REQUESTS = Counter(
    "chat_grpc_server_requests", "gRPC calls served, by method and status code.", ["service", "method", "code"]
)
GRPC_ERRORS = Counter(
    "chat_grpc_server_errors", "gRPC calls answered with a status other than OK.", ["service", "method", "code"]
)
# INTERNAL means a bug and nothing else (an outage is UNAVAILABLE or DEADLINE_EXCEEDED): alert on any.
GRPC_INTERNAL_ERRORS = Counter(
    "chat_grpc_internal_errors", "gRPC calls failed by a bug (answered INTERNAL).", ["service", "method"]
)
GRPC_LATENCY = Histogram(
    "chat_grpc_server_request_seconds",
    "Time to answer a gRPC call (a stream: its whole life).",
    ["service", "method"],
    buckets=LATENCY_BUCKETS,
)

OUTBOX_BACKLOG = Gauge("chat_outbox_backlog", "Outbox rows not yet published to the events stream.", ["schema"])


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
