"""SQL of the projection: the last-message preview and per-participant read positions, kept from the
message service's events. Every statement only moves state forward, so a replayed or late event is a
no-op (the guards are in the WHERE clauses).

Statements take a whole batch at once (arrays unnested server-side), so a batch of events costs a
fixed handful of round trips, not a few per event: `projection.py` folds the batch first (one row
per conversation, one per participant), since an `UPDATE … FROM` row may only be changed once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

# (conversation_id, user_id) of a participant, and the same with a seq.
Key = tuple[str, str]
Position = tuple[str, str, int]


@dataclass(frozen=True)
class SeenMessage:
    conversation_id: str
    message_id: str
    seq: int
    sender_id: str
    preview: str | None  # None for a deleted message
    deleted: bool
    sent_at: datetime | None
    edited_at: datetime | None


async def advance_last_messages(conn: psycopg.AsyncConnection, messages: list[SeenMessage]) -> None:
    """Make each message its conversation's last one where its seq is newer (at most one per conversation)."""
    if not messages:
        return
    ordered = sorted(messages, key=lambda m: m.conversation_id)  # the same lock order in every replica
    await conn.execute(
        """UPDATE conversation.conversations c
           SET last_message_seq = m.seq, last_message_id = m.message_id, last_sender_id = m.sender_id,
               last_preview = m.preview, last_deleted = m.deleted, last_message_at = m.sent_at,
               last_edited_at = m.edited_at
           FROM unnest(%s::uuid[], %s::bigint[], %s::uuid[], %s::text[], %s::text[], %s::boolean[],
                       %s::timestamptz[], %s::timestamptz[])
                AS m(conversation_id, seq, message_id, sender_id, preview, deleted, sent_at, edited_at)
           WHERE c.conversation_id = m.conversation_id AND c.last_message_seq < m.seq""",
        (
            [m.conversation_id for m in ordered],
            [m.seq for m in ordered],
            [m.message_id for m in ordered],
            [m.sender_id for m in ordered],
            [m.preview for m in ordered],
            [m.deleted for m in ordered],
            [m.sent_at for m in ordered],
            [m.edited_at for m in ordered],
        ),
    )


async def refresh_last_messages(conn: psycopg.AsyncConnection, messages: list[SeenMessage]) -> None:
    """Edits or deletions of the current last message, applied in the order given: a deletion sticks,
    an older edit never wins. Rare next to new messages, so one row per event (one round trip)."""
    if not messages:
        return
    async with conn.cursor() as cur:
        await cur.executemany(
            """UPDATE conversation.conversations
               SET last_deleted = last_deleted OR %(deleted)s,
                   last_preview = CASE WHEN last_deleted OR %(deleted)s THEN NULL ELSE %(preview)s END,
                   last_edited_at = GREATEST(last_edited_at, %(edited)s)
               WHERE conversation_id = %(c)s AND last_message_seq = %(seq)s AND last_message_id = %(id)s
                 AND (%(deleted)s OR last_edited_at IS NULL OR %(edited)s::timestamptz IS NULL
                      OR %(edited)s >= last_edited_at)""",
            [
                {
                    "deleted": m.deleted,
                    "preview": m.preview,
                    "edited": m.edited_at,
                    "c": m.conversation_id,
                    "seq": m.seq,
                    "id": m.message_id,
                }
                for m in messages
            ],
        )


async def lock_read_seqs(conn: psycopg.AsyncConnection, keys: list[Key]) -> dict[Key, int]:
    """The participants' read positions, rows locked for this transaction (in one order, so replicas
    do not deadlock); non-participants are absent. A separate statement from the changes, so these
    see what a concurrent replica committed while this one waited for the locks."""
    if not keys:
        return {}
    cur = await conn.execute(
        """SELECT p.conversation_id::text, p.user_id, p.read_seq
           FROM conversation.participants p
           JOIN unnest(%s::uuid[], %s::text[]) AS k(conversation_id, user_id) USING (conversation_id, user_id)
           ORDER BY p.conversation_id, p.user_id
           FOR UPDATE OF p""",
        ([c for c, _ in keys], [u for _, u in keys]),
    )
    return {(c, u): int(seq) for c, u, seq in await cur.fetchall()}


async def move_positions(conn: psycopg.AsyncConnection, reads: list[Position], own: list[Position]) -> None:
    """Advance read positions (own messages they now cover stop being subtracted) and note the
    participants' own messages past their read position (once per seq), keeping own_unread their count.

    The caller holds the participants' rows (lock_read_seqs) and has already dropped reads that do not
    move forward and own messages at or below the new read position, so deleted and inserted
    own_messages rows never overlap.
    """
    if not reads and not own:
        return
    await conn.execute(
        """WITH reads AS (
               SELECT * FROM unnest(%(rc)s::uuid[], %(ru)s::text[], %(rs)s::bigint[])
                   AS r(conversation_id, user_id, seq)),
           covered AS (
               DELETE FROM conversation.own_messages o USING reads r
               WHERE o.conversation_id = r.conversation_id AND o.user_id = r.user_id AND o.seq <= r.seq
               RETURNING o.conversation_id, o.user_id),
           added AS (
               INSERT INTO conversation.own_messages (conversation_id, user_id, seq)
               SELECT * FROM unnest(%(oc)s::uuid[], %(ou)s::text[], %(os)s::bigint[])
               ON CONFLICT DO NOTHING RETURNING conversation_id, user_id),
           changes AS (
               SELECT conversation_id, user_id, max(read_to) AS read_to, sum(delta) AS delta FROM (
                   SELECT conversation_id, user_id, seq AS read_to, 0 AS delta FROM reads
                   UNION ALL SELECT conversation_id, user_id, 0, -1 FROM covered
                   UNION ALL SELECT conversation_id, user_id, 0, 1 FROM added) AS all_changes
               GROUP BY conversation_id, user_id)
           UPDATE conversation.participants p
           SET read_seq = GREATEST(p.read_seq, x.read_to), own_unread = p.own_unread + x.delta
           FROM changes x
           WHERE p.conversation_id = x.conversation_id AND p.user_id = x.user_id
             AND (x.read_to > p.read_seq OR x.delta <> 0)""",
        {
            "rc": [c for c, _, _ in reads],
            "ru": [u for _, u, _ in reads],
            "rs": [s for _, _, s in reads],
            "oc": [c for c, _, _ in own],
            "ou": [u for _, u, _ in own],
            "os": [s for _, _, s in own],
        },
    )


async def accept_replied_requests(conn: psycopg.AsyncConnection, senders: list[Key]) -> None:
    """A reply from the recipient of a pending direct request accepts it (the requester is created_by)."""
    if not senders:
        return
    await conn.execute(
        """UPDATE conversation.conversations c SET request_state = 'accepted'
           FROM unnest(%s::uuid[], %s::text[]) AS s(conversation_id, user_id)
           WHERE c.conversation_id = s.conversation_id AND c.request_state = 'pending'
             AND c.created_by <> s.user_id""",
        ([c for c, _ in senders], [u for _, u in senders]),
    )


async def mark_engaged(conn: psycopg.AsyncConnection, senders: list[Key]) -> None:
    """Senders take part in their conversations (rows locked by lock_read_seqs; already engaged: no write)."""
    if not senders:
        return
    await conn.execute(
        """UPDATE conversation.participants p SET engaged = true
           FROM unnest(%s::uuid[], %s::text[]) AS s(conversation_id, user_id)
           WHERE p.conversation_id = s.conversation_id AND p.user_id = s.user_id AND NOT p.engaged""",
        ([c for c, _ in senders], [u for _, u in senders]),
    )
