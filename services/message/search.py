"""Full-text search over the caller's conversations' plaintext messages, newest first.

Which conversations are the caller's is the conversation service's knowledge, not ours (no service
reads another's tables). With a conversation_id the membership cache answers, as for history.
Without one, the conversation service's own ListConversations is asked on the caller's behalf, with
the caller's token forwarded, so the scope is exactly what the user would see listed; ids the message
service merely has positions or messages for are not trusted (a removed member keeps those).
Every hit's conversation is then checked against the membership cache once more before it is
returned: a stale list can hide a result, never leak one.
"""

from __future__ import annotations

import grpc
from psycopg_pool import AsyncConnectionPool

from chatmesh import errors
from chatmesh.gen.chat.v1 import common_pb2, conversation_pb2, conversation_pb2_grpc
from chatmesh.grpc_server import current_identity
from chatmesh.membership import MembershipCache
from chatmesh.roles import Role
from services.message import access, store, views
from services.message.access import parse_id

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_QUERY = 256
LIST_PAGE = 100  # the conversation service refuses larger pages
MAX_SCOPE = 5000  # conversations searched at most when no conversation_id is given


class Search:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        membership: MembershipCache,
        conversations: conversation_pb2_grpc.ConversationServiceStub | None,
    ) -> None:
        self._pool = pool
        self._membership = membership
        self._conversations = conversations

    async def run(self, user: str, q: str, conversation_id: str, limit: int) -> list[common_pb2.Message]:
        q = access.require_text(q, "q").strip()
        if not q:
            raise errors.invalid("EMPTY_QUERY", "q must not be blank")
        if len(q) > MAX_QUERY:
            raise errors.invalid("QUERY_TOO_LONG", f"q exceeds {MAX_QUERY} characters")
        if limit < 0:
            raise errors.invalid("INVALID_ARGUMENT", "limit must not be negative")
        limit = min(limit or DEFAULT_LIMIT, MAX_LIMIT)
        if conversation_id:
            conversation_id = parse_id(conversation_id, "conversation_id")
            (await self._membership.get(conversation_id)).require_participant(user)
            scope = [conversation_id]
        else:
            scope = await self._my_conversations()
        if not scope:
            return []
        async with self._pool.connection() as conn:
            rows = await store.search(conn, scope, q, limit=limit)
            participants: dict[str, dict[str, Role]] = {}
            for cid in {r.conversation_id for r in rows}:
                membership = await self._membership.get(cid)
                if user in membership.roles and membership.active:
                    participants[cid] = membership.roles
            return await views.render(conn, user, [r for r in rows if r.conversation_id in participants], participants)

    async def _my_conversations(self) -> list[str]:
        """The caller's conversation ids, as the conversation service lists them for the caller."""
        if self._conversations is None:
            raise errors.ChatError(
                grpc.StatusCode.UNAVAILABLE,
                "SEARCH_SCOPE_UNAVAILABLE",
                "give a conversation_id: the conversation list is unavailable",
            )
        metadata = (("authorization", f"Bearer {current_identity().token}"),)
        ids: list[str] = []
        cursor = ""
        while len(ids) < MAX_SCOPE:
            try:
                reply = await self._conversations.ListConversations(
                    conversation_pb2.ListConversationsRequest(limit=LIST_PAGE, cursor=cursor),
                    metadata=metadata,
                    timeout=5,
                )
            except grpc.aio.AioRpcError as exc:
                raise errors.ChatError(
                    grpc.StatusCode.UNAVAILABLE,
                    "SEARCH_SCOPE_UNAVAILABLE",
                    f"could not list your conversations ({exc.code().name.lower()}); give a conversation_id",
                ) from None
            ids.extend(c.conversation_id for c in reply.conversations)
            cursor = reply.next_cursor
            if not cursor or not reply.conversations:
                break
        return ids
