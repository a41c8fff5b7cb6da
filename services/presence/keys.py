"""Presence's Redis keys, all under the mesh's prefix. A user's keys carry the user id as a hash tag
(`{alice}`), so they land in one slot on Redis Cluster beside the user's other keys."""

from __future__ import annotations


class PresenceKeys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def presence(self, name: str) -> str:
        """A key shared by every user (the deadlines and typing sets, the sweep and announce queues)."""
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
        return channel[len(self.prefix) + len(":presence:live:{") : -1]
