"""What a reader sees of messages: content, reactions, and statuses derived from positions.

Statuses are not stored per message: each participant has a delivered and a read position per
conversation (the `positions` table), and a message's status for a user is where its seq falls
against them. The sender sees the least advanced recipient as the message's status, plus each
recipient's own status (the "read by" list); anyone else sees their own status and no list, so a
group's members do not watch each other read. In a group larger than MAX_LISTED_RECIPIENTS the
list is left out of pages (a 1,000-member group would put ~50,000 entries in one page); the
aggregate status is still there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import psycopg

from chatmesh.gen.chat.v1 import common_pb2
from services.message import convert, store
from services.message.store import MessageRow, Position

MAX_LISTED_RECIPIENTS = 100

SENT, DELIVERED, READ = (common_pb2.MESSAGE_STATUS_SENT, common_pb2.MESSAGE_STATUS_DELIVERED,
                         common_pb2.MESSAGE_STATUS_READ)


def status_at(position: Position | None, seq: int) -> common_pb2.MessageStatus:
    if position is None:
        return SENT
    if position.read_seq >= seq:
        return READ
    if position.delivered_seq >= seq:
        return DELIVERED
    return SENT


Status = common_pb2.MessageStatus


def statuses(row: MessageRow, reader: str, participants: Iterable[str],
             positions: dict[str, Position]) -> tuple[Status, list[tuple[str, Status]]]:
    """The reader's view of one message's status, and the per-recipient list (the sender's only)."""
    if row.sender_id != reader:
        return status_at(positions.get(reader), row.seq), []
    recipients = [(user, status_at(positions.get(user), row.seq)) for user in sorted(participants)
                  if user != row.sender_id]
    status = min(s for _, s in recipients) if recipients else SENT
    return status, recipients if len(recipients) <= MAX_LISTED_RECIPIENTS else []


async def render(conn: psycopg.AsyncConnection, reader: str, rows: list[MessageRow],
                 participants: Mapping[str, Iterable[str]]) -> list[common_pb2.Message]:
    """Protos for `rows` as `reader` sees them; `participants` maps each conversation to its users.

    Two queries per conversation whatever the page size: the page's reactions, the positions.
    """
    live = [r.message_id for r in rows if r.deleted_at is None]
    reactions = await store.reactions(conn, live) if live else {}
    positions = {cid: await store.positions(conn, cid) for cid in {r.conversation_id for r in rows}}
    result = []
    for row in rows:
        status, recipients = statuses(row, reader, participants.get(row.conversation_id, ()),
                                       positions[row.conversation_id])
        result.append(convert.message(row, status, reactions.get(row.message_id, []), recipients))
    return result


async def render_one(conn: psycopg.AsyncConnection, reader: str, row: MessageRow,
                     participants: Iterable[str]) -> common_pb2.Message:
    return (await render(conn, reader, [row], {row.conversation_id: participants}))[0]
