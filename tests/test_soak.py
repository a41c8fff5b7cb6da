"""Soak: steady traffic for ten minutes (CHAT_SOAK_SECONDS) while a fan-out worker (a message service
replica) and an edge replica are killed at random and restarted; at the end every acknowledged message
is present, in order, once, at every recipient.

Slow: not in the default run; `./scripts/test.sh --run-slow -k soak`.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from chatmesh_tools.embedded import free_port
from chatmesh_tools.launcher import Mesh
from tests.helpers import bearer, direct_conversation, new_user_id, register

REPLICAS = ("conversation", "message", "message-2", "presence", "edge", "edge-2")
RATE_PER_S = 20
DURATION_S = float(os.environ.get("CHAT_SOAK_SECONDS", "600"))


class Receiver:
    """A client that stays connected come what may: reconnects to either edge with its last resume
    token, acknowledges what it receives, and records each message once, in arrival order."""

    def __init__(self, mesh: Mesh, token: str) -> None:
        self._mesh = mesh
        self._token = token
        self._resume = ""
        self.seen: dict[str, list[int]] = {}  # conversation -> seqs in first-arrival order
        self._event_ids: set[str] = set()
        self.resyncs = 0

    async def run(self, stop: asyncio.Event) -> None:
        edges = ["edge", "edge-2"]
        while not stop.is_set():
            edge = random.choice(edges)
            try:
                async with connect(f"ws://127.0.0.1:{self._mesh.ports[edge]}/ws", open_timeout=5) as ws:
                    await ws.send(
                        json.dumps({"type": "auth", "data": {"token": self._token, "resume_token": self._resume}})
                    )
                    async for raw in ws:
                        self._on_frame(json.loads(raw), ws)
                        if stop.is_set():
                            return
            except (OSError, WebSocketException, TimeoutError):
                pass
            await asyncio.sleep(random.uniform(0.05, 0.3))  # back off with jitter

    def _on_frame(self, frame: dict, ws) -> None:  # type: ignore[no-untyped-def]
        if frame["type"] == "resync_required":
            self.resyncs += 1
        if frame.get("resume_token"):
            self._resume = frame["resume_token"]
        if frame["type"] != "chat:message_received" or frame["event_id"] in self._event_ids:
            return
        self._event_ids.add(frame["event_id"])
        data = frame["data"]
        self.seen.setdefault(data["conversation_id"], []).append(int(data["seq"]))
        asyncio.ensure_future(
            ws.send(json.dumps({"type": "chat:message_delivered", "data": {"message_id": data["message_id"]}}))
        )


@pytest.mark.slow
@pytest.mark.timeout(DURATION_S + 300)
async def test_soak_with_random_kills(isolated_env, tmp_path: Path, make_token) -> None:  # type: ignore[no-untyped-def]
    duration = DURATION_S
    # One sender at a steady 20/s for ten minutes: above the per-user abuse limits on purpose.
    mesh = Mesh(
        env=isolated_env(CHAT_RATE_MESSAGES="0", CHAT_RATE_REST="0"),
        ports={name: free_port() for name in REPLICAS},
        log_dir=tmp_path / "logs",
    )
    mesh.start()
    try:
        async with httpx.AsyncClient(base_url=mesh.url_of("edge"), timeout=20) as http:
            alice = new_user_id("alice")
            recipients = [new_user_id(name) for name in ("bob", "carol")]
            conversations = {}
            for user in recipients:
                await register(http, make_token(user))
                conversations[user] = await direct_conversation(http, make_token(alice), user)
            receivers = {user: Receiver(mesh, make_token(user)) for user in recipients}
            stop = asyncio.Event()
            tasks = [asyncio.create_task(r.run(stop)) for r in receivers.values()]
            acked: dict[str, list[int]] = {c: [] for c in conversations.values()}

            async def send_one(n: int, conversation_id: str) -> None:
                for _ in range(100):  # a client retries with the same id (on either edge) until acknowledged
                    url = random.choice([mesh.url_of("edge"), mesh.url_of("edge-2")])
                    try:
                        reply = await http.post(
                            f"{url}/api/messages",
                            headers=bearer(make_token(alice)),
                            json={
                                "conversation_id": conversation_id,
                                "content": f"m{n}",
                                "client_message_id": f"soak-{n}",
                            },
                        )
                        if reply.status_code == 200:
                            acked[conversation_id].append(int(reply.json()["message"]["seq"]))
                            return
                        assert reply.status_code >= 500, reply.text
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.2)
                raise AssertionError(f"message {n} was never acknowledged")

            calm = asyncio.Event()

            async def chaos() -> None:
                while not calm.is_set():
                    try:
                        await asyncio.wait_for(calm.wait(), random.uniform(10, 20))
                        return
                    except TimeoutError:
                        pass
                    victim = random.choice(["message-2", "edge-2"])
                    mesh.stop(victim, sig=signal.SIGKILL)
                    await asyncio.sleep(2)
                    await asyncio.to_thread(mesh.start, victim)

            chaos_task = asyncio.create_task(chaos())
            started, n, sends = time.monotonic(), 0, []
            while time.monotonic() - started < duration:
                for conversation_id in conversations.values():
                    sends.append(asyncio.create_task(send_one(n, conversation_id)))
                    n += 1
                await asyncio.sleep(len(conversations) / RATE_PER_S)
            await asyncio.gather(*sends)
            calm.set()
            await chaos_task  # a restart in progress finishes first

            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and any(
                len(receivers[u].seen.get(conversations[u], [])) < len(acked[conversations[u]]) for u in recipients
            ):
                await asyncio.sleep(0.5)
            stop.set()
            for task in tasks:
                task.cancel()
            for user in recipients:
                got = receivers[user].seen.get(conversations[user], [])
                expected = sorted(acked[conversations[user]])
                assert got == expected, f"{user}: {len(got)} received of {len(expected)} acknowledged"
                assert receivers[user].resyncs == 0
    finally:
        mesh.stop(sig=signal.SIGKILL, timeout_s=5)
