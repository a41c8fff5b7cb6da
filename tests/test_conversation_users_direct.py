"""Users (recorded by the edge with their own tokens, never silently inserted) and direct
conversations (one per pair, enforced by the database, also under concurrent creates)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
import httpx
import psycopg
import pytest

from chatmesh.errors import error_code_of
from chatmesh.gen.chat.v1 import conversation_pb2, conversation_pb2_grpc
from chatmesh_tools.launcher import Mesh
from tests.helpers import bearer, new_user_id
from tests.test_conversation_support import error_of, people

Stub = conversation_pb2_grpc.ConversationServiceStub


@pytest.fixture
async def stub(mesh: Mesh) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.ports['conversation']}") as channel:
        yield conversation_pb2_grpc.ConversationServiceStub(channel)


async def test_edge_records_the_caller_with_their_name_claim(http: httpx.AsyncClient, make_token) -> None:
    user = new_user_id("named")
    reply = await http.get("/api/conversations", headers=bearer(make_token(user, name="Named Person")))
    assert reply.status_code == 200
    found = await http.get(f"/api/users/{user}", headers=bearer(make_token(new_user_id("asker"))))
    assert found.status_code == 200
    assert found.json()["user"]["display_name"] == "Named Person"


async def test_users_upsert_themselves(http: httpx.AsyncClient, make_token) -> None:
    user = new_user_id("me")
    token = make_token(user)
    first = await http.put("/api/users/me", json={"display_name": "  Me  "}, headers=bearer(token))
    again = await http.put("/api/users/me", json={}, headers=bearer(token))  # an empty name keeps the old one
    assert first.json()["user"] == again.json()["user"]
    assert first.json()["user"]["display_name"] == "Me"
    nul = await http.put("/api/users/me", json={"display_name": "bad\x00name"}, headers=bearer(token))
    assert error_of(nul) == (400, "INVALID_TEXT")


async def test_users_record_only_themselves_and_no_service_may_name_others(
    stub: Stub, service_metadata, make_token
) -> None:
    """Naming another user is for services on UpsertUser's allow list (grpc_server.SERVICE_CALLERS),
    and none is listed: the edge records users with their own tokens."""
    target = new_user_id("imported")
    for caller in ("edge", "message"):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.UpsertUser(
                conversation_pb2.UpsertUserRequest(user_id=target, display_name="Imported"),
                metadata=service_metadata(caller),
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_code_of(refused.value) == "CALLER_NOT_ALLOWED"
    user_meta = (("authorization", f"Bearer {make_token(new_user_id('sneaky'))}"),)
    with pytest.raises(grpc.aio.AioRpcError) as hijack:
        await stub.UpsertUser(
            conversation_pb2.UpsertUserRequest(user_id=target, display_name="Hijacked"), metadata=user_meta
        )
    assert error_code_of(hijack.value) == "INTERNAL_ONLY"
    with pytest.raises(grpc.aio.AioRpcError) as never_made:
        await stub.GetUser(conversation_pb2.GetUserRequest(user_id=target), metadata=user_meta)
    assert error_code_of(never_made.value) == "USER_NOT_FOUND"


async def test_unknown_users_are_404_never_inserted(http: httpx.AsyncClient, make_token, database_url: str) -> None:
    (ann,) = await people(http, make_token, "ann")
    ghost = f"ghost-{uuid.uuid4().hex}"
    assert error_of(await http.get(f"/api/users/{ghost}", headers=ann.auth)) == (404, "USER_NOT_FOUND")
    direct = await http.post("/api/conversations/direct", json={"user_id": ghost}, headers=ann.auth)
    assert error_of(direct) == (404, "USER_NOT_FOUND")
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM conversation.users WHERE user_id = %s", (ghost,)).fetchone() == (0,)


@pytest.mark.parametrize(
    ("other", "code"),
    [
        ("", "INVALID_USER_ID"),
        ("x" * 129, "INVALID_USER_ID"),
        ("a\x00b", "INVALID_USER_ID"),
        ("{self}", "SELF_CONVERSATION"),
    ],
)
async def test_bad_direct_requests_are_400(http: httpx.AsyncClient, make_token, other: str, code: str) -> None:
    (ann,) = await people(http, make_token, "ann")
    reply = await http.post("/api/conversations/direct", json={"user_id": other.format(self=ann.id)}, headers=ann.auth)
    assert error_of(reply) == (400, code)


async def test_direct_conversation_has_both_members(http: httpx.AsyncClient, make_token) -> None:
    ann, bob = await people(http, make_token, "ann", "bob")
    reply = await http.post("/api/conversations/direct", json={"user_id": bob.id}, headers=ann.auth)
    conversation = reply.json()["conversation"]
    assert conversation["type"] == "CONVERSATION_TYPE_DIRECT" and conversation["participant_count"] == 2
    assert {(p["user_id"], p["role"]) for p in conversation["participants"]} == {
        (ann.id, "ROLE_MEMBER"),
        (bob.id, "ROLE_MEMBER"),
    }


async def test_concurrent_direct_creates_make_one_conversation(
    http: httpx.AsyncClient, make_token, database_url: str
) -> None:
    ann, bob = await people(http, make_token, "ann", "bob")
    requests = [
        http.post("/api/conversations/direct", json={"user_id": other.id}, headers=me.auth)
        for _ in range(15)
        for me, other in ((ann, bob), (bob, ann))
    ]
    replies = await asyncio.gather(*requests)
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies if r.status_code != 200]
    ids = {r.json()["conversation"]["conversation_id"] for r in replies}
    assert len(ids) == 1
    assert sum(r.json()["created"] for r in replies) == 1
    assert all(r.json()["conversation"]["participant_count"] == 2 for r in replies)
    with psycopg.connect(database_url) as conn:
        count = conn.execute(
            "SELECT count(*) FROM conversation.conversations WHERE kind = 'direct' AND direct_low = %s"
            " AND direct_high = %s",
            tuple(sorted((ann.id, bob.id))),
        ).fetchone()
    assert count == (1,)


async def test_the_database_refuses_a_second_direct_conversation(
    http: httpx.AsyncClient, make_token, database_url: str
) -> None:
    """The rule lives in a unique index, so even a writer that skips the code's check cannot break it."""
    ann, bob = await people(http, make_token, "ann", "bob")
    await http.post("/api/conversations/direct", json={"user_id": bob.id}, headers=ann.auth)
    low, high = sorted((ann.id, bob.id))
    with psycopg.connect(database_url) as conn, pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(
            "INSERT INTO conversation.conversations (kind, created_by, direct_low, direct_high, request_state)"
            " VALUES ('direct', %s, %s, %s, 'pending')",
            (ann.id, low, high),
        )
