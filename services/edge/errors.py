"""One error model for the edge: gRPC statuses map to HTTP statuses here and nowhere else.

Body: {"error": {"code": "NOT_PARTICIPANT", "message": "...", "status": 403, "request_id": "..."}}.
"""

from __future__ import annotations

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
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.DATA_LOSS: 500,
}


def error_body(status: int, code: str, message: str) -> dict[str, object]:
    return {"error": {"code": code, "message": message, "status": status, "request_id": request_id_var.get()}}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, code, message), status_code=status, headers=headers)


def from_rpc_error(exc: grpc.aio.AioRpcError) -> tuple[int, str, str]:
    """(HTTP status, machine-readable code, message) for a failed call; internals never leak."""
    status = HTTP_STATUS.get(exc.code(), 500)
    if status >= 500:
        return status, exc.code().name, f"upstream failure ({exc.code().name.lower()})"
    return status, error_code_of(exc), exc.details() or exc.code().name
