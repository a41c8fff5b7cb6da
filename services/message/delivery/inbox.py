"""Inboxes: one Redis stream per user holding the durable events addressed to them.

A resume token is `<epoch>:<inbox entry id>`. The epoch is a random value stored once in Redis; if
Redis loses its data the epoch is gone, a new one is made, and every older token reads as
`resync_required` instead of replaying from a reused position.

An event of the offline buffer carries `<epoch>:<inbox entry id>:b`: the position the buffer was
read at, marked, so that resuming from the middle of a buffer replays the buffer again (what is
still unacknowledged of it, from PostgreSQL) before the inbox after that position. A plain token
there would resume past the rest of the buffer.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import redis.asyncio as aioredis

from chatmesh.redis_conn import Keys

INBOX_MAXLEN = 10_000
INBOX_MAX_AGE_S = 7 * 24 * 3600


def last_key(keys: Keys, user_id: str) -> str:
    """The id of the last entry fan-out appended to a user's inbox, beside it (same hash tag). Fan-out
    reads it before each append and sets it after, in its script, so the live batch can say which
    entry each new one follows: a subscription that sent exactly that one takes the new entry
    without reading the inbox. Every writer of an inbox must keep it (only fan-out writes inboxes)."""
    return f"{keys.prefix}:inbox-last:{{{user_id}}}"


def live_channel(keys: Keys) -> str:
    """Pub/sub channel of the live batches fan-out publishes (msgpack, see fanout.py). A new name, not
    the old wake channel, so a hub of the previous version never misreads one."""
    return f"{keys.prefix}:live"


def parse_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


BUFFERED = ":b"


@dataclass(frozen=True)
class Token:
    epoch: str
    entry_id: str
    buffered: bool = False  # taken from the offline buffer: resuming replays the buffer first

    def encode(self) -> str:
        return f"{self.epoch}:{self.entry_id}{BUFFERED if self.buffered else ''}"

    @classmethod
    def decode(cls, token: str) -> Token | None:
        epoch, sep, entry_id = token.partition(":")
        if not sep or not epoch:
            return None
        buffered = entry_id.endswith(BUFFERED)
        entry_id = entry_id.removesuffix(BUFFERED)
        try:
            parse_id(entry_id)
        except ValueError:
            return None
        return cls(epoch, entry_id, buffered)


class Inboxes:
    def __init__(self, redis_client: aioredis.Redis, keys: Keys) -> None:
        self._redis = redis_client
        self._keys = keys

    async def epoch(self) -> str:
        """The current epoch, creating one if Redis has none (first start, or data lost)."""
        await self._redis.set(self._keys.epoch, secrets.token_hex(8), nx=True)
        value = await self._redis.get(self._keys.epoch)
        return value.decode() if value else ""

    async def read_after(self, user_id: str, entry_id: str, count: int = 500) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Entries (XRANGE rows) strictly after entry_id ("0" for all), oldest first."""
        start = "(" + entry_id if entry_id != "0" else "-"
        rows: list[tuple[bytes, dict[bytes, bytes]]] = await self._redis.xrange(
            self._keys.inbox(user_id), min=start, max="+", count=count
        )
        return rows

    async def first_id(self, user_id: str) -> str | None:
        rows = await self._redis.xrange(self._keys.inbox(user_id), count=1)
        return rows[0][0].decode() if rows else None

    async def last_id(self, user_id: str) -> str | None:
        rows = await self._redis.xrevrange(self._keys.inbox(user_id), count=1)
        return rows[0][0].decode() if rows else None

    async def covers(self, user_id: str, entry_id: str) -> bool:
        """Whether the inbox still holds everything after entry_id (nothing was trimmed past it)."""
        first = await self.first_id(user_id)
        return first is None or parse_id(first) <= parse_id(entry_id)
