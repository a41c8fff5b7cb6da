"""Redis: one client per process, and every key under the configured prefix.

Keys that belong to one user carry the user id as a hash tag (`{alice}`), so a user's keys land in
one slot on Redis Cluster; an events partition's stream and its fan-out lease share one (`{p3}`).
"""

from __future__ import annotations

import zlib

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

# Every command answers within this or fails (a stalled Redis must not hang a caller). It is longer
# than any blocking read the mesh issues (fan-out's XREADGROUP blocks for at most 1 s).
COMMAND_TIMEOUT_S = 3.0
CONNECT_TIMEOUT_S = 2.0
# K, the number of events partitions (CHAT_FANOUT_PARTITIONS): every writer and reader of the events
# streams must agree on it, so it is one setting for the whole mesh.
DEFAULT_PARTITIONS = 8


def open_redis(url: str, *, timeout_s: float = COMMAND_TIMEOUT_S) -> aioredis.Redis:
    """A client whose every command has a deadline. One quick retry on a fresh connection covers a
    socket that died with a restarted Redis; longer outages surface to the caller's own backoff
    (redis-py's default, three retries up to 10 s apart, would hide them for seconds per call). A
    timeout is not retried: a stalled Redis would only double the wait."""
    return aioredis.Redis.from_url(
        url,
        decode_responses=False,
        health_check_interval=30,
        socket_keepalive=True,
        socket_timeout=timeout_s,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        retry=_one_quick_retry(),
    )


def open_pubsub_redis(url: str) -> aioredis.Redis:
    """A client for pub/sub only: its reads wait for the next message however long that takes (a
    read timeout would end an idle subscription), and the health check pings an idle connection."""
    return aioredis.Redis.from_url(
        url,
        decode_responses=False,
        health_check_interval=10,
        socket_keepalive=True,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        retry=_one_quick_retry(),
    )


def _one_quick_retry() -> Retry:
    return Retry(
        ExponentialWithJitterBackoff(base=0.05, cap=0.2),
        retries=1,
        supported_errors=(redis.exceptions.ConnectionError,),
    )


class Keys:
    """The keys more than one service reads or writes (each service keeps its own: services/presence/keys.py)."""

    def __init__(self, prefix: str, partitions: int = DEFAULT_PARTITIONS) -> None:
        if partitions < 1:
            raise ValueError(f"partitions must be at least 1 (got {partitions})")
        self.prefix = prefix
        self.partitions = partitions

    def partition_of(self, conversation_id: str) -> int:
        """A conversation's events partition: crc32 of its id modulo K, so all its events go to one
        stream, in commit order. An event without a conversation goes to partition 0."""
        return zlib.crc32(conversation_id.encode()) % self.partitions if conversation_id else 0

    def event_partition(self, partition: int) -> str:
        """One of the K events streams (the outbox relays write, fan-out, the projection and the
        notifier read). The hash tag puts it in one slot with its fan-out lease."""
        return f"{self.prefix}:events:{{p{partition}}}"

    def events_of(self, conversation_id: str) -> str:
        return self.event_partition(self.partition_of(conversation_id))

    @property
    def event_streams(self) -> list[str]:
        """The K events streams, partition 0 first."""
        return [self.event_partition(p) for p in range(self.partitions)]

    @property
    def legacy_events(self) -> str:
        """The single events stream of releases before partitioning: read until drained on an upgrade
        (chatmesh/event_streams.py), written by nothing current."""
        return f"{self.prefix}:events"

    def fanout_lease(self, partition: int) -> str:
        """Names the one message replica fanning out a partition (same hash tag as its stream)."""
        return f"{self.prefix}:fanout:lease:{{p{partition}}}"

    @property
    def fanout_legacy_lease(self) -> str:
        """The single fan-out lease of releases before partitioning; whoever holds it reads the legacy
        stream, so an old replica and a new one never read that stream at once during an upgrade."""
        return f"{self.prefix}:fanout:leader"

    @property
    def fanout_replicas(self) -> str:
        """Sorted set of live fan-out workers (score: last heartbeat, ms), for each one's fair share."""
        return f"{self.prefix}:fanout:replicas"

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}:events:dead"

    @property
    def notifications(self) -> str:
        """Push notifications recorded for users who did not get a message live (push workers read it)."""
        return f"{self.prefix}:notifications"

    @property
    def notifications_dead(self) -> str:
        return f"{self.prefix}:notifications:dead"

    @property
    def epoch(self) -> str:
        """A random value set once; when Redis loses its data the epoch changes and old tokens resync."""
        return f"{self.prefix}:epoch"

    def inbox(self, user_id: str) -> str:
        return f"{self.prefix}:inbox:{{{user_id}}}"

    @property
    def wake(self) -> str:
        """Pub/sub channel on which fan-out names, once per batch, the users whose inboxes grew."""
        return f"{self.prefix}:wake"

    def membership_version(self, conversation_id: str) -> str:
        """A conversation's latest membership version (chatmesh.membership: immediate revocation)."""
        return f"{self.prefix}:membership:version:{conversation_id}"
