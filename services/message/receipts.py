"""Delivery and read receipts, stored as each participant's positions per conversation.

Marking message n read marks everything up to n read (what chat clients show), and storage stays
O(participants) rather than O(messages x participants). Positions only move forward: a status
older than what is stored is a no-op, so retries and out-of-order updates from several devices are
harmless. Read implies delivered.
"""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from chatmesh import errors, outbox
from chatmesh.gen.chat.v1 import common_pb2
from chatmesh.membership import MembershipCache
from services.message import access, convert, store
from services.message.store import Position

_EVENTS: dict[common_pb2.MessageStatus, str] = {
    common_pb2.MESSAGE_STATUS_DELIVERED: "chat:message_delivered",
    common_pb2.MESSAGE_STATUS_READ: "chat:message_read",
}


class Receipts:
    def __init__(self, pool: AsyncConnectionPool, membership: MembershipCache) -> None:
        self._pool = pool
        self._membership = membership

    async def update(self, user: str, message_id: str, status: common_pb2.MessageStatus) -> Position:
        """Advance the user's position to the message's seq; announce it only when it moved.

        The upsert and its event are one transaction; the event carries the seq the position moved
        to, so the conversation service can count unread messages from it.
        """
        if status not in _EVENTS:
            raise errors.invalid("INVALID_STATUS", "status must be MESSAGE_STATUS_DELIVERED or MESSAGE_STATUS_READ")
        async with self._pool.connection() as conn:
            row = (await access.find(conn, self._membership, message_id, user)).row
            read = status == common_pb2.MESSAGE_STATUS_READ
            async with outbox.wake_after(store.SCHEMA) as notify, conn.transaction():
                moved = await store.advance_position(
                    conn, row.conversation_id, user, delivered_seq=row.seq, read_seq=row.seq if read else 0
                )
                if moved is not None:
                    await outbox.enqueue(
                        conn, store.SCHEMA, [convert.receipt_event(_EVENTS[status], row, user, status)], notify=notify
                    )
            return moved or await store.position(conn, row.conversation_id, user)
