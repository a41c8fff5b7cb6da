"""The audit trail: privileged actions recorded with actor, action, target, request id and time,
append-only, read by admins newest first in keyset pages that also gather the message service's
entries (a message deleted by an admin)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import grpc
import httpx
import psycopg
import pytest

from chatmesh.errors import error_code_of
from chatmesh.gen.chat.v1 import conversation_pb2, conversation_pb2_grpc
from chatmesh_tools.embedded import free_port
from chatmesh_tools.launcher import Mesh
from tests.helpers import send
from tests.test_conversation_support import Person, create_group, error_of, people


async def trail(http: httpx.AsyncClient, admin: Person, cid: str, **params: Any) -> dict[str, Any]:
    reply = await http.get(f"/api/conversations/{cid}/audit", params=params, headers=admin.auth)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


async def every_page(http: httpx.AsyncClient, admin: Person, cid: str, limit: int) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page = await trail(http, admin, cid, limit=limit, **({"cursor": cursor} if cursor else {}))
        assert len(page["entries"]) <= limit
        entries += page["entries"]
        cursor = page["next_cursor"]
        if not cursor:
            return entries


async def test_privileged_actions_are_recorded_with_request_ids(http: httpx.AsyncClient, make_token) -> None:
    admin, bob, cat = await people(http, make_token, "admin", "bob", "cat")
    cid = (await create_group(http, admin, [bob]))["conversation_id"]
    steps = [
        (
            "req-add",
            http.post(
                f"/api/conversations/{cid}/participants",
                json={"user_id": cat.id},
                headers={**admin.auth, "x-request-id": "req-add"},
            ),
        ),
        (
            "req-role",
            http.patch(
                f"/api/conversations/{cid}/participants/{cat.id}",
                json={"role": "ROLE_MODERATOR"},
                headers={**admin.auth, "x-request-id": "req-role"},
            ),
        ),
        (
            "req-remove",
            http.delete(
                f"/api/conversations/{cid}/participants/{bob.id}", headers={**admin.auth, "x-request-id": "req-remove"}
            ),
        ),
    ]
    for _, step in steps:
        assert (await step).status_code == 200
    entries = (await trail(http, admin, cid))["entries"]
    assert [(e["actor_id"], e["action"], e["target"], e["request_id"], e["service"]) for e in entries] == [
        (admin.id, "participant.removed", bob.id, "req-remove", "conversation"),
        (admin.id, "participant.role_changed", cat.id, "req-role", "conversation"),
        (admin.id, "participant.added", cat.id, "req-add", "conversation"),
    ]
    assert all(e["conversation_id"] == cid and e["created_at"] and e["entry_id"] for e in entries)
    assert entries[0]["created_at"] >= entries[1]["created_at"] >= entries[2]["created_at"]


async def test_the_trail_is_append_only(http: httpx.AsyncClient, make_token, database_url: str) -> None:
    admin, bob = await people(http, make_token, "admin", "bob")
    cid = (await create_group(http, admin, []))["conversation_id"]
    await http.post(f"/api/conversations/{cid}/participants", json={"user_id": bob.id}, headers=admin.auth)
    with psycopg.connect(database_url) as conn:
        for statement in (
            "UPDATE conversation.audit_log SET actor_id = 'someone-else' WHERE conversation_id = %s",
            "DELETE FROM conversation.audit_log WHERE conversation_id = %s",
        ):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(statement, (cid,))
            conn.rollback()
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("TRUNCATE conversation.audit_log")
        conn.rollback()


async def test_message_service_entries_are_merged_newest_first(http: httpx.AsyncClient, make_token) -> None:
    admin, bob, cat = await people(http, make_token, "admin", "bob", "cat")
    cid = (await create_group(http, admin, [bob]))["conversation_id"]
    first = await send(http, bob.token, cid, "first")
    second = await send(http, bob.token, cid, "second")
    own = await send(http, admin.token, cid, "mine")
    await http.post(f"/api/conversations/{cid}/participants", json={"user_id": cat.id}, headers=admin.auth)
    assert (await http.delete(f"/api/messages/{first['message_id']}", headers=admin.auth)).status_code == 200
    await http.patch(
        f"/api/conversations/{cid}/participants/{cat.id}", json={"role": "ROLE_MODERATOR"}, headers=admin.auth
    )
    assert (await http.delete(f"/api/messages/{second['message_id']}", headers=admin.auth)).status_code == 200
    assert (await http.delete(f"/api/messages/{own['message_id']}", headers=admin.auth)).status_code == 200
    entries = (await trail(http, admin, cid))["entries"]
    summary = [(e["service"], e["action"], e["target"]) for e in entries]
    if not any(service == "message" for service, _, _ in summary):
        pytest.skip("the message service records no audit entries yet")
    deleted = [target for service, _, target in summary if service == "message"]
    # Someone else's messages deleted by an admin are audited; deleting one's own is not.
    assert len(deleted) == 2 and own["message_id"] not in " ".join(deleted)
    assert [s for s, _, _ in summary] == ["message", "conversation", "message", "conversation"]
    times = [e["created_at"] for e in entries]
    assert times == sorted(times, reverse=True)


@pytest.mark.parametrize("limit", [1, 2, 3])
async def test_pages_of_the_merged_trail_cover_it_exactly_once(http: httpx.AsyncClient, make_token, limit: int) -> None:
    admin, bob, *others = await people(http, make_token, "admin", "bob", "c1", "c2", "c3")
    cid = (await create_group(http, admin, [bob]))["conversation_id"]
    for person in others:  # interleave our entries with the message service's
        sent = await send(http, bob.token, cid, f"to delete {person.id}")
        await http.post(f"/api/conversations/{cid}/participants", json={"user_id": person.id}, headers=admin.auth)
        await http.delete(f"/api/messages/{sent['message_id']}", headers=admin.auth)
    whole = (await trail(http, admin, cid, limit=100))["entries"]
    assert len(whole) >= 3
    paged = await every_page(http, admin, cid, limit)
    assert [(e["service"], e["entry_id"]) for e in paged] == [(e["service"], e["entry_id"]) for e in whole]


async def test_an_empty_trail_is_one_empty_page(http: httpx.AsyncClient, make_token) -> None:
    (admin,) = await people(http, make_token, "admin")
    cid = (await create_group(http, admin, []))["conversation_id"]
    assert await trail(http, admin, cid) == {"entries": [], "next_cursor": ""}


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"limit": "101"}, "INVALID_LIMIT"),
        ({"limit": "-3"}, "INVALID_LIMIT"),
        ({"cursor": "!!"}, "INVALID_CURSOR"),
        ({"cursor": base64.urlsafe_b64encode(b'{"c": ["yesterday", 1]}').decode()}, "INVALID_CURSOR"),
        ({"cursor": base64.urlsafe_b64encode(b'{"c": ["2026-01-01T00:00:00+00:00", "x"]}').decode()}, "INVALID_CURSOR"),
        ({"cursor": base64.urlsafe_b64encode(b'{"m": 5}').decode()}, "INVALID_CURSOR"),
        # The message service's part of the cursor, tampered with: it refuses it, and so do we.
        ({"cursor": base64.urlsafe_b64encode(b'{"c": null, "m": "not-theirs"}').decode()}, "INVALID_CURSOR"),
    ],
)
async def test_bad_audit_paging_is_400(http: httpx.AsyncClient, make_token, params: dict[str, str], code: str) -> None:
    (admin,) = await people(http, make_token, "admin")
    cid = (await create_group(http, admin, []))["conversation_id"]
    reply = await http.get(f"/api/conversations/{cid}/audit", params=params, headers=admin.auth)
    assert error_of(reply) == (400, code)


async def test_audit_of_unknown_or_malformed_conversation(http: httpx.AsyncClient, make_token) -> None:
    (admin,) = await people(http, make_token, "admin")
    unknown = await http.get("/api/conversations/00000000-0000-0000-0000-000000000000/audit", headers=admin.auth)
    malformed = await http.get("/api/conversations/zzz/audit", headers=admin.auth)
    assert error_of(unknown) == (404, "CONVERSATION_NOT_FOUND")
    assert error_of(malformed) == (400, "INVALID_ID")


async def _audit_via(
    mesh: Mesh, mesh_env: dict[str, str], workdir: Path, message_port: int, name: str, admin: Person, cid: str
) -> conversation_pb2.ListAuditEntriesResponse:
    """ListAuditEntries on a second conversation service whose message target is message_port."""
    other = Mesh(env=mesh_env, ports={"conversation": free_port(), "message": message_port}, log_dir=workdir / name)
    other.start("conversation")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{other.ports['conversation']}") as channel:
            stub = conversation_pb2_grpc.ConversationServiceStub(channel)
            reply: conversation_pb2.ListAuditEntriesResponse = await stub.ListAuditEntries(
                conversation_pb2.ListAuditEntriesRequest(conversation_id=cid),
                metadata=(("authorization", f"Bearer {admin.token}"),),
                timeout=15,
            )
            return reply
    finally:
        other.stop()


async def test_a_message_service_without_the_rpc_means_no_entries(
    http: httpx.AsyncClient, make_token, mesh: Mesh, mesh_env: dict[str, str], workdir: Path
) -> None:
    admin, bob = await people(http, make_token, "admin", "bob")
    cid = (await create_group(http, admin, []))["conversation_id"]
    await http.post(f"/api/conversations/{cid}/participants", json={"user_id": bob.id}, headers=admin.auth)
    # The presence service answers UNIMPLEMENTED for MessageService methods.
    reply = await _audit_via(mesh, mesh_env, workdir, mesh.ports["presence"], "audit-unimplemented", admin, cid)
    assert [(e.action, e.target) for e in reply.entries] == [("participant.added", bob.id)]
    assert reply.next_cursor == ""


async def test_an_unreachable_message_service_is_503_not_a_partial_trail(
    http: httpx.AsyncClient, make_token, mesh: Mesh, mesh_env: dict[str, str], workdir: Path
) -> None:
    (admin,) = await people(http, make_token, "admin")
    cid = (await create_group(http, admin, []))["conversation_id"]
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await _audit_via(mesh, mesh_env, workdir, free_port(), "audit-unreachable", admin, cid)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_code_of(failed.value) == "AUDIT_SOURCE_UNAVAILABLE"
