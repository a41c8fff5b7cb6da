"""One error type for the whole mesh: a gRPC status plus a machine-readable code.

Domain code raises ChatError; the server interceptor turns it into a gRPC status with the code in
the `chat-error-code` trailing metadata; the edge maps the status to HTTP in one table and passes
the code through to the client.
"""

from __future__ import annotations

import grpc

ERROR_CODE_KEY = "chat-error-code"


class ChatError(Exception):
    def __init__(self, status: grpc.StatusCode, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def invalid(code: str, message: str) -> ChatError:
    return ChatError(grpc.StatusCode.INVALID_ARGUMENT, code, message)


def not_found(code: str, message: str) -> ChatError:
    return ChatError(grpc.StatusCode.NOT_FOUND, code, message)


def forbidden(code: str, message: str) -> ChatError:
    return ChatError(grpc.StatusCode.PERMISSION_DENIED, code, message)


def conflict(code: str, message: str) -> ChatError:
    return ChatError(grpc.StatusCode.ALREADY_EXISTS, code, message)


def failed_precondition(code: str, message: str) -> ChatError:
    return ChatError(grpc.StatusCode.FAILED_PRECONDITION, code, message)


def error_code_of(error: grpc.aio.AioRpcError) -> str:
    """The machine-readable code a service attached, or the gRPC status name."""
    for key, value in error.trailing_metadata() or ():
        if key == ERROR_CODE_KEY:
            return str(value)
    return error.code().name
