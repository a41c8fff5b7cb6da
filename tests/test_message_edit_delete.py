"""Edit and delete: who may do what (sender / admin / moderator / member / outsider), edit history,
soft delete hiding content from every read path, and the audit trail of someone else's delete."""

from __future__ import annotations

import grpc
import httpx
import psycopg
import pytest

from chatmesh.gen.chat.v1 import message_pb2, message_pb2_grpc
from chatmesh_tools.launcher import Mesh
from tests.helpers import send
from tests.test_message_support import api, code_of, group, new_user_id, outbox_events

ROLES = ("admin", "moderator", "member")


@pytest.fixture
async def cast(database_url: str) -> dict[str, str]:
    """A group with a sender (a plain member), one user of each role, and an outsider."""
    users = {
        "sender": new_user_id("sender"),
        **{role: new_user_id(role) for role in ROLES},
        "outsider": new_user_id("outsider"),
    }
    users["cid"] = await group(database_url, {users["sender"]: "member", **{users[r]: r for r in ROLES}})
    return users


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        ("sender", (200, "OK")),
        ("admin", (403, "NOT_SENDER")),
        ("moderator", (403, "NOT_SENDER")),
        ("member", (403, "NOT_SENDER")),
        ("outsider", (403, "NOT_PARTICIPANT")),
    ],
)
async def test_edit_permissions(
    http: httpx.AsyncClient, make_token, cast: dict[str, str], who: str, expected: tuple[int, str]
) -> None:
    mid = (await send(http, make_token(cast["sender"]), cast["cid"], "first"))["message_id"]
    reply = await api(http, make_token(cast[who]), "PATCH", f"/api/messages/{mid}", {"content": "second"})
    assert code_of(reply) == expected


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        ("sender", (200, "OK")),
        ("admin", (200, "OK")),
        ("moderator", (200, "OK")),
        ("member", (403, "NOT_ALLOWED")),
        ("outsider", (403, "NOT_PARTICIPANT")),
    ],
)
async def test_delete_permissions(
    http: httpx.AsyncClient, make_token, cast: dict[str, str], who: str, expected: tuple[int, str], database_url: str
) -> None:
    mid = (await send(http, make_token(cast["sender"]), cast["cid"], "oops"))["message_id"]
    reply = await api(http, make_token(cast[who]), "DELETE", f"/api/messages/{mid}")
    assert code_of(reply) == expected
    with psycopg.connect(database_url) as conn:
        deleted_by = conn.execute("SELECT deleted_by FROM message.messages WHERE message_id = %s", (mid,)).fetchone()
        audit = conn.execute(
            "SELECT actor_id, action, target FROM message.audit_log WHERE conversation_id = %s", (cast["cid"],)
        ).fetchall()
    if expected[0] != 200:
        assert deleted_by == (None,) and audit == []
        return
    assert deleted_by == (cast[who],)
    # Deleting one's own message is not an audited act; someone else's is.
    assert audit == ([] if who == "sender" else [(cast[who], "message.deleted", f"message:{mid}")])


async def test_edit_keeps_history_and_announces_the_change(
    http: httpx.AsyncClient, make_token, cast: dict[str, str], database_url: str
) -> None:
    token = make_token(cast["sender"])
    mid = (await send(http, token, cast["cid"], "v1"))["message_id"]
    for text in ("v2", "v3", "v3"):  # the same text again changes nothing
        edited = (await api(http, token, "PATCH", f"/api/messages/{mid}", {"content": text})).json()["message"]
    assert edited["content"] == "v3" and edited["edited_at"]
    with psycopg.connect(database_url) as conn:
        versions = conn.execute(
            "SELECT version, content FROM message.message_edits WHERE message_id = %s ORDER BY version", (mid,)
        ).fetchall()
    assert versions == [(1, "v1"), (2, "v2")]
    updates = [e.message.content for e in outbox_events(database_url, cast["cid"]) if e.type == "chat:message_updated"]
    assert updates == ["v2", "v3"]
    assert code_of(await api(http, token, "PATCH", f"/api/messages/{mid}", {"content": "  "})) == (400, "EMPTY_CONTENT")
    assert code_of(await api(http, token, "PATCH", f"/api/messages/{mid}", {"content": "x" * 4001})) == (
        400,
        "CONTENT_TOO_LONG",
    )
    assert code_of(await api(http, token, "PATCH", "/api/messages/zzz", {"content": "x"})) == (400, "INVALID_ID")
    assert code_of(
        await api(http, token, "PATCH", "/api/messages/00000000-0000-0000-0000-00000000000b", {"content": "x"})
    ) == (404, "MESSAGE_NOT_FOUND")


async def test_deleted_content_leaves_every_read_path(
    http: httpx.AsyncClient, make_token, cast: dict[str, str], database_url: str
) -> None:
    token = make_token(cast["sender"])
    mid = (await send(http, token, cast["cid"], "classified plans"))["message_id"]
    first = await api(http, make_token(cast["moderator"]), "DELETE", f"/api/messages/{mid}")
    again = await api(http, token, "DELETE", f"/api/messages/{mid}")  # idempotent, no second event
    for reply in (first, again):
        message = reply.json()["message"]
        assert message["deleted"] is True and message["content"] == ""
    assert code_of(await api(http, token, "PATCH", f"/api/messages/{mid}", {"content": "x"})) == (
        400,
        "MESSAGE_DELETED",
    )
    history = (await api(http, token, "GET", f"/api/messages/{cast['cid']}")).json()["messages"]
    found = (
        await api(
            http, token, "GET", "/api/messages/search", params={"q": "classified", "conversation_id": cast["cid"]}
        )
    ).json()["messages"]
    assert "classified" not in str(history) and found == []
    deletions = [e for e in outbox_events(database_url, cast["cid"]) if e.type == "chat:message_deleted"]
    assert len(deletions) == 1 and deletions[0].message.deleted and deletions[0].message.content == ""


async def test_audit_entries_are_listed_newest_first_for_services_only(
    http: httpx.AsyncClient, make_token, cast: dict[str, str], mesh: Mesh, service_metadata
) -> None:
    mids = [(await send(http, make_token(cast["sender"]), cast["cid"], f"m{i}"))["message_id"] for i in range(3)]
    for mid in mids:
        await api(http, make_token(cast["admin"]), "DELETE", f"/api/messages/{mid}")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.ports['message']}") as channel:
        stub = message_pb2_grpc.MessageServiceStub(channel)
        service = service_metadata("conversation")
        request = message_pb2.ListMessageAuditEntriesRequest(conversation_id=cast["cid"], limit=2)
        page = await stub.ListMessageAuditEntries(request, metadata=service)
        request.cursor = page.next_cursor
        rest = await stub.ListMessageAuditEntries(request, metadata=service)
        targets = [e.target for e in [*page.entries, *rest.entries]]
        assert targets == [f"message:{m}" for m in reversed(mids)] and rest.next_cursor == ""
        assert {(e.actor_id, e.action, e.service) for e in page.entries} == {
            (cast["admin"], "message.deleted", "message")
        }
        assert all(e.request_id for e in page.entries)
        user = (("authorization", f"Bearer {make_token(cast['admin'])}"),)
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.ListMessageAuditEntries(request, metadata=user)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        request.cursor = "garbage!"
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.ListMessageAuditEntries(request, metadata=service)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
