"""An audit entry as both audit logs store it (conversation.audit_log, message.audit_log) and as the
API shows it. Each service keeps its own table and SQL; the row and its proto are the same."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from chatmesh.gen.chat.v1 import common_pb2
from chatmesh.timestamps import timestamp


@dataclass
class AuditRow:
    entry_id: int
    conversation_id: str
    actor_id: str
    action: str
    target: str
    request_id: str
    created_at: datetime


def audit_entry(row: AuditRow, service: str) -> common_pb2.AuditEntry:
    """The entry as clients see it, naming the service whose log holds it."""
    return common_pb2.AuditEntry(
        entry_id=str(row.entry_id),
        conversation_id=row.conversation_id,
        actor_id=row.actor_id,
        action=row.action,
        target=row.target,
        request_id=row.request_id,
        created_at=timestamp(row.created_at),
        service=service,
    )
