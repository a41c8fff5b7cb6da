"""Presence and typing through the real mesh: presence service state in Redis, events over its
multiplexed stream to the edge, frames on real WebSockets. Times are scaled by CHAT_TIME_SCALE
(0.05: the 30 s connection TTL is 1.5 s, the 3 s typing window 0.15 s); waits are bounded polls."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx

from chatmesh_tools.launcher import Mesh
from tests.helpers import Socket, bearer, direct_conversation, new_user_id, quiet, register

TYPING_WINDOW_S = 3.0 * 0.05


async def presence_of(http: httpx.AsyncClient, token: str, *user_ids: str) -> dict[str, dict[str, Any]]:
    reply = await http.get("/api/presence", params={"user_ids": ",".join(user_ids)}, headers=bearer(token))
    assert reply.status_code == 200, reply.text
    return {p["user_id"]: p for p in reply.json()["presences"]}


async def wait_status(http: httpx.AsyncClient, token: str, user_id: str, status: str, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while (await presence_of(http, token, user_id))[user_id]["status"] != status:
            await asyncio.sleep(0.05)


async def status_frame(socket: Socket, user_id: str, timeout: float = 10) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            frame = await socket.next_of("user:status_changed", timeout)
            if frame["data"]["user_id"] == user_id:
                return frame


async def pair(http: httpx.AsyncClient, make_token) -> tuple[str, str, str, str, str]:  # type: ignore[no-untyped-def]
    alice, bob = new_user_id("alice"), new_user_id("bob")
    alice_token, bob_token = make_token(alice), make_token(bob)
    await register(http, bob_token)
    conversation_id = await direct_conversation(http, alice_token, bob)
    # Bob accepts alice's request: each now sees the other's presence (a request shows only its sender's).
    accepted = await http.post(f"/api/conversations/{conversation_id}/accept", json={}, headers=bearer(bob_token))
    assert accepted.status_code == 200, accepted.text
    return alice, alice_token, bob, bob_token, conversation_id


async def test_two_tabs_one_closes_still_online_both_close_offline_once(
    http: httpx.AsyncClient, mesh: Mesh, make_token
) -> None:
    alice, alice_token, bob, bob_token, _ = await pair(http, make_token)
    watcher = await Socket.open(mesh.edge_url, bob_token)
    await wait_status(http, alice_token, bob, "PRESENCE_STATUS_ONLINE")

    first = await Socket.open(mesh.edge_url, alice_token)
    online = await status_frame(watcher, alice)
    assert online["data"]["status"] == "online"
    second = await Socket.open(mesh.edge_url, alice_token)
    await first.close()
    # The second tab neither re-announces alice nor lets the first one's close take her offline.
    assert [f for f in await quiet(watcher, "user:status_changed", 1.0) if f["data"]["user_id"] == alice] == []
    assert (await presence_of(http, bob_token, alice))[alice]["status"] == "PRESENCE_STATUS_ONLINE"

    await second.close()
    offline = await status_frame(watcher, alice)
    assert offline["data"]["status"] == "offline" and offline["data"]["last_seen_at"]
    # Exactly once: nothing more for alice, not even when her connections' TTL (1.5 s) passes.
    assert [f for f in await quiet(watcher, "user:status_changed", 2.5) if f["data"]["user_id"] == alice] == []
    seen = (await presence_of(http, bob_token, alice))[alice]
    assert seen["status"] == "PRESENCE_STATUS_OFFLINE" and seen["last_seen_at"]
    await watcher.close()


async def test_a_quick_reconnect_does_not_flap_presence(http: httpx.AsyncClient, mesh: Mesh, make_token) -> None:
    """A page reload closes the socket and opens another: contacts see no offline/online flap."""
    alice, alice_token, bob, bob_token, _ = await pair(http, make_token)
    watcher = await Socket.open(mesh.edge_url, bob_token)
    await wait_status(http, alice_token, bob, "PRESENCE_STATUS_ONLINE")
    tab = await Socket.open(mesh.edge_url, alice_token)
    assert (await status_frame(watcher, alice))["data"]["status"] == "online"
    await tab.close()
    reloaded = await Socket.open(mesh.edge_url, alice_token)
    # Past the closed socket's linger (1 s here) and its sweep: still nothing for alice.
    assert [f for f in await quiet(watcher, "user:status_changed", 2.0) if f["data"]["user_id"] == alice] == []
    await reloaded.close()
    assert (await status_frame(watcher, alice))["data"]["status"] == "offline"
    await watcher.close()


async def test_presence_query_hides_strangers(http: httpx.AsyncClient, mesh: Mesh, make_token) -> None:
    alice, alice_token, bob, bob_token, _ = await pair(http, make_token)
    eve = new_user_id("eve")
    eve_token = make_token(eve)
    sockets = [await Socket.open(mesh.edge_url, t) for t in (alice_token, eve_token)]
    await wait_status(http, bob_token, alice, "PRESENCE_STATUS_ONLINE")

    seen = await presence_of(http, bob_token, alice, eve, bob, "nobody-" + uuid.uuid4().hex)
    assert seen[alice]["status"] == "PRESENCE_STATUS_ONLINE"
    assert seen[eve]["status"] == "PRESENCE_STATUS_UNKNOWN" and not seen[eve].get("last_seen_at")
    assert all(p["status"] == "PRESENCE_STATUS_UNKNOWN" for u, p in seen.items() if u not in (alice, bob))
    # Eve cannot see alice either, while alice is online.
    assert (await presence_of(http, eve_token, alice))[alice]["status"] == "PRESENCE_STATUS_UNKNOWN"

    too_many = await http.get(
        "/api/presence", params={"user_ids": ",".join(f"u{i}" for i in range(101))}, headers=bearer(bob_token)
    )
    assert too_many.status_code == 400 and too_many.json()["error"]["code"] == "TOO_MANY_USERS"
    unauthenticated = await http.get("/api/presence", params={"user_ids": alice})
    assert unauthenticated.status_code == 401
    for socket in sockets:
        await socket.close()


async def test_invisible_mode_wins_over_connections(http: httpx.AsyncClient, mesh: Mesh, make_token) -> None:
    alice, alice_token, bob, bob_token, _ = await pair(http, make_token)
    watcher = await Socket.open(mesh.edge_url, bob_token)
    await wait_status(http, alice_token, bob, "PRESENCE_STATUS_ONLINE")
    tab = await Socket.open(mesh.edge_url, alice_token)
    assert (await status_frame(watcher, alice))["data"]["status"] == "online"

    invisible = await tab.request("presence:offline", {})
    assert invisible["type"] == "ack", invisible
    assert invisible["data"]["presence"]["status"] == "PRESENCE_STATUS_OFFLINE"
    assert (await status_frame(watcher, alice))["data"]["status"] == "offline"
    assert (await presence_of(http, bob_token, alice))[alice]["status"] == "PRESENCE_STATUS_OFFLINE"

    # Another tab while invisible: still offline to others, and nothing is announced.
    other_tab = await Socket.open(mesh.edge_url, alice_token)
    await other_tab.close()
    assert [f for f in await quiet(watcher, "user:status_changed", 1.0) if f["data"]["user_id"] == alice] == []
    assert (await presence_of(http, bob_token, alice))[alice]["status"] == "PRESENCE_STATUS_OFFLINE"

    # Back to visible over REST: online again while the socket is open.
    visible = await http.put("/api/presence", json={"status": "PRESENCE_STATUS_ONLINE"}, headers=bearer(alice_token))
    assert visible.status_code == 200, visible.text
    assert visible.json()["presence"]["status"] == "PRESENCE_STATUS_ONLINE"
    assert (await status_frame(watcher, alice))["data"]["status"] == "online"
    await tab.close()
    assert (await status_frame(watcher, alice))["data"]["status"] == "offline"
    await watcher.close()


async def test_typing_reaches_only_participants_and_expires(http: httpx.AsyncClient, mesh: Mesh, make_token) -> None:
    alice, alice_token, bob, bob_token, conversation_id = await pair(http, make_token)
    eve = new_user_id("eve")
    bob_socket = await Socket.open(mesh.edge_url, bob_token)
    eve_socket = await Socket.open(mesh.edge_url, make_token(eve))
    alice_socket = await Socket.open(mesh.edge_url, alice_token)
    await wait_status(http, alice_token, bob, "PRESENCE_STATUS_ONLINE")

    ack = await alice_socket.request("chat:typing", {"conversation_id": conversation_id, "is_typing": True})
    assert ack["type"] == "ack", ack
    started = await bob_socket.next_of("chat:user_typing")
    assert started["data"] == {"conversation_id": conversation_id, "user_id": alice, "is_typing": True}
    assert started["conversation_id"] == conversation_id
    # Nobody types; the server ends it by itself after the (scaled) 3 s window.
    ended = await bob_socket.next_of("chat:user_typing", timeout=TYPING_WINDOW_S + 5)
    assert ended["data"] == {"conversation_id": conversation_id, "user_id": alice, "is_typing": False}

    # Keystrokes within the window are coalesced: one start, one end.
    for _ in range(5):
        await alice_socket.ws.send(
            json.dumps({"type": "chat:typing", "data": {"conversation_id": conversation_id, "is_typing": True}})
        )
        await asyncio.sleep(TYPING_WINDOW_S / 4)
    await alice_socket.ws.send(
        json.dumps({"type": "chat:typing", "data": {"conversation_id": conversation_id, "is_typing": False}})
    )
    frames = await quiet(bob_socket, "chat:user_typing", 1.5)
    assert [f["data"]["is_typing"] for f in frames] == [True, False]

    # REST too, and the sender does not hear their own typing; strangers hear nothing.
    reply = await http.post(
        f"/api/conversations/{conversation_id}/typing", json={"is_typing": True}, headers=bearer(alice_token)
    )
    assert reply.status_code == 200, reply.text
    assert (await bob_socket.next_of("chat:user_typing"))["data"]["is_typing"] is True
    assert await quiet(eve_socket, "chat:user_typing", 0.5) == []
    assert await quiet(alice_socket, "chat:user_typing", 0.1) == []
    for socket in (alice_socket, bob_socket, eve_socket):
        await socket.close()


async def test_typing_bad_input_gets_error_frames_and_4xx(http: httpx.AsyncClient, mesh: Mesh, make_token) -> None:
    _, alice_token, _, _, conversation_id = await pair(http, make_token)
    eve_token = make_token(new_user_id("eve"))
    eve = await Socket.open(mesh.edge_url, eve_token)
    unknown = "00000000-0000-0000-0000-000000000000"

    cases = [
        ({"conversation_id": conversation_id, "is_typing": True}, "NOT_PARTICIPANT"),
        ({"conversation_id": unknown, "is_typing": True}, "CONVERSATION_NOT_FOUND"),
        ({"conversation_id": "nope", "is_typing": True}, "INVALID_ID"),
        ({"conversation_id": "a" * 30_000, "is_typing": True}, "INVALID_ID"),
        ({"conversation_id": conversation_id}, "INVALID_ARGUMENT"),
        ({"conversation_id": 5, "is_typing": "yes"}, "INVALID_ARGUMENT"),
    ]
    for data, code in cases:
        answer = await eve.request("chat:typing", data)
        assert answer["type"] == "error" and answer["data"]["code"] == code, (data, answer)
    bad_data = await eve.request("chat:typing", [])  # type: ignore[arg-type]
    assert bad_data["type"] == "error"
    await eve.ws.send("{not json")
    assert (await eve.next_of("error"))["data"]["code"] == "BAD_FRAME"
    assert (await eve.request("ping", {}))["type"] == "pong"  # still connected

    outsider = await http.post(
        f"/api/conversations/{conversation_id}/typing", json={"is_typing": True}, headers=bearer(eve_token)
    )
    assert outsider.status_code == 403 and outsider.json()["error"]["code"] == "NOT_PARTICIPANT"
    missing = await http.post(
        f"/api/conversations/{unknown}/typing", json={"is_typing": True}, headers=bearer(alice_token)
    )
    assert missing.status_code == 404
    malformed = await http.post(
        f"/api/conversations/{conversation_id}/typing", json={"is_typing": "maybe"}, headers=bearer(alice_token)
    )
    assert malformed.status_code == 400
    bad_status = await http.put(
        "/api/presence", json={"status": "PRESENCE_STATUS_UNKNOWN"}, headers=bearer(alice_token)
    )
    assert bad_status.status_code == 400 and bad_status.json()["error"]["code"] == "INVALID_STATUS"
    await eve.close()


async def test_typing_flood_is_rate_limited_across_edges_without_dropping(
    http: httpx.AsyncClient, mesh: Mesh, make_token
) -> None:
    _, alice_token, _, _, conversation_id = await pair(http, make_token)
    socket = await Socket.open(mesh.edge_url, alice_token)
    answers = []
    for i in range(40):
        answers.append(
            await socket.request("chat:typing", {"conversation_id": conversation_id, "is_typing": i % 2 == 0})
        )
    codes = [a["data"]["code"] for a in answers if a["type"] == "error"]
    assert codes and set(codes) == {"RATE_LIMITED"}, answers[-1]
    assert sum(a["type"] == "ack" for a in answers) == 30
    # The limit is held in Redis, so REST (any edge) sees it too; the socket stays usable.
    rest = await http.post(
        f"/api/conversations/{conversation_id}/typing", json={"is_typing": True}, headers=bearer(alice_token)
    )
    assert rest.status_code == 429 and rest.json()["error"]["code"] == "RATE_LIMITED"
    assert (await socket.request("ping", {}))["type"] == "pong"
    await socket.close()


async def test_typing_is_not_replayed_after_reconnect(http: httpx.AsyncClient, mesh: Mesh, make_token) -> None:
    _, alice_token, bob, bob_token, conversation_id = await pair(http, make_token)
    bob_socket = await Socket.open(mesh.edge_url, bob_token)
    alice_socket = await Socket.open(mesh.edge_url, alice_token)
    await wait_status(http, alice_token, bob, "PRESENCE_STATUS_ONLINE")
    message = await http.post(
        "/api/messages", json={"conversation_id": conversation_id, "content": "hi"}, headers=bearer(alice_token)
    )
    assert message.status_code == 200, message.text
    received = await bob_socket.next_of("chat:message_received")
    await bob_socket.close()

    # Alice types while bob is away; bob comes back resuming from his token.
    ack = await alice_socket.request("chat:typing", {"conversation_id": conversation_id, "is_typing": True})
    assert ack["type"] == "ack", ack
    bob_again = await Socket.open(mesh.edge_url, bob_token, resume_token=received["resume_token"])
    typing = await quiet(bob_again, "chat:user_typing", 1.0)
    assert [f for f in typing if f["data"]["is_typing"]] == []  # at most the live end of it, never the start
    await bob_again.close()
    await alice_socket.close()
