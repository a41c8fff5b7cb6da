"""The edge's parsers under hostile input (issue 15, item 7), against the real mesh: deep JSON,
oversized tokens, user ids the rule refuses, 405s and repeated parameters (request heads:
tests/test_edge_heads.py). Each gets a clear error with a machine-readable code, or an error frame
and a close frame, and never a 500, a dropped socket or a traceback.

The limits are written out here rather than imported, so this file also runs against the code
before them (where each test fails): JSON nested deeper than 32, a token over 6 KiB."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from chatmesh.config import Settings
from chatmesh_tools.launcher import Mesh
from tests.helpers import Socket, bearer, direct_conversation, new_user_id, register, send

DEEP = 30_000


def _token(settings: Settings, sub: str, size: int = 0) -> str:
    """A valid user token for `sub`, padded with a claim nobody reads to about `size` characters."""
    claims: dict[str, object] = {"sub": sub, "iat": int(time.time()), "exp": int(time.time()) + 3600}
    token = jwt.encode(claims, settings.jwt_secret, algorithm="HS256")
    if size > len(token):
        claims["pad"] = "x" * ((size - len(token)) * 3 // 4)
        token = jwt.encode(claims, settings.jwt_secret, algorithm="HS256")
    return token


@contextmanager
def _no_tracebacks(mesh: Mesh) -> Iterator[None]:
    """What the edge logs meanwhile holds no traceback (a bug) and no unhandled-exception line."""
    log = mesh.log_dir / "edge.log"
    start = log.stat().st_size
    yield
    with log.open("rb") as f:
        f.seek(start)
        added = f.read().decode(errors="replace")
    assert "Traceback" not in added and "Exception in ASGI application" not in added, added[-3000:]


# JSON depth


async def test_deep_json_bodies_are_a_400(http: httpx.AsyncClient, mesh: Mesh, make_token) -> None:
    token = make_token(new_user_id("mallory"))
    with _no_tracebacks(mesh):
        for body in ("[" * DEEP, '{"a":' * 10_000, "[" * 33 + "]" * 33):  # each within the 64 KiB body limit
            reply = await http.post(
                "/api/messages", content=body, headers={**bearer(token), "content-type": "application/json"}
            )
            assert reply.status_code == 400, (body[:40], reply.text)
            assert reply.json()["error"]["code"] == "JSON_TOO_DEEP"
    # Brackets inside strings are text, not nesting: a message made of them goes through.
    alice, bob = make_token(new_user_id("alice")), new_user_id("bob")
    await register(http, make_token(bob))
    conversation_id = await direct_conversation(http, alice, bob)
    sent = await send(http, alice, conversation_id, "[{" * 500 + '\\"[')
    assert sent["content"] == "[{" * 500 + '\\"['


async def test_a_deep_frame_gets_an_error_and_the_socket_stays(mesh: Mesh, make_token) -> None:
    with _no_tracebacks(mesh):
        socket = await Socket.open(mesh.edge_url, make_token(new_user_id("mallory")))
        for raw in ("[" * DEEP, '{"type": "ping", "data": ' + "[" * 40 + "]" * 40 + "}"):
            await socket.ws.send(raw)
            assert (await socket.next_of("error"))["data"]["code"] == "JSON_TOO_DEEP"
        assert (await socket.request("ping", {}))["type"] == "pong"
        # A deep first frame is a failed authentication: an error frame, then a close frame.
        ws = await connect(mesh.edge_url.replace("http://", "ws://") + "/ws")
        await ws.send("[" * DEEP)
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["data"]["code"] == "UNAUTHENTICATED"
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


# tokens and user ids


async def test_an_oversized_token_is_a_plain_401(http: httpx.AsyncClient, mesh: Mesh, settings: Settings) -> None:
    user = new_user_id("big")
    fits = _token(settings, user, 6000)
    assert (await http.get("/api/conversations", headers=bearer(fits))).status_code == 200  # within the limit
    with _no_tracebacks(mesh):
        oversized = _token(settings, user, 7000)
        reply = await http.get("/api/conversations", headers=bearer(oversized))
        assert reply.status_code == 401 and reply.json()["error"]["code"] == "UNAUTHENTICATED", reply.text
        assert reply.headers["www-authenticate"] == "Bearer"
        huge = _token(settings, user, 67_000)
        reply = await http.get("/api/conversations", headers=bearer(huge))
        assert reply.status_code == 431 and reply.json()["error"]["code"] == "HEADERS_TOO_LARGE"  # as any huge header
        for token in (oversized, huge):  # in the first frame, where no header limit applies
            ws = await connect(mesh.edge_url.replace("http://", "ws://") + "/ws", max_size=None)
            await ws.send(json.dumps({"type": "auth", "data": {"token": token}}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["data"]["code"] == "UNAUTHENTICATED"
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


@pytest.mark.parametrize("sub", ["\x00alice", " alice", "alice ", "al\nice", "al\x7fice", "x" * 129])
async def test_a_sub_the_user_id_rule_refuses_is_401_or_a_clean_close(
    http: httpx.AsyncClient, mesh: Mesh, settings: Settings, sub: str
) -> None:
    token = _token(settings, sub)
    with _no_tracebacks(mesh):
        reply = await http.get("/api/conversations", headers=bearer(token))
        assert reply.status_code == 401 and reply.json()["error"]["code"] == "UNAUTHENTICATED", reply.text
        for header in (None, bearer(token)):  # the first frame, and the upgrade's Authorization
            ws = await connect(mesh.edge_url.replace("http://", "ws://") + "/ws", additional_headers=header)
            if header is None:
                await ws.send(json.dumps({"type": "auth", "data": {"token": token}}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["data"]["code"] == "UNAUTHENTICATED"
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_services_name_users_by_the_same_rule(http: httpx.AsyncClient, make_token) -> None:
    token = make_token(new_user_id("alice"))
    await register(http, token)
    for other in ("bob\tsmith", " bob", "bob\x00"):
        reply = await http.post("/api/conversations/direct", json={"user_id": other}, headers=bearer(token))
        assert reply.status_code == 400 and reply.json()["error"]["code"] == "INVALID_USER_ID", (other, reply.text)


# methods and parameters


async def test_405_names_the_allowed_methods(http: httpx.AsyncClient, make_token) -> None:
    token = make_token(new_user_id("alice"))
    for method, path, allowed in [
        ("DELETE", "/api/conversations", "GET"),
        ("PUT", f"/api/messages/{uuid.uuid4()}", "DELETE, GET, PATCH"),
        ("OPTIONS", "/api/messages", "POST"),
        ("POST", "/healthz", "GET, HEAD"),
    ]:  # a route of Starlette's own
        reply = await http.request(method, path, headers=bearer(token))
        assert reply.status_code == 405 and reply.json()["error"]["code"] == "METHOD_NOT_ALLOWED", (method, path)
        assert sorted(reply.headers.get("allow", "").split(", ")) == allowed.split(", "), (method, path, reply.headers)


async def test_a_single_value_parameter_given_twice_is_a_400(http: httpx.AsyncClient, make_token) -> None:
    token = make_token(new_user_id("alice"))
    twice = await http.get(f"/api/messages/{uuid.uuid4()}?limit=5&limit=50", headers=bearer(token))
    assert twice.status_code == 400 and twice.json()["error"]["code"] == "DUPLICATE_PARAMETER", twice.text
    assert "limit" in twice.json()["error"]["message"]
    search = await http.get("/api/messages/search?q=a&q=b", headers=bearer(token))
    assert search.status_code == 400 and search.json()["error"]["code"] == "DUPLICATE_PARAMETER"
    repeated = await http.get("/api/presence?user_ids=a&user_ids=b,c", headers=bearer(token))  # a repeated field
    assert repeated.status_code == 200, repeated.text
    assert [p["user_id"] for p in repeated.json()["presences"]] == ["a", "b", "c"]
