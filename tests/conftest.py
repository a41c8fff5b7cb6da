"""Fixtures on real servers: PostgreSQL and Redis from CHAT_TEST_DATABASE_URL / CHAT_TEST_REDIS_URL
when set, embedded ones otherwise. Each run gets its own database and Redis key prefix, and the
mesh runs as real service processes on free ports."""

from __future__ import annotations

import os
import secrets
import signal
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
import redis

from chatmesh.auth import ServiceCredentials, sign
from chatmesh.config import Settings
from chatmesh.service_keys import ensure_keyring, keyring_env
from chatmesh_client import Client
from chatmesh_tools.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from chatmesh_tools.launcher import IDENTITIES, SERVICES, Mesh

TIME_SCALE = "0.05"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run the slow soak tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    deselected = [item for item in items if "slow" in item.keywords]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if "slow" not in item.keywords]


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="chatmesh-test-") as tmp:
        Path(tmp).chmod(0o755)
        yield Path(tmp)


@pytest.fixture(scope="session")
def postgres_server(workdir: Path) -> Iterator[str]:
    if url := os.environ.get("CHAT_TEST_DATABASE_URL"):
        yield url
        return
    server = EmbeddedPostgres(workdir / "postgres", free_port())
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def redis_server(workdir: Path) -> Iterator[str]:
    if url := os.environ.get("CHAT_TEST_REDIS_URL"):
        yield url
        return
    server = EmbeddedRedis(workdir / "redis", free_port())
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def make_database(postgres_server: str) -> Iterator[Callable[[], str]]:
    """Makes fresh databases on the server; all are dropped at the end of the run."""
    names: list[str] = []

    def make() -> str:
        name = f"chatmesh_test_{secrets.token_hex(6)}"
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        names.append(name)
        return urlunsplit(urlsplit(postgres_server)._replace(path=f"/{name}"))

    yield make
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database_url(make_database: Callable[[], str]) -> str:
    """This run's database."""
    return make_database()


@pytest.fixture
def isolated_env(mesh_env: dict[str, str], make_database: Callable[[], str]) -> Callable[..., dict[str, str]]:
    """The environment of a mesh of its own: its own database and Redis prefix, so its outbox relay and
    consumer groups never see another mesh's events (meshes sharing a database share an outbox)."""

    def make(**overrides: str) -> dict[str, str]:
        return {
            **mesh_env,
            "CHAT_DATABASE_URL": make_database(),
            "CHAT_REDIS_PREFIX": f"test-{secrets.token_hex(6)}",
            **overrides,
        }

    return make


@pytest.fixture(scope="session")
def redis_prefix(redis_server: str) -> Iterator[str]:
    """A key prefix for this run; its keys are deleted at the end."""
    prefix = f"test-{secrets.token_hex(6)}"
    yield prefix
    client = redis.Redis.from_url(redis_server)
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        client.delete(key)
    client.close()


@pytest.fixture(scope="session")
def keyring(workdir: Path) -> Path:
    """The run's service key pairs, one per service: every mesh of the run (they share mesh_env) uses them."""
    return ensure_keyring(workdir / "service-keys", IDENTITIES)


@pytest.fixture(scope="session")
def mesh_env(database_url: str, redis_server: str, redis_prefix: str, keyring: Path, workdir: Path) -> dict[str, str]:
    return {
        "CHAT_ATTACHMENT_DIR": str(workdir / "attachments"),
        "CHAT_DATABASE_URL": database_url,
        "CHAT_REDIS_URL": redis_server,
        "CHAT_REDIS_PREFIX": redis_prefix,
        "CHAT_JWT_SECRET": secrets.token_urlsafe(32),
        "CHAT_SERVICE_KEYRING": str(keyring),
        "CHAT_TIME_SCALE": TIME_SCALE,
        "CHAT_LOG_LEVEL": "INFO",
    }


@pytest.fixture(scope="session")
def settings(mesh_env: dict[str, str]) -> Settings:
    return Settings.from_env(mesh_env)


def new_mesh(mesh_env: dict[str, str], log_dir: Path) -> Mesh:
    return Mesh(env=mesh_env, ports={name: free_port() for name in SERVICES}, log_dir=log_dir)


def dump_logs(log_dir: Path) -> None:
    """On failure, show what the services said (the temporary folder is gone afterwards)."""
    for log in sorted(log_dir.glob("*.log")):
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        print(f"\n===== {log.name} (last lines) =====\n{tail}")


@pytest.fixture(scope="session")
def mesh(request: pytest.FixtureRequest, mesh_env: dict[str, str], workdir: Path) -> Iterator[Mesh]:
    """The four services as real processes, shared by the tests that do not kill anything."""
    running = new_mesh(mesh_env, workdir / "logs")
    running.start()
    yield running
    running.stop()
    if request.session.testsfailed:
        dump_logs(running.log_dir)


@pytest.fixture
def private_meshes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Mesh]]:
    """Starts meshes of a test's own (`start(isolated_env(...), names)`), which it may kill parts of;
    each is killed at the end, and its logs shown if the test failed."""
    started: list[Mesh] = []
    failed_before = request.session.testsfailed

    def start(env: dict[str, str], names: tuple[str, ...] = SERVICES) -> Mesh:
        mesh = Mesh(env=env, ports={name: free_port() for name in names}, log_dir=tmp_path / f"logs{len(started)}")
        started.append(mesh)
        mesh.start()
        return mesh

    yield start
    for mesh in started:
        mesh.stop(sig=signal.SIGKILL, timeout_s=5)
        if request.session.testsfailed > failed_before:
            dump_logs(mesh.log_dir)


@pytest.fixture
def user_id() -> str:
    return f"u-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_token(settings: Settings):  # type: ignore[no-untyped-def]
    def _make(user: str, **kwargs: object) -> str:
        return sign(settings, user, **kwargs)  # type: ignore[arg-type]

    return _make


@pytest.fixture
def service_metadata(mesh_env: dict[str, str], keyring: Path) -> Callable[[str], tuple[tuple[str, str], ...]]:
    """Call metadata of a mesh service (`edge`, `message`, ...): a token signed with its own key."""

    def make(service: str) -> tuple[tuple[str, str], ...]:
        settings = Settings.from_env({**mesh_env, **keyring_env(keyring, service)})
        return ServiceCredentials(settings, service).metadata()

    return make


@pytest.fixture
async def http(mesh: Mesh) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=mesh.edge_url, timeout=10) as client:
        yield client


@pytest.fixture(autouse=True)
async def close_sockets() -> AsyncIterator[None]:
    """Every WebSocket a test opened is closed after it, passed or failed."""
    from tests.helpers import Socket

    yield
    await Socket.close_all()


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    """Python clients a test opens (append them); each is closed after the test."""
    made: list[Client] = []
    yield made
    for client in made:
        await client.close()
