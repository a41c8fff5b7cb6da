"""Membership over time: the last admin leaving promotes the longest-standing participant, the last
participant leaving deactivates the conversation, every change bumps membership_version, and every
change reaches the participants' WebSockets as a conversation:* event."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import httpx
import psycopg
import pytest

from chatmesh.errors import error_code_of
from chatmesh.gen.chat.v1 import conversation_pb2, conversation_pb2_grpc
from chatmesh_tools.launcher import Mesh
from tests.helpers import Socket, send
from tests.test_conversation_support import create_group, error_of, people, roles_of, settles


@pytest.fixture
async def internal(
    mesh: Mesh, service_metadata
) -> AsyncIterator[
    tuple[  # type: ignore[no-untyped-def]
        conversation_pb2_grpc.ConversationServiceStub, tuple[tuple[str, str], ...]
    ]
]:
    """The conversation service over gRPC as the message service (which calls the internal RPCs)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.ports['conversation']}") as channel:
        yield conversation_pb2_grpc.ConversationServiceStub(channel), service_metadata("message")


async def membership(internal, conversation_id: str) -> conversation_pb2.GetMembershipResponse:  # type: ignore[no-untyped-def]
    stub, metadata = internal
    return await stub.GetMembership(
        conversation_pb2.GetMembershipRequest(conversation_id=conversation_id), metadata=metadata
    )


async def test_last_admin_leaving_promotes_the_longest_standing(http: httpx.AsyncClient, make_token, internal) -> None:
    admin, first, second = await people(http, make_token, "admin", "first", "second")
    cid = (await create_group(http, admin, []))["conversation_id"]
    for person, role in ((first, "ROLE_MEMBER"), (second, "ROLE_MODERATOR")):
        reply = await http.post(
            f"/api/conversations/{cid}/participants", json={"user_id": person.id, "role": role}, headers=admin.auth
        )
        assert reply.status_code == 200, reply.text
    left = await http.delete(f"/api/conversations/{cid}/participants/{admin.id}", headers=admin.auth)
    assert left.status_code == 200, left.text
    # `first` joined before `second` (a moderator): seniority decides, not the role.
    assert roles_of(left.json()["conversation"]) == {first.id: "ROLE_ADMIN", second.id: "ROLE_MODERATOR"}
    audit = await http.get(f"/api/conversations/{cid}/audit", headers=first.auth)
    actions = [(e["action"], e["target"], e["actor_id"]) for e in audit.json()["entries"]]
    assert ("participant.promoted", first.id, admin.id) in actions
    # Leaving oneself is not a privileged action: no participant_removed entry for it.
    assert ("participant.removed", admin.id, admin.id) not in actions


async def test_an_admin_leaving_with_another_admin_promotes_nobody(http: httpx.AsyncClient, make_token) -> None:
    admin, other, member = await people(http, make_token, "admin", "other", "member")
    cid = (await create_group(http, admin, [other, member]))["conversation_id"]
    await http.patch(
        f"/api/conversations/{cid}/participants/{other.id}", json={"role": "ROLE_ADMIN"}, headers=admin.auth
    )
    left = await http.delete(f"/api/conversations/{cid}/participants/{admin.id}", headers=admin.auth)
    assert roles_of(left.json()["conversation"]) == {other.id: "ROLE_ADMIN", member.id: "ROLE_MEMBER"}


async def test_last_participant_leaving_deactivates(
    http: httpx.AsyncClient, make_token, internal, database_url: str
) -> None:
    admin, member = await people(http, make_token, "admin", "member")
    cid = (await create_group(http, admin, [member]))["conversation_id"]
    await http.delete(f"/api/conversations/{cid}/participants/{member.id}", headers=member.auth)
    before = await membership(internal, cid)
    assert before.active
    last = await http.delete(f"/api/conversations/{cid}/participants/{admin.id}", headers=admin.auth)
    assert last.status_code == 200
    assert last.json()["conversation"]["active"] is False
    after = await membership(internal, cid)
    assert not after.active and not after.participants and after.version > before.version
    listed = await http.get("/api/conversations", headers=admin.auth)
    assert cid not in [c["conversation_id"] for c in listed.json()["conversations"]]
    assert error_of(await http.get(f"/api/conversations/{cid}", headers=admin.auth)) == (403, "NOT_PARTICIPANT")
    rejoin = await http.post(f"/api/conversations/{cid}/participants", json={"user_id": admin.id}, headers=admin.auth)
    assert error_of(rejoin) == (403, "NOT_PARTICIPANT")
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT actor_id, action, target FROM conversation.audit_log WHERE conversation_id = %s ORDER BY id", (cid,)
        ).fetchall()
    assert (admin.id, "conversation.deactivated", cid) in rows


