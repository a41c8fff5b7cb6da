"""What the notification tests share (no tests here): a mesh whose notifier waits 1 s (scaled), its
push-worker identity, a gRPC consumer of StreamNotifications, and a real webhook receiver (Starlette
on uvicorn, in the test's loop) that checks every POST's HMAC signature itself."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chatmesh.auth import ServiceCredentials
from chatmesh.config import Settings
from chatmesh.gen.chat.v1 import notification_pb2 as pb
from chatmesh.gen.chat.v1 import notification_pb2_grpc
from chatmesh.service_keys import keyring_env
from chatmesh_tools.embedded import free_port
from chatmesh_tools.launcher import Mesh

# Scaled by the tests' CHAT_TIME_SCALE (0.05): devices have 1 s to acknowledge, one notification per
# user and conversation per 3 s, and a worker's unacknowledged notifications go to another after 2 s.
NOTIFY_ENV = {"CHAT_NOTIFY_DELAY_S": "20", "CHAT_NOTIFY_COLLAPSE_S": "60", "CHAT_NOTIFY_CLAIM_S": "40"}
WEBHOOK_SECRET = secrets.token_hex(16)


@pytest.fixture(scope="session")
def notify_mesh(mesh_env: dict[str, str], make_database: Callable[[], str], workdir: Path) -> Iterator[Mesh]:
    """A mesh of its own (database and Redis prefix), so its notifications are only these tests'."""
    env = {
        **mesh_env,
        "CHAT_DATABASE_URL": make_database(),
        "CHAT_REDIS_PREFIX": f"test-{secrets.token_hex(6)}",
        **NOTIFY_ENV,
    }
    mesh = Mesh(
        env=env,
        ports={name: free_port() for name in ("conversation", "message", "presence", "edge")},
        log_dir=workdir / "notify-logs",
    )
    mesh.start()
    yield mesh
    mesh.stop()
    client = redis.Redis.from_url(env["CHAT_REDIS_URL"])
    for key in client.scan_iter(match=f"{env['CHAT_REDIS_PREFIX']}:*", count=1000):
        client.delete(key)
    client.close()


def push_metadata(mesh: Mesh, keyring: Path) -> tuple[tuple[str, str], ...]:
    settings = Settings.from_env({**mesh.env, **keyring_env(keyring, "push", verifies=False)})
    return ServiceCredentials(settings, "push").metadata()


def new_group(mesh: Mesh) -> str:
    """A consumer group that starts at the stream's end: it gets this test's notifications, not the
    earlier tests' (a group the service creates starts at the beginning)."""
    name = f"g-{secrets.token_hex(4)}"
    client = redis.Redis.from_url(mesh.env["CHAT_REDIS_URL"])
    client.xgroup_create(f"{mesh.env['CHAT_REDIS_PREFIX']}:notifications", name, id="$", mkstream=True)
    client.close()
    return name


class Consumer:
    """A push worker's view of StreamNotifications, in the test: what arrives, by user."""

    def __init__(
        self,
        mesh: Mesh,
        metadata: tuple[tuple[str, str], ...],
        group: str,
        consumer: str = "",
        *,
        ack: bool = True,
        max_in_flight: int = 0,
    ) -> None:
        self._channel = grpc.aio.insecure_channel(f"127.0.0.1:{mesh.ports['message']}")
        self.stub = notification_pb2_grpc.NotificationServiceStub(self._channel)
        self.metadata = metadata
        self.group = group
        self._request = pb.StreamNotificationsRequest(group=group, consumer=consumer, max_in_flight=max_in_flight)
        self._ack = ack
        self.received: list[pb.Notification] = []
        self._arrived = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for response in self.stub.StreamNotifications(self._request, metadata=self.metadata):
            for note in response.notifications:
                self.received.append(note)
                if self._ack:
                    await self.stub.AckNotifications(
                        pb.AckNotificationsRequest(group=self.group, notification_ids=[note.notification_id]),
                        metadata=self.metadata,
                        timeout=5,
                    )
            self._arrived.set()

    def of(self, user_id: str) -> list[pb.Notification]:
        return [n for n in self.received if n.user_id == user_id]

    async def wait_for(self, user_id: str, count: int = 1, timeout: float = 15) -> list[pb.Notification]:
        async with asyncio.timeout(timeout):
            while True:
                self._arrived.clear()
                if len(self.of(user_id)) >= count:
                    return self.of(user_id)
                if self._task.done():
                    self._task.result()
                await self._arrived.wait()

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._channel.close()


class Receiver:
    """A webhook endpoint on 127.0.0.1: each POST's signature is checked here (HMAC-SHA256 over
    "<t>." + body, as documented), then `answer` decides the reply (it may also wait)."""

    def __init__(self, answer: Callable[[dict[str, Any]], Awaitable[Response]] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.answer = answer
        self.posts: list[dict[str, Any]] = []  # every POST: body, attempt, signature verdict
        self.arrived = asyncio.Event()
        app = Starlette(routes=[Route("/hook", self._hook, methods=["POST"])])
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off", ws="none")
        )
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Receiver:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._server.force_exit = True  # handlers still held open by a test's answer
        assert self._task is not None
        await asyncio.wait_for(self._task, 10)

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        header = request.headers.get("x-chatmesh-signature", "")
        parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
        expected = hmac.new(
            WEBHOOK_SECRET.encode(), f"{parts.get('t', '')}.".encode() + body, hashlib.sha256
        ).hexdigest()
        signed = hmac.compare_digest(expected, parts.get("v1", "")) and abs(time.time() - int(parts["t"])) < 60
        data = json.loads(body)
        self.posts.append(
            {
                "body": data,
                "signed": signed,
                "attempt": int(request.headers["x-chatmesh-attempt"]),
                "at": time.monotonic(),
            }
        )
        self.arrived.set()
        if not signed:
            return JSONResponse({"error": "bad signature"}, status_code=401)
        return await self.answer(data) if self.answer else JSONResponse({"ok": True})

    def bodies(self, user_id: str) -> list[dict[str, Any]]:
        return [p["body"] for p in self.posts if p["body"]["user_id"] == user_id]

    async def wait(self, done: Callable[[], bool], timeout: float = 20) -> None:
        async with asyncio.timeout(timeout):
            while True:
                self.arrived.clear()
                if done():
                    return
                await self.arrived.wait()
