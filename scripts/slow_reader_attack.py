"""Measure issue 15's slow-reader attack against a fresh mesh with default settings (not a test).

Ten sockets of one user each read about 12 KB/s through ordinary kernel buffers (never slow enough for
the 10 s write timeout) while two senders post 1,000 messages of 16 KB to that user through the same
edge. Prints the edge's RSS before, at its peak and after, how each socket ended, and whether each,
resuming from the last token it got, ends up with every message.

    CHAT_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
    CHAT_TEST_REDIS_URL=redis://127.0.0.1:6379 python scripts/slow_reader_attack.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from chatmesh.auth import sign
from chatmesh.config import Settings
from chatmesh_tools.embedded import free_port
from chatmesh_tools.launcher import SERVICES, Mesh

BIG = "\U0001f600" * 3990  # ~16 KB of UTF-8


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class SlowReader:
    """Reads `rate` bytes a second with the kernel's default buffers; keeps seqs and its last token."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, protocol: ClientProtocol) -> None:
        self.reader, self.writer, self.protocol = reader, writer, protocol
        self.seqs: set[int] = set()
        self.token = ""
        self.code: int | None = None
        self.closed_at: float | None = None

    @classmethod
    async def open(cls, port: int, token: str) -> SlowReader:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/ws"))
        protocol.send_request(protocol.connect())
        writer.write(b"".join(protocol.data_to_send()))
        while protocol.state is State.CONNECTING:
            protocol.receive_data(await reader.read(4096))
        protocol.send_text(json.dumps({"type": "auth", "data": {"token": token}}).encode())
        writer.write(b"".join(protocol.data_to_send()))
        return cls(reader, writer, protocol)

    async def read(self, rate: int, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.code is None:
            data = await self.reader.read(rate // 10)
            if not data:
                self.code, self.closed_at = 1006, time.monotonic()
                return
            self.protocol.receive_data(data)
            for frame in self.protocol.events_received():
                if isinstance(frame, Frame) and frame.opcode is Opcode.CLOSE:
                    self.code, self.closed_at = Close.parse(frame.data).code, time.monotonic()
                elif isinstance(frame, Frame) and frame.opcode is Opcode.TEXT:
                    event = json.loads(frame.data)
                    if event["type"] == "chat:message_received":
                        self.seqs.add(int(event["data"]["seq"]) + (0 if event["conversation_id"] == CONV[0] else 10**6))
                        self.token = event["resume_token"]
            self.writer.write(b"".join(self.protocol.data_to_send()))
            await asyncio.sleep(0.1)


CONV: list[str] = []  # the first sender's conversation (its seqs count as they are; the second's + 10**6)


async def resume(url: str, token: str, reader: SlowReader, total: int) -> int:
    """Resume from the reader's last token (again after each 4008) until every message is in."""
    seqs, resume_token = set(reader.seqs), reader.token
    for _ in range(200):
        async with connect(url.replace("http://", "ws://") + "/ws", max_size=None) as ws:
            await ws.send(json.dumps({"type": "auth", "data": {"token": token, "resume_token": resume_token}}))
            try:
                async with asyncio.timeout(30):
                    while len(seqs) < total:
                        frame = json.loads(await ws.recv())
                        if frame["type"] == "chat:message_received":
                            seqs.add(int(frame["data"]["seq"]) + (0 if frame["conversation_id"] == CONV[0] else 10**6))
                            resume_token = frame["resume_token"]
                return len(seqs)
            except ConnectionClosed:
                continue
            except TimeoutError:
                return len(seqs)
    return len(seqs)


async def attack(mesh: Mesh, settings: Settings, sockets: int, messages: int, rate: int, seconds: float) -> None:
    http = httpx.AsyncClient(base_url=mesh.edge_url, timeout=60)
    bob = f"bob-{uuid.uuid4().hex[:6]}"
    senders = [f"alice-{uuid.uuid4().hex[:6]}", f"carol-{uuid.uuid4().hex[:6]}"]  # 500 each: under 600/60
    bob_token = sign(settings, bob)
    await http.put("/api/users/me", json={}, headers={"Authorization": f"Bearer {bob_token}"})
    conversations = []
    for sender in senders:
        reply = await http.post(
            "/api/conversations/direct",
            json={"user_id": bob},
            headers={"Authorization": f"Bearer {sign(settings, sender)}"},
        )
        conversations.append(reply.json()["conversation"]["conversation_id"])
    CONV.append(conversations[0])
    readers = [await SlowReader.open(mesh.ports["edge"], bob_token) for _ in range(sockets)]
    pid = mesh.processes["edge"].pid
    await asyncio.sleep(1)
    before = peak = rss_mib(pid)
    started, wall = time.monotonic(), time.time()

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss_mib(pid))
            await asyncio.sleep(0.05)

    async def send(sender: str, conversation_id: str, n: int) -> None:
        reply = await http.post(
            "/api/messages",
            json={"conversation_id": conversation_id, "content": f"{n} {BIG}"},
            headers={"Authorization": f"Bearer {sign(settings, sender)}"},
        )
        reply.raise_for_status()

    sampler = asyncio.create_task(sample())
    reading = [asyncio.create_task(r.read(rate, seconds)) for r in readers]
    for start in range(0, messages // 2, 10):
        await asyncio.gather(
            *(send(s, c, n) for s, c in zip(senders, conversations, strict=True) for n in range(start, start + 10))
        )
    sent_after = time.monotonic() - started
    await asyncio.gather(*reading)
    sampler.cancel()
    after = rss_mib(pid)
    print(
        f"sent {messages} x 16 KB in {sent_after:.1f} s; edge RSS before {before:.0f} MiB, peak {peak:.0f} MiB "
        f"(+{peak - before:.0f}), after {seconds:.0f} s {after:.0f} MiB"
    )
    slowly = [len(r.seqs) for r in readers]
    await asyncio.gather(*(r.read(100 << 20, 60) for r in readers))  # the rest at full speed, to its close frame
    for i, r in enumerate(readers):
        print(f"socket {i}: {slowly[i]} messages read slowly, then close code {r.code} after {len(r.seqs)}")
    closes = [
        json.loads(line)
        for line in (mesh.log_dir / "edge.log").read_text().splitlines()
        if "closing a slow WebSocket" in line
    ]
    if closes:
        first, last = (
            datetime.fromisoformat(c["ts"].replace("Z", "+00:00")).timestamp() - wall for c in (closes[0], closes[-1])
        )
        print(f"the edge closed {len(closes)} sockets as too slow, {first:.1f} to {last:.1f} s after the first send")
    for line in (mesh.log_dir / "edge.log").read_text().splitlines():
        if "services.edge.backlog" in line:
            print("  edge:", json.loads(line)["msg"])
    for i, r in enumerate(readers):
        r.writer.close()
        got = await resume(mesh.edge_url, bob_token, r, messages)
        print(f"socket {i}: resumed from its token, has {got} of {messages}")
    await http.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=10)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=12_000, help="bytes a second each socket reads")
    parser.add_argument("--seconds", type=float, default=30, help="how long the sockets read slowly")
    args = parser.parse_args()
    postgres = os.environ["CHAT_TEST_DATABASE_URL"]
    name = f"chatmesh_attack_{secrets.token_hex(4)}"
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with tempfile.TemporaryDirectory(prefix="chatmesh-attack-") as tmp:
        env = {
            "CHAT_DATABASE_URL": urlunsplit(urlsplit(postgres)._replace(path=f"/{name}")),
            "CHAT_REDIS_URL": os.environ["CHAT_TEST_REDIS_URL"],
            "CHAT_REDIS_PREFIX": f"attack-{secrets.token_hex(4)}",
            "CHAT_JWT_SECRET": secrets.token_urlsafe(32),
            "CHAT_LOG_LEVEL": "INFO",
            "CHAT_SERVICE_KEYRING": str(Path(tmp) / "keys"),
        }
        mesh = Mesh(env=env, ports={s: free_port() for s in SERVICES}, log_dir=Path(tmp) / "logs")
        mesh.start()
        try:
            asyncio.run(attack(mesh, Settings.from_env(env), args.sockets, args.messages, args.rate, args.seconds))
        finally:
            mesh.stop()
            with psycopg.connect(postgres, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
