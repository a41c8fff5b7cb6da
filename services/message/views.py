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

from bisect import bisect_right
from collections.abc import Iterable, Mapping

import psycopg

from chatmesh.gen.chat.v1 import common_pb2
from services.message import convert, store
from services.message.store import MessageRow, Position

MAX_LISTED_RECIPIENTS = 100

SENT, DELIVERED, READ = (
    common_pb2.MESSAGE_STATUS_SENT,
    common_pb2.MESSAGE_STATUS_DELIVERED,
    common_pb2.MESSAGE_STATUS_READ,
)


def status_at(position: Position | None, seq: int) -> common_pb2.MessageStatus:
    if position is None:
        return SENT
    if position.read_seq >= seq:
        return READ
    if position.delivered_seq >= seq:
        return DELIVERED
    return SENT


Status = common_pb2.MessageStatus
_BELOW_EVERY_SEQ = -1  # the position of a participant without one: seqs start at 1


class _Statuses:
    """One reader's statuses in one conversation, prepared once per page rather than once per row.

    The sender's status of a message is the least advanced recipient's, which is READ when the lowest
    read position reaches the seq, DELIVERED when the lowest "delivered or read" position does, SENT
    otherwise (a recipient without positions holds both minima below every seq). So a page costs
    O(participants + rows) instead of a sort of the participants per row; only a listed group
    (<= MAX_LISTED_RECIPIENTS) pays a recipient per row, for the list it returns.
    """

    def __init__(self, reader: str, participants: Iterable[str], positions: Mapping[str, Position]) -> None:
        self.reader = reader
        self.mine = positions.get(reader)
        self._participants, self._positions = participants, positions
        self._prepared = False
        self.listed: list[tuple[str, Position | None]] | None = None
        self.min_read: int | None = None
        self.min_reached: int | None = None
        self._breaks: list[int] = []
        self._lists: dict[int, common_pb2.Message] = {}

    def _prepare(self) -> None:
        """The recipients' minima (and list), on the first of the reader's own messages only."""
        positions = self._positions
        others = [(user, positions.get(user)) for user in sorted(self._participants) if user != self.reader]
        self.min_read = min((_BELOW_EVERY_SEQ if p is None else p.read_seq for _, p in others), default=None)
        self.min_reached = min(
            (_BELOW_EVERY_SEQ if p is None else max(p.read_seq, p.delivered_seq) for _, p in others), default=None
        )
        if others and len(others) <= MAX_LISTED_RECIPIENTS:
            self.listed = others
            # A recipient's status changes only where a seq passes one of their positions, so between
            # two of these breaks every row has the same list: built once per stretch, not per row.
            self._breaks = sorted(
                {seq + 1 for _, p in others if p is not None for seq in (p.read_seq, p.delivered_seq)}
            )
        self._prepared = True

    def of(self, row: MessageRow) -> tuple[Status, common_pb2.Message | None]:
        """The reader's status of `row`, and its "read by" list for convert.message (the sender's only)."""
        seq = row.seq
        if row.sender_id != self.reader:
            return status_at(self.mine, seq), None
        if not self._prepared:
            self._prepare()
        if self.min_read is None or self.min_reached is None:  # nobody to deliver to yet
            return SENT, None
        status = READ if self.min_read >= seq else DELIVERED if self.min_reached >= seq else SENT
        if self.listed is None:
            return status, None
        stretch = bisect_right(self._breaks, seq)
        read_by = self._lists.get(stretch)
        if read_by is None:
            read_by = convert.recipients([(user, status_at(p, seq)) for user, p in self.listed])
            self._lists[stretch] = read_by
        return status, read_by


def statuses(
    row: MessageRow, reader: str, participants: Iterable[str], positions: dict[str, Position]
) -> tuple[Status, list[tuple[str, Status]]]:
    """The reader's view of one message's status, and the per-recipient list (the sender's only)."""
    status, read_by = _Statuses(reader, participants, positions).of(row)
    return status, [] if read_by is None else [(r.user_id, r.status) for r in read_by.recipients]


async def render(
    conn: psycopg.AsyncConnection, reader: str, rows: list[MessageRow], participants: Mapping[str, Iterable[str]]
) -> list[common_pb2.Message]:
    """Protos for `rows` as `reader` sees them; `participants` maps each conversation to its users.

    Two queries whatever the page size: the page's reactions, and positions per conversation, where
    a page without the reader's own messages needs the reader's position only (in a group, the
    participants' rows cost more to load than the rest of the page's statuses).
    """
    live = [r.message_id for r in rows if r.deleted_at is None]
    reactions = await store.reactions(conn, live) if live else {}
    prepared: dict[str, _Statuses] = {}
    own = {r.conversation_id for r in rows if r.sender_id == reader}
    for cid in dict.fromkeys(r.conversation_id for r in rows):  # first-seen order, one query each
        positions = (
            await store.positions(conn, cid) if cid in own else {reader: await store.position(conn, cid, reader)}
        )
        prepared[cid] = _Statuses(reader, participants.get(cid, ()), positions)
    result = []
    for row in rows:
        status, read_by = prepared[row.conversation_id].of(row)
        result.append(convert.message(row, status, reactions.get(row.message_id, ()), read_by))
    return result


async def render_one(
    conn: psycopg.AsyncConnection, reader: str, row: MessageRow, participants: Iterable[str]
) -> common_pb2.Message:
    return (await render(conn, reader, [row], {row.conversation_id: participants}))[0]
