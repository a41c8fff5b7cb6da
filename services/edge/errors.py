"""One error model for the edge: gRPC statuses map to HTTP statuses here and nowhere else, and every
WebSocket error frame is built here.

Body: {"error": {"code": "NOT_PARTICIPANT", "message": "...", "status": 403, "request_id": "..."}}.
Frame: {"type": "error", "id": <the request's id or null>, "data": {"code", "message", "retryable"?, ...}}.

An upstream that is away (UNAVAILABLE: no replica could be reached) or too slow (DEADLINE_EXCEEDED)
is a "not now", not a "never": both answer 503 with `Retry-After`, and their error frames say
`"retryable": true`, so clients retry them (with the same `client_message_id` for a send) instead of
showing a failure. INTERNAL is a bug and is not retryable: retrying it would only repeat it.
"""

from __future__ import annotations

from typing import Any

import grpc
from starlette.responses import JSONResponse

from chatmesh.errors import error_code_of
from chatmesh.logs import request_id_var

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 503,  # a slow upstream: a temporary outage to the client, not a 504 proxy error
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.DATA_LOSS: 500,
}

# Error codes whose HTTP status is more precise than their gRPC status's (INVALID_ARGUMENT, FAILED_PRECONDITION).
CODE_STATUS: dict[str, int] = {
    "ATTACHMENT_TOO_LARGE": 413,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "CONVERSATION_ARCHIVED": 409,
}  # read-only until unarchived: a conflict with its state

# gRPC statuses that mean "not now": the edge retries its own idempotent calls on these.
RETRY_STATUSES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
# Error codes a client may send again as they were. The clients keep the same list, plus their own
# CONNECTION_LOST and TIMEOUT (clients/python/chatmesh_client/errors.py, clients/web/chat-wire.js).
RETRYABLE_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RATE_LIMITED"})
RETRY_AFTER_S = 1  # what a 503 asks for: upstream restarts take a second or two


def error_body(status: int, code: str, message: str) -> dict[str, object]:
    return {"error": {"code": code, "message": message, "status": status, "request_id": request_id_var.get()}}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one error body; a 503 always says when to come back."""
    if status == 503:
        headers = {"Retry-After": str(RETRY_AFTER_S), **(headers or {})}
    return JSONResponse(error_body(status, code, message), status_code=status, headers=headers)


def error_frame(request_id: Any, code: str, message: str, **extra: Any) -> dict[str, Any]:
    """An error frame answering the frame with `request_id` (None: the socket itself, or a frame
    without an id); `extra` goes into its data (`retry_after`, say)."""
    data: dict[str, Any] = {"code": code, "message": message, **extra}
    if code in RETRYABLE_CODES:
        data["retryable"] = True
    return {"type": "error", "id": request_id, "data": data}


def from_rpc_error(exc: grpc.aio.AioRpcError) -> tuple[int, str, str]:
    """(HTTP status, machine-readable code, message) for a failed call; internals never leak."""
    status = HTTP_STATUS.get(exc.code(), 500)
    if status >= 500:
        return status, exc.code().name, f"upstream failure ({exc.code().name.lower()})"
    code = error_code_of(exc)
    return CODE_STATUS.get(code, status), code, exc.details() or exc.code().name


def rpc_error_frame(request_id: Any, exc: grpc.aio.AioRpcError) -> dict[str, Any]:
    _, code, message = from_rpc_error(exc)
    return error_frame(request_id, code, message)
