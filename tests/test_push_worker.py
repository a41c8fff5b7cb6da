"""The reference push worker (`chatmesh push-worker --webhook URL`), as a real process against a real
mesh and a real local webhook that checks each POST's signature: delivery, retries then the dead-letter
stream, a hanging webhook that holds up nobody else, and a worker killed mid-stream that loses nothing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.responses import JSONResponse, Response

from chatmesh.auth import sign
from chatmesh.config import Settings
from chatmesh.redis_conn import Keys, open_redis
from chatmesh_tools import deadletter
from chatmesh_tools.launcher import Mesh
from tests.helpers import send
from tests.notify_support import WEBHOOK_SECRET, Receiver, new_group, notify_mesh  # noqa: F401
from tests.test_message_support import api, group, new_user_id

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def workers(notify_mesh: Mesh, keyring: Path, tmp_path: Path) -> Iterator[Any]:  # noqa: F811
    """Starts push-worker processes; every one still running is killed after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(webhook: str, group_name: str, consumer: str, *extra: str) -> subprocess.Popen[bytes]:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CHAT_")},
            "CHAT_DATA_DIR": str(tmp_path / "no-mesh"),
            "CHAT_TIME_SCALE": notify_mesh.env["CHAT_TIME_SCALE"],
            "CHAT_MESSAGE_TARGET": f"127.0.0.1:{notify_mesh.ports['message']}",
            "CHAT_SERVICE_KEY_FILE": str(keyring / "push.key"),
            "CHAT_PUSH_WEBHOOK_SECRET": WEBHOOK_SECRET,
        }
        log = open(tmp_path / f"worker-{consumer}.log", "ab")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chatmesh_tools.cli",
                "push-worker",
                "--webhook",
                webhook,
                "--group",
                group_name,
                "--consumer",
                consumer,
                *extra,
            ],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


@pytest.fixture
async def edge(notify_mesh: Mesh) -> Any:  # noqa: F811
    async with httpx.AsyncClient(base_url=notify_mesh.edge_url, timeout=10) as client:
        yield client


def token(mesh: Mesh, user_id: str) -> str:
    return sign(Settings.from_env(mesh.env), user_id)


async def pending(mesh: Mesh, group_name: str) -> int:
    client = open_redis(mesh.env["CHAT_REDIS_URL"])
    try:
        return int((await client.xpending(f"{mesh.env['CHAT_REDIS_PREFIX']}:notifications", group_name))["pending"])
    finally:
        await client.aclose()


async def test_each_notification_is_posted_signed_and_acknowledged(
    notify_mesh: Mesh, edge: httpx.AsyncClient, workers: Any
) -> None:  # noqa: F811
    alice, bob = new_user_id("alice"), new_user_id("bob")
    cid = await group(notify_mesh.env["CHAT_DATABASE_URL"], {alice: "admin", bob: "member"})
    await api(edge, token(notify_mesh, bob), "POST", "/api/users/me/devices", {"platform": "fcm", "push_token": "b1"})
    name = new_group(notify_mesh)
    async with Receiver() as receiver:
        workers(receiver.url, name, "w1")
        sent = await send(edge, token(notify_mesh, alice), cid, "are you there?")
        await receiver.wait(lambda: bool(receiver.bodies(bob)))
        [post] = [p for p in receiver.posts if p["body"]["user_id"] == bob]
        assert post["signed"] and post["attempt"] == 1
        body = post["body"]
        assert (body["message_id"], body["sender_id"], body["kind"], body["message_count"]) == (
            sent["message_id"],
            alice,
            "NOTIFICATION_KIND_MESSAGE",
            1,
        )
        assert [(d["platform"], d["push_token"]) for d in body["devices"]] == [("DEVICE_PLATFORM_FCM", "b1")]
        assert "text" not in body or body["text"] == ""
        async with asyncio.timeout(10):
            while await pending(notify_mesh, name):
                await asyncio.sleep(0.05)


