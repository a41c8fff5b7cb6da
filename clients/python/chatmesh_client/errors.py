"""Errors the client raises: the edge's `{"error": {"code", "message", "status"}}` as one type."""

from __future__ import annotations


class ChatError(Exception):
    """The edge refused a request; `code` is its machine-readable code (`NOT_PARTICIPANT`, ...).
    `retry_after` is the seconds the edge asked to wait (`Retry-After`, or an error frame's
    `retry_after`), 0 when it said nothing."""

    def __init__(self, code: str, message: str, status: int = 0, retry_after: float = 0.0) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """Whether the same request may simply be sent again later."""
        return self.code in RETRYABLE


class ConnectionLost(ChatError):
    """The socket closed before a request was answered; the request may or may not have been applied."""

    def __init__(self, message: str = "the connection was lost") -> None:
        super().__init__("CONNECTION_LOST", message)


class RequestTimeout(ChatError, TimeoutError):
    """A socket request got no reply in time; it may or may not have been applied. Also a TimeoutError,
    as the client raised before it had this type."""

    def __init__(self, message: str) -> None:
        super().__init__("TIMEOUT", message)


class SendTimeout(ChatError):
    """A send was not acknowledged after every retry (each retry carried the same client_message_id,
    so the message is stored at most once)."""

    def __init__(self, message: str) -> None:
        super().__init__("SEND_TIMEOUT", message)


class Unauthenticated(ChatError):
    def __init__(self, message: str) -> None:
        super().__init__("UNAUTHENTICATED", message, 401)


# Codes worth sending the same request again for, after a jittered backoff (never sooner than the
# edge's Retry-After): an upstream away or slow (UNAVAILABLE, DEADLINE_EXCEEDED: 503 or an error frame
# with "retryable": true), a rate limit (RATE_LIMITED), or no answer at all (CONNECTION_LOST, TIMEOUT).
# INTERNAL is a bug on the server and would only fail again. The browser client keeps the same list
# (clients/web/chat-wire.js RETRYABLE).
RETRYABLE = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RATE_LIMITED", "CONNECTION_LOST", "TIMEOUT"})
