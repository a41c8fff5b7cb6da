"""Redis: one client per process, and every key under the configured prefix.

Keys that belong to one user carry the user id as a hash tag (`{alice}`), so a user's keys land in
one slot on Redis Cluster.
"""

from __future__ import annotations

import redis.asyncio as aioredis


def open_redis(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, decode_responses=False, health_check_interval=30,
                                   socket_keepalive=True, retry_on_timeout=True)


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    @property
    def events(self) -> str:
        """Every committed domain event, in commit order (the outbox relay writes, fan-out reads)."""
        return f"{self.prefix}:events"

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}:events:dead"

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

    def presence(self, name: str) -> str:
        return f"{self.prefix}:presence:{name}"

    def presence_conns(self, user_id: str) -> str:
        """A user's live connections: sorted set of `<edge id>:<connection id>` scored by deadline (ms)."""
        return f"{self.prefix}:presence:conns:{{{user_id}}}"

    def presence_state(self, user_id: str) -> str:
        """A user's shown status, explicit (invisible) state and last seen time."""
        return f"{self.prefix}:presence:state:{{{user_id}}}"

    def presence_live(self, user_id: str) -> str:
        """Pub/sub channel of a user's ephemeral events (presence and typing)."""
        return f"{self.prefix}:presence:live:{{{user_id}}}"

    def user_of_presence_live(self, channel: str) -> str:
        return channel[len(self.prefix) + len(":presence:live:{"):-1]
