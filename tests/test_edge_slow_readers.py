"""Slow readers against a real edge (issue 15, item 1): ten sockets of one user that read ~12 KB/s,
never slow enough for the per-frame write timeout, while large messages pour in. The edge closes them
with 4008 (their queues are bounded in bytes, they drain under the minimum rate, and the edge sheds
the slowest when over its budget), its memory grows by less than the budget, and each resumes from
its last token with every message, none lost."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close, Frame, Opcode

from chatmesh_tools.launcher import Mesh
from tests.helpers import Socket, direct_conversation, new_user_id, raw_socket, register, send

BUDGET = 16 << 20  # the edge's send budget for this test; its RSS must grow by less
SOCKETS = 10
MESSAGES = 300
BIG = "\U0001f600" * 3990  # ~16 KB of UTF-8 (and 16 KB in memory: four bytes a character), the largest message
SLOW_ENV = {
    "CHAT_WS_SEND_QUEUE_BYTES": str(1 << 20),
    "CHAT_WS_SEND_BUDGET_BYTES": str(BUDGET),
    "CHAT_WS_MIN_DRAIN_BYTES_PER_S": str(64 << 10),
    "CHAT_WS_DRAIN_WINDOW_S": "1",
    "CHAT_WS_SEND_TIMEOUT": "60",  # so it is none of the write timeout's doing
}


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class ThrottledClient:
    """A WebSocket client that reads at most `rate` bytes a second through a tiny kernel buffer: the
    sans-I/O protocol of the websockets package over a raw socket, so nothing reads on its behalf.
    It keeps the seqs and the last resume token of the messages it got."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, protocol: ClientProtocol) -> None:
        self._reader = reader
        self._writer = writer
        self._protocol = protocol
        self.seqs: list[int] = []
        self.resume_token = ""
        self.close_code: int | None = None

    @classmethod
    async def open(cls, port: int, token: str) -> ThrottledClient:
        reader, writer, protocol = await raw_socket(port, token)
        client = cls(reader, writer, protocol)
        while not await client._read(4096):
            pass  # until `ready`
        return client

    async def _read(self, size: int) -> bool:
        """Read up to `size` bytes; True once something whole arrived (or the socket closed)."""
        data = await self._reader.read(size)
        if not data:
            self.close_code = self.close_code or 1006
            return True
        self._protocol.receive_data(data)
        got = False
        for frame in self._protocol.events_received():
            got = True
            if isinstance(frame, Frame) and frame.opcode is Opcode.CLOSE:
                self.close_code = Close.parse(frame.data).code
            elif isinstance(frame, Frame) and frame.opcode is Opcode.TEXT:
                event = json.loads(frame.data)
                if event["type"] == "chat:message_received":
                    self.seqs.append(int(event["data"]["seq"]))
                    self.resume_token = event["resume_token"]
        self._writer.write(b"".join(self._protocol.data_to_send()))  # pongs, the close's answer
        return got

    async def read_slowly(self, rate: int, seconds: float) -> None:
        """Read `rate` bytes a second for `seconds`, or until the server's close frame."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.close_code is None:
            await self._read(rate // 10)
            await asyncio.sleep(0.1)

    async def read_until_close(self, timeout: float = 30) -> int | None:
        """Read everything at full speed; the close code once the close frame arrives (None: none came)."""
        try:
            async with asyncio.timeout(timeout):
                while self.close_code is None:
                    await self._read(1 << 16)
        except TimeoutError:
            pass
        self._writer.close()
        return self.close_code


async def resume_all(edge_url: str, token: str, client: ThrottledClient, total: int) -> list[int]:
    """Resume from the client's last token as clients do (again after each 4008) until every message is in."""
    seqs, resume_token = list(client.seqs), client.resume_token
    for _ in range(20):
        socket = await Socket.open(edge_url, token, resume_token=resume_token or None)
        try:
            while len(set(seqs)) < total:
                frame = await socket.next_of("chat:message_received", timeout=10)
                seqs.append(int(frame["data"]["seq"]))
                resume_token = frame["resume_token"]
            return seqs
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 4008, closed  # too slow again: resume
        finally:
            await socket.close()
    raise AssertionError(f"{total - len(set(seqs))} messages never came back")


@pytest.fixture
def slow_mesh(isolated_env, private_meshes) -> Mesh:  # type: ignore[no-untyped-def]
    """The sockets' edge, and another one the sender uses, so the first one's memory is the sockets' alone."""
    return private_meshes(isolated_env(**SLOW_ENV), ("conversation", "message", "presence", "edge", "edge-2"))


async def test_slow_readers_are_closed_within_the_budget_and_resume_with_nothing_lost(
    slow_mesh: Mesh, make_token
) -> None:
    http = httpx.AsyncClient(base_url=slow_mesh.url_of("edge-2"), timeout=20)
    alice, bob = new_user_id("alice"), new_user_id("bob")
    alice_token, bob_token = make_token(alice), make_token(bob)
    await register(http, bob_token)
    conversation_id = await direct_conversation(http, alice_token, bob)
    clients = [await ThrottledClient.open(slow_mesh.ports["edge"], bob_token) for _ in range(SOCKETS)]
    edge_pid = slow_mesh.processes["edge"].pid
    await asyncio.sleep(0.5)
    before = peak = rss_bytes(edge_pid)

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss_bytes(edge_pid))
            await asyncio.sleep(0.05)

    async def sends() -> None:
        for start in range(0, MESSAGES, 10):
            await asyncio.gather(
                *(send(http, alice_token, conversation_id, f"{i} {BIG}") for i in range(start, start + 10))
            )

    sampler = asyncio.create_task(sample())
    readers = [asyncio.create_task(c.read_slowly(12_000, 12)) for c in clients]
    await sends()
    await asyncio.gather(*readers)
    sampler.cancel()
    growth = peak - before
    codes = await asyncio.gather(*(c.read_until_close() for c in clients))  # what is left, at full speed
    assert codes == [4008] * SOCKETS, codes
    assert growth < BUDGET, f"edge RSS grew by {growth / 2**20:.1f} MiB"

    for client in clients:  # each resumes from its own last token and has every message
        seqs = await resume_all(slow_mesh.edge_url, bob_token, client, MESSAGES)
        assert sorted(set(seqs)) == list(range(1, MESSAGES + 1))
    await http.aclose()
