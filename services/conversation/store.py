"""SQL of the conversation service's users, conversations and participants: one function per query.

The projection's SQL (messages seen on the events stream) is in `projection_store.py`, the audit
log's in `audit_store.py`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg.rows import class_row

from chatmesh import outbox
from chatmesh.roles import Role
from services.conversation.states import Kind, RequestState

SCHEMA = "conversation"
# Tables a shared module owns in this schema, migrated before the service's own files (chatmesh/db.py).
SHARED_DDL = (outbox.DDL,)


@dataclass
class UserRow:
    user_id: str
    display_name: str
    created_at: datetime


@dataclass
class ConversationRow:
    conversation_id: str
    kind: Kind
    title: str
    created_by: str
    active: bool
    created_at: datetime
    last_message_at: datetime | None
    last_message_id: str | None
    last_message_seq: int
    last_sender_id: str | None
    last_preview: str | None
    last_deleted: bool
    membership_version: int
    participant_count: int
    activity_at: datetime
    request_state: RequestState | None  # direct conversations only
    description: str
    archived_at: datetime | None  # set while archived (read-only)

    def __post_init__(self) -> None:
        # The columns' text, refused if it is a kind or state this build does not know.
        self.kind = Kind(self.kind)
        self.request_state = None if self.request_state is None else RequestState(self.request_state)


@dataclass
class ListedRow(ConversationRow):
    """A conversation as one participant lists it: with their unread count, mute and pin."""

    unread_count: int = 0
    muted: bool = False
    pinned: bool = False


@dataclass(frozen=True)
class CallerState:
    """What of a conversation is the caller's own: unread count, mute, pin (all zero for an outsider)."""

    unread_count: int = 0
    muted: bool = False
    pinned: bool = False


@dataclass
class ParticipantRow:
    user_id: str
    role: Role
    joined_at: datetime
    display_name: str
    muted: bool = False  # their own mute: read for GetMembership, never shown to the others

    def __post_init__(self) -> None:
        self.role = Role(self.role)  # the column's text, refused if it is no role this build knows


@dataclass
class ConversationView:
    """A conversation with its participants (and the caller's unread count), as the read paths return it."""

    row: ConversationRow
    participants: list[ParticipantRow]
    unread_count: int = 0
    # False when the view carries only the count (list pages of groups), not every participant.
    with_participants: bool = field(default=True)
    muted: bool = False  # the caller's own mute and pin
    pinned: bool = False


_CONVERSATION_COLUMNS = """conversation_id::text, kind, title, created_by, active, created_at, last_message_at,
    last_message_id::text, last_message_seq, last_sender_id, last_preview, last_deleted, membership_version,
    participant_count, activity_at, request_state, description, archived_at"""
_C_COLUMNS = ", ".join(f"c.{c.strip()}" for c in _CONVERSATION_COLUMNS.split(","))


async def upsert_user(conn: psycopg.AsyncConnection, user_id: str, display_name: str) -> UserRow:
    """Record the user, or rename them when display_name is new ('' keeps the name they have).

    The edge calls this on every connect, and nearly always nothing changed: then the statement only
    reads the row (no write, no row lock, no WAL). updated_at is when the name last changed.
    """
    async with conn.cursor(row_factory=class_row(UserRow)) as cur:
        await cur.execute(
            """WITH found AS (
                   SELECT user_id, display_name, created_at FROM conversation.users WHERE user_id = %(u)s),
               written AS (
                   INSERT INTO conversation.users (user_id, display_name)
                   SELECT %(u)s, %(n)s
                   WHERE NOT EXISTS (SELECT 1 FROM found WHERE %(n)s IN ('', found.display_name))
                   ON CONFLICT (user_id) DO UPDATE
                     SET display_name = COALESCE(NULLIF(EXCLUDED.display_name, ''), users.display_name),
                         updated_at = now()
                   RETURNING user_id, display_name, created_at)
               SELECT * FROM written
               UNION ALL SELECT * FROM found WHERE NOT EXISTS (SELECT 1 FROM written)""",
            {"u": user_id, "n": display_name},
        )
        row = await cur.fetchone()
        assert row is not None
        return row


async def ensure_user(conn: psycopg.AsyncConnection, user_id: str) -> None:
    """Record a verified caller without touching an existing entry (a gRPC caller the edge never saw)."""
    await conn.execute("INSERT INTO conversation.users (user_id) VALUES (%s) ON CONFLICT DO NOTHING", (user_id,))


async def get_user(conn: psycopg.AsyncConnection, user_id: str) -> UserRow | None:
    async with conn.cursor(row_factory=class_row(UserRow)) as cur:
        await cur.execute(
            "SELECT user_id, display_name, created_at FROM conversation.users WHERE user_id = %s", (user_id,)
        )
        return await cur.fetchone()


async def existing_users(conn: psycopg.AsyncConnection, user_ids: list[str]) -> set[str]:
    cur = await conn.execute("SELECT user_id FROM conversation.users WHERE user_id = ANY(%s)", (user_ids,))
    return {row[0] for row in await cur.fetchall()}


