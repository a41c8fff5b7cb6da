"""Conversation rules: who may create and see which conversation, and the user directory.

Functions here own their transaction (`async with conn.transaction()`), raise ChatError for
anything the caller got wrong, and write the membership event into the outbox in that same
transaction, so a committed change always has its event and a rolled-back one never does.
Membership changes of existing conversations (add, remove, change role) are in `participants.py`.
"""

from __future__ import annotations

from datetime import datetime

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from chatmesh import errors, outbox
from chatmesh.roles import Role
from services.conversation import changes, convert, paging, privacy_store, store, validate
from services.conversation.direct_requests import DirectRequests
from services.conversation.states import Kind, RequestState
from services.conversation.store import ConversationRow, ConversationView, UserRow

DEFAULT_MAX_GROUP_SIZE = 1000


class Conversations:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        max_group_size: int = DEFAULT_MAX_GROUP_SIZE,
        requests: DirectRequests | None = None,
    ) -> None:
        self._pool = pool
        self._max_group_size = max_group_size
        self._requests = requests or DirectRequests(pool)

    async def upsert_user(self, user_id: str, display_name: str) -> UserRow:
        user_id = validate.user_id(user_id)
        async with self._pool.connection() as conn:
            name = validate.text(display_name, "display_name").strip()[: validate.MAX_DISPLAY_NAME]
            return await store.upsert_user(conn, user_id, name)

    async def get_user(self, user_id: str) -> UserRow:
        user_id = validate.user_id(user_id)
        async with self._pool.connection() as conn:
            user = await store.get_user(conn, user_id)
        if user is None:
            raise errors.not_found("USER_NOT_FOUND", f"user {user_id!r} does not exist")
        return user

    async def create_direct(self, caller: str, other: str) -> tuple[ConversationView, bool]:
        """The pair's one direct conversation: created now, or the existing one (created=False).

        A new one is a request (pending) unless the other user has taken part in a conversation with
        the caller already; a declined one is opened again (direct_requests.py). Someone who blocked
        the caller gets no conversation from them: 403 BLOCKED.
        """
        other = validate.user_id(other)
        if other == caller:
            raise errors.invalid("SELF_CONVERSATION", "a direct conversation needs another user")
        low, high = sorted((caller, other))
        async with self._pool.connection() as conn:
            if await privacy_store.blocked_by(conn, caller, [other]):
                raise changes.blocked()
            if existing := await store.find_direct(conn, low, high):
                if existing.request_state == RequestState.DECLINED:
                    if reopened := await self._requests.reopen(conn, existing.conversation_id, caller):
                        return reopened, False
                    existing = await store.find_direct(conn, low, high) or existing
                return await self._view(conn, existing, caller), False
            if await store.get_user(conn, other) is None:
                raise errors.not_found("USER_NOT_FOUND", f"user {other!r} does not exist")
            known = await privacy_store.has_taken_part_with(conn, other, caller)
            async with conn.transaction():
                await store.ensure_user(conn, caller)
                row = await store.insert_direct(
                    conn, caller, low, high, RequestState.ACCEPTED if known else RequestState.PENDING
                )
                if row is not None:
                    await store.insert_participants(
                        conn,
                        row.conversation_id,
                        [(low, Role.MEMBER), (high, Role.MEMBER)],
                        engaged={caller, other} if known else {caller},
                    )
                    view = await self._view(conn, row, caller)
                    await outbox.enqueue(
                        conn, store.SCHEMA, [convert.membership_event("conversation:created", view, caller)]
                    )
                    return view, True
            # A concurrent create won the unique index: return its conversation.
            winner = await store.find_direct(conn, low, high)
            assert winner is not None
            return await self._view(conn, winner, caller), False

    async def create_group(self, caller: str, title: str, participant_ids: list[str]) -> ConversationView:
        """A titled group: the creator is admin, the others members, all in one transaction or none."""
        title = validate.title(title)
        others = validate.participant_ids(participant_ids, caller)
        if len(others) + 1 > self._max_group_size:
            raise errors.failed_precondition(
                "GROUP_TOO_LARGE", f"a group has at most {self._max_group_size} participants ({len(others) + 1} asked)"
            )
        async with self._pool.connection() as conn:
            missing = set(others) - await store.existing_users(conn, others)
            if missing:
                raise errors.not_found("USER_NOT_FOUND", f"unknown users: {', '.join(sorted(missing)[:10])}")
            if await privacy_store.blocked_by(conn, caller, others):
                raise changes.blocked()
            async with conn.transaction():
                await store.ensure_user(conn, caller)
                row = await store.insert_group(conn, caller, title, len(others) + 1)
                await store.insert_participants(
                    conn,
                    row.conversation_id,
                    [(caller, Role.ADMIN), *((u, Role.MEMBER) for u in others)],
                    engaged={caller},
                )
                view = await self._view(conn, row, caller)
                await outbox.enqueue(
                    conn, store.SCHEMA, [convert.membership_event("conversation:created", view, caller)]
                )
                return view

    async def get_for(self, caller: str, conversation_id: str) -> ConversationView:
        """A conversation the caller takes part in: 404 when it does not exist, 403 when not theirs."""
        conversation_id = validate.conversation_id(conversation_id)
        async with self._pool.connection() as conn:
            row = await store.get_conversation(conn, conversation_id)
            if row is None:
                raise errors.not_found("CONVERSATION_NOT_FOUND", f"conversation {conversation_id} does not exist")
            view = await self._view(conn, row, caller)
        if not any(p.user_id == caller for p in view.participants):
            raise errors.forbidden("NOT_PARTICIPANT", "you are not a participant of this conversation")
        return view

    async def list_for(self, caller: str, limit: int, cursor: str) -> tuple[list[ConversationView], str]:
        """The caller's active conversations, pinned ones first, then newest activity first, keyset paged.

        The cursor names the last conversation returned by its (pinned, activity, created_at, id), so a page
        never repeats or skips a conversation whose activity did not change between pages; one that
        receives a message meanwhile moves to the front, where the client learns of it by event.
        Groups come with their participant count only; direct conversations with both participants.
        """
        limit = paging.page_size(limit)
        after = _parse_list_cursor(cursor) if cursor else None
        async with self._pool.connection() as conn:
            rows = await store.list_for_user(conn, caller, limit + 1, after)
            page = rows[:limit]
            direct = await store.participants_of(conn, [r.conversation_id for r in page if r.kind == Kind.DIRECT])
        views = [
            ConversationView(
                r,
                direct.get(r.conversation_id, []),
                r.unread_count,
                with_participants=r.kind == Kind.DIRECT,
                muted=r.muted,
                pinned=r.pinned,
            )
            for r in page
        ]
        next_cursor = ""
        if len(rows) > limit:
            last = page[-1]
            next_cursor = paging.encode(
                {
                    "p": last.pinned,
                    "a": last.activity_at.isoformat(),
                    "t": last.created_at.isoformat(),
                    "i": last.conversation_id,
                }
            )
        return views, next_cursor

    async def membership(self, conversation_id: str) -> ConversationView:
        conversation_id = validate.conversation_id(conversation_id)
        async with self._pool.connection() as conn:
            row = await store.get_conversation(conn, conversation_id)
            if row is None:
                raise errors.not_found("CONVERSATION_NOT_FOUND", f"conversation {conversation_id} does not exist")
            return await self._view(conn, row)

    async def conversation_ids(self, user_id: str) -> list[str]:
        user_id = validate.user_id(user_id)
        async with self._pool.connection() as conn:
            return await store.list_conversation_ids(conn, user_id)

    @staticmethod
    async def _view(conn: AsyncConnection, row: ConversationRow, caller: str = "") -> ConversationView:
        return await store.view_of(conn, row, caller)


def _parse_list_cursor(cursor: str) -> tuple[bool, datetime, datetime, str]:
    """A cursor from before pins existed has no "p": it named an unpinned conversation."""
    data = paging.decode(cursor)
    conversation_id, pinned = data.get("i"), data.get("p", False)
    if not isinstance(conversation_id, str) or not isinstance(pinned, bool):
        raise paging.bad_cursor()
    try:
        conversation_id = validate.conversation_id(conversation_id)
    except errors.ChatError:
        raise paging.bad_cursor() from None
    return pinned, paging.timestamp_of(data.get("a")), paging.timestamp_of(data.get("t")), conversation_id
