"""Readiness follows the stores: a service whose PostgreSQL or Redis goes away turns its health
NOT_SERVING (Kubernetes' readiness probe takes it out of rotation) and SERVING again when the store
returns, while the liveness name stays SERVING (the pod is not restarted) and the process lives on."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chatmesh import readiness
from chatmesh.grpc_server import LIVENESS_SERVICE
from chatmesh_tools.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from chatmesh_tools.launcher import Mesh
from tests.conftest import dump_logs, new_mesh
from tests.test_k8s_support import private_database

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _status(mesh: Mesh, name: str, service: str = "") -> int:
    with grpc.insecure_channel(f"127.0.0.1:{mesh.ports[name]}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        return int(reply.status)


def _wait_for(mesh: Mesh, names: list[str], status: int, timeout_s: float = 15) -> float:
    """Seconds until every named service's overall health is `status`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if all(_status(mesh, n) == status for n in names):
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(
        f"{names} did not reach {health_pb2.HealthCheckResponse.ServingStatus.Name(status)} "
        f"within {timeout_s}s: {[_status(mesh, n) for n in names]}"
    )


def _private(mesh_env: dict[str, str], log_dir: Path, **overrides: str) -> Mesh:
    return new_mesh({**mesh_env, "CHAT_REDIS_PREFIX": f"ready-{secrets.token_hex(4)}", **overrides}, log_dir)


# --- the watcher on its own -------------------------------------------------------------------------


async def test_readiness_flips_with_its_checks_and_reports_each_change() -> None:
    healthy = {"store": True}

    async def check() -> None:
        if not healthy["store"]:
            raise ConnectionError("refused")

    changes: list[bool] = []

    async def on_change(ready: bool) -> None:
        changes.append(ready)

    watcher = readiness.Readiness({"store": check}, interval_s=0.01, timeout_s=0.5)
    task = asyncio.create_task(watcher.watch(on_change))
    try:
        await asyncio.sleep(0.05)
        healthy["store"] = False
        await asyncio.sleep(0.05)
        assert watcher.ready is False and "refused" in watcher.failing["store"]
        healthy["store"] = True
        await asyncio.sleep(0.05)
        assert watcher.ready is True
    finally:
        task.cancel()
    assert changes == [False, True]  # once per flip, not once per check


async def test_a_check_that_hangs_counts_as_down() -> None:
    async def hang() -> None:
        await asyncio.sleep(10)

    watcher = readiness.Readiness({"slow": hang}, timeout_s=0.05)
    assert await watcher.check_once() is False and watcher.failing["slow"] == "TimeoutError"


async def test_postgres_check_fails_on_a_server_that_is_not_there() -> None:
    check = readiness.postgres_check(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")
    with pytest.raises(psycopg.OperationalError):
        await check()


# --- real services, real stores ---------------------------------------------------------------------


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis", free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_db(postgres_server: str) -> Iterator[str]:
    with private_database(postgres_server) as url:
        yield url


def test_losing_redis_makes_presence_not_ready_until_it_returns(
    mesh_env: dict[str, str], private_db: str, private_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    mesh = _private(mesh_env, tmp_path / "logs", CHAT_REDIS_URL=private_redis.url, CHAT_DATABASE_URL=private_db)
    try:
        mesh.start("conversation", "message", "presence", "edge")
        _wait_for(mesh, ["message", "presence"], SERVING)

        private_redis.stop()
        _wait_for(mesh, ["presence"], NOT_SERVING)
        assert _status(mesh, "presence", LIVENESS_SERVICE) == SERVING  # not restarted by its liveness probe
        # The edge stays in rotation (every edge would fail the same check) and says what is down.
        ready = httpx.get(f"{mesh.edge_url}/readyz", timeout=10)
        assert ready.status_code == 200
        assert ready.json()["upstreams"] == {"conversation": True, "message": True, "presence": False}
        # conversation and message only feed Redis from their outboxes, which catch up later: sends must
        # keep succeeding without Redis, so they stay in rotation
        assert _status(mesh, "conversation") == SERVING
        assert _status(mesh, "message") == SERVING

        private_redis.start()
        _wait_for(mesh, ["message", "presence"], SERVING)
        assert all(p.poll() is None for p in mesh.processes.values()), "a service died with its store"
    except BaseException:
        dump_logs(mesh.log_dir)
        raise
    finally:
        mesh.stop()


def test_losing_postgresql_makes_conversation_and_message_not_ready_until_it_returns(
    mesh_env: dict[str, str], tmp_path: Path
) -> None:
    postgres = EmbeddedPostgres(tmp_path / "postgres", free_port())
    url = postgres.start()
    mesh = _private(mesh_env, tmp_path / "logs", CHAT_DATABASE_URL=url)
    try:
        mesh.start("conversation", "message", "presence")
        _wait_for(mesh, ["conversation", "message"], SERVING)

        postgres.stop()
        _wait_for(mesh, ["conversation", "message"], NOT_SERVING)
        assert _status(mesh, "conversation", LIVENESS_SERVICE) == SERVING
        assert _status(mesh, "presence") == SERVING  # presence keeps nothing in PostgreSQL

        postgres.start()
        _wait_for(mesh, ["conversation", "message"], SERVING, timeout_s=30)
        assert all(p.poll() is None for p in mesh.processes.values()), "a service died with its store"
    except BaseException:
        dump_logs(mesh.log_dir)
        raise
    finally:
        mesh.stop()
        postgres.stop()
