"""Direct conversation requests: accept, decline, block, and opening a declined one again.

A direct conversation opened by someone the recipient has taken part in no conversation with is a
request (`request_state` 'pending') until the recipient accepts it or replies (the projection sees
the reply). Until then the requester does not see the recipient's presence: presence is shown only
to the others in conversations the user has taken part in (`participants.engaged`, see
privacy_store.py). Each change locks the conversation's row first, like membership changes, and
publishes the new membership version before it returns (a declined conversation is inactive, a
blocked one is not writable: both are in the answer the membership caches hold).

| action  | who                                | then                                                                  |
|---------|------------------------------------|-----------------------------------------------------------------------|
| accept  | any participant                    | the caller takes part; a pending or declined request becomes accepted |
|         |                                    | (and active)                                                          |
| decline | the recipient of a pending request | declined and inactive; either may open it again                       |
| block   | either participant of a direct one | blocked: readable, writable by neither; the other can open no         |
|         |                                    | conversation with the caller                                          |
"""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from chatmesh import errors, outbox
from chatmesh.membership import MembershipVersions
from services.conversation import changes, convert, privacy_store, store, validate
from services.conversation.states import Kind, RequestState
from services.conversation.store import ConversationRow, ConversationView


class DirectRequests:
    def __init__(self, pool: AsyncConnectionPool, versions: MembershipVersions | None = None) -> None:
        self._pool = pool
        self._versions = versions

    async def accept(self, caller: str, conversation_id: str) -> ConversationView:
        conversation_id = validate.conversation_id(conversation_id)
        async with self._pool.connection() as conn, conn.transaction():
            row = await _locked(conn, conversation_id, caller)
            if row.request_state == RequestState.BLOCKED:
                raise changes.blocked()
            await privacy_store.set_engaged(conn, conversation_id, caller)
            if row.request_state not in (RequestState.PENDING, RequestState.DECLINED) or caller == row.created_by:
                return await store.current_view(conn, conversation_id, caller)
            view = await _move(conn, conversation_id, caller, RequestState.ACCEPTED, True, "conversation:accepted")
        return await changes.published(self._versions, view)

    async def decline(self, caller: str, conversation_id: str) -> ConversationView:
        conversation_id = validate.conversation_id(conversation_id)
        async with self._pool.connection() as conn, conn.transaction():
            row = await _locked(conn, conversation_id, caller)
            if row.request_state == RequestState.DECLINED and caller != row.created_by:
                return await store.current_view(conn, conversation_id, caller)  # declined already: nothing changes
            if row.request_state != RequestState.PENDING or caller == row.created_by:
                raise errors.failed_precondition("NOT_A_REQUEST", "only a pending request's recipient declines it")
            view = await _move(conn, conversation_id, caller, RequestState.DECLINED, False, "conversation:declined")
        return await changes.published(self._versions, view)

    async def block(self, caller: str, conversation_id: str) -> ConversationView:
        conversation_id = validate.conversation_id(conversation_id)
        async with self._pool.connection() as conn, conn.transaction():
            row = await _locked(conn, conversation_id, caller)
            if row.kind != Kind.DIRECT:
                raise errors.failed_precondition("NOT_DIRECT", "block the other participant of a direct conversation")
            other = next(p.user_id for p in await store.list_participants(conn, conversation_id) if p.user_id != caller)
            await privacy_store.block(conn, caller, other)
            if row.request_state == RequestState.BLOCKED:
                return await store.current_view(conn, conversation_id, caller)
            view = await _move(
                conn, conversation_id, caller, RequestState.BLOCKED, row.active, "conversation:blocked", other
            )
        return await changes.published(self._versions, view)

    async def reopen(self, conn: AsyncConnection, conversation_id: str, caller: str) -> ConversationView | None:
        """Open a declined direct conversation again for create_direct (its own transaction): a new
        request when the requester opens it, accepted when the recipient does. None when it is not
        declined (any more)."""
        async with conn.transaction():
            row = await store.get_conversation(conn, conversation_id, for_update=True)
            if row is None or row.request_state != RequestState.DECLINED:
                return None
            state = RequestState.PENDING if caller == row.created_by else RequestState.ACCEPTED
            await privacy_store.set_engaged(conn, conversation_id, caller)
            view = await _move(conn, conversation_id, caller, state, True, "conversation:created")
        return await changes.published(self._versions, view)


async def _move(
    conn: AsyncConnection,
    conversation_id: str,
    caller: str,
    state: RequestState,
    active: bool,
    event: str,
    target: str = "",
) -> ConversationView:
    """The request moved to `state` (live or not) and its event written, in the caller's transaction;
    the conversation as it is now."""
    await privacy_store.set_request_state(conn, conversation_id, state, active=active)
    view = await store.current_view(conn, conversation_id, caller)
    await outbox.enqueue(conn, store.SCHEMA, [convert.membership_event(event, view, caller, target)])
    return view


async def _locked(conn: AsyncConnection, conversation_id: str, caller: str) -> ConversationRow:
    """Lock the conversation: 404 when unknown, 403 for outsiders."""
    row = await store.get_conversation(conn, conversation_id, for_update=True)
    if row is None:
        raise errors.not_found("CONVERSATION_NOT_FOUND", f"conversation {conversation_id} does not exist")
    if await store.get_role(conn, conversation_id, caller) is None:
        raise errors.forbidden("NOT_PARTICIPANT", "you are not a participant of this conversation")
    return row
