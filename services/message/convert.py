"""Rows to protos, and the chat:* events built from them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from chatmesh.gen.chat.v1 import common_pb2
from chatmesh.timestamps import stamp, timestamp
from services.message.store import MessageRow


def recipients(statuses: Sequence[tuple[str, common_pb2.MessageStatus]]) -> common_pb2.Message:
    """A message holding only this "read by" list, for `message` to merge in: one C-level merge per
    message, where adding a group's 100 recipients one by one cost ~85 us per message."""
    return common_pb2.Message(
        recipients=[common_pb2.RecipientStatus(user_id=user, status=status) for user, status in statuses]
    )


def message(
    row: MessageRow,
    status: common_pb2.MessageStatus = common_pb2.MESSAGE_STATUS_SENT,
    reactions: Sequence[tuple[str, list[str]]] = (),
    read_by: common_pb2.Message | None = None,
) -> common_pb2.Message:
    """A message as clients see it: a deleted one is a placeholder (id, seq, sender, deleted, and its
    thread's count and time) and nothing else, whatever the caller passes, so no read path can leak
    its content or reactions.
    `read_by` comes from `recipients()`.

    Only fields with a value are set (each keyword the constructor takes costs as much as a field
    set): a history page builds 50 of these per request."""
    msg = common_pb2.Message(
        message_id=row.message_id,
        conversation_id=row.conversation_id,
        seq=row.seq,
        sender_id=row.sender_id,
        status=status,
    )
    if row.client_message_id:
        msg.client_message_id = row.client_message_id
    if row.created_at is not None:
        stamp(msg.created_at, row.created_at)
    if row.reply_count:  # its thread, kept on a placeholder too: the replies outlive their root
        msg.reply_count = row.reply_count
    if row.last_reply_at is not None:
        stamp(msg.last_reply_at, row.last_reply_at)
    if row.deleted_at is not None:
        msg.deleted = True
        stamp(msg.deleted_at, row.deleted_at)
        return msg
    if row.content:
        msg.content = row.content
    if row.content_encrypted is not None:
        msg.content_encrypted = bytes(row.content_encrypted)
    if row.enc_algorithm or row.enc_key_id:
        msg.encryption.CopyFrom(common_pb2.Encryption(algorithm=row.enc_algorithm, key_id=row.enc_key_id))
    if row.reply_to_id:
        msg.reply_to_id = row.reply_to_id
    if row.edited_at is not None:
        stamp(msg.edited_at, row.edited_at)
    if row.attachments:
        msg.MergeFromString(row.attachments)  # stored as a Message holding only `attachments` (migration 0003)
    for emoji, users in reactions:
        msg.reactions.add(emoji=emoji, count=len(users), user_ids=users)
    if read_by is not None:
        msg.MergeFrom(read_by)
    return msg


def _event(kind: str, conversation_id: str) -> common_pb2.Event:
    """Every event names its conversation: fan-out resolves the recipients from it."""
    return common_pb2.Event(
        event_id=uuid.uuid4().hex,
        type=kind,
        conversation_id=conversation_id,
        created_at=timestamp(datetime.now().astimezone()),
    )


def message_event(kind: str, row: MessageRow) -> common_pb2.Event:
    event = _event(kind, row.conversation_id)
    if kind == "chat:message_received":
        # One id per message however it reaches a client (live, inbox replay or the offline buffer
        # rebuilt from PostgreSQL), so clients dedupe across all three.
        event.event_id = f"received:{row.message_id}"
        # Its time is the message's, stamped in the send's transaction, not the time this event was
        # built: the offline buffer rebuilds it much later, and chat_delivery_lag_seconds (the edge)
        # measures from here, so a message replayed 100 s after its send counts 100 s on every path.
        stamp(event.created_at, row.created_at)
    event.message.CopyFrom(message(row))
    return event


def receipt_event(kind: str, row: MessageRow, user_id: str, status: common_pb2.MessageStatus) -> common_pb2.Event:
    event = _event(kind, row.conversation_id)
    event.receipt.CopyFrom(
        common_pb2.ReceiptEvent(
            conversation_id=row.conversation_id, user_id=user_id, message_id=row.message_id, seq=row.seq, status=status
        )
    )
    return event


def reaction_event(kind: str, row: MessageRow, user_id: str, emoji: str) -> common_pb2.Event:
    event = _event(kind, row.conversation_id)
    event.reaction.CopyFrom(
        common_pb2.ReactionEvent(
            conversation_id=row.conversation_id, message_id=row.message_id, user_id=user_id, emoji=emoji
        )
    )
    return event
