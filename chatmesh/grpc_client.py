"""Channels to other services: round-robin over every address the target resolves to (a headless
Kubernetes Service gives one per pod), keepalives, and a short reconnect backoff so a restarted
upstream is back within a second or two. Callers pass wait_for_ready=True with a deadline, so a
call during a restart waits for the upstream instead of failing at once.

Client-side health checking (`healthCheckConfig`) makes a channel leave a server as soon as it reports
NOT_SERVING, which `serve()` does before it stops (and while it has lost PostgreSQL or Redis): calls go
to the other replicas instead of being cancelled by a stopping server.

With mTLS configured (chatmesh/tls.py), every channel presents this process's certificate; callers
pass `client_tls(settings)`, which is None without it."""

from __future__ import annotations

import json

import grpc

from chatmesh import tracing
from chatmesh.tls import ClientTls

SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}})

CHANNEL_OPTIONS = [
    ("grpc.service_config", SERVICE_CONFIG),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]


def open_channel(target: str, tls: ClientTls | None) -> grpc.aio.Channel:
    """A channel to `target`, over mTLS when `tls` is given (explicit, so no caller forgets it); with
    tracing on, every call it makes carries the caller's trace (chatmesh/tracing.py)."""
    interceptors = tracing.client_interceptors() or None
    if tls is None:
        return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS, interceptors=interceptors)
    return grpc.aio.secure_channel(
        target, tls.credentials, options=[*CHANNEL_OPTIONS, *tls.options()], interceptors=interceptors
    )
