"""Rows to protos (and the membership events built from them)."""

from __future__ import annotations

import uuid

from chatmesh.gen.chat.v1 import common_pb2
from chatmesh.roles import Role
from chatmesh.timestamps import timestamp
from services.conversation.store import ConversationView, UserRow


def user(row: UserRow) -> common_pb2.User:
    return common_pb2.User(user_id=row.user_id, display_name=row.display_name, created_at=timestamp(row.created_at))


def conversation(view: ConversationView) -> common_pb2.Conversation:
    row = view.row
    preview = None
    if row.last_message_id:
        preview = common_pb2.MessagePreview(
            message_id=row.last_message_id,
            sender_id=row.last_sender_id or "",
            seq=row.last_message_seq,
            text="" if row.last_deleted else (row.last_preview or ""),
            deleted=row.last_deleted,
            sent_at=timestamp(row.last_message_at),
        )
    return common_pb2.Conversation(
        conversation_id=row.conversation_id,
        type=row.kind.proto,
        title=row.title,
        participants=[
            common_pb2.Participant(
                user_id=p.user_id, role=p.role.proto, joined_at=timestamp(p.joined_at), display_name=p.display_name
            )
            for p in view.participants
        ],
        participant_count=len(view.participants) if view.with_participants else row.participant_count,
        created_by=row.created_by,
        created_at=timestamp(row.created_at),
        last_message_at=timestamp(row.last_message_at),
        last_message=preview,
        unread_count=view.unread_count,
        active=row.active,
        request_state=row.request_state.proto if row.request_state else common_pb2.REQUEST_STATE_UNSPECIFIED,
        archived=row.archived_at is not None,
        description=row.description,
        muted=view.muted,
        pinned=view.pinned,
    )


def membership_event(
    kind: str, view: ConversationView, actor: str, user_id: str = "", role: Role | None = None
) -> common_pb2.Event:
    """The event every participant receives: without the actor's own unread count, mute and pin."""
    shared = conversation(view)
    for own in ("unread_count", "muted", "pinned"):
        shared.ClearField(own)
    return common_pb2.Event(
        event_id=uuid.uuid4().hex,
        type=kind,
        conversation_id=view.row.conversation_id,
        conversation=common_pb2.ConversationEvent(
            conversation=shared,
            actor_id=actor,
            user_id=user_id,
            role=role.proto if role else common_pb2.ROLE_UNSPECIFIED,
        ),
    )


def preferences_event(view: ConversationView, user_id: str) -> common_pb2.Event:
    """conversation:preferences_changed, for the user's own devices only: it carries no conversation
    (whose participants fan-out would address) but the user (whom it then addresses alone)."""
    return common_pb2.Event(
        event_id=uuid.uuid4().hex,
        type="conversation:preferences_changed",
        conversation_id=view.row.conversation_id,
        conversation=common_pb2.ConversationEvent(
            user_id=user_id,
            actor_id=user_id,
            preferences=common_pb2.ConversationPreferences(muted=view.muted, pinned=view.pinned),
        ),
    )
