"""Graceful drain under load, as a Kubernetes rolling update does it: a second replica of a service
is up and ready (same port: gRPC servers bind with SO_REUSEPORT), then the old one gets SIGTERM while
REST calls through the edge keep coming, and a client listens on a WebSocket.

What this guarantees and asserts, per service:
- no call fails with an error that is not safe to retry, before, during or after the signal: every
  answer is 200, except that a call in flight at the signal may get 499 CANCELLED when the old
  server had received it but not yet dispatched it to a handler (grpc core cancels such calls when
  a server stops; with client-side health checking the clients leave during LAME_DUCK_S first, see
  chatmesh/grpc_server.py). Such a call has not run, so the client's retry (with the same
  client_message_id for a send) completes it: every call ends 200;
- calls after the signal reach the other replica (the old server refuses new streams with GOAWAY,
  which gRPC retries transparently, and the edge's calls wait for a ready connection);
- the old process exits by itself, with status 0, soon after its lame duck: the edges' long-lived
  event streams are ended then (the edge resumes them on the other replica), not waited out for the
  whole drain grace;
- for the message service, nothing is lost or doubled: every send is in the history exactly once,
  with gapless seqs, and reaches the recipient's WebSocket client (which acknowledges what it
  gets and, if its socket closes, reconnects with its last resume token).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from chatmesh.grpc_server import LAME_DUCK_S, STOP_GRACE_S
from chatmesh_tools.embedded import free_port
from chatmesh_tools.launcher import Mesh
from tests.conftest import dump_logs, new_mesh
from tests.helpers import Socket, bearer, direct_conversation, new_user_id, register
from tests.test_k8s_support import private_database

WORKERS = 8
LOAD_BEFORE_S = 1.0
LOAD_AFTER_S = 1.5
ACK_BATCH, ACK_EVERY_S = 50, 0.05
EXIT_MARGIN_S = 6.0  # after the lame duck: in-flight unary calls finish, the process shuts down (loaded CI)


@dataclass
class Result:
    started: float
    ended: float
    status: int
    body: dict[str, object]
    first_status: int
    first_ended: float


@pytest.fixture(scope="module")
def drain_mesh(
    request: pytest.FixtureRequest, mesh_env: dict[str, str], postgres_server: str, workdir: Path
) -> Iterator[Mesh]:
    with private_database(postgres_server) as database_url:
        running = new_mesh(
            {**mesh_env, "CHAT_DATABASE_URL": database_url, "CHAT_REDIS_PREFIX": f"drain-{secrets.token_hex(4)}"},
            workdir / "drain-logs",
        )
        running.start()
        yield running
        running.stop()
        if request.session.testsfailed:
            dump_logs(running.log_dir)


class ResumingClient:
    """A WebSocket client as an app writes one: it acknowledges what it receives and, when the
    socket closes (a drain's 1012, a restart), reconnects with the last resume token it got."""

    def __init__(self, edge_url: str, token: str) -> None:
        self.edge_url, self.token = edge_url, token
        self.resume_token: str | None = None
        self.received: set[str] = set()
        self.closes: list[object] = []
        self.kinds: dict[str, int] = {}
        self.socket: Socket | None = None

    async def connect(self) -> None:
        self.socket = await Socket.open(self.edge_url, self.token, self.resume_token)

    async def run(self) -> None:
        unacked: list[str] = []
        acked_at = time.monotonic()
        while True:
            assert self.socket is not None
            try:
                frame = await self.socket.recv(timeout=120)
                self.kinds[frame["type"]] = self.kinds.get(frame["type"], 0) + 1
                if frame["type"] == "chat:message_received":
                    self.received.add(str(frame["data"]["message_id"]))
                if frame.get("resume_token"):
                    self.resume_token = frame["resume_token"]
                if frame.get("event_id"):
                    unacked.append(frame["event_id"])
                # Acknowledged in batches, as the clients do: the edge limits a socket's frames per second.
                if unacked and (len(unacked) >= ACK_BATCH or time.monotonic() - acked_at >= ACK_EVERY_S):
                    await self.socket.ws.send(json.dumps({"type": "events_ack", "data": {"event_ids": unacked}}))
                    unacked, acked_at = [], time.monotonic()
            except ConnectionClosed as exc:
                self.closes.append(exc.rcvd.code if exc.rcvd else None)
                unacked = []  # the next socket resumes after the last token this one delivered
                await asyncio.sleep(0.1)
                await self.connect()

    async def close(self) -> None:
        if self.socket:
            await self.socket.close()


async def _load(call: Callable[[int], Awaitable[httpx.Response]], stop: asyncio.Event) -> list[Result]:
    results: list[Result] = []
    counter = iter(range(1_000_000))

    async def worker() -> None:
        while not stop.is_set():
            i, started = next(counter), time.monotonic()
            reply = await call(i)
            first_status, first_ended = reply.status_code, time.monotonic()
            for _ in range(3):  # as a client retries a call that did not run
                if reply.status_code != 499:
                    break
                reply = await call(i)
            results.append(
                Result(
                    started,
                    time.monotonic(),
                    reply.status_code,
                    reply.json() if reply.content else {},
                    first_status,
                    first_ended,
                )
            )

    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    return results


async def _roll(mesh: Mesh, name: str, stop_load: asyncio.Event) -> tuple[float, float, int]:
    """Start a second replica, SIGTERM the first under load; returns (signal time, exit time, status)."""
    loop = asyncio.get_running_loop()
    old = mesh.processes[name]
    await asyncio.sleep(LOAD_BEFORE_S)
    # The replacement, on the same port; ready when its own health port says so (the shared port's
    # answer may come from the old replica while the new one is still starting).
    health_port = free_port()
    await loop.run_in_executor(None, mesh.spawn, name, {"CHAT_HEALTH_PORT": str(health_port)})
    await loop.run_in_executor(None, mesh.wait_ready, name, 60, health_port)
    signalled = time.monotonic()
    old.send_signal(signal.SIGTERM)

    async def exit_of_old() -> tuple[int, float]:
        status = await loop.run_in_executor(None, old.wait, LAME_DUCK_S + STOP_GRACE_S + 10)
        return status, time.monotonic()

    exiting = asyncio.create_task(exit_of_old())
    await asyncio.sleep(LOAD_AFTER_S)
    stop_load.set()
    try:
        status, exited = await exiting
    except subprocess.TimeoutExpired:
        old.kill()
        raise AssertionError(f"the old {name} did not exit within {STOP_GRACE_S + 10}s of SIGTERM") from None
    return signalled, exited, status


def _check(results: list[Result], signalled: float, exited: float, status: int) -> None:
    spanning = [r for r in results if r.started < signalled < r.first_ended]
    retried = [r for r in results if r.first_status != 200]
    print(
        f"{len(results)} requests, {len(spanning)} in flight at SIGTERM, {len(retried)} retried, "
        f"old process exited {exited - signalled:.1f}s after it"
    )
    assert spanning, "no request was in flight at the signal"
    failures = [(r.status, r.body) for r in results if r.status != 200]
    assert not failures, f"{len(failures)} of {len(results)} failed: {failures[:5]}"
    stopped = signalled + LAME_DUCK_S  # when the old server stops dispatching (give or take scheduling)
    for r in retried:
        assert r.first_status == 499 and r.started < stopped + 0.5 and r.first_ended > signalled, (
            f"only a call in flight when the old server stops may be cancelled: {r.first_status} from "
            f"{r.started - signalled:+.3f}s to {r.first_ended - signalled:+.3f}s after the signal"
        )
    assert status == 0
    # Long-lived event streams are ended after the lame duck, not waited out for the whole grace.
    assert exited - signalled <= LAME_DUCK_S + EXIT_MARGIN_S


async def test_message_drains_in_flight_sends_and_nothing_is_lost(drain_mesh: Mesh, make_token) -> None:
    alice, bob = new_user_id("alice"), new_user_id("bob")
    alice_token, bob_token = make_token(alice), make_token(bob)
    async with httpx.AsyncClient(base_url=drain_mesh.edge_url, timeout=30) as http:
        await register(http, bob_token)
        conversation_id = await direct_conversation(http, alice_token, bob)
        bob_client = ResumingClient(drain_mesh.edge_url, bob_token)
        await bob_client.connect()
        receiver = asyncio.create_task(bob_client.run())
        try:

            async def send(i: int) -> httpx.Response:
                return await http.post(
                    "/api/messages",
                    headers=bearer(alice_token),
                    json={"conversation_id": conversation_id, "content": f"drain {i}", "client_message_id": f"d{i}"},
                )

            stop = asyncio.Event()
            results, (signalled, exited, status) = await asyncio.gather(
                _load(send, stop), _roll(drain_mesh, "message", stop)
            )
            _check(results, signalled, exited, status)

            accepted = {str(r.body["message"]["message_id"]) for r in results}  # type: ignore[index]
            assert len(accepted) == len(results)
            stored: list[dict] = []  # every page, newest first: a page holds at most 200
            while True:
                params = {"limit": 200, **({"before_seq": stored[0]["seq"]} if stored else {})}
                history = await http.get(f"/api/messages/{conversation_id}", headers=bearer(alice_token), params=params)
                assert history.status_code == 200, history.text
                stored = history.json()["messages"] + stored
                if not history.json().get("has_more"):
                    break
            assert {m["message_id"] for m in stored} == accepted
            assert sorted(int(m["seq"]) for m in stored) == list(range(1, len(accepted) + 1))

            deadline = time.monotonic() + 45
            while not accepted <= bob_client.received and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            missing = accepted - bob_client.received
            assert not missing, (
                f"{len(missing)} of {len(accepted)} never reached bob (seqs "
                f"{sorted(int(m['seq']) for m in stored if m['message_id'] in missing)}); "
                f"socket closes: {bob_client.closes}, frames: {bob_client.kinds}"
            )
        finally:
            receiver.cancel()
            await bob_client.close()


async def test_conversation_drains_in_flight_calls(drain_mesh: Mesh, make_token) -> None:
    alice, bob = new_user_id("alice"), new_user_id("bob")
    alice_token = make_token(alice)
    async with httpx.AsyncClient(base_url=drain_mesh.edge_url, timeout=30) as http:
        await register(http, make_token(bob))
        conversation_id = await direct_conversation(http, alice_token, bob)

        async def read(i: int) -> httpx.Response:
            return await http.get(f"/api/conversations/{conversation_id}", headers=bearer(alice_token))

        stop = asyncio.Event()
        results, (signalled, exited, status) = await asyncio.gather(
            _load(read, stop), _roll(drain_mesh, "conversation", stop)
        )
        _check(results, signalled, exited, status)


async def test_presence_drains_in_flight_calls(drain_mesh: Mesh, make_token) -> None:
    token = make_token(new_user_id("carol"))
    async with httpx.AsyncClient(base_url=drain_mesh.edge_url, timeout=30) as http:

        async def set_presence(i: int) -> httpx.Response:
            return await http.put("/api/presence", headers=bearer(token), json={})

        stop = asyncio.Event()
        results, (signalled, exited, status) = await asyncio.gather(
            _load(set_presence, stop), _roll(drain_mesh, "presence", stop)
        )
        _check(results, signalled, exited, status)
