"""The audit trail: privileged actions recorded in the transaction that performs them, and read by a
conversation's admins together with the message service's entries (e.g. messages an admin deleted).

Each service records what it does in its own schema; the read path gathers both, newest first. The
merged cursor holds one position per source: ours is a keyset (created_at, id), the message service's
is its own opaque cursor. A page takes a prefix of each source, so both positions stay exact.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
import psycopg
from psycopg_pool import AsyncConnectionPool

from chatmesh import errors
from chatmesh.audit import audit_entry
from chatmesh.auth import ServiceCredentials
from chatmesh.gen.chat.v1 import common_pb2, message_pb2, message_pb2_grpc
from chatmesh.logs import request_id_var
from chatmesh.roles import Role
from chatmesh.timestamps import to_datetime
from services.conversation import audit_store, paging, store, validate

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 5.0


async def record(conn: psycopg.AsyncConnection, conversation_id: str, actor: str, action: str, target: str) -> None:
    """Append an entry inside the caller's transaction, tagged with the request id being served."""
    await audit_store.append(conn, conversation_id, actor, action, target, request_id_var.get())


class MessageAuditSource:
    """The message service's entries, over its internal RPC with this service's own credentials."""

    def __init__(self, stub: message_pb2_grpc.MessageServiceStub, credentials: ServiceCredentials) -> None:
        self._stub = stub
        self._credentials = credentials

    async def page(self, conversation_id: str, limit: int, cursor: str) -> tuple[list[common_pb2.AuditEntry], str]:
        """(entries newest first, next cursor or "" at the end); a server without the RPC has none."""
        try:
            reply = await self._stub.ListMessageAuditEntries(
                message_pb2.ListMessageAuditEntriesRequest(conversation_id=conversation_id, limit=limit, cursor=cursor),
                metadata=self._credentials.metadata(),
                timeout=CALL_TIMEOUT_S,
                wait_for_ready=True,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return [], ""
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:  # their part of our cursor was tampered with
                raise paging.bad_cursor() from None
            log.warning("message audit entries unavailable: %s %s", exc.code().name, exc.details())
            raise errors.ChatError(
                grpc.StatusCode.UNAVAILABLE,
                "AUDIT_SOURCE_UNAVAILABLE",
                "the message service's audit entries are unavailable; retry",
            ) from None
        entries = list(reply.entries)
        for entry in entries:
            entry.service = entry.service or "message"
        return entries[:limit], reply.next_cursor


@dataclass
class _Position:
    ours: tuple[str, int] | None = None  # (created_at ISO, id) of the last own entry returned
    ours_done: bool = False
    theirs: str = ""  # the message service's cursor
    theirs_done: bool = False

    @classmethod
    def parse(cls, cursor: str) -> _Position:
        if not cursor:
            return cls()
        data = paging.decode(cursor)
        ours, theirs = data.get("c"), data.get("m", "")
        if ours is not None:
            if not (isinstance(ours, list) and len(ours) == 2 and isinstance(ours[1], int)):
                raise paging.bad_cursor()
            paging.timestamp_of(ours[0])
            ours = (ours[0], ours[1])
        if not isinstance(theirs, str):
            raise paging.bad_cursor()
        return cls(ours, bool(data.get("cd")), theirs, bool(data.get("md")))

    def encode(self) -> str:
        if self.ours_done and self.theirs_done:
            return ""
        return paging.encode(
            {
                "c": list(self.ours) if self.ours else None,
                "cd": self.ours_done,
                "m": self.theirs,
                "md": self.theirs_done,
            }
        )


def _newer(a: common_pb2.AuditEntry, b: common_pb2.AuditEntry) -> bool:
    """a sorts before b, newest first; on a tie, ours (the first argument) first."""
    return (a.created_at.seconds, a.created_at.nanos) >= (b.created_at.seconds, b.created_at.nanos)


class AuditTrail:
    def __init__(self, pool: AsyncConnectionPool, source: MessageAuditSource | None) -> None:
        self._pool = pool
        self._source = source

    async def read(
        self, caller: str, conversation_id: str, limit: int, cursor: str
    ) -> tuple[list[common_pb2.AuditEntry], str]:
        """A page of the merged trail, for the conversation's admins only."""
        conversation_id = validate.conversation_id(conversation_id)
        limit = paging.page_size(limit)
        position = _Position.parse(cursor)
        async with self._pool.connection() as conn:
            if await store.get_conversation(conn, conversation_id) is None:
                raise errors.not_found("CONVERSATION_NOT_FOUND", f"conversation {conversation_id} does not exist")
            role = await store.get_role(conn, conversation_id, caller)
            if role is None:
                raise errors.forbidden("NOT_PARTICIPANT", "you are not a participant of this conversation")
            if role != Role.ADMIN:
                raise errors.forbidden("INSUFFICIENT_ROLE", "only admins read a conversation's audit trail")
            ours: list[common_pb2.AuditEntry] = []
            if not position.ours_done:
                after = (paging.timestamp_of(position.ours[0]), position.ours[1]) if position.ours else None
                rows = await audit_store.page(conn, conversation_id, limit + 1, after)
                ours = [audit_entry(r, "conversation") for r in rows]
        theirs: list[common_pb2.AuditEntry] = []
        theirs_next = ""
        if not position.theirs_done and self._source is not None:
            theirs, theirs_next = await self._source.page(conversation_id, limit, position.theirs)
        page, taken_ours, taken_theirs = _merge(ours, theirs, limit)
        if taken_ours:
            last = ours[taken_ours - 1]
            position.ours = (to_datetime(last.created_at).isoformat(), int(last.entry_id))
        position.ours_done = position.ours_done or taken_ours == len(ours)
        if self._source is None:
            position.theirs_done = True
        elif taken_theirs == len(theirs):
            position.theirs, position.theirs_done = theirs_next or position.theirs, not theirs_next
        elif taken_theirs:
            # Part of their page was used: ask for exactly that many to get a cursor right after it.
            _, position.theirs = await self._source.page(conversation_id, taken_theirs, position.theirs)
        return page, position.encode()


def _merge(
    ours: list[common_pb2.AuditEntry], theirs: list[common_pb2.AuditEntry], limit: int
) -> tuple[list[common_pb2.AuditEntry], int, int]:
    """Newest first from both (each already newest first): the page and how many of each it took."""
    page: list[common_pb2.AuditEntry] = []
    i = j = 0
    while len(page) < limit and (i < len(ours) or j < len(theirs)):
        if j >= len(theirs) or (i < len(ours) and _newer(ours[i], theirs[j])):
            page.append(ours[i])
            i += 1
        else:
            page.append(theirs[j])
            j += 1
    return page, i, j
