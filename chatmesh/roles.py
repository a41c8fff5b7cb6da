"""A participant's role: one enum for the names PostgreSQL stores and the proto values on the wire.

A StrEnum, so a role is stored and compared as its name ("admin"), and anything else is refused:
`Role("owner")` and `Role.from_proto(99)` raise ValueError rather than let an unknown role through
as a plain string.
"""

from __future__ import annotations

from enum import StrEnum

from chatmesh.gen.chat.v1 import common_pb2


class Role(StrEnum):
    ADMIN = "admin"
    MODERATOR = "moderator"
    MEMBER = "member"

    @classmethod
    def from_proto(cls, value: int) -> Role:
        """The role of a proto Role value; ValueError for ROLE_UNSPECIFIED or a value this build does not know."""
        for role, number in _PROTO.items():
            if number == value:
                return role
        raise ValueError(f"unknown role {value}")

    @property
    def proto(self) -> common_pb2.Role:
        return _PROTO[self]

    @property
    def moderates(self) -> bool:
        """Admins and moderators may act on other people's messages and on members."""
        return self in (Role.ADMIN, Role.MODERATOR)


_PROTO: dict[Role, common_pb2.Role] = {
    Role.ADMIN: common_pb2.ROLE_ADMIN,
    Role.MODERATOR: common_pb2.ROLE_MODERATOR,
    Role.MEMBER: common_pb2.ROLE_MEMBER,
}
