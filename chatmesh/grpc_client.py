"""Channels to other services: round-robin over every address the target resolves to (a headless
Kubernetes Service gives one per pod), keepalives, and a short reconnect backoff so a restarted
upstream is back within a second or two. Callers pass wait_for_ready=True with a deadline, so a
call during a restart waits for the upstream instead of failing at once."""

from __future__ import annotations

import grpc

CHANNEL_OPTIONS = [
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]


def open_channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
