"""SQL of push notifications: devices and the notifier's state (migration 0006). One function per
query, as in store.py."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import class_row


@dataclass
class DeviceRow:
    device_id: str
    user_id: str
    platform: str
    push_token: str
    created_at: datetime


_DEVICE = "device_id::text, user_id, platform, push_token, created_at"


async def lock_user_devices(conn: psycopg.AsyncConnection, user_id: str) -> None:
    """Serialize one user's registrations until the transaction ends (the device limit holds)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('message.devices:' || %s, 0))", (user_id,))


async def count_devices(conn: psycopg.AsyncConnection, user_id: str) -> int:
    cur = await conn.execute("SELECT count(*) FROM message.devices WHERE user_id = %s", (user_id,))
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def find_device(conn: psycopg.AsyncConnection, platform: str, push_token: str) -> DeviceRow | None:
    async with conn.cursor(row_factory=class_row(DeviceRow)) as cur:
        await cur.execute(
            f"SELECT {_DEVICE} FROM message.devices WHERE platform = %s AND push_token = %s", (platform, push_token)
        )
        return await cur.fetchone()


async def put_device(
    conn: psycopg.AsyncConnection, device_id: str, user_id: str, platform: str, push_token: str
) -> DeviceRow:
    """Insert the device, or give a token another user holds to this one under the new id."""
    async with conn.cursor(row_factory=class_row(DeviceRow)) as cur:
        await cur.execute(
            f"""INSERT INTO message.devices AS d (device_id, user_id, platform, push_token)
                VALUES (%s, %s, %s, %s)
                ON CONFLICT (platform, push_token) DO UPDATE
                    SET device_id = EXCLUDED.device_id, user_id = EXCLUDED.user_id, created_at = now()
                RETURNING {_DEVICE}""",
            (device_id, user_id, platform, push_token),
        )
        row = await cur.fetchone()
        assert row is not None
        return row


async def list_devices(conn: psycopg.AsyncConnection, user_id: str) -> list[DeviceRow]:
    async with conn.cursor(row_factory=class_row(DeviceRow)) as cur:
        await cur.execute(
            f"SELECT {_DEVICE} FROM message.devices WHERE user_id = %s ORDER BY created_at, device_id", (user_id,)
        )
        return await cur.fetchall()


async def delete_device(conn: psycopg.AsyncConnection, user_id: str, device_id: str) -> bool:
    cur = await conn.execute("DELETE FROM message.devices WHERE device_id = %s AND user_id = %s", (device_id, user_id))
    return cur.rowcount == 1


async def devices_of(conn: psycopg.AsyncConnection, user_ids: list[str]) -> dict[str, list[DeviceRow]]:
    """The devices of several users at once (a batch of notifications), each user's oldest first."""
    async with conn.cursor(row_factory=class_row(DeviceRow)) as cur:
        await cur.execute(
            f"""SELECT {_DEVICE} FROM message.devices WHERE user_id = ANY(%s::text[])
                              ORDER BY user_id, created_at, device_id""",
            (user_ids,),
        )
        found: dict[str, list[DeviceRow]] = {}
        for row in await cur.fetchall():
            found.setdefault(row.user_id, []).append(row)
        return found


# --- the notifier ------------------------------------------------------------------------------------


async def mark_due(
    conn: psycopg.AsyncConnection, conversation_ids: list[str], seqs: list[int], due_ats: list[datetime]
) -> None:
    """New messages seen: one row per conversation, whatever its number of participants. A row that
    exists keeps its due time (the oldest unchecked message's, or a checking replica's lease) and
    only learns the latest seq."""
    await conn.execute(
        """INSERT INTO message.notify_due AS d (conversation_id, through_seq, due_at)
           SELECT * FROM unnest(%s::uuid[], %s::bigint[], %s::timestamptz[])
           ON CONFLICT (conversation_id) DO UPDATE SET through_seq = GREATEST(d.through_seq, EXCLUDED.through_seq)""",
        (conversation_ids, seqs, due_ats),
    )


async def claim_due(conn: psycopg.AsyncConnection, now: datetime, limit: int, lease_s: float) -> list[str]:
    """Conversations due at `now`, taken for `lease_s` (their due time moves past it): another
    replica skips them, and takes them over if this one dies before it finishes. Times are the
    message service's (messages' created_at are), not the database server's."""
    cur = await conn.execute(
        """UPDATE message.notify_due SET due_at = %s + make_interval(secs => %s)
           WHERE conversation_id IN (SELECT conversation_id FROM message.notify_due WHERE due_at <= %s
                                     ORDER BY due_at LIMIT %s FOR UPDATE SKIP LOCKED)
           RETURNING conversation_id::text""",
        (now, lease_s, now, limit),
    )
    return [row[0] for row in await cur.fetchall()]


