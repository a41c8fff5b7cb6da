"""Private presence (issue 15, items 3 and 5): presence only for those a user has taken part in a
conversation with, direct conversation requests (accept, decline, block), hiding last seen, and
status announcements coalesced per user. Real mesh: REST and WebSockets through the edge, and the
gRPC services called directly where the REST path would hide what is tested."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest

from chatmesh.gen.chat.v1 import common_pb2, conversation_pb2, conversation_pb2_grpc, presence_pb2, presence_pb2_grpc
from chatmesh_tools.launcher import Mesh
from tests.helpers import Socket, bearer, direct_conversation, new_user_id, quiet, register, send
from tests.test_presence import presence_of, status_frame, wait_status

TIME_SCALE = 0.05
ANNOUNCE_INTERVAL_S = 2.0 * TIME_SCALE  # CHAT_PRESENCE_ANNOUNCE_INTERVAL_S's default, scaled
CONTACTS_TTL_S = 2.0  # the presence service's contacts cache: a change shows within it


@pytest.fixture
async def channels(mesh: Mesh) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    opened = {name: grpc.aio.insecure_channel(f"127.0.0.1:{mesh.ports[name]}") for name in ("conversation", "presence")}
    yield opened
    for channel in opened.values():
        await channel.close()


def _metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def _request(http: httpx.AsyncClient, make_token) -> tuple[str, str, str, str, str]:  # type: ignore[no-untyped-def]
    """Alice, a stranger to bob, opens a direct conversation with him: a pending request."""
    alice, bob = new_user_id("alice"), new_user_id("bob")
    alice_token, bob_token = make_token(alice), make_token(bob)
    await register(http, alice_token)
    await register(http, bob_token)
    reply = await http.post("/api/conversations/direct", json={"user_id": bob}, headers=bearer(alice_token))
    assert reply.status_code == 200, reply.text
    conversation = reply.json()["conversation"]
    assert conversation["request_state"] == "REQUEST_STATE_PENDING"
    return alice, alice_token, bob, bob_token, conversation["conversation_id"]


async def _hidden_for(http: httpx.AsyncClient, token: str, user_id: str, seconds: float) -> None:
    """The user reads as unknown to the token's holder, again and again for a while (caches included)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen = (await presence_of(http, token, user_id))[user_id]
        assert seen["status"] == "PRESENCE_STATUS_UNKNOWN" and not seen.get("last_seen_at"), seen
        await asyncio.sleep(0.2)


async def _error(reply: httpx.Response) -> tuple[int, str]:
    return reply.status_code, reply.json()["error"]["code"]


async def test_a_strangers_request_shows_the_recipient_only_once_they_reply(
    http: httpx.AsyncClient, mesh: Mesh, make_token
) -> None:
    alice, alice_token, bob, bob_token, conversation_id = await _request(http, make_token)
    sockets = [await Socket.open(mesh.edge_url, token) for token in (alice_token, bob_token)]
    # Alice opened it, so she took part: bob sees her. Bob took no part: alice sees nothing of him.
    await wait_status(http, bob_token, alice, "PRESENCE_STATUS_ONLINE")
    await _hidden_for(http, alice_token, bob, 1.0)
    await send(http, alice_token, conversation_id, "hi, we met at the conference")  # more of hers: still a request
    listed = await http.get("/api/conversations", headers=bearer(bob_token))
    mine = next(c for c in listed.json()["conversations"] if c["conversation_id"] == conversation_id)
    assert mine["request_state"] == "REQUEST_STATE_PENDING" and mine["created_by"] == alice
    await _hidden_for(http, alice_token, bob, 1.0)

    await send(http, bob_token, conversation_id, "oh hi")  # the reply accepts the request
    await wait_status(http, alice_token, bob, "PRESENCE_STATUS_ONLINE", timeout=CONTACTS_TTL_S + 5)
    async with asyncio.timeout(5):
        while (await http.get(f"/api/conversations/{conversation_id}", headers=bearer(alice_token))).json()[
            "conversation"
        ]["request_state"] != "REQUEST_STATE_ACCEPTED":
            await asyncio.sleep(0.05)
    for socket in sockets:
        await socket.close()


