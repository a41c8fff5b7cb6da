"""Small helpers the tests share: users, conversations and WebSocket clients through the edge."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.protocol import State
from websockets.uri import parse_uri


def new_user_id(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def register(http: httpx.AsyncClient, token: str) -> None:
    """The edge records a user on their first authenticated request."""
    reply = await http.put("/api/users/me", json={}, headers=bearer(token))
    assert reply.status_code == 200, reply.text


async def direct_conversation(http: httpx.AsyncClient, token: str, other: str) -> str:
    reply = await http.post("/api/conversations/direct", json={"user_id": other}, headers=bearer(token))
    assert reply.status_code == 200, reply.text
    return str(reply.json()["conversation"]["conversation_id"])


async def send(http: httpx.AsyncClient, token: str, conversation_id: str, content: str, **extra: Any) -> dict[str, Any]:
    reply = await http.post(
        "/api/messages", json={"conversation_id": conversation_id, "content": content, **extra}, headers=bearer(token)
    )
    assert reply.status_code == 200, reply.text
    return dict(reply.json()["message"])


class Socket:
    """A real WebSocket client of the edge, authenticated with its first frame."""

    opened: list[Socket] = []  # closed after each test by the close_sockets fixture

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        Socket.opened.append(self)

    @classmethod
    async def close_all(cls) -> None:
        while cls.opened:
            await cls.opened.pop().ws.close()

    @classmethod
    async def open(cls, edge_url: str, token: str, resume_token: str | None = None) -> Socket:
        ws = await connect(edge_url.replace("http://", "ws://") + "/ws")
        data = {"token": token} | ({"resume_token": resume_token} if resume_token else {})
        await ws.send(json.dumps({"type": "auth", "data": data}))
        socket = cls(ws)
        ready = await socket.recv()
        assert ready["type"] == "ready", ready
        return socket

    async def recv(self, timeout: float = 10) -> dict[str, Any]:
        return dict(json.loads(await asyncio.wait_for(self.ws.recv(), timeout)))

    async def next_of(self, kind: str, timeout: float = 10) -> dict[str, Any]:
        """The next frame of a type, skipping others."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout)
                if frame["type"] == kind:
                    return frame

    async def request(self, kind: str, data: dict[str, Any], timeout: float = 10) -> dict[str, Any]:
        request_id = uuid.uuid4().hex
        await self.ws.send(json.dumps({"type": kind, "id": request_id, "data": data}))
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout)
                if frame.get("id") == request_id:
                    return frame

    async def close(self) -> None:
        await self.ws.close()


async def collect(socket: Socket, kind: str, count: int, timeout: float = 10) -> list[dict[str, Any]]:
    """The next `count` distinct events of a type, in arrival order (redelivered copies skipped, as a
    client dedupes by event id)."""
    frames: list[dict[str, Any]] = []
    seen: set[str] = set()
    async with asyncio.timeout(timeout):
        while len(frames) < count:
            frame = await socket.next_of(kind, timeout)
            if frame.get("event_id") not in seen:
                seen.add(frame.get("event_id", ""))
                frames.append(frame)
    return frames


async def quiet(socket: Socket, kind: str, seconds: float) -> list[dict[str, Any]]:
    """Frames of a type that arrive within a short window (to show that nothing more comes)."""
    frames = []
    try:
        async with asyncio.timeout(seconds):
            while True:
                frame = await socket.recv(seconds)
                if frame["type"] == kind:
                    frames.append(frame)
    except TimeoutError:
        pass
    return frames


def unique(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Frames deduplicated by event id, as a client does (a redelivered event repeats its id)."""
    seen: set[str] = set()
    return [f for f in frames if not (f["event_id"] in seen or seen.add(f["event_id"]))]  # type: ignore[func-returns-value]


async def raw_socket(port: int, token: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, ClientProtocol]:
    """A WebSocket on the edge at `port`, authenticated with `token`, driven by hand (websockets' sans-I/O
    protocol over a raw socket with a 4 KiB receive buffer): for clients that read slowly or not at all,
    which the edge must close in time. What the edge sends after the auth frame is left unread."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.setblocking(False)
    await asyncio.get_running_loop().sock_connect(raw, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=raw, limit=4096)
    protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/ws"))
    protocol.send_request(protocol.connect())
    writer.write(b"".join(protocol.data_to_send()))
    while protocol.handshake_exc is None and protocol.state is State.CONNECTING:
        protocol.receive_data(await reader.read(4096))
    protocol.send_text(json.dumps({"type": "auth", "data": {"token": token}}).encode())
    writer.write(b"".join(protocol.data_to_send()))
    return reader, writer, protocol
