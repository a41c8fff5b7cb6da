"""/ws below ASGI (services/edge/wire.py, issue 16): compression only when CHAT_WS_COMPRESSION asks for
it, a client that stops answering pings is closed with 1011 (on an edge pinging every 2 s:
CHAT_WS_PING_INTERVAL_S), a message is bounded whole however fragmented, and what is not a /ws
upgrade is answered in the edge's error body. Real edges, real sockets."""

from __future__ import annotations

import asyncio
import json
import secrets
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from chatmesh_tools.launcher import Mesh
from tests.helpers import new_user_id
from tests.test_delivery_faults import private_mesh

UPGRADE = (
    "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
)
OP_TEXT, OP_CLOSE, OP_PING = 0x1, 0x8, 0x9
PING_INTERVAL_S = 2.0  # short for the test, yet long enough for a loaded CI machine to answer in time


@pytest.fixture
def compressing_edge(isolated_env: Callable[..., dict[str, str]], tmp_path: Path) -> Iterator[Mesh]:
    """An edge of its own with CHAT_WS_COMPRESSION=1 (the handshake needs no upstream)."""
    edge = private_mesh(isolated_env(CHAT_WS_COMPRESSION="1"), tmp_path / "logs", names=("edge",))
    edge.start()
    yield edge
    edge.stop()


async def _extensions(edge_url: str) -> str | None:
    async with connect(edge_url.replace("http://", "ws://") + "/ws", compression="deflate") as ws:
        assert ws.response is not None
        return ws.response.headers.get("Sec-WebSocket-Extensions")


async def test_compression_is_negotiated_only_when_the_setting_is_on(mesh: Mesh, compressing_edge: Mesh) -> None:
    assert await _extensions(mesh.edge_url) is None  # offered by the client, declined by default
    negotiated = await _extensions(compressing_edge.edge_url)
    assert negotiated is not None and "permessage-deflate" in negotiated


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    """Server frames (unmasked, payloads under 64 KiB) as (opcode, payload)."""
    frames, at = [], 0
    while at + 2 <= len(data):
        opcode, length = data[at] & 0x0F, data[at + 1] & 0x7F
        at += 2
        if length == 126:
            (length,) = struct.unpack("!H", data[at : at + 2])
            at += 2
        frames.append((opcode, data[at : at + length]))
        at += length
    return frames


async def test_a_client_that_stops_answering_pings_is_closed_with_1011_and_others_stay(
    private_meshes: Callable[..., Mesh], isolated_env: Callable[..., dict[str, str]], make_token
) -> None:
    mesh = private_meshes(isolated_env(CHAT_WS_PING_INTERVAL_S=str(PING_INTERVAL_S)))
    url = urlsplit(mesh.edge_url)
    answering = []
    for _ in range(8):  # opened one after another: each is pinged once per interval, however many there are
        ws = await connect(mesh.edge_url.replace("http://", "ws://") + "/ws")  # answers pings itself
        await ws.send(json.dumps({"type": "auth", "data": {"token": make_token(new_user_id("chatty"))}}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "ready"
        answering.append(ws)
    token = make_token(new_user_id("mute"))
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(UPGRADE.format(path="/ws", host=url.netloc, extra=f"Authorization: Bearer {token}\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101")
        # Never answers a ping: pinged within an interval, closed when the next one is due.
        received = await asyncio.wait_for(reader.read(), 5 * PING_INTERVAL_S)  # until the edge closes it
    finally:
        writer.close()
    frames = _frames(received)
    kinds = [opcode for opcode, _ in frames]
    assert [json.loads(payload)["type"] for opcode, payload in frames if opcode == OP_TEXT] == ["ready"]
    assert OP_PING in kinds and kinds[-1] == OP_CLOSE
    assert struct.unpack("!H", frames[-1][1][:2])[0] == 1011
    for ws in answering:  # pinged as often, and open
        await ws.send(json.dumps({"type": "ping", "id": "p"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "pong", "id": "p"}
        await ws.close()


async def test_what_is_not_a_ws_upgrade_is_answered_in_the_error_body(mesh: Mesh, http: httpx.AsyncClient) -> None:
    url = urlsplit(mesh.edge_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(UPGRADE.format(path=f"/elsewhere-{secrets.token_hex(2)}", host=url.netloc, extra="").encode())
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404") and json.loads(body)["error"]["code"] == "NOT_FOUND"
    plain = await http.get("/ws")  # no upgrade at all
    assert plain.status_code == 426 and plain.json()["error"]["code"] == "UPGRADE_REQUIRED"


async def test_a_fragmented_message_over_the_hard_cap_closes_with_1009(mesh: Mesh, make_token) -> None:
    """Each fragment is small; the message they make is bounded as a single frame is (16 × 64 KiB)."""
    async with connect(mesh.edge_url.replace("http://", "ws://") + "/ws", max_size=None) as ws:
        await ws.send(json.dumps({"type": "auth", "data": {"token": make_token(new_user_id("frag"))}}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "ready"
        with pytest.raises(ConnectionClosed) as closed:
            await ws.send("x" * 65536 for _ in range(20))
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
