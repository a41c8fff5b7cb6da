"""The edge and the clients through outages, on private meshes of real processes: a stalled Redis (a
SIGSTOPped redis-server that accepts connections and never answers) must not hold up REST or a
socket's `ready`; an upstream that is gone answers 503 with Retry-After and retryable error frames
within seconds, instead of hanging to a long deadline; idempotent work (the Python client's sends,
the edge's delivered positions) is retried through a short outage and lands once."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import psycopg
import pytest

from chatmesh_client import RETRYABLE, Client
from chatmesh_tools.embedded import EmbeddedRedis, free_port
from chatmesh_tools.launcher import Mesh
from services.edge.calls import unavailable
from services.edge.errors import RETRYABLE_CODES, error_frame, error_response, from_rpc_error, rpc_error_frame
from tests.helpers import Socket, bearer, direct_conversation, new_user_id, register

WEB = Path(__file__).parent.parent / "clients" / "web"


async def chat(http: httpx.AsyncClient, make_token: Callable[..., str]) -> tuple[str, str, str, str]:
    """(alice token, bob id, bob token, conversation id), registered while everything is up."""
    alice, bob = new_user_id("alice"), new_user_id("bob")
    await register(http, make_token(bob))
    conversation_id = await direct_conversation(http, make_token(alice), bob)
    return make_token(alice), bob, make_token(bob), conversation_id


async def timed(call: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = await call
    return result, time.monotonic() - started


def edge_log_lines(mesh: Mesh, *needles: str) -> list[dict[str, Any]]:
    lines = (mesh.log_dir / "edge.log").read_text(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{") and all(n in line for n in needles)]


# --- the error model, on its own -------------------------------------------------------------------


def test_upstream_outages_are_503_and_retryable_internal_is_neither() -> None:
    assert from_rpc_error(unavailable("gone"))[:2] == (503, "UNAVAILABLE")
    deadline = grpc.aio.AioRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, grpc.aio.Metadata(), grpc.aio.Metadata())
    internal = grpc.aio.AioRpcError(grpc.StatusCode.INTERNAL, grpc.aio.Metadata(), grpc.aio.Metadata())
    assert from_rpc_error(deadline)[:2] == (503, "DEADLINE_EXCEEDED")
    assert from_rpc_error(internal)[:2] == (500, "INTERNAL")
    assert rpc_error_frame("f1", deadline)["data"]["retryable"] is True
    assert "retryable" not in rpc_error_frame("f1", internal)["data"]
    assert error_frame(None, "RATE_LIMITED", "slow down", retry_after=3)["data"] == {
        "code": "RATE_LIMITED",
        "message": "slow down",
        "retry_after": 3,
        "retryable": True,
    }
    assert error_response(503, "UNAVAILABLE", "away").headers["retry-after"] == "1"
    assert "retry-after" not in error_response(500, "INTERNAL", "bug").headers


def test_python_and_browser_clients_retry_the_same_codes() -> None:
    """One list: the server's retryable codes plus the clients' own CONNECTION_LOST and TIMEOUT."""
    source = (WEB / "chat-wire.js").read_text()
    listed = re.search(r"export const RETRYABLE = new Set\(\[(.*?)\]\)", source, re.DOTALL)
    assert listed is not None
    assert set(re.findall(r'"([A-Z_]+)"', listed.group(1))) == set(RETRYABLE)
    assert "INTERNAL" not in RETRYABLE and {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RATE_LIMITED"} <= RETRYABLE
    assert RETRYABLE == RETRYABLE_CODES | {"CONNECTION_LOST", "TIMEOUT"}  # the edge's list is the documented one


# --- Redis stalled ---------------------------------------------------------------------------------


async def test_a_stalled_redis_holds_up_neither_rest_nor_ready(
    isolated_env: Callable[..., dict[str, str]],
    tmp_path: Path,
    private_meshes: Callable[..., Mesh],
    make_token: Callable[..., str],
) -> None:
    redis_server = EmbeddedRedis(tmp_path / "redis", free_port())
    url = redis_server.start()
    assert redis_server._process is not None
    pid = redis_server._process.pid
    try:
        mesh = private_meshes(isolated_env(CHAT_REDIS_URL=url))
        async with httpx.AsyncClient(base_url=mesh.edge_url, timeout=20) as http:
            alice_token, _, bob_token, conversation_id = await chat(http, make_token)
            os.kill(pid, signal.SIGSTOP)  # accepts connections (the kernel does), answers nothing
            try:
                for _ in range(3):  # every request, not only the first, is answered promptly
                    listed, elapsed = await timed(http.get("/api/conversations", headers=bearer(alice_token)))
                    assert listed.status_code == 200 and elapsed < 2, (listed.status_code, elapsed)
                    sent, elapsed = await timed(
                        http.post(
                            "/api/messages",
                            headers=bearer(alice_token),
                            json={"conversation_id": conversation_id, "content": "while Redis is stalled"},
                        )
                    )
                    assert sent.status_code == 200 and elapsed < 2, (sent.status_code, elapsed)
                bob, elapsed = await timed(Socket.open(mesh.edge_url, bob_token))  # asserts `ready`
                assert elapsed < 2, elapsed
                ready, elapsed = await timed(http.get("/readyz"))
                assert elapsed < 2 and ready.json()["ready"] is True and ready.json()["redis"] is False, ready.json()
            finally:
                os.kill(pid, signal.SIGCONT)

            async with asyncio.timeout(10):  # back: the edge sees Redis again, and delivery works
                while (await http.get("/readyz")).json()["redis"] is not True:
                    await asyncio.sleep(0.1)
            await http.post(
                "/api/messages",
                headers=bearer(alice_token),
                json={"conversation_id": conversation_id, "content": "after"},
            )
            frame = await bob.next_of("chat:message_received", timeout=15)
            while frame["data"]["content"] != "after":
                frame = await bob.next_of("chat:message_received", timeout=15)
        # One warning for the outage and one line for the recovery, not one per request.
        assert len(edge_log_lines(mesh, "edge limits: Redis", "retrying with backoff")) == 1
        assert len(edge_log_lines(mesh, "edge limits: Redis", "recovered after")) == 1
    finally:
        os.kill(pid, signal.SIGCONT)
        redis_server.stop()


# --- an upstream gone ------------------------------------------------------------------------------


def delivered_seq(database_url: str, conversation_id: str, user_id: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT delivered_seq FROM message.positions WHERE conversation_id = %s AND user_id = %s",
            (conversation_id, user_id),
        ).fetchone()
    return 0 if row is None else int(row[0])


async def test_a_killed_message_service_is_503_and_retryable_and_delivery_is_recorded_later(
    isolated_env: Callable[..., dict[str, str]], private_meshes: Callable[..., Mesh], make_token: Callable[..., str]
) -> None:
    mesh = private_meshes(isolated_env())
    async with httpx.AsyncClient(base_url=mesh.edge_url, timeout=20) as http:
        alice_token, bob_id, bob_token, conversation_id = await chat(http, make_token)
        first = await http.post(
            "/api/messages", headers=bearer(alice_token), json={"conversation_id": conversation_id, "content": "before"}
        )
        alice, bob = await Socket.open(mesh.edge_url, alice_token), await Socket.open(mesh.edge_url, bob_token)
        received = await bob.next_of("chat:message_received")

        mesh.stop("message", sig=signal.SIGKILL)
        started = time.monotonic()
        rest, frame, ack = await asyncio.gather(
            http.post(
                "/api/messages",
                headers=bearer(alice_token),
                json={"conversation_id": conversation_id, "content": "during", "client_message_id": "c1"},
            ),
            alice.request("chat:message_send", {"conversation_id": conversation_id, "content": "during"}),
            bob.request("chat:message_delivered", {"message_id": received["data"]["message_id"]}),
        )
        assert time.monotonic() - started < 4  # not the old 10 s wait for a deadline
        assert rest.status_code == 503 and rest.headers["retry-after"] == "1", (rest.status_code, rest.text)
        assert rest.json()["error"]["code"] == "UNAVAILABLE"
        assert frame["type"] == "error" and frame["data"]["code"] == "UNAVAILABLE", frame
        assert frame["data"]["retryable"] is True
        assert ack["type"] == "ack"  # the client is done; the edge owes the message service the update
        assert (await http.get("/api/conversations", headers=bearer(alice_token))).status_code == 200  # partial

        await asyncio.to_thread(mesh.start, "message")
        database_url = mesh.env["CHAT_DATABASE_URL"]
        async with asyncio.timeout(10):  # the edge retried the delivered position: not dropped
            while delivered_seq(database_url, conversation_id, bob_id) < int(first.json()["message"]["seq"]):
                await asyncio.sleep(0.1)


# --- the Python client -----------------------------------------------------------------------------


async def test_client_sends_survive_rate_limits_and_a_short_message_outage(
    isolated_env: Callable[..., dict[str, str]],
    private_meshes: Callable[..., Mesh],
    make_token: Callable[..., str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="chatmesh_client")
    mesh = private_meshes(isolated_env(CHAT_RATE_MESSAGES="3/1"))
    async with httpx.AsyncClient(base_url=mesh.edge_url, timeout=20) as http:
        alice_token, _, _, conversation_id = await chat(http, make_token)
        client = Client(mesh.edge_url, backoff_initial=0.1, backoff_max=0.5)
        try:
            await client.connect(alice_token)
            # Five sends against three a second: the last ones wait for the Retry-After and go through.
            burst = await asyncio.gather(*(client.send(conversation_id, f"burst{i}") for i in range(5)))
            assert len({m.message_id for m in burst}) == 5
            assert any("RATE_LIMITED" in r.getMessage() for r in caplog.records)

            mesh.stop("message", sig=signal.SIGKILL)
            pending = client.send_nowait(conversation_id, "through the outage")
            async with asyncio.timeout(8):  # the edge said UNAVAILABLE and the client is retrying
                while not any("UNAVAILABLE" in r.getMessage() and "retrying" in r.getMessage() for r in caplog.records):
                    await asyncio.sleep(0.05)
            await asyncio.to_thread(mesh.start, "message")
            stored = await asyncio.wait_for(pending.task, 20)
        finally:
            await client.close()
        assert stored.client_message_id == pending.message.client_message_id and stored.seq == 6
        history = (await http.get(f"/api/messages/{conversation_id}", headers=bearer(alice_token))).json()
        assert [m["content"] for m in history["messages"]].count("through the outage") == 1  # stored once
