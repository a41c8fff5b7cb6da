"""UpsertUser, which the edge calls on every connect with the user's own token: a user it finds
unchanged is only read (no write, no event), a new name is recorded, and concurrent first upserts of
one user all succeed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import psycopg
import pytest

from chatmesh.gen.chat.v1 import conversation_pb2, conversation_pb2_grpc
from chatmesh_tools.launcher import Mesh
from tests.helpers import new_user_id

Stub = conversation_pb2_grpc.ConversationServiceStub


@pytest.fixture
async def stub(mesh: Mesh) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.ports['conversation']}") as channel:
        yield conversation_pb2_grpc.ConversationServiceStub(channel)


def _row_version(database_url: str, user_id: str) -> tuple[object, ...]:
    """The row's xmin (a new one on any write, even a same-value update) and the outbox's size."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT xmin::text, updated_at, display_name FROM conversation.users WHERE user_id = %s", (user_id,)
        ).fetchone()
        outbox = conn.execute("SELECT count(*) FROM conversation.outbox").fetchone()
    assert row is not None and outbox is not None
    return (*row, outbox[0])


async def test_an_unchanged_user_is_not_written(stub: Stub, make_token, database_url: str) -> None:
    user = new_user_id("steady")
    own = (("authorization", f"Bearer {make_token(user)}"),)  # the user's token, as the edge forwards it

    async def upsert(name: str) -> str:
        reply = await stub.UpsertUser(conversation_pb2.UpsertUserRequest(user_id=user, display_name=name), metadata=own)
        assert reply.user.user_id == user and reply.user.created_at.seconds > 0
        return str(reply.user.display_name)

    assert await upsert("Steady") == "Steady"
    first = _row_version(database_url, user)
    # The same name again, or none (which keeps the name): no write and no event.
    assert [await upsert(name) for name in ("Steady", "", "Steady")] == ["Steady"] * 3
    assert _row_version(database_url, user) == first

    assert await upsert("Renamed") == "Renamed"
    renamed = _row_version(database_url, user)
    assert renamed[0] != first[0] and renamed[1] > first[1] and renamed[2] == "Renamed"
    assert renamed[3] == first[3]  # a rename is not announced either
    assert await upsert("") == "Renamed"
    assert _row_version(database_url, user) == renamed


async def test_concurrent_first_upserts_make_one_user(stub: Stub, make_token, database_url: str) -> None:
    user = new_user_id("racer")
    own = (("authorization", f"Bearer {make_token(user)}"),)  # the user's token, as the edge forwards it
    replies = await asyncio.gather(
        *(
            stub.UpsertUser(conversation_pb2.UpsertUserRequest(user_id=user, display_name="Racer"), metadata=own)
            for _ in range(10)
        )
    )
    assert {(r.user.user_id, r.user.display_name, r.user.created_at.ToDatetime()) for r in replies} == {
        (user, "Racer", replies[0].user.created_at.ToDatetime())
    }
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM conversation.users WHERE user_id = %s", (user,)).fetchone() == (1,)
