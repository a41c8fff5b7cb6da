"""The WebSocket under bad input: malformed JSON, unknown types, oversized frames, floods, foreign
origins, too many sockets, expiring tokens. Each gets an error frame or a clean close with a clear
code, and the edge keeps serving everyone else."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from chatmesh_tools.launcher import Mesh
from services.edge.ws import CLOSE_TOKEN_EXPIRED, WS_HARD_CAP_FACTOR
from tests.helpers import Socket, direct_conversation, new_user_id, register, send

MAX_FRAME = 65536  # the session mesh's CHAT_WS_MAX_FRAME_BYTES (default)
FRAMES_PER_S = 50  # its CHAT_WS_MAX_FRAMES_PER_S (default)


async def _errors_until(socket: Socket, count: int, timeout: float = 10) -> list[dict[str, object]]:
    frames = []
    while len(frames) < count:
        frames.append(await socket.next_of("error", timeout))
    return frames


async def _still_serves(mesh: Mesh, http: httpx.AsyncClient, make_token) -> None:  # type: ignore[no-untyped-def]
    """Another client is unaffected: its socket answers and a message reaches it."""
    alice, bob = new_user_id("alice"), new_user_id("bob")
    bob_token = make_token(bob)
    await register(http, bob_token)
    conversation_id = await direct_conversation(http, make_token(alice), bob)
    socket = await Socket.open(mesh.edge_url, bob_token)
    assert (await socket.request("ping", {}))["type"] == "pong"
    await send(http, make_token(alice), conversation_id, "still here")
    assert (await socket.next_of("chat:message_received"))["data"]["content"] == "still here"


async def test_bad_frames_get_error_frames(mesh: Mesh, http: httpx.AsyncClient, make_token) -> None:
    socket = await Socket.open(mesh.edge_url, make_token(new_user_id("mallory")))
    for raw in ("{not json", "[1, 2]", '"text"', json.dumps({"type": 7}), json.dumps({"type": "ping", "data": [1]})):
        await socket.ws.send(raw)
        assert (await socket.next_of("error"))["data"]["code"] == "BAD_FRAME", raw
    await socket.ws.send(b"\x00\x01 binary")
    assert (await socket.next_of("error"))["data"]["code"] == "BAD_FRAME"
    unknown = await socket.request("chat:teleport", {})
    assert unknown["type"] == "error" and unknown["data"]["code"] == "UNKNOWN_TYPE"
    bad_send = await socket.request("chat:message_send", {"conversation_id": 5, "content": {"x": 1}})
    assert bad_send["data"]["code"] == "INVALID_ARGUMENT"
    await socket.ws.send(json.dumps({"type": "ping", "data": {"pad": "x" * (MAX_FRAME + 10)}}))
    assert (await socket.next_of("error"))["data"]["code"] == "FRAME_TOO_LARGE"
    assert (await socket.request("ping", {}))["type"] == "pong"  # the socket survives all of it
    await _still_serves(mesh, http, make_token)


async def test_a_frame_over_the_hard_cap_closes_with_1009(mesh: Mesh, make_token) -> None:
    socket = await Socket.open(mesh.edge_url, make_token(new_user_id("mallory")))
    await socket.ws.send("x" * (MAX_FRAME * WS_HARD_CAP_FACTOR + 1))
    with pytest.raises(ConnectionClosed) as closed:
        await socket.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_a_flood_gets_rate_limited_then_closed(mesh: Mesh, http: httpx.AsyncClient, make_token) -> None:
    flooder = await Socket.open(mesh.edge_url, make_token(new_user_id("flood")))
    for _ in range(FRAMES_PER_S * 2):
        await flooder.ws.send(json.dumps({"type": "ping"}))
    errors = await _errors_until(flooder, 1)
    assert errors[0]["data"]["code"] == "RATE_LIMITED"  # type: ignore[index]
    with pytest.raises(ConnectionClosed) as closed:
        for _ in range(FRAMES_PER_S * 10):
            await flooder.ws.send(json.dumps({"type": "ping"}))
        while True:
            await flooder.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    await _still_serves(mesh, http, make_token)


async def test_foreign_origins_are_refused(mesh: Mesh, make_token) -> None:
    url = mesh.edge_url.replace("http://", "ws://") + "/ws"
    with pytest.raises(InvalidStatus) as refused:
        await connect(url, origin="https://evil.example")  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    host = mesh.edge_url.removeprefix("http://")
    same_site = await connect(url, origin=f"http://{host}")  # type: ignore[arg-type]
    await same_site.send(json.dumps({"type": "auth", "data": {"token": make_token(new_user_id("alice"))}}))
    assert json.loads(await asyncio.wait_for(same_site.recv(), 10))["type"] == "ready"
    await same_site.close()


async def test_sockets_per_user_are_bounded(mesh: Mesh, make_token) -> None:
    user = new_user_id("many")
    token = make_token(user)
    sockets = [await Socket.open(mesh.edge_url, token) for _ in range(20)]
    ws = await connect(mesh.edge_url.replace("http://", "ws://") + "/ws")
    await ws.send(json.dumps({"type": "auth", "data": {"token": token}}))
    frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert frame["data"]["code"] == "TOO_MANY_SOCKETS"
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    await sockets.pop().close()
    await asyncio.sleep(0.3)  # the edge releases the slot when it sees the close
    await Socket.open(mesh.edge_url, token)  # a slot is free again


async def test_token_expiry_warns_then_closes_4001(mesh: Mesh, make_token) -> None:
    """The session mesh runs at CHAT_TIME_SCALE 0.05: the warning comes 3 s before exp."""
    user = new_user_id("short")
    socket = await Socket.open(mesh.edge_url, make_token(user, ttl_s=5))
    warning = await socket.next_of("token_expiring", timeout=10)
    assert warning["data"]["expires_at"]
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await socket.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_TOKEN_EXPIRED


async def test_in_band_reauthentication_keeps_the_socket(mesh: Mesh, make_token) -> None:
    user = new_user_id("renew")
    socket = await Socket.open(mesh.edge_url, make_token(user, ttl_s=5))
    await socket.next_of("token_expiring", timeout=10)
    other = await socket.request("auth", {"token": make_token(new_user_id("someone-else"))})
    assert other["type"] == "error" and other["data"]["code"] == "UNAUTHENTICATED"
    renewed = await socket.request("auth", {"token": make_token(user, ttl_s=3600)})
    assert renewed["type"] == "ack" and renewed["data"]["expires_at"]
    await asyncio.sleep(4)  # past the first token's exp
    assert (await socket.request("ping", {}))["type"] == "pong"
