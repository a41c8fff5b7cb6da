"""A conversation's kind and a direct conversation's request state: enums for the names PostgreSQL
stores and the proto values on the wire, as chatmesh/roles.py is for roles.

StrEnums, so each is stored and compared as its name ("direct", "pending"), and a column holding a
name this build does not know is refused when its row is read (ValueError), not carried on as a
plain string that no comparison matches.
"""

from __future__ import annotations

from enum import StrEnum

from chatmesh.gen.chat.v1 import common_pb2


class Kind(StrEnum):
    DIRECT = "direct"
    GROUP = "group"

    @property
    def proto(self) -> common_pb2.ConversationType:
        return _KIND_PROTO[self]


class RequestState(StrEnum):
    """A direct conversation's request: pending until the other user accepts (or is no stranger),
    declined (the creator may ask again), or blocked (the other user refuses the creator)."""

    ACCEPTED = "accepted"
    PENDING = "pending"
    DECLINED = "declined"
    BLOCKED = "blocked"

    @property
    def proto(self) -> common_pb2.RequestState:
        return _REQUEST_PROTO[self]


_KIND_PROTO: dict[Kind, common_pb2.ConversationType] = {
    Kind.DIRECT: common_pb2.CONVERSATION_TYPE_DIRECT,
    Kind.GROUP: common_pb2.CONVERSATION_TYPE_GROUP,
}
_REQUEST_PROTO: dict[RequestState, common_pb2.RequestState] = {
    RequestState.ACCEPTED: common_pb2.REQUEST_STATE_ACCEPTED,
    RequestState.PENDING: common_pb2.REQUEST_STATE_PENDING,
    RequestState.DECLINED: common_pb2.REQUEST_STATE_DECLINED,
    RequestState.BLOCKED: common_pb2.REQUEST_STATE_BLOCKED,
}
