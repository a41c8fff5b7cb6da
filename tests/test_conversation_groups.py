"""Group conversations: titles, participants that must exist, the creator as admin, all-or-nothing,
the size limit; and getting a conversation (403 for outsiders, 404 for unknown ids)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import psycopg
import pytest

from chatmesh.errors import error_code_of
from chatmesh.gen.chat.v1 import conversation_pb2, conversation_pb2_grpc
from chatmesh_tools.embedded import free_port
from chatmesh_tools.launcher import Mesh
from tests.test_conversation_support import create_group, error_of, people, roles_of


async def test_group_creator_is_admin_and_others_members(http: httpx.AsyncClient, make_token) -> None:
    ann, bob, cid_ = await people(http, make_token, "ann", "bob", "cid")
    reply = await http.post(
        "/api/conversations/group", json={"title": "  Launch  ", "participant_ids": [bob.id, cid_.id]}, headers=ann.auth
    )
    assert reply.status_code == 200, reply.text
    group = reply.json()["conversation"]
    assert group["type"] == "CONVERSATION_TYPE_GROUP"
    assert group["title"] == "Launch"  # trimmed
    assert group["created_by"] == ann.id and group["active"] is True
    assert group["participant_count"] == 3
    assert roles_of(group) == {ann.id: "ROLE_ADMIN", bob.id: "ROLE_MEMBER", cid_.id: "ROLE_MEMBER"}
    fetched = await http.get(f"/api/conversations/{group['conversation_id']}", headers=bob.auth)
    assert fetched.status_code == 200
    assert roles_of(fetched.json()["conversation"]) == roles_of(group)


async def test_creator_listed_among_participants_is_not_a_duplicate(http: httpx.AsyncClient, make_token) -> None:
    ann, bob = await people(http, make_token, "ann", "bob")
    group = await create_group(http, ann, [ann, bob])
    assert roles_of(group) == {ann.id: "ROLE_ADMIN", bob.id: "ROLE_MEMBER"}


async def test_group_of_one(http: httpx.AsyncClient, make_token) -> None:
    (ann,) = await people(http, make_token, "ann")
    group = await create_group(http, ann, [])
    assert group["participant_count"] == 1


@pytest.mark.parametrize(
    ("title", "code"),
    [
        ("", "TITLE_REQUIRED"),
        ("   \t ", "TITLE_REQUIRED"),
        ("x" * 201, "TITLE_TOO_LONG"),
        ("nul\x00title", "INVALID_TEXT"),
    ],
)
async def test_bad_titles_are_400(http: httpx.AsyncClient, make_token, title: str, code: str) -> None:
    ann, bob = await people(http, make_token, "ann", "bob")
    reply = await http.post(
        "/api/conversations/group", json={"title": title, "participant_ids": [bob.id]}, headers=ann.auth
    )
    assert error_of(reply) == (400, code)


async def test_title_of_exactly_200_after_trimming_is_fine(http: httpx.AsyncClient, make_token) -> None:
    (ann,) = await people(http, make_token, "ann")
    group = await create_group(http, ann, [], title="  " + "x" * 200 + "  ")
    assert group["title"] == "x" * 200


async def test_unknown_participant_is_404_and_nothing_is_created(
    http: httpx.AsyncClient, make_token, database_url: str
) -> None:
    ann, bob = await people(http, make_token, "ann", "bob")
    title = f"ghost-{uuid.uuid4().hex}"
    reply = await http.post(
        "/api/conversations/group",
        json={"title": title, "participant_ids": [bob.id, "nobody-" + uuid.uuid4().hex]},
        headers=ann.auth,
    )
    assert error_of(reply) == (404, "USER_NOT_FOUND")
    with psycopg.connect(database_url) as conn:
        count = conn.execute("SELECT count(*) FROM conversation.conversations WHERE title = %s", (title,)).fetchone()
    assert count == (0,)


@pytest.mark.parametrize(
    ("ids", "code"),
    [
        (["{bob}", "{bob}"], "DUPLICATE_PARTICIPANT"),
        (["{bob}", ""], "INVALID_USER_ID"),
        (["x" * 129], "INVALID_USER_ID"),
        ([" {bob}"], "INVALID_USER_ID"),
        (["nul\x00id"], "INVALID_USER_ID"),
    ],
)
async def test_bad_participant_lists_are_400(http: httpx.AsyncClient, make_token, ids: list[str], code: str) -> None:
    ann, bob = await people(http, make_token, "ann", "bob")
    reply = await http.post(
        "/api/conversations/group",
        json={"title": "t", "participant_ids": [i.format(bob=bob.id) for i in ids]},
        headers=ann.auth,
    )
    assert error_of(reply) == (400, code)


async def test_get_is_403_for_outsiders_404_for_unknown_400_for_malformed(http: httpx.AsyncClient, make_token) -> None:
    ann, bob, eve = await people(http, make_token, "ann", "bob", "eve")
    group = await create_group(http, ann, [bob])
    outsider = await http.get(f"/api/conversations/{group['conversation_id']}", headers=eve.auth)
    unknown = await http.get(f"/api/conversations/{uuid.uuid4()}", headers=eve.auth)
    malformed = await http.get("/api/conversations/not-a-uuid", headers=eve.auth)
    assert error_of(outsider) == (403, "NOT_PARTICIPANT")
    assert error_of(unknown) == (404, "CONVERSATION_NOT_FOUND")
    assert error_of(malformed) == (400, "INVALID_ID")


@pytest.fixture(scope="module")
def small_groups(mesh: Mesh, mesh_env: dict[str, str], workdir: Path) -> Iterator[str]:
    """A second conversation service on the same database, with CHAT_MAX_GROUP_SIZE=3."""
    limited = Mesh(
        env={**mesh_env, "CHAT_MAX_GROUP_SIZE": "3"},
        ports={"conversation": free_port(), "message": mesh.ports["message"]},
        log_dir=workdir / "small",
    )
    limited.start("conversation")
    yield f"127.0.0.1:{limited.ports['conversation']}"
    limited.stop()


async def test_group_size_limit_is_configurable(http: httpx.AsyncClient, make_token, small_groups: str) -> None:
    ann, bob, cid_, dan = await people(http, make_token, "ann", "bob", "cid", "dan")
    async with grpc.aio.insecure_channel(small_groups) as channel:
        stub = conversation_pb2_grpc.ConversationServiceStub(channel)
        metadata = (("authorization", f"Bearer {ann.token}"),)
        with pytest.raises(grpc.aio.AioRpcError) as too_big:
            await stub.CreateGroupConversation(
                conversation_pb2.CreateGroupConversationRequest(title="big", participant_ids=[bob.id, cid_.id, dan.id]),
                metadata=metadata,
            )
        assert too_big.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_code_of(too_big.value) == "GROUP_TOO_LARGE"
        full = await stub.CreateGroupConversation(
            conversation_pb2.CreateGroupConversationRequest(title="full", participant_ids=[bob.id, cid_.id]),
            metadata=metadata,
        )
        assert full.conversation.participant_count == 3
        with pytest.raises(grpc.aio.AioRpcError) as no_room:
            await stub.AddParticipant(
                conversation_pb2.AddParticipantRequest(
                    conversation_id=full.conversation.conversation_id, user_id=dan.id
                ),
                metadata=metadata,
            )
        assert error_code_of(no_room.value) == "GROUP_TOO_LARGE"


async def test_default_group_size_limit_is_1000() -> None:
    from chatmesh.config import ENV_VARS, Settings

    assert Settings.from_env({"CHAT_JWT_SECRET": "s"}).max_group_size == 1000
    assert Settings.from_env({"CHAT_JWT_SECRET": "s", "CHAT_MAX_GROUP_SIZE": "5"}).max_group_size == 5
    assert "CHAT_MAX_GROUP_SIZE" in ENV_VARS
    assert "CHAT_MAX_GROUP_SIZE" in (Path(__file__).parent.parent / "README.md").read_text()
