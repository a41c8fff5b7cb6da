"""Conversation settings: rename and describe a group, leave it (or close it), archive it, and each
participant's own mute and pin.

Each change runs in one transaction that locks the conversation's row first (as membership changes
do, participants.py), so the permission check, the change, its audit entry and its outbox event are
decided against one consistent state. What the membership caches hold (chatmesh/membership.py:
participants, archived, who muted) also bumps membership_version, which is published after the commit
and before the change returns: once an archive has returned, no replica of the message service takes
another message into the conversation.

Who may do what, the event and to whom, and the audit entry:
- rename, describe (groups): admins; conversation:updated to participants; conversation.renamed /
  conversation.described.
- archive, unarchive: admins; conversation:archived / :unarchived to participants;
  conversation.archived / conversation.unarchived.
- leave (groups): any participant; conversation:participant_removed to participants and the leaver;
  participant.left.
- leave, closing the group: the last admin; conversation:closed to everyone who was in it;
  conversation.closed.
- mute, pin: any participant, for themselves; conversation:preferences_changed to the user only; not
  audited.

Leaving: the last admin of a group others remain in is refused (FAILED_PRECONDITION LAST_ADMIN)
unless they ask to close it (`close_group`): then everyone leaves and the conversation is
deactivated, as when its last participant leaves. (RemoveParticipant keeps its older rule: removing
oneself as the last admin promotes the longest-standing participant.)

Mute and pin are the participant's own business: they are not in the audit trail, which the group's
admins read, and they reach only the user's own devices. A muted conversation still counts unread
(the badge stays honest; muting silences notifications, it does not hide messages).
"""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from chatmesh import errors, outbox
from chatmesh.membership import MembershipVersions
from chatmesh.roles import Role
from services.conversation import audit, changes, convert, settings_store, store, validate
from services.conversation.states import Kind
from services.conversation.store import ConversationRow, ConversationView


