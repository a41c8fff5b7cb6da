"""Per-socket rate limits for each kind of frame a client sends, in process.

Every frame already counts against the socket's frames per second (CHAT_WS_MAX_FRAMES_PER_S, with
the flood rule that closes a socket at four times that). Each kind that costs the mesh something has
its own budget too, a token bucket per socket (`count` per `seconds`, refilled continuously, at most
`count` saved up):

| kind | frames | what a unit is | setting |
|---|---|---|---|
| presence | `presence:online`, `presence:offline` | a frame | CHAT_WS_RATE_PRESENCE |
| typing | `chat:typing` | a frame | CHAT_WS_RATE_TYPING |
| receipts | `chat:message_delivered`, `chat:message_read` | a frame | CHAT_WS_RATE_RECEIPTS |
| acks | `events_ack` | an event id (at least 1 a frame) | CHAT_WS_RATE_ACKS |

Acknowledgements are counted by id, not by frame, because a client acknowledges in batches: the
default (20,000 per 10 s, all of it at once) lets a client acknowledge two full catch-ups (an inbox
holds 10,000) in one go, while a client that sends large acks with made-up ids all day is refused.
Message sends are limited per user across replicas in Redis (ratelimit.py), typing also per user by
the presence service.

A frame over its budget is answered `RATE_LIMITED` (retryable, `retry_after` the seconds until it
would pass) and not acted on; the socket stays open. A check is O(1): one bucket, refilled from the
monotonic time the reader already took for the frame. A socket gets its buckets only when it sends
its first limited frame, so an idle socket costs nothing here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chatmesh.config import Settings

KIND_OF: dict[str, str] = {
    "presence:online": "presence",
    "presence:offline": "presence",
    "chat:typing": "typing",
    "chat:message_delivered": "receipts",
    "chat:message_read": "receipts",
    "events_ack": "acks",
}


def rates_of(settings: Settings) -> dict[str, tuple[int, float]]:
    """Each kind's (count, seconds) from the settings; a count of 0 means no limit."""
    return {
        "presence": settings.ws_rate_presence,
        "typing": settings.ws_rate_typing,
        "receipts": settings.ws_rate_receipts,
        "acks": settings.ws_rate_acks,
    }


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float  # monotonic time of the last refill


class FrameLimits:
    __slots__ = ("_rates", "_buckets")  # one per socket: kept small

    def __init__(self, rates: Mapping[str, tuple[int, float]]) -> None:
        self._rates = rates  # shared by every socket of the edge
        self._buckets: dict[str, _Bucket] | None = None

    def take(self, frame_type: str, data: Any, now: float) -> float:
        """0 when the frame may go on; otherwise the seconds until it would (the frame is refused)."""
        kind = KIND_OF.get(frame_type)
        if kind is None:
            return 0.0
        count, seconds = self._rates[kind]
        if count <= 0:
            return 0.0
        units = 1
        if kind == "acks" and isinstance(data, dict) and isinstance(ids := data.get("event_ids"), list):
            units = min(max(1, len(ids)), count)  # a frame larger than the whole budget waits for all of it
        if self._buckets is None:
            self._buckets = {}
        bucket = self._buckets.get(kind)
        per_s = count / seconds
        if bucket is None:
            bucket = self._buckets[kind] = _Bucket(float(count), now)
        else:
            bucket.tokens = min(float(count), bucket.tokens + (now - bucket.stamp) * per_s)
            bucket.stamp = now
        if bucket.tokens >= units:
            bucket.tokens -= units
            return 0.0
        return math.ceil((units - bucket.tokens) / per_s * 10) / 10  # tenths of a second, at least 0.1
