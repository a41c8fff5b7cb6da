"""Threads: the replies to a message, read as a page, and the root's count kept by the writes.

A thread is a message (its root) and the messages whose reply_to_id names it: direct replies only
(a reply to a reply starts that reply's own thread). Replies are ordinary messages of the
conversation, in its history and seq like any other; the thread view is another index over them.

The root carries `reply_count` (live replies) and `last_reply_at` (the created_at of the live reply
with the highest seq). They are written, never counted on a read: a send with reply_to_id adds one
in its own statement (migration 0004's send_message), and deleting a reply takes one away in the
delete's transaction (`on_reply_deleted`). Deleted replies stay in thread pages as placeholders,
as in history, so paging never shows a gap; they no longer count.

Either change also rides on its event: `Event.thread` (root id, count, last reply time) on the
reply's chat:message_received or chat:message_deleted, from which the edge builds the live
chat:thread_updated frame for every member's sockets (services/edge/threads.py). So a reply costs no
second event, no second outbox row and no fan-out of its own.
"""

from __future__ import annotations

from datetime import datetime

import psycopg
from psycopg_pool import AsyncConnectionPool

from chatmesh import errors
from chatmesh.gen.chat.v1 import common_pb2
from chatmesh.membership import MembershipCache
from chatmesh.timestamps import stamp
from services.message import access, store, views
from services.message.store import MessageRow

DEFAULT_PAGE = 50
MAX_PAGE = 200


def mark_reply(event: common_pb2.Event, root_id: str, created_at: datetime) -> None:
    """Before a reply's send: the thread fields the service knows (root, the reply's time); the send's
    statement appends the count, which only it knows."""
    event.thread.root_message_id = root_id
    stamp(event.thread.last_reply_at, created_at)


async def on_reply_deleted(conn: psycopg.AsyncConnection, reply: MessageRow, event: common_pb2.Event) -> None:
    """In the delete's transaction, once `reply` is marked deleted: its root counts one fewer, and the
    deletion's event carries the thread's new state."""
    if not reply.reply_to_id:
        return
    root = await store.reply_deleted(conn, reply.reply_to_id)
    if root is None:
        return
    event.thread.root_message_id = root.message_id
    event.thread.reply_count = root.reply_count
    if root.last_reply_at is not None:
        stamp(event.thread.last_reply_at, root.last_reply_at)


class Threads:
    def __init__(self, pool: AsyncConnectionPool, membership: MembershipCache) -> None:
        self._pool = pool
        self._membership = membership

    async def page(
        self, reader: str, message_id: str, *, limit: int, before_seq: int, after_seq: int
    ) -> tuple[common_pb2.Message, list[common_pb2.Message], bool]:
        """(the root, a page of its replies in ascending seq, whether more lie beyond the page).

        Paged as history is: the newest `limit` replies (before `before_seq`), or the oldest after
        `after_seq`. The root's conversation decides who may read: 404 for an unknown message, 403 for
        a caller who is not a participant, as for every message operation."""
        if limit < 0 or limit > MAX_PAGE:
            raise errors.invalid("INVALID_LIMIT", f"limit must be between 1 and {MAX_PAGE} (got {limit})")
        if before_seq < 0 or after_seq < 0:
            raise errors.invalid("INVALID_ARGUMENT", "before_seq and after_seq must not be negative")
        if before_seq and after_seq:
            raise errors.invalid("INVALID_ARGUMENT", "give before_seq or after_seq, not both")
        limit = limit or DEFAULT_PAGE
        async with self._pool.connection() as conn:
            found = await access.find(conn, self._membership, message_id, reader)
            rows = await store.list_replies(
                conn, found.row.message_id, limit=limit + 1, before_seq=before_seq or None, after_seq=after_seq or None
            )
            has_more = len(rows) > limit
            if has_more:
                rows = rows[:limit] if after_seq else rows[1:]
            rendered = await views.render(
                conn, reader, [found.row, *rows], {found.row.conversation_id: found.membership.roles}
            )
        return rendered[0], rendered[1:], has_more
