"""SQL of presence privacy: who has taken part where, direct conversation requests, blocks and the
hide-last-seen setting. One function per query; callers own the transaction.

"Taken part" is `participants.engaged` (migration 0003). Blocked direct conversations are left out
of both directions of the contacts, so a block hides presence both ways at once.
"""

from __future__ import annotations

import psycopg

from services.conversation.states import RequestState

# A conversation through which presence is shown: live, and not a blocked direct conversation.
_SHOWS_PRESENCE = "c.active AND c.request_state IS DISTINCT FROM 'blocked'"


async def audience(conn: psycopg.AsyncConnection, user_id: str) -> list[str]:
    """Who may see the user's presence: the others in the conversations the user has taken part in."""
    cur = await conn.execute(
        f"""SELECT DISTINCT other.user_id FROM conversation.participants me
            JOIN conversation.conversations c USING (conversation_id)
            JOIN conversation.participants other
              ON other.conversation_id = me.conversation_id AND other.user_id <> me.user_id
            WHERE me.user_id = %s AND me.engaged AND {_SHOWS_PRESENCE}""",
        (user_id,),
    )
    return [row[0] for row in await cur.fetchall()]


async def visible(conn: psycopg.AsyncConnection, user_id: str) -> list[tuple[str, bool]]:
    """Whose presence the user may see, each with their hide_last_seen: the others who have taken
    part in a conversation with the user."""
    cur = await conn.execute(
        f"""SELECT other.user_id, bool_or(u.hide_last_seen) FROM conversation.participants me
            JOIN conversation.conversations c USING (conversation_id)
            JOIN conversation.participants other
              ON other.conversation_id = me.conversation_id AND other.user_id <> me.user_id
            JOIN conversation.users u ON u.user_id = other.user_id
            WHERE me.user_id = %s AND other.engaged AND {_SHOWS_PRESENCE}
            GROUP BY other.user_id""",
        (user_id,),
    )
    return [(row[0], bool(row[1])) for row in await cur.fetchall()]


async def has_taken_part_with(conn: psycopg.AsyncConnection, user_id: str, other: str) -> bool:
    """Whether user_id has taken part in a conversation `other` is in (then `other` is no stranger to them)."""
    cur = await conn.execute(
        f"""SELECT EXISTS (
                SELECT 1 FROM conversation.participants me
                JOIN conversation.conversations c USING (conversation_id)
                JOIN conversation.participants other
                  ON other.conversation_id = me.conversation_id AND other.user_id = %s
                WHERE me.user_id = %s AND me.engaged AND {_SHOWS_PRESENCE})""",
        (other, user_id),
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def set_engaged(conn: psycopg.AsyncConnection, conversation_id: str, user_id: str) -> bool:
    """Mark the participant as taking part; True when that changed."""
    cur = await conn.execute(
        """UPDATE conversation.participants SET engaged = true
           WHERE conversation_id = %s AND user_id = %s AND NOT engaged""",
        (conversation_id, user_id),
    )
    return cur.rowcount > 0


async def set_request_state(
    conn: psycopg.AsyncConnection, conversation_id: str, state: RequestState, *, active: bool
) -> None:
    """A direct conversation's request state and whether it is live, with a membership_version bump
    (the membership caches carry `blocked`, and a declined conversation is inactive)."""
    await conn.execute(
        """UPDATE conversation.conversations
           SET request_state = %s, active = %s, membership_version = membership_version + 1
           WHERE conversation_id = %s""",
        (state, active, conversation_id),
    )


async def block(conn: psycopg.AsyncConnection, blocker: str, blocked: str) -> None:
    await conn.execute(
        "INSERT INTO conversation.blocks (blocker, blocked) VALUES (%s, %s) ON CONFLICT DO NOTHING", (blocker, blocked)
    )


async def blocked_by(conn: psycopg.AsyncConnection, user_id: str, among: list[str]) -> list[str]:
    """Those of `among` who blocked user_id (blocks_by_blocked)."""
    cur = await conn.execute(
        "SELECT blocker FROM conversation.blocks WHERE blocked = %s AND blocker = ANY(%s) ORDER BY blocker",
        (user_id, among),
    )
    return [row[0] for row in await cur.fetchall()]


async def hide_last_seen(conn: psycopg.AsyncConnection, user_id: str) -> bool:
    cur = await conn.execute("SELECT hide_last_seen FROM conversation.users WHERE user_id = %s", (user_id,))
    row = await cur.fetchone()
    return bool(row and row[0])


async def set_hide_last_seen(conn: psycopg.AsyncConnection, user_id: str, hide: bool) -> None:
    """The caller may be unknown to the directory yet (a gRPC caller the edge never saw): insert them."""
    await conn.execute(
        """INSERT INTO conversation.users (user_id, hide_last_seen) VALUES (%s, %s)
           ON CONFLICT (user_id) DO UPDATE SET hide_last_seen = EXCLUDED.hide_last_seen""",
        (user_id, hide),
    )
