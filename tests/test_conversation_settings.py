"""Conversation settings over REST and the WebSocket: admins rename a group and describe it, anyone
leaves (the last admin hands over first or closes the group), and each participant mutes and pins
for themselves. Bad input and the wrong caller change nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import psycopg
import pytest

from chatmesh.gen.chat.v1 import conversation_pb2, conversation_pb2_grpc
from chatmesh_tools.launcher import Mesh
from tests.helpers import Socket, direct_conversation, quiet, send
from tests.test_conversation_support import Person, create_group, error_of, people, roles_of, settles, view

Internal = tuple[conversation_pb2_grpc.ConversationServiceStub, tuple[tuple[str, str], ...]]


@pytest.fixture
async def internal(mesh: Mesh, service_metadata) -> AsyncIterator[Internal]:  # type: ignore[no-untyped-def]
    """GetMembership as the message service calls it."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.ports['conversation']}") as channel:
        yield conversation_pb2_grpc.ConversationServiceStub(channel), service_metadata("message")


async def membership(internal: Internal, conversation_id: str) -> conversation_pb2.GetMembershipResponse:
    stub, metadata = internal
    return await stub.GetMembership(
        conversation_pb2.GetMembershipRequest(conversation_id=conversation_id), metadata=metadata
    )


async def watched_group(
    http: httpx.AsyncClient, mesh: Mesh, admin: Person, others: list[Person], title: str = "team"
) -> tuple[str, dict[str, Socket]]:
    """A group whose participants' sockets are live: each has seen it created. (The edge answers
    `ready` before it subscribes, so an event right after a fresh socket opens could precede it.)"""
    sockets = {p.id: await Socket.open(mesh.edge_url, p.token) for p in (admin, *others)}
    cid = (await create_group(http, admin, others, title=title))["conversation_id"]
    for socket in sockets.values():
        assert (await socket.next_of("conversation:created"))["conversation_id"] == cid
    return cid, sockets


def audit_rows(database_url: str, conversation_id: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(database_url) as conn:
        return [
            tuple(r)
            for r in conn.execute(  # type: ignore[misc]
                "SELECT actor_id, action, target FROM conversation.audit_log WHERE conversation_id = %s ORDER BY id",
                (conversation_id,),
            ).fetchall()
        ]


async def patch(http: httpx.AsyncClient, person: Person, cid: str, body: dict[str, Any]) -> httpx.Response:
    return await http.patch(f"/api/conversations/{cid}", json=body, headers=person.auth)


async def preferences(http: httpx.AsyncClient, person: Person, cid: str, **body: bool) -> dict[str, Any]:
    reply = await http.patch(f"/api/conversations/{cid}/preferences", json=body, headers=person.auth)
    assert reply.status_code == 200, reply.text
    return dict(reply.json()["conversation"])


async def listed(http: httpx.AsyncClient, person: Person, limit: int = 100) -> list[dict[str, Any]]:
    found, cursor = [], ""
    while True:
        reply = await http.get(
            "/api/conversations", params={"limit": limit, **({"cursor": cursor} if cursor else {})}, headers=person.auth
        )
        assert reply.status_code == 200, reply.text
        found += reply.json()["conversations"]
        if not (cursor := reply.json()["next_cursor"]):
            return found


async def test_admins_rename_and_describe_and_participants_hear_it(
    http: httpx.AsyncClient, make_token, mesh: Mesh, database_url: str
) -> None:
    admin, bob = await people(http, make_token, "admin", "bob")
    cid, sockets = await watched_group(http, mesh, admin, [bob], title="old name")
    socket = sockets[bob.id]
    reply = await patch(http, admin, cid, {"title": "  new name ", "description": "what we talk about"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["conversation"]["title"] == "new name"
    updated = await socket.next_of("conversation:updated")
    assert updated["data"]["actor_id"] == admin.id
    assert updated["data"]["conversation"]["title"] == "new name"
    assert updated["data"]["conversation"]["description"] == "what we talk about"
    assert (await view(http, bob, cid))["description"] == "what we talk about"

    # One field alone leaves the other; "" removes the description; the same values again change nothing.
    assert (await patch(http, admin, cid, {"title": "newer"})).json()["conversation"][
        "description"
    ] == "what we talk about"
    assert (await patch(http, admin, cid, {"description": ""})).json()["conversation"]["description"] == ""
    assert (await patch(http, admin, cid, {"title": "newer", "description": ""})).status_code == 200
    assert [(a, t) for _, a, t in audit_rows(database_url, cid) if a.startswith("conversation.")] == [
        ("conversation.renamed", "new name"),
        ("conversation.described", ""),
        ("conversation.renamed", "newer"),
        ("conversation.described", ""),
    ]
    trail = await http.get(f"/api/conversations/{cid}/audit", headers=admin.auth)
    assert "conversation.renamed" in {e["action"] for e in trail.json()["entries"]}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"title": ""}, (400, "TITLE_REQUIRED")),
        ({"title": "   "}, (400, "TITLE_REQUIRED")),
        ({"title": "x" * 201}, (400, "TITLE_TOO_LONG")),
        ({"description": "d" * 1001}, (400, "DESCRIPTION_TOO_LONG")),
        ({"description": "  \n "}, (400, "DESCRIPTION_BLANK")),
        ({"description": "nul\x00"}, (400, "INVALID_TEXT")),
        ({}, (400, "NOTHING_TO_UPDATE")),
        ({"title": 5}, (400, "INVALID_ARGUMENT")),
    ],
)
async def test_bad_names_and_descriptions_are_refused_and_change_nothing(
    http: httpx.AsyncClient, make_token, database_url: str, body: dict[str, Any], expected: tuple[int, str]
) -> None:
    (admin,) = await people(http, make_token, "admin")
    cid = (await create_group(http, admin, [], title="keep"))["conversation_id"]
    assert error_of(await patch(http, admin, cid, body)) == expected
    assert (await view(http, admin, cid))["title"] == "keep"
    assert audit_rows(database_url, cid) == []


