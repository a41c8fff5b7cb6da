"""Membership changes of group conversations: add, remove, change role.

Each change runs in one transaction that first locks the conversation's row, so the permission
check, the change, the membership_version bump, the audit entry and the outbox event are all
decided against one consistent membership: two admins demoting each other, or the last two
participants leaving together, cannot both pass a check the other invalidates. After the commit and
before the change returns, the new version is published to Redis, where every replica's membership
cache checks it (chatmesh/membership.py): a removed user's next action is refused everywhere.

Who may do what (a member is anyone of role member; outsiders get 403 NOT_PARTICIPANT first):

| action                 | admin  | moderator     | member | anyone                 |
|------------------------|--------|---------------|--------|------------------------|
| add a participant      | any role | members only | no     |                        |
| remove a participant   | anyone | members only  | no     | themselves             |
| change a role          | yes    | no            | no     |                        |
"""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from chatmesh import errors, outbox
from chatmesh.membership import MembershipVersions
from chatmesh.roles import Role
from services.conversation import audit, changes, convert, privacy_store, store, validate
from services.conversation.conversations import DEFAULT_MAX_GROUP_SIZE
from services.conversation.states import Kind
from services.conversation.store import ConversationRow, ConversationView


class Participants:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        max_group_size: int = DEFAULT_MAX_GROUP_SIZE,
        versions: MembershipVersions | None = None,
    ) -> None:
        self._pool = pool
        self._max_group_size = max_group_size
        self._versions = versions

    async def _published(self, view: ConversationView) -> ConversationView:
        return await changes.published(self._versions, view)

    async def add(self, caller: str, conversation_id: str, user_id: str, role: Role) -> ConversationView:
        conversation_id = validate.conversation_id(conversation_id)
        user_id = validate.user_id(user_id)
        async with self._pool.connection() as conn, conn.transaction():
            row, caller_role = await _locked_group(conn, conversation_id, caller)
            if caller_role == Role.MEMBER or (caller_role == Role.MODERATOR and role != Role.MEMBER):
                raise _insufficient("admins add participants; moderators add members only")
            if await store.get_user(conn, user_id) is None:
                raise errors.not_found("USER_NOT_FOUND", f"user {user_id!r} does not exist")
            if await store.get_role(conn, conversation_id, user_id) is not None:
                raise errors.conflict("ALREADY_PARTICIPANT", f"{user_id!r} is already a participant")
            if await privacy_store.blocked_by(conn, caller, [user_id]):
                raise changes.blocked()
            if row.participant_count + 1 > self._max_group_size:
                raise errors.failed_precondition(
                    "GROUP_TOO_LARGE", f"a group has at most {self._max_group_size} participants"
                )
            # Joining starts at the conversation's current end: earlier history is not "unread".
            await store.insert_participants(conn, conversation_id, [(user_id, role)], read_seq=row.last_message_seq)
            await store.membership_changed(conn, conversation_id, +1)
            await audit.record(conn, conversation_id, caller, "participant.added", user_id)
            view = await store.current_view(conn, conversation_id, caller)
            await outbox.enqueue(
                conn,
                store.SCHEMA,
                [convert.membership_event("conversation:participant_added", view, caller, user_id, role)],
            )
        return await self._published(view)

    async def remove(self, caller: str, conversation_id: str, user_id: str) -> ConversationView:
        """Remove (or leave). The last admin leaving promotes the longest-standing participant; the
        last participant leaving deactivates the conversation."""
        conversation_id = validate.conversation_id(conversation_id)
        user_id = validate.user_id(user_id)
        async with self._pool.connection() as conn, conn.transaction():
            row, caller_role = await _locked_group(conn, conversation_id, caller)
            target_role = await store.get_role(conn, conversation_id, user_id)
            if target_role is None:
                raise errors.not_found("PARTICIPANT_NOT_FOUND", f"{user_id!r} is not a participant")
            if user_id != caller and not (
                caller_role == Role.ADMIN or (caller_role == Role.MODERATOR and target_role == Role.MEMBER)
            ):
                raise _insufficient("admins remove anyone, moderators remove members, anyone removes themselves")
            nobody_left = row.participant_count <= 1
            await store.delete_participant(conn, conversation_id, user_id)
            await store.membership_changed(conn, conversation_id, -1, deactivate=nobody_left)
            if user_id != caller:
                await audit.record(conn, conversation_id, caller, "participant.removed", user_id)
            promoted = None
            if nobody_left:
                await audit.record(conn, conversation_id, caller, "conversation.deactivated", conversation_id)
            elif target_role == Role.ADMIN and await store.count_role(conn, conversation_id, Role.ADMIN) == 0:
                promoted = await store.longest_standing(conn, conversation_id)
                assert promoted is not None
                await store.set_role(conn, conversation_id, promoted, Role.ADMIN)
                await store.membership_changed(conn, conversation_id)
                await audit.record(conn, conversation_id, caller, "participant.promoted", promoted)
            view = await store.current_view(conn, conversation_id, caller)
            events = [convert.membership_event("conversation:participant_removed", view, caller, user_id, target_role)]
            if promoted:
                events.append(convert.membership_event("conversation:role_changed", view, caller, promoted, Role.ADMIN))
            await outbox.enqueue(conn, store.SCHEMA, events)
        return await self._published(view)

    async def change_role(self, caller: str, conversation_id: str, user_id: str, role: Role) -> ConversationView:
        """Admins only; a group always keeps at least one admin, so the last one cannot step down."""
        conversation_id = validate.conversation_id(conversation_id)
        user_id = validate.user_id(user_id)
        async with self._pool.connection() as conn, conn.transaction():
            _, caller_role = await _locked_group(conn, conversation_id, caller)
            if caller_role != Role.ADMIN:
                raise _insufficient("only admins change roles")
            current = await store.get_role(conn, conversation_id, user_id)
            if current is None:
                raise errors.not_found("PARTICIPANT_NOT_FOUND", f"{user_id!r} is not a participant")
            if current == role:
                return await store.current_view(conn, conversation_id, caller)
            if current == Role.ADMIN and await store.count_role(conn, conversation_id, Role.ADMIN) == 1:
                raise errors.failed_precondition("LAST_ADMIN", "a group needs an admin: promote another one first")
            await store.set_role(conn, conversation_id, user_id, role)
            await store.membership_changed(conn, conversation_id)
            await audit.record(conn, conversation_id, caller, "participant.role_changed", user_id)
            view = await store.current_view(conn, conversation_id, caller)
            await outbox.enqueue(
                conn, store.SCHEMA, [convert.membership_event("conversation:role_changed", view, caller, user_id, role)]
            )
        return await self._published(view)


async def _locked_group(conn: AsyncConnection, conversation_id: str, caller: str) -> tuple[ConversationRow, Role]:
    """Lock the conversation and return it with the caller's role: 404, 403 for outsiders, 400 for direct."""
    row = await store.get_conversation(conn, conversation_id, for_update=True)
    if row is None:
        raise errors.not_found("CONVERSATION_NOT_FOUND", f"conversation {conversation_id} does not exist")
    caller_role = await store.get_role(conn, conversation_id, caller)
    if caller_role is None:
        raise errors.forbidden("NOT_PARTICIPANT", "you are not a participant of this conversation")
    if row.kind == Kind.DIRECT:
        raise errors.invalid("DIRECT_CONVERSATION", "a direct conversation's participants cannot change")
    return row, caller_role


def _insufficient(message: str) -> errors.ChatError:
    return errors.forbidden("INSUFFICIENT_ROLE", message)