class ConversationSettings:
    def __init__(self, pool: AsyncConnectionPool, versions: MembershipVersions | None = None) -> None:
        self._pool = pool
        self._versions = versions

    async def update(
        self, caller: str, conversation_id: str, title: str | None, description: str | None
    ) -> ConversationView:
        """Admins of a group change what is given (None: unchanged); no change, no event."""
        conversation_id = validate.conversation_id(conversation_id)
        if title is None and description is None:
            raise errors.invalid("NOTHING_TO_UPDATE", "give a title or a description")
        title = None if title is None else validate.title(title)
        description = None if description is None else validate.description(description)
        async with self._pool.connection() as conn, conn.transaction():
            row, role = await _locked(conn, conversation_id, caller, groups_only=True)
            _require_admin(role, "only admins rename a group or change its description")
            new_title, new_description = title or row.title, row.description if description is None else description
            if (new_title, new_description) == (row.title, row.description):
                return await store.current_view(conn, conversation_id, caller)
            await settings_store.set_details(conn, conversation_id, new_title, new_description)
            if new_title != row.title:
                await audit.record(conn, conversation_id, caller, "conversation.renamed", new_title)
            if new_description != row.description:
                await audit.record(conn, conversation_id, caller, "conversation.described", "")
            view = await store.current_view(conn, conversation_id, caller)
            await outbox.enqueue(conn, store.SCHEMA, [convert.membership_event("conversation:updated", view, caller)])
        return view

    async def set_archived(self, caller: str, conversation_id: str, archived: bool) -> ConversationView:
        """Admins of a group archive it (read-only) or unarchive it; asking for the state it is in
        changes nothing."""
        conversation_id = validate.conversation_id(conversation_id)
        async with self._pool.connection() as conn, conn.transaction():
            row, role = await _locked(conn, conversation_id, caller, groups_only=True)
            _require_admin(role, "only admins archive or unarchive a group")
            if (row.archived_at is not None) == archived:
                return await store.current_view(conn, conversation_id, caller)
            await settings_store.set_archived(conn, conversation_id, archived)
            await store.membership_changed(conn, conversation_id)
            action, kind = (
                ("conversation.archived", "conversation:archived")
                if archived
                else ("conversation.unarchived", "conversation:unarchived")
            )
            await audit.record(conn, conversation_id, caller, action, conversation_id)
            view = await store.current_view(conn, conversation_id, caller)
            await outbox.enqueue(conn, store.SCHEMA, [convert.membership_event(kind, view, caller)])
        return await changes.published(self._versions, view)

    async def leave(self, caller: str, conversation_id: str, close_group: bool) -> ConversationView:
        """The caller leaves a group; see the module's docstring for the last admin."""
        conversation_id = validate.conversation_id(conversation_id)
        async with self._pool.connection() as conn, conn.transaction():
            row, role = await _locked(conn, conversation_id, caller, groups_only=True)
            last_admin = role is Role.ADMIN and await store.count_role(conn, conversation_id, Role.ADMIN) == 1
            if last_admin and row.participant_count > 1:
                if not close_group:
                    raise errors.failed_precondition(
                        "LAST_ADMIN",
                        "you are the group's last admin: make someone else admin first, "
                        "or close the group (close_group)",
                    )
                return await self._close(conn, row, caller)
            nobody_left = row.participant_count <= 1
            await store.delete_participant(conn, conversation_id, caller)
            await store.membership_changed(conn, conversation_id, -1, deactivate=nobody_left)
            await audit.record(conn, conversation_id, caller, "participant.left", caller)
            if nobody_left:
                await audit.record(conn, conversation_id, caller, "conversation.deactivated", conversation_id)
            view = await store.current_view(conn, conversation_id, caller)
            await outbox.enqueue(
                conn,
                store.SCHEMA,
                [convert.membership_event("conversation:participant_removed", view, caller, caller, role)],
            )
        return await changes.published(self._versions, view)

    async def _close(self, conn: AsyncConnection, row: ConversationRow, caller: str) -> ConversationView:
        """Everyone leaves and the group is deactivated; the event names everyone who was in it (fan-out
        addresses an event to the participants it carries), the caller's answer nobody."""
        conversation_id = row.conversation_id
        were_in = await store.list_participants(conn, conversation_id)
        await settings_store.delete_all_participants(conn, conversation_id)
        await store.membership_changed(conn, conversation_id, -row.participant_count, deactivate=True)
        await audit.record(conn, conversation_id, caller, "conversation.closed", conversation_id)
        view = await store.current_view(conn, conversation_id, caller)
        event_view = ConversationView(view.row, were_in)
        await outbox.enqueue(
            conn,
            store.SCHEMA,
            [convert.membership_event("conversation:closed", event_view, caller, caller, Role.ADMIN)],
        )
        return await changes.published(self._versions, view)

    async def update_preferences(
        self, caller: str, conversation_id: str, muted: bool | None, pinned: bool | None
    ) -> ConversationView:
        """The caller's own mute and pin (None: unchanged). A mute is in the membership answer
        (notifications leave muted users out), so it bumps the membership version; a pin does not."""
        conversation_id = validate.conversation_id(conversation_id)
        if muted is None and pinned is None:
            raise errors.invalid("NOTHING_TO_UPDATE", "give muted or pinned")
        async with self._pool.connection() as conn, conn.transaction():
            await _locked(conn, conversation_id, caller, groups_only=False)
            before = await store.caller_state(conn, conversation_id, caller)
            if (muted in (None, before.muted)) and (pinned in (None, before.pinned)):
                return await store.current_view(conn, conversation_id, caller)
            await settings_store.set_preferences(conn, conversation_id, caller, muted, pinned)
            if muted not in (None, before.muted):
                await store.membership_changed(conn, conversation_id)
            view = await store.current_view(conn, conversation_id, caller)
            await outbox.enqueue(conn, store.SCHEMA, [convert.preferences_event(view, caller)])
        return await changes.published(self._versions, view)


async def _locked(
    conn: AsyncConnection, conversation_id: str, caller: str, *, groups_only: bool
) -> tuple[ConversationRow, Role]:
    """Lock the conversation and return it with the caller's role: 404, 403 for outsiders (and
    everyone once it is closed), 400 for a direct conversation where only groups have the setting."""
    row = await store.get_conversation(conn, conversation_id, for_update=True)
    if row is None:
        raise errors.not_found("CONVERSATION_NOT_FOUND", f"conversation {conversation_id} does not exist")
    role = await store.get_role(conn, conversation_id, caller)
    if role is None:
        raise errors.forbidden("NOT_PARTICIPANT", "you are not a participant of this conversation")
    if groups_only and row.kind == Kind.DIRECT:
        raise errors.invalid("DIRECT_CONVERSATION", "only group conversations have this setting")
    return row, role


def _require_admin(role: Role, message: str) -> None:
    if role is not Role.ADMIN:
        raise errors.forbidden("INSUFFICIENT_ROLE", message)