async def test_only_admins_change_settings(http: httpx.AsyncClient, make_token, database_url: str) -> None:
    admin, moderator, member, outsider = await people(http, make_token, "admin", "moderator", "member", "outsider")
    cid = (await create_group(http, admin, [moderator, member], title="keep"))["conversation_id"]
    await http.patch(
        f"/api/conversations/{cid}/participants/{moderator.id}", json={"role": "ROLE_MODERATOR"}, headers=admin.auth
    )
    for person in (moderator, member):
        assert error_of(await patch(http, person, cid, {"title": "mine"})) == (403, "INSUFFICIENT_ROLE")
        for action in ("archive", "unarchive"):
            refused = await http.post(f"/api/conversations/{cid}/{action}", json={}, headers=person.auth)
            assert error_of(refused) == (403, "INSUFFICIENT_ROLE")
    assert error_of(await patch(http, outsider, cid, {"title": "mine"})) == (403, "NOT_PARTICIPANT")
    assert error_of(await http.post(f"/api/conversations/{cid}/leave", json={}, headers=outsider.auth)) == (
        403,
        "NOT_PARTICIPANT",
    )
    assert error_of(
        await http.patch(f"/api/conversations/{cid}/preferences", json={"muted": True}, headers=outsider.auth)
    ) == (403, "NOT_PARTICIPANT")
    missing = "00000000-0000-4000-8000-000000000000"
    assert error_of(await patch(http, admin, missing, {"title": "x"})) == (404, "CONVERSATION_NOT_FOUND")
    assert error_of(await patch(http, admin, "not-an-id", {"title": "x"})) == (400, "INVALID_ID")
    assert (await view(http, admin, cid))["title"] == "keep"
    assert [a for _, a, _ in audit_rows(database_url, cid)] == ["participant.role_changed"]