async def checked_through(conn: psycopg.AsyncConnection, conversation_id: str, cutoff: datetime) -> int:
    """The highest seq of the messages sent at or before `cutoff`: those have waited the delay."""
    cur = await conn.execute(
        "SELECT COALESCE(max(seq), 0) FROM message.messages WHERE conversation_id = %s AND created_at <= %s",
        (conversation_id, cutoff),
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def oldest_after(conn: psycopg.AsyncConnection, conversation_id: str, seq: int) -> datetime | None:
    """When the oldest message past `seq` was sent (None: there is none)."""
    cur = await conn.execute(
        "SELECT min(created_at) FROM message.messages WHERE conversation_id = %s AND seq > %s", (conversation_id, seq)
    )
    row = await cur.fetchone()
    return row[0] if row else None


@dataclass
class RecipientMark:
    user_id: str
    delivered_seq: int
    notified_seq: int
    notified_at: datetime | None


async def recipient_marks(
    conn: psycopg.AsyncConnection, conversation_id: str, user_ids: list[str]
) -> list[RecipientMark]:
    """Each recipient's delivered position and how far notifications went for them."""
    async with conn.cursor(row_factory=class_row(RecipientMark)) as cur:
        await cur.execute(
            """SELECT u.user_id, COALESCE(p.delivered_seq, 0) AS delivered_seq,
                      COALESCE(k.notified_seq, 0) AS notified_seq, k.notified_at
               FROM unnest(%s::text[]) AS u(user_id)
               LEFT JOIN message.positions p ON p.conversation_id = %s AND p.user_id = u.user_id
               LEFT JOIN message.notify_marks k ON k.conversation_id = %s AND k.user_id = u.user_id""",
            (user_ids, conversation_id, conversation_id),
        )
        return await cur.fetchall()


@dataclass
class PendingMessage:
    message_id: str
    seq: int
    sender_id: str
    content: str
    encrypted: bool
    reply_to_id: str | None
    reply_to_sender: str | None
    created_at: datetime


async def messages_between(
    conn: psycopg.AsyncConnection, conversation_id: str, after_seq: int, through_seq: int, limit: int
) -> list[PendingMessage]:
    """The live messages in (after_seq, through_seq], newest first, at most `limit`, each with the
    sender of the message it replies to."""
    async with conn.cursor(row_factory=class_row(PendingMessage)) as cur:
        await cur.execute(
            """SELECT m.message_id::text, m.seq, m.sender_id, m.content, m.content_encrypted IS NOT NULL AS encrypted,
                      m.reply_to_id::text, r.sender_id AS reply_to_sender, m.created_at
               FROM message.messages m LEFT JOIN message.messages r ON r.message_id = m.reply_to_id
               WHERE m.conversation_id = %s AND m.seq > %s AND m.seq <= %s AND m.deleted_at IS NULL
               ORDER BY m.seq DESC LIMIT %s""",
            (conversation_id, after_seq, through_seq, limit),
        )
        return await cur.fetchall()


async def mark_notified(
    conn: psycopg.AsyncConnection,
    conversation_id: str,
    now: datetime,
    user_ids: list[str],
    seqs: list[int],
    notified: list[bool],
) -> None:
    """Messages up to each seq are checked for each user; `notified` restarts their collapse window
    (a muted user's messages are checked without a notification)."""
    await conn.execute(
        """INSERT INTO message.notify_marks AS k (conversation_id, user_id, notified_seq, notified_at)
           SELECT %s, u, s, CASE WHEN n THEN %s::timestamptz END
           FROM unnest(%s::text[], %s::bigint[], %s::bool[]) AS t(u, s, n)
           ON CONFLICT (conversation_id, user_id) DO UPDATE
               SET notified_seq = GREATEST(k.notified_seq, EXCLUDED.notified_seq),
                   notified_at = COALESCE(EXCLUDED.notified_at, k.notified_at)""",
        (conversation_id, now, user_ids, seqs, notified),
    )


async def reschedule(conn: psycopg.AsyncConnection, conversation_id: str, due_at: datetime) -> None:
    await conn.execute(
        "UPDATE message.notify_due SET due_at = %s WHERE conversation_id = %s", (due_at, conversation_id)
    )


async def forget_due(conn: psycopg.AsyncConnection, conversation_id: str, through_seq: int) -> bool:
    """Drop the row when nothing past `through_seq` was seen meanwhile; False when something was."""
    cur = await conn.execute(
        "DELETE FROM message.notify_due WHERE conversation_id = %s AND through_seq <= %s",
        (conversation_id, through_seq),
    )
    return cur.rowcount == 1