async def test_every_membership_change_bumps_the_version(http: httpx.AsyncClient, make_token, internal) -> None:
    admin, bob, cat = await people(http, make_token, "admin", "bob", "cat")
    cid = (await create_group(http, admin, [bob]))["conversation_id"]
    versions = [(await membership(internal, cid)).version]
    changes = [
        http.post(f"/api/conversations/{cid}/participants", json={"user_id": cat.id}, headers=admin.auth),
        http.patch(
            f"/api/conversations/{cid}/participants/{cat.id}", json={"role": "ROLE_MODERATOR"}, headers=admin.auth
        ),
        http.delete(f"/api/conversations/{cid}/participants/{bob.id}", headers=admin.auth),
    ]
    for change in changes:
        assert (await change).status_code == 200
        versions.append((await membership(internal, cid)).version)
    assert versions == sorted(set(versions)), versions
    final = await membership(internal, cid)
    assert {p.user_id for p in final.participants} == {admin.id, cat.id}


async def test_membership_rpcs_are_internal(http: httpx.AsyncClient, make_token, mesh: Mesh) -> None:
    (ann,) = await people(http, make_token, "ann")
    cid = (await create_group(http, ann, []))["conversation_id"]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.ports['conversation']}") as channel:
        stub = conversation_pb2_grpc.ConversationServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetMembership(
                conversation_pb2.GetMembershipRequest(conversation_id=cid),
                metadata=(("authorization", f"Bearer {ann.token}"),),
            )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_code_of(refused.value) == "INTERNAL_ONLY"


async def test_membership_changes_reach_websockets(http: httpx.AsyncClient, make_token, mesh: Mesh) -> None:
    admin, bob, cat = await people(http, make_token, "admin", "bob", "cat")
    sockets = {p.id: await Socket.open(mesh.edge_url, p.token) for p in (admin, bob, cat)}
    try:
        cid = (await create_group(http, admin, [bob]))["conversation_id"]
        for user in (admin.id, bob.id):
            created = await sockets[user].next_of("conversation:created")
            assert created["data"]["conversation"]["conversation_id"] == cid
            assert created["data"]["actor_id"] == admin.id

        await http.post(f"/api/conversations/{cid}/participants", json={"user_id": cat.id}, headers=admin.auth)
        for user in (admin.id, bob.id, cat.id):
            added = await sockets[user].next_of("conversation:participant_added")
            assert added["data"]["user_id"] == cat.id and added["data"]["role"] == "ROLE_MEMBER"

        await http.patch(
            f"/api/conversations/{cid}/participants/{cat.id}", json={"role": "ROLE_MODERATOR"}, headers=admin.auth
        )
        changed = await sockets[cat.id].next_of("conversation:role_changed")
        assert changed["data"]["user_id"] == cat.id and changed["data"]["role"] == "ROLE_MODERATOR"

        await http.delete(f"/api/conversations/{cid}/participants/{bob.id}", headers=admin.auth)
        for user in (admin.id, bob.id, cat.id):  # the removed user hears of it too
            removed = await sockets[user].next_of("conversation:participant_removed")
            assert removed["data"]["user_id"] == bob.id
            assert bob.id not in {p["user_id"] for p in removed["data"]["conversation"]["participants"]}
    finally:
        for socket in sockets.values():
            await socket.close()


async def test_conversation_ids_of_a_user_for_services(http: httpx.AsyncClient, make_token, internal) -> None:
    ann, bob = await people(http, make_token, "ann", "bob")
    group = (await create_group(http, ann, [bob]))["conversation_id"]
    left = (await create_group(http, ann, [bob]))["conversation_id"]
    await http.delete(f"/api/conversations/{left}/participants/{bob.id}", headers=bob.auth)
    stub, metadata = internal
    reply = await stub.ListConversationIds(
        conversation_pb2.ListConversationIdsRequest(user_id=bob.id), metadata=metadata
    )
    assert set(reply.conversation_ids) == {group}
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.ListConversationIds(
            conversation_pb2.ListConversationIdsRequest(user_id=bob.id),
            metadata=(("authorization", f"Bearer {bob.token}"),),
        )
    assert error_code_of(refused.value) == "INTERNAL_ONLY"


async def test_events_do_not_carry_the_actors_unread_count(http: httpx.AsyncClient, make_token, mesh: Mesh) -> None:
    ann, bob, cat = await people(http, make_token, "ann", "bob", "cat")
    cid = (await create_group(http, ann, [bob]))["conversation_id"]
    for text in ("one", "two"):
        await send(http, bob.token, cid, text)
    await settles(http, ann, cid, {"unread_count": "2"})
    socket = await Socket.open(mesh.edge_url, cat.token)
    try:
        await http.post(f"/api/conversations/{cid}/participants", json={"user_id": cat.id}, headers=ann.auth)
        added = await socket.next_of("conversation:participant_added")
        assert "unread_count" not in added["data"]["conversation"]
        assert added["data"]["conversation"]["last_message"]["text"] == "two"
    finally:
        await socket.close()
