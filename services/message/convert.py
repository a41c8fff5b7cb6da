"""Rows to protos, and the chat:* events built from them."""

from __future__ import annotations

import uuid
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from chatmesh.gen.chat.v1 import common_pb2
from services.message.store import MessageRow


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def message(row: MessageRow, status: int = common_pb2.MESSAGE_STATUS_SENT) -> common_pb2.Message:
    """A message as clients see it: a deleted one keeps id, seq and sender but no content."""
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
        reply_to_id=row.reply_to_id or "",
        created_at=timestamp(row.created_at),
        edited_at=timestamp(row.edited_at),
        deleted=deleted,
        deleted_at=timestamp(row.deleted_at),
        status=status,
    )


def message_event(kind: str, row: MessageRow) -> common_pb2.Event:
    return common_pb2.Event(
        event_id=uuid.uuid4().hex,
        type=kind,
        conversation_id=row.conversation_id,
        created_at=timestamp(datetime.now().astimezone()),
        message=message(row),
    )