async def test_accepting_a_request_shows_the_recipient_and_tells_the_requester(
    http: httpx.AsyncClient, mesh: Mesh, make_token
) -> None:
    alice, alice_token, bob, bob_token, conversation_id = await _request(http, make_token)
    alice_socket = await Socket.open(mesh.edge_url, alice_token)
    bob_socket = await Socket.open(mesh.edge_url, bob_token)
    await _hidden_for(http, alice_token, bob, 0.5)
    # A live socket of alice's hears nothing of bob while it is a request.
    assert [f for f in await quiet(alice_socket, "user:status_changed", 0.5) if f["data"]["user_id"] == bob] == []

    # The requester cannot accept or decline for the recipient.
    assert await _error(
        await http.post(f"/api/conversations/{conversation_id}/decline", json={}, headers=bearer(alice_token))
    ) == (400, "NOT_A_REQUEST")
    accepted = await http.post(f"/api/conversations/{conversation_id}/accept", json={}, headers=bearer(bob_token))
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["conversation"]["request_state"] == "REQUEST_STATE_ACCEPTED"
    event = await alice_socket.next_of("conversation:accepted")
    assert event["data"]["conversation"]["request_state"] == "REQUEST_STATE_ACCEPTED"
    await wait_status(http, alice_token, bob, "PRESENCE_STATUS_ONLINE", timeout=CONTACTS_TTL_S + 5)
    await bob_socket.close()
    offline = await status_frame(alice_socket, bob)
    assert offline["data"]["status"] == "offline" and offline["data"]["last_seen_at"]

    # Outsiders and bad ids: 403 and 400, never a 500.
    eve_token = make_token(new_user_id("eve"))
    assert await _error(
        await http.post(f"/api/conversations/{conversation_id}/accept", json={}, headers=bearer(eve_token))
    ) == (403, "NOT_PARTICIPANT")
    assert (
        await http.post("/api/conversations/not-a-uuid/block", json={}, headers=bearer(bob_token))
    ).status_code == 400
    await alice_socket.close()


async def test_a_declined_request_is_gone_and_may_be_asked_again(
    http: httpx.AsyncClient, mesh: Mesh, channels: dict[str, grpc.aio.Channel], make_token
) -> None:
    alice, alice_token, bob, bob_token, conversation_id = await _request(http, make_token)
    sockets = [await Socket.open(mesh.edge_url, token) for token in (alice_token, bob_token)]
    stub = conversation_pb2_grpc.ConversationServiceStub(channels["conversation"])
    declined = await stub.DeclineConversation(
        conversation_pb2.DeclineConversationRequest(conversation_id=conversation_id),
        metadata=_metadata(bob_token),
        timeout=5,
    )
    assert declined.conversation.request_state == common_pb2.REQUEST_STATE_DECLINED
    assert not declined.conversation.active
    event = await sockets[0].next_of("conversation:declined")
    assert event["data"]["conversation"]["request_state"] == "REQUEST_STATE_DECLINED"

    assert await _error(
        await http.post(
            "/api/messages", json={"conversation_id": conversation_id, "content": "?"}, headers=bearer(alice_token)
        )
    ) == (403, "NOT_PARTICIPANT")
    listed = (await http.get("/api/conversations", headers=bearer(bob_token))).json()["conversations"]
    assert conversation_id not in [c["conversation_id"] for c in listed]
    await _hidden_for(http, alice_token, bob, 0.5)

    # Asking again makes it a request again (blocking is what stops that); bob replying accepts it.
    again = await http.post("/api/conversations/direct", json={"user_id": bob}, headers=bearer(alice_token))
    assert again.status_code == 200, again.text
    assert again.json()["conversation"]["conversation_id"] == conversation_id
    assert again.json()["conversation"]["request_state"] == "REQUEST_STATE_PENDING"
    await send(http, bob_token, conversation_id, "ok, hello")
    await wait_status(http, alice_token, bob, "PRESENCE_STATUS_ONLINE", timeout=CONTACTS_TTL_S + 5)
    for socket in sockets:
        await socket.close()


