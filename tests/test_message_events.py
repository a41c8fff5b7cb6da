"""Every change reaches the other participants' sockets as its chat:* event, through the real
outbox, fan-out and edge (so each event names its conversation and is fanned out by it)."""

from __future__ import annotations

import urllib.parse

import httpx

from chatmesh_tools.launcher import Mesh
from tests.helpers import Socket, send
from tests.test_message_support import api, group, mark, new_user_id


async def test_each_change_arrives_as_its_event(
    http: httpx.AsyncClient, mesh: Mesh, make_token, database_url: str
) -> None:
    alice, bob = new_user_id("alice"), new_user_id("bob")
    cid = await group(database_url, {alice: "admin", bob: "member"})
    alice_token, bob_token = make_token(alice), make_token(bob)
    alice_socket = await Socket.open(mesh.edge_url, alice_token)
    bob_socket = await Socket.open(mesh.edge_url, bob_token)
    try:
        sent = await send(http, alice_token, cid, "v1")
        mid = sent["message_id"]
        await api(http, alice_token, "PATCH", f"/api/messages/{mid}", {"content": "v2"})
        updated = await bob_socket.next_of("chat:message_updated")
        assert updated["data"]["content"] == "v2" and updated["data"]["edited_at"]

        await api(http, bob_token, "POST", f"/api/messages/{mid}/reactions", {"emoji": "🎉"})
        added = await alice_socket.next_of("chat:reaction_added")
        assert added["data"] == {"conversation_id": cid, "message_id": mid, "user_id": bob, "emoji": "🎉"}
        await api(http, bob_token, "DELETE", f"/api/messages/{mid}/reactions/{urllib.parse.quote('🎉')}")
        assert (await alice_socket.next_of("chat:reaction_removed"))["data"]["emoji"] == "🎉"

        await mark(http, bob_token, mid, "read")
        receipt = await alice_socket.next_of("chat:message_read")
        assert receipt["data"]["user_id"] == bob and receipt["data"]["message_id"] == mid
        assert receipt["data"]["seq"] == sent["seq"] and receipt["data"]["status"] == "MESSAGE_STATUS_READ"

        await api(http, alice_token, "DELETE", f"/api/messages/{mid}")
        deleted = await bob_socket.next_of("chat:message_deleted")
        assert deleted["data"]["deleted"] is True and not deleted["data"].get("content")
    finally:
        await alice_socket.close()
        await bob_socket.close()