async def test_direct_conversations_have_no_group_settings(http: httpx.AsyncClient, make_token) -> None:
    ann, bob = await people(http, make_token, "ann", "bob")
    cid = await direct_conversation(http, ann.token, bob.id)
    assert error_of(await patch(http, ann, cid, {"title": "ours"})) == (400, "DIRECT_CONVERSATION")
    assert error_of(await http.post(f"/api/conversations/{cid}/archive", json={}, headers=ann.auth)) == (
        400,
        "DIRECT_CONVERSATION",
    )
    assert error_of(await http.post(f"/api/conversations/{cid}/leave", json={}, headers=ann.auth)) == (
        400,
        "DIRECT_CONVERSATION",
    )
    # Mute and pin are anyone's, in any conversation.
    assert (await preferences(http, ann, cid, pinned=True))["pinned"] is True


async def test_members_leave_and_everyone_hears_it(
    http: httpx.AsyncClient, make_token, mesh: Mesh, internal: Internal, database_url: str
) -> None:
    admin, bob, cat = await people(http, make_token, "admin", "bob", "cat")
    cid, sockets = await watched_group(http, mesh, admin, [bob, cat])
    before = (await membership(internal, cid)).version
    left = await http.post(f"/api/conversations/{cid}/leave", json={}, headers=bob.auth)
    assert left.status_code == 200, left.text
    assert set(roles_of(left.json()["conversation"])) == {admin.id, cat.id}
    for user in (admin.id, bob.id):  # the leaver's other devices hear of it too
        removed = await sockets[user].next_of("conversation:participant_removed")
        assert removed["data"]["user_id"] == bob.id and removed["data"]["actor_id"] == bob.id
    assert (await membership(internal, cid)).version > before
    assert cid not in {c["conversation_id"] for c in await listed(http, bob)}
    assert error_of(await http.get(f"/api/messages/{cid}", headers=bob.auth)) == (403, "NOT_PARTICIPANT")
    assert (bob.id, "participant.left", bob.id) in audit_rows(database_url, cid)


async def test_the_last_admin_hands_over_before_leaving(http: httpx.AsyncClient, make_token) -> None:
    admin, bob = await people(http, make_token, "admin", "bob")
    cid = (await create_group(http, admin, [bob]))["conversation_id"]
    refused = await http.post(f"/api/conversations/{cid}/leave", json={}, headers=admin.auth)
    assert error_of(refused) == (400, "LAST_ADMIN")
    assert roles_of(await view(http, admin, cid)) == {admin.id: "ROLE_ADMIN", bob.id: "ROLE_MEMBER"}
    await http.patch(f"/api/conversations/{cid}/participants/{bob.id}", json={"role": "ROLE_ADMIN"}, headers=admin.auth)
    left = await http.post(f"/api/conversations/{cid}/leave", json={}, headers=admin.auth)
    assert left.status_code == 200, left.text
    assert roles_of(left.json()["conversation"]) == {bob.id: "ROLE_ADMIN"}
    # Alone now, the last participant leaves and the group is gone.
    last = await http.post(f"/api/conversations/{cid}/leave", json={}, headers=bob.auth)
    assert last.status_code == 200 and last.json()["conversation"]["active"] is False


async def test_the_last_admin_closes_the_group(
    http: httpx.AsyncClient, make_token, mesh: Mesh, internal: Internal, database_url: str
) -> None:
    admin, bob, cat = await people(http, make_token, "admin", "bob", "cat")
    cid, sockets = await watched_group(http, mesh, admin, [bob, cat])
    await send(http, bob.token, cid, "before the end")
    closed = await http.post(f"/api/conversations/{cid}/leave", json={"close_group": True}, headers=admin.auth)
    assert closed.status_code == 200, closed.text
    assert closed.json()["conversation"]["active"] is False and closed.json()["conversation"]["participants"] == []
    for socket in sockets.values():
        event = await socket.next_of("conversation:closed")
        assert event["data"]["actor_id"] == admin.id and "active" not in event["data"]["conversation"]
    after = await membership(internal, cid)
    assert not after.active and not after.participants
    for person in (admin, bob, cat):
        assert cid not in {c["conversation_id"] for c in await listed(http, person)}
        assert error_of(
            await http.post("/api/messages", json={"conversation_id": cid, "content": "hello?"}, headers=person.auth)
        ) == (403, "NOT_PARTICIPANT")
    assert (admin.id, "conversation.closed", cid) in audit_rows(database_url, cid)