async def test_a_blocked_user_opens_nothing_and_messages_nobody(
    http: httpx.AsyncClient, mesh: Mesh, channels: dict[str, grpc.aio.Channel], make_token
) -> None:
    alice, alice_token, bob, bob_token, conversation_id = await _request(http, make_token)
    await send(http, alice_token, conversation_id, "buy my course")
    sockets = [await Socket.open(mesh.edge_url, token) for token in (alice_token, bob_token)]
    await wait_status(http, bob_token, alice, "PRESENCE_STATUS_ONLINE")

    blocked = await http.post(f"/api/conversations/{conversation_id}/block", json={}, headers=bearer(bob_token))
    assert blocked.status_code == 200, blocked.text
    assert blocked.json()["conversation"]["request_state"] == "REQUEST_STATE_BLOCKED"
    # Blocking twice changes nothing; over gRPC the same.
    stub = conversation_pb2_grpc.ConversationServiceStub(channels["conversation"])
    again = await stub.BlockConversation(
        conversation_pb2.BlockConversationRequest(conversation_id=conversation_id),
        metadata=_metadata(bob_token),
        timeout=5,
    )
    assert again.conversation.request_state == common_pb2.REQUEST_STATE_BLOCKED

    # No message, reaction or typing from alice (nor bob: the conversation is closed), at once.
    body = {"conversation_id": conversation_id, "content": "hello??"}
    assert await _error(await http.post("/api/messages", json=body, headers=bearer(alice_token))) == (403, "BLOCKED")
    assert await _error(await http.post("/api/messages", json=body, headers=bearer(bob_token))) == (403, "BLOCKED")
    assert await _error(
        await http.post(
            f"/api/conversations/{conversation_id}/typing", json={"is_typing": True}, headers=bearer(alice_token)
        )
    ) == (403, "BLOCKED")
    # No conversation either: not the direct one, not a group with bob in it, not adding bob to one.
    assert await _error(
        await http.post("/api/conversations/direct", json={"user_id": bob}, headers=bearer(alice_token))
    ) == (403, "BLOCKED")
    assert await _error(
        await http.post(
            "/api/conversations/group", json={"title": "x", "participant_ids": [bob]}, headers=bearer(alice_token)
        )
    ) == (403, "BLOCKED")
    group = await http.post(
        "/api/conversations/group", json={"title": "y", "participant_ids": []}, headers=bearer(alice_token)
    )
    group_id = group.json()["conversation"]["conversation_id"]
    assert await _error(
        await http.post(
            f"/api/conversations/{group_id}/participants", json={"user_id": bob}, headers=bearer(alice_token)
        )
    ) == (403, "BLOCKED")

    # Bob still reads what was said; neither sees the other's presence any more.
    history = await http.get(f"/api/messages/{conversation_id}", headers=bearer(bob_token))
    assert history.status_code == 200 and [m["content"] for m in history.json()["messages"]] == ["buy my course"]
    await wait_status(http, bob_token, alice, "PRESENCE_STATUS_UNKNOWN", timeout=CONTACTS_TTL_S + 5)
    await _hidden_for(http, alice_token, bob, 0.5)
    assert await _error(
        await http.post(f"/api/conversations/{conversation_id}/accept", json={}, headers=bearer(alice_token))
    ) == (403, "BLOCKED")
    for socket in sockets:
        await socket.close()