async def find_direct(conn: psycopg.AsyncConnection, low: str, high: str) -> ConversationRow | None:
    async with conn.cursor(row_factory=class_row(ConversationRow)) as cur:
        await cur.execute(
            f"""SELECT {_CONVERSATION_COLUMNS} FROM conversation.conversations
                WHERE kind = 'direct' AND direct_low = %s AND direct_high = %s""",
            (low, high),
        )
        return await cur.fetchone()


async def insert_direct(
    conn: psycopg.AsyncConnection, creator: str, low: str, high: str, request_state: RequestState
) -> ConversationRow | None:
    """Insert the pair's direct conversation; None when a concurrent create won the unique index."""
    async with conn.cursor(row_factory=class_row(ConversationRow)) as cur:
        await cur.execute(
            f"""INSERT INTO conversation.conversations
                    (kind, created_by, direct_low, direct_high, participant_count, request_state)
                VALUES ('direct', %s, %s, %s, 2, %s)
                ON CONFLICT (direct_low, direct_high) WHERE kind = 'direct' DO NOTHING
                RETURNING {_CONVERSATION_COLUMNS}""",
            (creator, low, high, request_state),
        )
        return await cur.fetchone()


async def insert_group(conn: psycopg.AsyncConnection, creator: str, title: str, size: int) -> ConversationRow:
    async with conn.cursor(row_factory=class_row(ConversationRow)) as cur:
        await cur.execute(
            f"""INSERT INTO conversation.conversations (kind, created_by, title, participant_count)
                VALUES ('group', %s, %s, %s) RETURNING {_CONVERSATION_COLUMNS}""",
            (creator, title, size),
        )
        row = await cur.fetchone()
        assert row is not None
        return row


async def insert_participants(
    conn: psycopg.AsyncConnection,
    conversation_id: str,
    members: list[tuple[str, Role]],
    read_seq: int = 0,
    engaged: Collection[str] = (),
) -> None:
    """Add participants; read_seq starts them at the conversation's current end (nothing unread);
    `engaged` are those who take part from the start (the creator; a recipient who is no stranger)."""
    async with conn.cursor() as cur:
        await cur.executemany(
            """INSERT INTO conversation.participants (conversation_id, user_id, role, read_seq, engaged)
               VALUES (%s, %s, %s, %s, %s)""",
            [(conversation_id, user_id, role, read_seq, user_id in engaged) for user_id, role in members],
        )


async def get_conversation(
    conn: psycopg.AsyncConnection, conversation_id: str, *, for_update: bool = False
) -> ConversationRow | None:
    """One conversation; for_update locks its row, which serializes the membership changes of a conversation."""
    lock = " FOR UPDATE" if for_update else ""
    async with conn.cursor(row_factory=class_row(ConversationRow)) as cur:
        await cur.execute(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversation.conversations WHERE conversation_id = %s{lock}",
            (conversation_id,),
        )
        return await cur.fetchone()


async def list_participants(conn: psycopg.AsyncConnection, conversation_id: str) -> list[ParticipantRow]:
    """Participants in seniority order (participants_by_seniority)."""
    async with conn.cursor(row_factory=class_row(ParticipantRow)) as cur:
        await cur.execute(
            """SELECT p.user_id, p.role, p.joined_at, u.display_name, p.muted
               FROM conversation.participants p JOIN conversation.users u USING (user_id)
               WHERE p.conversation_id = %s ORDER BY p.joined_at, p.user_id""",
            (conversation_id,),
        )
        return await cur.fetchall()


async def participants_of(
    conn: psycopg.AsyncConnection, conversation_ids: list[str]
) -> dict[str, list[ParticipantRow]]:
    """Participants of several conversations at once (a list page's direct conversations)."""
    found: dict[str, list[ParticipantRow]] = {cid: [] for cid in conversation_ids}
    cur = await conn.execute(
        """SELECT p.conversation_id::text, p.user_id, p.role, p.joined_at, u.display_name
           FROM conversation.participants p JOIN conversation.users u USING (user_id)
           WHERE p.conversation_id = ANY(%s::uuid[]) ORDER BY p.conversation_id, p.joined_at, p.user_id""",
        (conversation_ids,),
    )
    for cid, *rest in await cur.fetchall():
        found[cid].append(ParticipantRow(*rest))
    return found


