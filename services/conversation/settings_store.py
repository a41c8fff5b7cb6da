"""SQL of conversation settings: a group's title and description, archiving, closing, and each
participant's own mute and pin. One function per query; the transaction is the caller's."""

from __future__ import annotations

import psycopg


async def set_details(conn: psycopg.AsyncConnection, conversation_id: str, title: str, description: str) -> None:
    await conn.execute(
        "UPDATE conversation.conversations SET title = %s, description = %s WHERE conversation_id = %s",
        (title, description, conversation_id),
    )


async def set_archived(conn: psycopg.AsyncConnection, conversation_id: str, archived: bool) -> None:
    """Archive (from now) or unarchive; the caller bumps the membership version, which carries it."""
    await conn.execute(
        """UPDATE conversation.conversations SET archived_at = CASE WHEN %s THEN now() END
           WHERE conversation_id = %s""",
        (archived, conversation_id),
    )


async def set_preferences(
    conn: psycopg.AsyncConnection, conversation_id: str, user_id: str, muted: bool | None, pinned: bool | None
) -> None:
    """Change what is given (None: unchanged) on the user's own participant row."""
    await conn.execute(
        """UPDATE conversation.participants
           SET muted = COALESCE(%s, muted), pinned = COALESCE(%s, pinned)
           WHERE conversation_id = %s AND user_id = %s""",
        (muted, pinned, conversation_id, user_id),
    )


async def delete_all_participants(conn: psycopg.AsyncConnection, conversation_id: str) -> None:
    """Everyone leaves (a group closing): their rows and their own-message counters go."""
    await conn.execute("DELETE FROM conversation.participants WHERE conversation_id = %s", (conversation_id,))
    await conn.execute("DELETE FROM conversation.own_messages WHERE conversation_id = %s", (conversation_id,))