async def test_hide_last_seen_hides_it_from_everyone(http: httpx.AsyncClient, mesh: Mesh, make_token) -> None:
    alice, alice_token, bob, bob_token, conversation_id = await _request(http, make_token)
    await send(http, bob_token, conversation_id, "hello alice")
    watcher = await Socket.open(mesh.edge_url, alice_token)
    assert (await http.get("/api/users/me/settings", headers=bearer(bob_token))).json() == {
        "settings": {"hide_last_seen": False}
    }
    changed = await http.patch("/api/users/me/settings", json={"hide_last_seen": True}, headers=bearer(bob_token))
    assert changed.status_code == 200 and changed.json() == {"settings": {"hide_last_seen": True}}
    untouched = await http.patch("/api/users/me/settings", json={}, headers=bearer(bob_token))
    assert untouched.json() == {"settings": {"hide_last_seen": True}}  # left out: unchanged
    assert (
        await http.patch("/api/users/me/settings", json={"hide_last_seen": "yes"}, headers=bearer(bob_token))
    ).status_code == 400
    await asyncio.sleep(CONTACTS_TTL_S)  # the presence service's contacts cache

    tab = await Socket.open(mesh.edge_url, bob_token)
    online = await status_frame(watcher, bob)
    assert online["data"]["status"] == "online" and not online["data"].get("last_seen_at")
    await tab.close()
    offline = await status_frame(watcher, bob)
    assert offline["data"]["status"] == "offline" and not offline["data"].get("last_seen_at")
    seen = (await presence_of(http, alice_token, bob))[bob]
    assert seen["status"] == "PRESENCE_STATUS_OFFLINE" and not seen.get("last_seen_at")
    own = (await presence_of(http, bob_token, bob))[bob]
    assert own["status"] == "PRESENCE_STATUS_OFFLINE" and own["last_seen_at"]  # bob's own view keeps it
    await watcher.close()


async def test_a_flapping_client_costs_a_contact_one_status_event_per_interval(
    http: httpx.AsyncClient, mesh: Mesh, channels: dict[str, grpc.aio.Channel], make_token
) -> None:
    """120 toggles at 40/s through the presence service's own API (no edge limit in the way):
    bob hears at most duration/interval + 1 status events of alice, and the last state wins."""
    alice, bob = new_user_id("alice"), new_user_id("bob")
    alice_token, bob_token = make_token(alice), make_token(bob)
    await register(http, bob_token)
    await direct_conversation(http, alice_token, bob)  # alice opened it: bob sees her presence
    watcher = await Socket.open(mesh.edge_url, bob_token)
    tab = await Socket.open(mesh.edge_url, alice_token)
    assert (await status_frame(watcher, alice))["data"]["status"] == "online"
    await asyncio.sleep(ANNOUNCE_INTERVAL_S * 2)

    stub = presence_pb2_grpc.PresenceServiceStub(channels["presence"])
    frames: list[dict[str, Any]] = []

    async def listen() -> None:
        while True:
            frame = await watcher.next_of("user:status_changed", 30)
            if frame["data"]["user_id"] == alice:
                frames.append(frame)

    listener = asyncio.create_task(listen())
    started = time.monotonic()
    for i in range(120):
        status = common_pb2.PRESENCE_STATUS_OFFLINE if i % 2 == 0 else common_pb2.PRESENCE_STATUS_UNSPECIFIED
        await stub.SetPresence(
            presence_pb2.SetPresenceRequest(status=status), metadata=_metadata(alice_token), timeout=5
        )
        await asyncio.sleep(max(0.0, started + (i + 1) / 40 - time.monotonic()))
    # The last toggle (invisible off) ends online; one more: invisible, which must be what bob ends on.
    await stub.SetPresence(
        presence_pb2.SetPresenceRequest(status=common_pb2.PRESENCE_STATUS_OFFLINE),
        metadata=_metadata(alice_token),
        timeout=5,
    )
    duration = time.monotonic() - started
    await asyncio.sleep(ANNOUNCE_INTERVAL_S * 3 + 0.5)  # the last waiting announcement goes
    listener.cancel()
    await asyncio.gather(listener, return_exceptions=True)

    assert len(frames) <= duration / ANNOUNCE_INTERVAL_S + 1, (len(frames), duration)
    assert frames and frames[-1]["data"]["status"] == "offline"
    assert (await presence_of(http, bob_token, alice))[alice]["status"] == "PRESENCE_STATUS_OFFLINE"
    await tab.close()
    await watcher.close()