async def unread_count(conn: psycopg.AsyncConnection, conversation_id: str, user_id: str) -> int:
    cur = await conn.execute(
        """SELECT GREATEST(c.last_message_seq - p.read_seq - p.own_unread, 0)
           FROM conversation.participants p JOIN conversation.conversations c USING (conversation_id)
           WHERE p.conversation_id = %s AND p.user_id = %s""",
        (conversation_id, user_id),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def caller_state(conn: psycopg.AsyncConnection, conversation_id: str, user_id: str) -> CallerState:
    """The caller's unread count, mute and pin in one read of their participant row."""
    async with conn.cursor(row_factory=class_row(CallerState)) as cur:
        await cur.execute(
            """SELECT GREATEST(c.last_message_seq - p.read_seq - p.own_unread, 0) AS unread_count, p.muted, p.pinned
               FROM conversation.participants p JOIN conversation.conversations c USING (conversation_id)
               WHERE p.conversation_id = %s AND p.user_id = %s""",
            (conversation_id, user_id),
        )
        return await cur.fetchone() or CallerState()


async def list_for_user(
    conn: psycopg.AsyncConnection, user_id: str, limit: int, after: tuple[bool, datetime, datetime, str] | None
) -> list[ListedRow]:
    """The user's active conversations, pinned ones first, then newest activity first, after a keyset
    position (pinned, activity, created, id): every key descends, so one row comparison pages it."""
    keyset = "AND (p.pinned, c.activity_at, c.created_at, c.conversation_id) < (%s, %s, %s, %s::uuid)" if after else ""
    async with conn.cursor(row_factory=class_row(ListedRow)) as cur:
        await cur.execute(
            f"""SELECT {_C_COLUMNS}, GREATEST(c.last_message_seq - p.read_seq - p.own_unread, 0) AS unread_count,
                       p.muted, p.pinned
                FROM conversation.participants p JOIN conversation.conversations c USING (conversation_id)
                WHERE p.user_id = %s AND c.active {keyset}
                ORDER BY p.pinned DESC, c.activity_at DESC, c.created_at DESC, c.conversation_id DESC
                LIMIT %s""",
            (user_id, *(after or ()), limit),
        )
        return await cur.fetchall()


async def get_role(conn: psycopg.AsyncConnection, conversation_id: str, user_id: str) -> Role | None:
    cur = await conn.execute(
        "SELECT role FROM conversation.participants WHERE conversation_id = %s AND user_id = %s",
        (conversation_id, user_id),
    )
    row = await cur.fetchone()
    return Role(row[0]) if row else None


async def delete_participant(conn: psycopg.AsyncConnection, conversation_id: str, user_id: str) -> None:
    await conn.execute(
        "DELETE FROM conversation.participants WHERE conversation_id = %s AND user_id = %s", (conversation_id, user_id)
    )
    await conn.execute(
        "DELETE FROM conversation.own_messages WHERE conversation_id = %s AND user_id = %s", (conversation_id, user_id)
    )


async def set_role(conn: psycopg.AsyncConnection, conversation_id: str, user_id: str, role: Role) -> None:
    await conn.execute(
        "UPDATE conversation.participants SET role = %s WHERE conversation_id = %s AND user_id = %s",
        (role, conversation_id, user_id),
    )


async def count_role(conn: psycopg.AsyncConnection, conversation_id: str, role: Role) -> int:
    cur = await conn.execute(
        "SELECT count(*) FROM conversation.participants WHERE conversation_id = %s AND role = %s",
        (conversation_id, role),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def longest_standing(conn: psycopg.AsyncConnection, conversation_id: str) -> str | None:
    """The participant who joined first (participants_by_seniority)."""
    cur = await conn.execute(
        """SELECT user_id FROM conversation.participants WHERE conversation_id = %s
           ORDER BY joined_at, user_id LIMIT 1""",
        (conversation_id,),
    )
    row = await cur.fetchone()
    return str(row[0]) if row else None


async def membership_changed(
    conn: psycopg.AsyncConnection, conversation_id: str, count_delta: int = 0, *, deactivate: bool = False
) -> None:
    """Bump membership_version (callers caching membership compare it) and the participant count."""
    await conn.execute(
        """UPDATE conversation.conversations
           SET membership_version = membership_version + 1, participant_count = participant_count + %s,
               active = active AND NOT %s
           WHERE conversation_id = %s""",
        (count_delta, deactivate, conversation_id),
    )


async def list_conversation_ids(conn: psycopg.AsyncConnection, user_id: str) -> list[str]:
    """Served by participants_by_user (user_id, conversation_id)."""
    cur = await conn.execute(
        "SELECT conversation_id::text FROM conversation.participants WHERE user_id = %s", (user_id,)
    )
    return [row[0] for row in await cur.fetchall()]


async def view_of(conn: psycopg.AsyncConnection, row: ConversationRow, caller: str = "") -> ConversationView:
    """A conversation as `caller` sees it: its participants, and the caller's own unread count, mute and
    pin (none without a caller)."""
    mine = await caller_state(conn, row.conversation_id, caller) if caller else CallerState()
    return ConversationView(
        row, await list_participants(conn, row.conversation_id), mine.unread_count, muted=mine.muted, pinned=mine.pinned
    )


async def current_view(conn: psycopg.AsyncConnection, conversation_id: str, caller: str) -> ConversationView:
    """view_of the conversation as it is now: what a change made in this transaction returns."""
    row = await get_conversation(conn, conversation_id)
    assert row is not None
    return await view_of(conn, row, caller)
