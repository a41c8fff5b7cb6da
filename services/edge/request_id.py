"""Every HTTP request gets a request id: the client's `X-Request-Id` when it is a sane token, a new
one otherwise. It is set for the whole request (logs, error bodies, the `x-request-id` gRPC metadata
of every upstream call) and returned in the response's `X-Request-Id`."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import ASGIApp, Scope

from chatmesh.logs import request_id_var

# Forwarded as gRPC metadata and written to logs: printable ASCII only, bounded.
_SANE = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _SANE.match(candidate):
                return candidate
    return uuid.uuid4().hex


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(
        self, scope: Scope, receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]
    ) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope.get("headers", []))
        request_id_var.set(request_id)

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", request_id.encode())]}
            await send(message)

        await self.app(scope, receive, send_with_id if scope["type"] == "http" else send)
