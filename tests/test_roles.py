"""Roles are one enum from the wire to the database: known ones map both ways, anything else is refused."""

from __future__ import annotations

import pytest

from chatmesh.errors import ChatError
from chatmesh.gen.chat.v1 import common_pb2
from chatmesh.roles import Role
from services.conversation import validate


def test_every_role_maps_to_its_proto_value_and_back() -> None:
    for role in Role:
        assert Role.from_proto(role.proto) is role
    assert [r for r in Role if r.moderates] == [Role.ADMIN, Role.MODERATOR]
    assert Role.ADMIN == "admin"  # stored and compared as its name


@pytest.mark.parametrize("bad", [common_pb2.ROLE_UNSPECIFIED, 99])
def test_an_unknown_role_is_refused(bad: int) -> None:
    with pytest.raises(ValueError):
        Role.from_proto(bad)
    with pytest.raises(ChatError) as caught:
        validate.role(bad)
    assert caught.value.code == "INVALID_ROLE"
    with pytest.raises(ValueError):
        Role("owner")


def test_an_unspecified_role_takes_the_default_only_where_one_is_given() -> None:
    assert validate.role(common_pb2.ROLE_UNSPECIFIED, default=Role.MEMBER) is Role.MEMBER
    assert validate.role(common_pb2.ROLE_MODERATOR) is Role.MODERATOR
