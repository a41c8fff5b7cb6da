"""The permission matrix: admin / moderator / member / outsider × add, remove, change role, read audit;
and the 4xx answers around those actions (409 already there, 400 for direct conversations, bad roles)."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.helpers import direct_conversation
from tests.test_conversation_support import error_of, people, roles_of, staffed_group

FORBIDDEN = (403, "INSUFFICIENT_ROLE")
OUTSIDER = (403, "NOT_PARTICIPANT")
OK = (200, "")


def outcome(reply: httpx.Response) -> tuple[int, str]:
    return OK if reply.status_code == 200 else error_of(reply)


@pytest.mark.parametrize(
    ("actor", "role", "expected"),
    [
        ("admin", "ROLE_MEMBER", OK),
        ("admin", "ROLE_MODERATOR", OK),
        ("admin", "ROLE_ADMIN", OK),
        ("moderator", "ROLE_MEMBER", OK),
        ("moderator", None, OK),  # no role: member
        ("moderator", "ROLE_MODERATOR", FORBIDDEN),
        ("moderator", "ROLE_ADMIN", FORBIDDEN),
        ("member", "ROLE_MEMBER", FORBIDDEN),
        ("outsider", "ROLE_MEMBER", OUTSIDER),
    ],
)
async def test_add_participant(
    http: httpx.AsyncClient, make_token, actor: str, role: str | None, expected: tuple[int, str]
) -> None:
    cid, who = await staffed_group(http, make_token)
    body = {"user_id": who["spare"].id} | ({"role": role} if role else {})
    reply = await http.post(f"/api/conversations/{cid}/participants", json=body, headers=who[actor].auth)
    assert outcome(reply) == expected, reply.text
    if expected == OK:
        conversation = reply.json()["conversation"]
        assert roles_of(conversation)[who["spare"].id] == (role or "ROLE_MEMBER")
        assert conversation["participant_count"] == 6


@pytest.mark.parametrize(
    ("actor", "target", "expected"),
    [
        ("admin", "moderator", OK),
        ("admin", "member", OK),
        ("moderator", "member", OK),
        ("moderator", "moderator2", FORBIDDEN),
        ("moderator", "admin", FORBIDDEN),
        ("member", "member2", FORBIDDEN),
        ("member", "moderator", FORBIDDEN),
        ("member", "admin", FORBIDDEN),
        ("outsider", "member", OUTSIDER),
        # Anyone removes themselves.
        ("member", "member", OK),
        ("moderator", "moderator", OK),
        ("admin", "admin", OK),
    ],
)
async def test_remove_participant(
    http: httpx.AsyncClient, make_token, actor: str, target: str, expected: tuple[int, str]
) -> None:
    cid, who = await staffed_group(http, make_token)
    reply = await http.delete(f"/api/conversations/{cid}/participants/{who[target].id}", headers=who[actor].auth)
    assert outcome(reply) == expected, reply.text
    if expected == OK:
        assert who[target].id not in roles_of(reply.json()["conversation"])
        assert reply.json()["conversation"]["participant_count"] == 4


@pytest.mark.parametrize(
    ("actor", "target", "role", "expected"),
    [
        ("admin", "member", "ROLE_MODERATOR", OK),
        ("admin", "member", "ROLE_ADMIN", OK),
        ("admin", "moderator", "ROLE_MEMBER", OK),
        ("moderator", "member", "ROLE_MODERATOR", FORBIDDEN),
        ("moderator", "moderator", "ROLE_ADMIN", FORBIDDEN),
        ("member", "member", "ROLE_ADMIN", FORBIDDEN),
        ("outsider", "member", "ROLE_MODERATOR", OUTSIDER),
    ],
)
async def test_change_role(
    http: httpx.AsyncClient, make_token, actor: str, target: str, role: str, expected: tuple[int, str]
) -> None:
    cid, who = await staffed_group(http, make_token)
    reply = await http.patch(
        f"/api/conversations/{cid}/participants/{who[target].id}", json={"role": role}, headers=who[actor].auth
    )
    assert outcome(reply) == expected, reply.text
    after = await http.get(f"/api/conversations/{cid}", headers=who["admin"].auth)
    expected_role = role if expected == OK else {"member": "ROLE_MEMBER", "moderator": "ROLE_MODERATOR"}[target]
    assert roles_of(after.json()["conversation"])[who[target].id] == expected_role


@pytest.mark.parametrize(
    ("actor", "expected"), [("admin", OK), ("moderator", FORBIDDEN), ("member", FORBIDDEN), ("outsider", OUTSIDER)]
)
async def test_read_audit(http: httpx.AsyncClient, make_token, actor: str, expected: tuple[int, str]) -> None:
    cid, who = await staffed_group(http, make_token)
    reply = await http.get(f"/api/conversations/{cid}/audit", headers=who[actor].auth)
    assert outcome(reply) == expected, reply.text


async def test_admin_removes_another_admin(http: httpx.AsyncClient, make_token) -> None:
    cid, who = await staffed_group(http, make_token)
    promote = await http.patch(
        f"/api/conversations/{cid}/participants/{who['member'].id}",
        json={"role": "ROLE_ADMIN"},
        headers=who["admin"].auth,
    )
    assert promote.status_code == 200
    reply = await http.delete(f"/api/conversations/{cid}/participants/{who['admin'].id}", headers=who["member"].auth)
    assert reply.status_code == 200, reply.text
    assert roles_of(reply.json()["conversation"])[who["member"].id] == "ROLE_ADMIN"


async def test_adding_a_participant_twice_is_409(http: httpx.AsyncClient, make_token) -> None:
    cid, who = await staffed_group(http, make_token)
    reply = await http.post(
        f"/api/conversations/{cid}/participants", json={"user_id": who["member"].id}, headers=who["admin"].auth
    )
    assert error_of(reply) == (409, "ALREADY_PARTICIPANT")


async def test_adding_an_unknown_user_is_404(http: httpx.AsyncClient, make_token) -> None:
    cid, who = await staffed_group(http, make_token)
    reply = await http.post(
        f"/api/conversations/{cid}/participants",
        json={"user_id": f"ghost-{uuid.uuid4().hex}"},
        headers=who["admin"].auth,
    )
    assert error_of(reply) == (404, "USER_NOT_FOUND")


async def test_removing_a_non_participant_is_404(http: httpx.AsyncClient, make_token) -> None:
    cid, who = await staffed_group(http, make_token)
    reply = await http.delete(f"/api/conversations/{cid}/participants/{who['spare'].id}", headers=who["admin"].auth)
    assert error_of(reply) == (404, "PARTICIPANT_NOT_FOUND")
    role = await http.patch(
        f"/api/conversations/{cid}/participants/{who['spare'].id}",
        json={"role": "ROLE_MEMBER"},
        headers=who["admin"].auth,
    )
    assert error_of(role) == (404, "PARTICIPANT_NOT_FOUND")


async def test_direct_conversations_take_no_participant_changes(http: httpx.AsyncClient, make_token) -> None:
    ann, bob, cid_ = await people(http, make_token, "ann", "bob", "cid")
    direct = await direct_conversation(http, ann.token, bob.id)
    add = await http.post(f"/api/conversations/{direct}/participants", json={"user_id": cid_.id}, headers=ann.auth)
    remove = await http.delete(f"/api/conversations/{direct}/participants/{bob.id}", headers=ann.auth)
    leave = await http.delete(f"/api/conversations/{direct}/participants/{ann.id}", headers=ann.auth)
    role = await http.patch(
        f"/api/conversations/{direct}/participants/{bob.id}", json={"role": "ROLE_ADMIN"}, headers=ann.auth
    )
    for reply in (add, remove, leave, role):
        assert error_of(reply) == (400, "DIRECT_CONVERSATION")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"role": "ROLE_OWNER"}, "INVALID_ARGUMENT"),  # not an enum name: the edge refuses to build the request
        ({"role": "owner"}, "INVALID_ARGUMENT"),  # nor a short name
        ({"role": 9}, "INVALID_ROLE"),  # a number no role has
        ({}, "INVALID_ROLE"),  # a role change must name the role
        ({"role": "ROLE_UNSPECIFIED"}, "INVALID_ROLE"),
    ],
)
async def test_roles_that_do_not_exist_are_400(
    http: httpx.AsyncClient, make_token, body: dict[str, object], code: str
) -> None:
    cid, who = await staffed_group(http, make_token)
    reply = await http.patch(
        f"/api/conversations/{cid}/participants/{who['member'].id}", json=body, headers=who["admin"].auth
    )
    assert error_of(reply) == (400, code)
    add = await http.post(
        f"/api/conversations/{cid}/participants", json={"user_id": who["spare"].id, **body}, headers=who["admin"].auth
    )
    if body.get("role", "ROLE_UNSPECIFIED") == "ROLE_UNSPECIFIED":
        assert add.status_code == 200  # adding without a role adds a member
    else:
        assert error_of(add) == (400, code)


@pytest.mark.parametrize(
    "path",
    [
        "/api/conversations/nope/participants/{member}",
        "/api/conversations/{cid}/participants/" + "x" * 129,
    ],
)
async def test_malformed_ids_on_participant_paths_are_400(http: httpx.AsyncClient, make_token, path: str) -> None:
    cid, who = await staffed_group(http, make_token)
    reply = await http.delete(path.format(cid=cid, member=who["member"].id), headers=who["admin"].auth)
    assert reply.status_code == 400
    assert error_of(reply)[1] in ("INVALID_ID", "INVALID_USER_ID")


async def test_the_last_admin_cannot_step_down(http: httpx.AsyncClient, make_token) -> None:
    cid, who = await staffed_group(http, make_token)
    reply = await http.patch(
        f"/api/conversations/{cid}/participants/{who['admin'].id}",
        json={"role": "ROLE_MEMBER"},
        headers=who["admin"].auth,
    )
    assert error_of(reply) == (400, "LAST_ADMIN")


async def test_roles_by_their_short_names(http: httpx.AsyncClient, make_token) -> None:
    """The edge also takes `admin`, `moderator`, `member` (the issue's names) for the proto enum."""
    cid, who = await staffed_group(http, make_token)
    reply = await http.patch(
        f"/api/conversations/{cid}/participants/{who['member'].id}",
        json={"role": "moderator"},
        headers=who["admin"].auth,
    )
    assert reply.status_code == 200, reply.text
    assert roles_of(reply.json()["conversation"])[who["member"].id] == "ROLE_MODERATOR"