async def test_mute_and_pin_are_the_users_own(
    http: httpx.AsyncClient, make_token, mesh: Mesh, internal: Internal, database_url: str
) -> None:
    ann, bob = await people(http, make_token, "ann", "bob")
    cid, sockets = await watched_group(http, mesh, ann, [bob])
    ann_socket, bob_socket = sockets[ann.id], sockets[bob.id]
    version = (await membership(internal, cid)).version
    muted = await preferences(http, bob, cid, muted=True)
    assert muted["muted"] is True and muted["pinned"] is False
    event = await bob_socket.next_of("conversation:preferences_changed")
    assert event["conversation_id"] == cid and event["data"]["preferences"] == {"muted": True}
    assert "conversation" not in event["data"]
    answer = await membership(internal, cid)
    assert list(answer.muted_user_ids) == [bob.id] and answer.version > version  # caches see it at once
    # Ann sees nothing of it: not the event, not the flag.
    assert await quiet(ann_socket, "conversation:preferences_changed", 0.5) == []
    assert (await view(http, ann, cid))["muted"] is False
    assert (await view(http, bob, cid))["muted"] is True

    # Muted still counts unread; unmuting is heard too (an empty preferences object: both false).
    await send(http, ann.token, cid, "still counted")
    await settles(http, bob, cid, {"unread_count": "1"})
    await preferences(http, bob, cid, muted=False)
    unmuted = await bob_socket.next_of("conversation:preferences_changed")
    while unmuted["event_id"] == event["event_id"]:  # delivery is at least once: skip a repeat of the first
        unmuted = await bob_socket.next_of("conversation:preferences_changed")
    assert unmuted["data"]["preferences"] == {}
    assert not (await membership(internal, cid)).muted_user_ids
    # Mute and pin are nobody's audit business.
    assert [a for _, a, _ in audit_rows(database_url, cid)] == []


async def test_bad_preferences_are_refused(http: httpx.AsyncClient, make_token) -> None:
    (ann,) = await people(http, make_token, "ann")
    cid = (await create_group(http, ann, []))["conversation_id"]
    for body, expected in (({}, (400, "NOTHING_TO_UPDATE")), ({"muted": "loud"}, (400, "INVALID_ARGUMENT"))):
        reply = await http.patch(f"/api/conversations/{cid}/preferences", json=body, headers=ann.auth)
        assert error_of(reply) == expected
    assert (await view(http, ann, cid))["muted"] is False


async def test_pinned_conversations_list_first_across_pages(http: httpx.AsyncClient, make_token) -> None:
    ann, bob = await people(http, make_token, "ann", "bob")
    cids = [(await create_group(http, ann, [bob], title=f"g{i}"))["conversation_id"] for i in range(5)]
    # Newest activity first: g4 .. g0. Pinning g1 and g3 puts them first (newest of them first).
    for cid in (cids[1], cids[3]):
        assert (await preferences(http, ann, cid, pinned=True))["pinned"] is True
    await send(http, bob.token, cids[0], "g0 is now the most recent")
    await settles(http, ann, cids[0], {"last_message.text": "g0 is now the most recent"})  # the projection's
    expected = [cids[3], cids[1], cids[0], cids[4], cids[2]]
    for page_size in (2, 100):  # the cursor keeps its place across the pinned / unpinned boundary
        got = await listed(http, ann, limit=page_size)
        assert [c["conversation_id"] for c in got] == expected
        assert [c["pinned"] for c in got] == [True, True, False, False, False]
    # Only ann's own list changes.
    assert [c["conversation_id"] for c in await listed(http, bob)] == [cids[0], cids[4], cids[3], cids[2], cids[1]]
    await preferences(http, ann, cids[3], pinned=False)
    assert [c["conversation_id"] for c in await listed(http, ann)][:2] == [cids[1], cids[0]]
