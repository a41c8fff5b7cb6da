"""Errors the client raises: the edge's `{"error": {"code", "message", "status"}}` as one type."""

from __future__ import annotations


class ChatError(Exception):
    """The edge refused a request; `code` is its machine-readable code (`NOT_PARTICIPANT`, ...)."""

    def __init__(self, code: str, message: str, status: int = 0) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


class ConnectionLost(ChatError):
    """The socket closed before a request was answered; the request may or may not have been applied."""

    def __init__(self, message: str = "the connection was lost") -> None:
        super().__init__("CONNECTION_LOST", message)


class SendTimeout(ChatError):
    """A send was not acknowledged after every retry (each retry carried the same client_message_id,
    so the message is stored at most once)."""

    def __init__(self, message: str) -> None:
        super().__init__("SEND_TIMEOUT", message)


class Unauthenticated(ChatError):
    def __init__(self, message: str) -> None:
        super().__init__("UNAUTHENTICATED", message, 401)


# Codes worth retrying: the edge or an upstream was briefly away.
RETRYABLE = frozenset({"UNAVAILABLE", "CONNECTION_LOST", "DEADLINE_EXCEEDED", "INTERNAL_UNAVAILABLE"})
