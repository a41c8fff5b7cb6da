"""The first real path: alice's REST message reaches bob's WebSocket through the real services,
PostgreSQL and Redis; and bad input on that path gets a clear error."""

from __future__ import annotations

import httpx
import psycopg

from chatmesh_tools.launcher import Mesh
from tests.helpers import Socket, bearer, direct_conversation, new_user_id, register, send


async def test_rest_message_reaches_websocket(
    http: httpx.AsyncClient, mesh: Mesh, make_token, database_url: str
) -> None:
    alice, bob = new_user_id("alice"), new_user_id("bob")
    alice_token, bob_token = make_token(alice), make_token(bob)
    await register(http, bob_token)
    conversation_id = await direct_conversation(http, alice_token, bob)
    bob_socket = await Socket.open(mesh.edge_url, bob_token)

    sent = await send(http, alice_token, conversation_id, "hi")

    frame = await bob_socket.next_of("chat:message_received")
    assert frame["data"]["content"] == "hi"
    assert frame["data"]["sender_id"] == alice
    assert frame["data"]["message_id"] == sent["message_id"]
    assert frame["resume_token"] and frame["event_id"]
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT content, sender_id FROM message.messages WHERE message_id = %s", (sent["message_id"],)
        ).fetchone()
    assert row == ("hi", alice)
    await bob_socket.close()


async def test_direct_conversation_is_returned_again(http: httpx.AsyncClient, make_token) -> None:
    alice, bob = new_user_id("alice"), new_user_id("bob")
    await register(http, make_token(bob))
    first = await http.post("/api/conversations/direct", json={"user_id": bob}, headers=bearer(make_token(alice)))
    again = await http.post("/api/conversations/direct", json={"user_id": alice}, headers=bearer(make_token(bob)))
    assert first.json()["created"] is True
    assert again.json()["created"] is False
    assert again.json()["conversation"]["conversation_id"] == first.json()["conversation"]["conversation_id"]


async def test_missing_and_bad_tokens_are_401(http: httpx.AsyncClient, make_token, settings) -> None:
    body = {"conversation_id": "x", "content": "hi"}
    missing = await http.post("/api/messages", json=body)
    garbage = await http.post("/api/messages", json=body, headers=bearer("not-a-jwt"))
    expired = await http.post("/api/messages", json=body, headers=bearer(make_token("alice", ttl_s=-120)))
    for reply in (missing, garbage, expired):
        assert reply.status_code == 401
        assert reply.json()["error"]["code"] == "UNAUTHENTICATED"
        assert reply.json()["error"]["request_id"]


async def test_unknown_conversation_is_404_and_malformed_id_400(http: httpx.AsyncClient, make_token) -> None:
    token = make_token(new_user_id("alice"))
    unknown = await http.post(
        "/api/messages",
        json={"conversation_id": "00000000-0000-0000-0000-000000000000", "content": "hi"},
        headers=bearer(token),
    )
    malformed = await http.post(
        "/api/messages", json={"conversation_id": "nope", "content": "hi"}, headers=bearer(token)
    )
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "CONVERSATION_NOT_FOUND"
    assert malformed.status_code == 400
    assert malformed.json()["error"]["code"] == "INVALID_ID"


async def test_outsider_is_403_and_empty_content_400(http: httpx.AsyncClient, make_token) -> None:
    alice, bob, eve = new_user_id("alice"), new_user_id("bob"), new_user_id("eve")
    await register(http, make_token(bob))
    conversation_id = await direct_conversation(http, make_token(alice), bob)
    outsider = await http.post(
        "/api/messages", json={"conversation_id": conversation_id, "content": "hi"}, headers=bearer(make_token(eve))
    )
    blank = await http.post(
        "/api/messages", json={"conversation_id": conversation_id, "content": "   "}, headers=bearer(make_token(alice))
    )
    assert outsider.status_code == 403
    assert outsider.json()["error"]["code"] == "NOT_PARTICIPANT"
    assert blank.status_code == 400
    assert blank.json()["error"]["code"] == "EMPTY_CONTENT"


async def test_malformed_json_and_unknown_fields_are_400(http: httpx.AsyncClient, make_token) -> None:
    token = make_token(new_user_id("alice"))
    broken = await http.post("/api/messages", content=b"{not json", headers=bearer(token))
    unknown = await http.post("/api/messages", json={"conversation_id": "x", "bogus": 1}, headers=bearer(token))
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "INVALID_JSON"
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "INVALID_ARGUMENT"


async def test_websocket_rejects_bad_token_with_error_frame(mesh: Mesh) -> None:
    from websockets.asyncio.client import connect

    async with connect(mesh.edge_url.replace("http://", "ws://") + "/ws") as ws:
        await ws.send('{"type": "auth", "data": {"token": "garbage"}}')
        frame = await ws.recv()
        assert '"UNAUTHENTICATED"' in str(frame)
        await ws.wait_closed()
        assert ws.close_code == 1008


async def test_websocket_send_is_acked_with_the_stored_message(http: httpx.AsyncClient, mesh: Mesh, make_token) -> None:
    alice, bob = new_user_id("alice"), new_user_id("bob")
    await register(http, make_token(bob))
    conversation_id = await direct_conversation(http, make_token(alice), bob)
    alice_socket = await Socket.open(mesh.edge_url, make_token(alice))
    ack = await alice_socket.request(
        "chat:message_send", {"conversation_id": conversation_id, "content": "yo", "client_message_id": "c-1"}
    )
    assert ack["type"] == "ack"
    assert ack["data"]["message"]["content"] == "yo" and ack["data"]["message"]["seq"] == "1"
    bad = await alice_socket.request("chat:message_send", {"conversation_id": conversation_id, "content": ""})
    assert bad["type"] == "error" and bad["data"]["code"] == "EMPTY_CONTENT"
    unknown = await alice_socket.request("chat:bogus", {})
    assert unknown["type"] == "error" and unknown["data"]["code"] == "UNKNOWN_TYPE"
    await alice_socket.close()
