"""Per-user limits held in Redis hold across edge replicas: REST requests and message sends get 429
with Retry-After, WebSocket sends a RATE_LIMITED error frame, never a silent drop; typing frames are
limited by the presence service and say so too."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from chatmesh_tools.embedded import free_port
from chatmesh_tools.launcher import Mesh
from tests.helpers import Socket, bearer, new_user_id

TWO_EDGES = ("conversation", "message", "presence", "edge", "edge-2")


@pytest.fixture
def limited_mesh(isolated_env: Callable[..., dict[str, str]], tmp_path: Path) -> Iterator[Mesh]:
    env = isolated_env(CHAT_RATE_REST="12/60", CHAT_RATE_MESSAGES="4/60")
    mesh = Mesh(env=env, ports={name: free_port() for name in TWO_EDGES}, log_dir=tmp_path / "logs")
    mesh.start()
    yield mesh
    mesh.stop()


async def test_limits_are_shared_by_edges_and_answered(limited_mesh: Mesh, make_token) -> None:
    alice, bob = new_user_id("alice"), new_user_id("bob")
    alice_token, bob_token = make_token(alice), make_token(bob)
    one = httpx.AsyncClient(base_url=limited_mesh.url_of("edge"), timeout=10)
    two = httpx.AsyncClient(base_url=limited_mesh.url_of("edge-2"), timeout=10)
    try:
        assert (await one.put("/api/users/me", json={}, headers=bearer(bob_token))).status_code == 200
        created = await one.post("/api/conversations/direct", json={"user_id": bob}, headers=bearer(alice_token))
        conversation_id = created.json()["conversation"]["conversation_id"]

        # Message sends: 4 per minute for alice, counted across both edges and both transports.
        statuses = []
        for i in range(3):
            reply = await (one if i % 2 else two).post(
                "/api/messages",
                json={"conversation_id": conversation_id, "content": f"m{i}"},
                headers=bearer(alice_token),
            )
            statuses.append(reply.status_code)
        assert statuses == [200, 200, 200]
        socket = await Socket.open(limited_mesh.url_of("edge-2"), alice_token)
        ok = await socket.request("chat:message_send", {"conversation_id": conversation_id, "content": "ws"})
        assert ok["type"] == "ack"
        limited = await socket.request("chat:message_send", {"conversation_id": conversation_id, "content": "no"})
        assert limited["type"] == "error" and limited["data"]["code"] == "RATE_LIMITED"
        assert 1 <= limited["data"]["retry_after"] <= 60
        over = await one.post(
            "/api/messages", json={"conversation_id": conversation_id, "content": "no"}, headers=bearer(alice_token)
        )
        assert over.status_code == 429 and over.json()["error"]["code"] == "RATE_LIMITED"
        assert 1 <= int(over.headers["retry-after"]) <= 60

        # REST requests: 12 per minute for alice across both edges (she has used 5); bob is untouched.
        replies = [
            await (one if i % 2 else two).get("/api/conversations", headers=bearer(alice_token)) for i in range(9)
        ]
        codes = [r.status_code for r in replies]
        assert codes[:7] == [200] * 7 and codes[7:] == [429, 429], codes
        assert all(r.json()["error"]["request_id"] and r.headers["retry-after"] for r in replies[7:])
        assert (await two.get("/api/conversations", headers=bearer(bob_token))).status_code == 200

        # Typing: the presence service's own per-user limit (30 per 10 s), answered frame by frame.
        bob_socket = await Socket.open(limited_mesh.url_of("edge"), bob_token)
        for i in range(40):
            await bob_socket.ws.send(
                json.dumps(
                    {
                        "type": "chat:typing",
                        "id": f"t{i}",
                        "data": {"conversation_id": conversation_id, "is_typing": i % 2 == 0},
                    }
                )
            )
        answers = []
        while len(answers) < 40:
            frame = await bob_socket.recv()
            if str(frame.get("id", "")).startswith("t"):
                answers.append(frame)
        codes_ws = [a["data"].get("code") if a["type"] == "error" else "ok" for a in answers]
        assert "RATE_LIMITED" in codes_ws and "ok" in codes_ws, codes_ws
        assert set(codes_ws) <= {"ok", "RATE_LIMITED"}, codes_ws
    finally:
        await one.aclose()
        await two.aclose()
