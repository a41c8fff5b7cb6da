"""An archived conversation is read-only, enforced by the message and presence services from the
membership answer: no sends (REST or socket), reactions, edits, deletes, uploads or typing, each
refused with CONVERSATION_ARCHIVED (HTTP 409, or an error frame); history and read receipts go on.
The archive is in force as soon as it returns, on caches that were warm, and unarchiving lifts it."""

from __future__ import annotations

import httpx
import psycopg

from chatmesh_tools.launcher import Mesh
from tests.helpers import send
from tests.test_conversation_settings import watched_group
from tests.test_conversation_support import error_of, people, view

ARCHIVED = (409, "CONVERSATION_ARCHIVED")


async def test_an_archived_group_is_read_only_until_unarchived(
    http: httpx.AsyncClient, make_token, mesh: Mesh, database_url: str
) -> None:
    admin, bob = await people(http, make_token, "admin", "bob")
    cid, sockets = await watched_group(http, mesh, admin, [bob])
    mine = await send(http, bob.token, cid, "said before the archive")  # warms every membership cache
    await send(http, admin.token, cid, "and a reply")
    reacted = await http.post(f"/api/messages/{mine['message_id']}/reactions", json={"emoji": "👍"}, headers=bob.auth)
    assert reacted.status_code == 200, reacted.text

    archived = await http.post(f"/api/conversations/{cid}/archive", json={}, headers=admin.auth)
    assert archived.status_code == 200, archived.text
    assert archived.json()["conversation"]["archived"] is True
    for socket in sockets.values():
        event = await socket.next_of("conversation:archived")
        assert event["data"]["conversation"]["archived"] is True and event["data"]["actor_id"] == admin.id

    # Refused at once, with no waiting for a cache to expire: by REST ...
    message_id = mine["message_id"]
    refusals = {
        "send": await http.post("/api/messages", json={"conversation_id": cid, "content": "hello?"}, headers=bob.auth),
        "edit": await http.patch(f"/api/messages/{message_id}", json={"content": "edited"}, headers=bob.auth),
        "react": await http.post(f"/api/messages/{message_id}/reactions", json={"emoji": "❤️"}, headers=bob.auth),
        "unreact": await http.delete(f"/api/messages/{message_id}/reactions/👍", headers=bob.auth),
        "delete": await http.delete(f"/api/messages/{message_id}", headers=admin.auth),
        "upload": await http.post(
            "/api/attachments", json={"conversation_id": cid, "filename": "a.txt", "size_bytes": "3"}, headers=bob.auth
        ),
    }
    assert {what: error_of(reply) for what, reply in refusals.items()} == {what: ARCHIVED for what in refusals}
    # ... and over the socket.
    socket = sockets[bob.id]
    refused = await socket.request(
        "chat:message_send", {"conversation_id": cid, "content": "hello?", "client_message_id": "c-archived"}
    )
    assert refused["type"] == "error" and refused["data"]["code"] == "CONVERSATION_ARCHIVED", refused
    typing = await socket.request("chat:typing", {"conversation_id": cid, "is_typing": True})
    assert typing["type"] == "error" and typing["data"]["code"] == "CONVERSATION_ARCHIVED", typing

    # History stays, untouched, and reading it still counts.
    history = await http.get(f"/api/messages/{cid}", headers=bob.auth)
    assert [(m["content"], [r["emoji"] for r in m["reactions"]]) for m in history.json()["messages"]] == [
        ("said before the archive", ["👍"]),
        ("and a reply", []),
    ]
    last = history.json()["messages"][-1]["message_id"]
    read = await http.post(f"/api/messages/{last}/status", json={"status": "MESSAGE_STATUS_READ"}, headers=bob.auth)
    assert read.status_code == 200, read.text
    listed = await http.get("/api/conversations", headers=bob.auth)
    assert [c["archived"] for c in listed.json()["conversations"] if c["conversation_id"] == cid] == [True]

    unarchived = await http.post(f"/api/conversations/{cid}/unarchive", json={}, headers=admin.auth)
    assert unarchived.status_code == 200 and unarchived.json()["conversation"]["archived"] is False
    event = await socket.next_of("conversation:unarchived")
    assert "archived" not in event["data"]["conversation"]  # false: left out, as proto3 JSON does
    assert (await send(http, bob.token, cid, "back again"))["seq"] == "3"
    with psycopg.connect(database_url) as conn:
        actions = [
            r[0]
            for r in conn.execute(
                "SELECT action FROM conversation.audit_log WHERE conversation_id = %s ORDER BY id", (cid,)
            )
        ]
    assert actions == ["conversation.archived", "conversation.unarchived"]


async def test_archiving_twice_changes_nothing_more(http: httpx.AsyncClient, make_token, database_url: str) -> None:
    (admin,) = await people(http, make_token, "admin")
    cid = (
        await http.post("/api/conversations/group", json={"title": "t", "participant_ids": []}, headers=admin.auth)
    ).json()["conversation"]["conversation_id"]
    for _ in range(2):
        assert (await http.post(f"/api/conversations/{cid}/archive", json={}, headers=admin.auth)).status_code == 200
    # Unarchiving what is not archived is as quiet.
    for _ in range(2):
        assert (await http.post(f"/api/conversations/{cid}/unarchive", json={}, headers=admin.auth)).status_code == 200
    with psycopg.connect(database_url) as conn:
        count = conn.execute(
            "SELECT count(*) FROM conversation.audit_log WHERE conversation_id = %s", (cid,)
        ).fetchone()
    assert count == (2,)
    assert (await view(http, admin, cid))["archived"] is False


async def test_a_non_admin_cannot_archive(http: httpx.AsyncClient, make_token, mesh: Mesh) -> None:
    admin, bob = await people(http, make_token, "admin", "bob")
    cid, _ = await watched_group(http, mesh, admin, [bob])
    refused = await http.post(f"/api/conversations/{cid}/archive", json={}, headers=bob.auth)
    assert error_of(refused) == (403, "INSUFFICIENT_ROLE")
    assert (await view(http, bob, cid))["archived"] is False
    await send(http, bob.token, cid, "still open")
