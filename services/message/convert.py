"""Rows to protos, and the chat:* events built from them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from chatmesh.gen.chat.v1 import common_pb2
from services.message.store import AuditRow, MessageRow

AUDIT_SERVICE = "message"


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def message(row: MessageRow, status: common_pb2.MessageStatus = common_pb2.MESSAGE_STATUS_SENT,
            reactions: Sequence[tuple[str, list[str]]] = (),
            recipients: Sequence[tuple[str, common_pb2.MessageStatus]] = ()) -> common_pb2.Message:
    """A message as clients see it: a deleted one is a placeholder (id, seq, sender, deleted) and
    nothing else, whatever the caller passes, so no read path can leak its content or reactions."""
    deleted = row.deleted_at is not None
    encryption = None
    if row.enc_algorithm or row.enc_key_id:
        encryption = common_pb2.Encryption(algorithm=row.enc_algorithm, key_id=row.enc_key_id)
    return common_pb2.Message(
        message_id=row.message_id,
        conversation_id=row.conversation_id,
        seq=row.seq,
        sender_id=row.sender_id,
        content="" if deleted else row.content,
        content_encrypted=b"" if deleted or row.content_encrypted is None else bytes(row.content_encrypted),
        encryption=None if deleted else encryption,
        client_message_id=row.client_message_id or "",
        reply_to_id="" if deleted else row.reply_to_id or "",
        created_at=timestamp(row.created_at),
        edited_at=None if deleted else timestamp(row.edited_at),
        deleted=deleted,
        deleted_at=timestamp(row.deleted_at),
        status=status,
        reactions=[] if deleted else [
            common_pb2.ReactionSummary(emoji=emoji, count=len(users), user_ids=users) for emoji, users in reactions],
        recipients=[] if deleted else [
            common_pb2.RecipientStatus(user_id=user, status=s) for user, s in recipients],
    )


def _event(kind: str, conversation_id: str) -> common_pb2.Event:
    """Every event names its conversation: fan-out resolves the recipients from it."""
    return common_pb2.Event(event_id=uuid.uuid4().hex, type=kind, conversation_id=conversation_id,
                            created_at=timestamp(datetime.now().astimezone()))


def message_event(kind: str, row: MessageRow) -> common_pb2.Event:
    event = _event(kind, row.conversation_id)
    if kind == "chat:message_received":
        # One id per message however it reaches a client (live, inbox replay or the offline buffer
        # rebuilt from PostgreSQL), so clients dedupe across all three.
        event.event_id = f"received:{row.message_id}"
    event.message.CopyFrom(message(row))
    return event


def receipt_event(kind: str, row: MessageRow, user_id: str, status: common_pb2.MessageStatus
                  ) -> common_pb2.Event:
    event = _event(kind, row.conversation_id)
    event.receipt.CopyFrom(common_pb2.ReceiptEvent(
        conversation_id=row.conversation_id, user_id=user_id, message_id=row.message_id, seq=row.seq, status=status))
    return event


def reaction_event(kind: str, row: MessageRow, user_id: str, emoji: str) -> common_pb2.Event:
    event = _event(kind, row.conversation_id)
    event.reaction.CopyFrom(common_pb2.ReactionEvent(
        conversation_id=row.conversation_id, message_id=row.message_id, user_id=user_id, emoji=emoji))
    return event


def audit_entry(row: AuditRow) -> common_pb2.AuditEntry:
    return common_pb2.AuditEntry(
        entry_id=str(row.entry_id), conversation_id=row.conversation_id, actor_id=row.actor_id,
        action=row.action, target=row.target, request_id=row.request_id,
        created_at=timestamp(row.created_at), service=AUDIT_SERVICE)