async def test_a_failing_webhook_is_retried_then_dead_lettered_and_holds_up_nobody(
    notify_mesh: Mesh, edge: httpx.AsyncClient, workers: Any
) -> None:  # noqa: F811
    alice, bob, carol, dave = (new_user_id(n) for n in ("alice", "bob", "carol", "dave"))
    cid = await group(notify_mesh.env["CHAT_DATABASE_URL"], {alice: "admin", bob: "member", carol: "member"})
    later = await group(notify_mesh.env["CHAT_DATABASE_URL"], {alice: "admin", dave: "member"})

    async def answer(body: dict[str, Any]) -> Response:
        if body["user_id"] == bob:
            return JSONResponse({"error": "boom"}, status_code=500)
        if body["user_id"] == carol:
            await asyncio.sleep(3)  # past the worker's 0.5 s timeout, every time
        return JSONResponse({"ok": True})

    name = new_group(notify_mesh)
    async with Receiver(answer) as receiver:
        workers(receiver.url, name, "w1", "--timeout", "0.5")
        await send(edge, token(notify_mesh, alice), cid, "first")
        await receiver.wait(lambda: bool(receiver.bodies(carol)))
        await send(edge, token(notify_mesh, alice), later, "meanwhile")  # while carol's webhook hangs
        await receiver.wait(
            lambda: len(receiver.bodies(bob)) == 4 and len(receiver.bodies(carol)) == 4 and bool(receiver.bodies(dave))
        )
        attempts = {user: [p for p in receiver.posts if p["body"]["user_id"] == user] for user in (bob, carol)}
        for posts in attempts.values():
            assert [p["attempt"] for p in posts] == [1, 2, 3, 4] and all(p["signed"] for p in posts)
            gaps = [b["at"] - a["at"] for a, b in zip(posts, posts[1:], strict=False)]
            assert gaps[2] > gaps[0]  # 2 s, 4 s, 8 s scaled: backing off
        dave_at = next(p["at"] for p in receiver.posts if p["body"]["user_id"] == dave)
        assert dave_at < attempts[carol][-1]["at"]  # served while carol's retries ran
        keys = Keys(notify_mesh.env["CHAT_REDIS_PREFIX"])
        async with asyncio.timeout(10):
            while True:
                dead = {e: r for _, e, r in await _dead(notify_mesh, keys)}
                ids = {p["body"]["notification_id"]: p["body"]["user_id"] for p in receiver.posts}
                reasons = {ids[e]: r for e, r in dead.items() if e in ids}
                if bob in reasons and carol in reasons:
                    break
                await asyncio.sleep(0.1)
        assert reasons[bob] == "HTTP 500 after 3 retries"
        assert reasons[carol] == "timed out after 0.5 s after 3 retries"
        assert dave not in reasons
        async with asyncio.timeout(10):
            while await pending(notify_mesh, name):
                await asyncio.sleep(0.05)


async def _dead(mesh: Mesh, keys: Keys) -> list[tuple[str, str, str]]:
    client = open_redis(mesh.env["CHAT_REDIS_URL"])
    try:
        return await deadletter.list_entries(client, keys, deadletter.NOTIFICATIONS)
    finally:
        await client.aclose()


async def test_a_worker_killed_mid_stream_loses_no_notification(
    notify_mesh: Mesh, edge: httpx.AsyncClient, workers: Any
) -> None:  # noqa: F811
    alice = new_user_id("alice")
    users = [new_user_id(n) for n in ("bob", "carol", "dave", "erin")]
    cid = await group(notify_mesh.env["CHAT_DATABASE_URL"], {alice: "admin", **{u: "member" for u in users}})
    answering = asyncio.Event()
    answered: set[str] = set()

    async def answer(body: dict[str, Any]) -> Response:
        await answering.wait()  # the first worker's POSTs are never answered: it dies holding them
        answered.add(body["user_id"])
        return JSONResponse({"ok": True})

    name = new_group(notify_mesh)
    async with Receiver(answer) as receiver:
        first = workers(receiver.url, name, "w1", "--concurrency", "2")
        await send(edge, token(notify_mesh, alice), cid, "all hands at 3")
        await receiver.wait(lambda: len(receiver.posts) == 2)  # received two, acknowledged none
        first.kill()
        first.wait()
        assert await pending(notify_mesh, name) >= 2
        answering.set()
        workers(receiver.url, name, "w2")  # another worker of the group, after the claim timeout (2 s scaled)
        await receiver.wait(lambda: answered >= set(users), timeout=20)
        async with asyncio.timeout(10):
            while await pending(notify_mesh, name):
                await asyncio.sleep(0.05)
    assert {p["body"]["user_id"] for p in receiver.posts} == set(users)
    assert [
        e
        for e in await _dead(notify_mesh, Keys(notify_mesh.env["CHAT_REDIS_PREFIX"]))
        if e[1] in {p["body"]["notification_id"] for p in receiver.posts}
    ] == []


def test_a_worker_without_its_secret_or_with_a_bad_webhook_does_not_start(tmp_path: Path, keyring: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CHAT_")},
        "CHAT_DATA_DIR": str(tmp_path),
        "CHAT_SERVICE_KEY_FILE": str(keyring / "push.key"),
    }
    command = [sys.executable, "-m", "chatmesh_tools.cli", "push-worker", "--webhook"]
    no_secret = subprocess.run(
        [*command, "http://127.0.0.1:9/hook"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert no_secret.returncode == 2 and "CHAT_PUSH_WEBHOOK_SECRET is not set" in no_secret.stderr
    bad_url = subprocess.run(
        [*command, "ftp://example/hook"],
        env={**env, "CHAT_PUSH_WEBHOOK_SECRET": "s"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad_url.returncode == 2 and "is not an http(s) URL" in bad_url.stderr
