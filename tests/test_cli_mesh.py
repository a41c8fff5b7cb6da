"""The `chatmesh` tools meet the mesh `chatmesh up` runs in a data folder: a real `up` process, and each
tool run as a process with nothing but --data-dir (no CHAT_* variables), as a newcomer runs them."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chatmesh.gen.chat.v1 import conversation_pb2, conversation_pb2_grpc
from chatmesh_tools.embedded import free_port

CHATMESH = [sys.executable, "-m", "chatmesh_tools.cli"]


def free_ports_in_a_row(count: int) -> int:
    """A base port with the `count` ports from it free (up's metrics ports are base + offset)."""
    for _ in range(50):
        base = free_port()
        try:
            for port in range(base, base + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no {count} free ports in a row")


def clean_env(**extra: str) -> dict[str, str]:
    """The shell of a newcomer: no CHAT_* settings at all."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}, **extra}


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CHATMESH, *args], env=env or clean_env(), capture_output=True, text=True, timeout=timeout)


@dataclass
class Up:
    data_dir: Path
    ports: dict[str, int]
    output: str

    @property
    def edge(self) -> str:
        return f"http://127.0.0.1:{self.ports['edge']}"


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory, make_database: Callable[[], str], redis_server: str) -> Iterator[Up]:
    """`chatmesh up` in a folder of its own, on free ports, with metrics ports from a base; the test
    servers stand in for the embedded ones (the tools read whichever URLs `up` used from the folder)."""
    data_dir = tmp_path_factory.mktemp("up") / "data"
    ports = {name: free_port() for name in ("conversation", "message", "presence", "edge")}
    env = clean_env(
        CHAT_DATABASE_URL=make_database(),
        CHAT_REDIS_URL=redis_server,
        CHAT_REDIS_PREFIX=f"cli-{secrets.token_hex(4)}",
        CHAT_METRICS_PORT=str(free_ports_in_a_row(3)),
    )
    args = [f"--{name}-port={port}" for name, port in ports.items()]
    log = data_dir.parent / "up.out"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [*CHATMESH, "up", "--data-dir", str(data_dir), *args], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 90
        while "Ctrl-C stops everything" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield Up(data_dir, ports, log.read_text())
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(30)
    assert not (data_dir / "mesh.json").exists()  # the stopped mesh's URLs and ports are gone with it


def test_up_gives_each_grpc_service_its_own_metrics_port_and_prints_them(up: Up) -> None:
    printed = dict(re.findall(r"^(\w+) metrics: (http://\S+/metrics)$", up.output, re.M))
    assert sorted(printed) == ["conversation", "message", "presence"]
    assert len(set(printed.values())) == 3
    for name, url in printed.items():
        with urllib.request.urlopen(url, timeout=5) as reply:
            assert reply.status == 200, name
            assert b"# HELP chat_" in reply.read(), name


async def test_a_token_from_the_folder_alone_is_accepted_by_the_running_mesh(up: Up) -> None:
    made = run("token", "alice-cli", "--data-dir", str(up.data_dir))
    assert made.returncode == 0, made.stderr
    async with httpx.AsyncClient(base_url=up.edge, timeout=10) as http:
        reply = await http.put("/api/users/me", headers={"Authorization": f"Bearer {made.stdout.strip()}"}, json={})
    assert reply.status_code == 200, reply.text


def test_token_refuses_a_folder_without_a_mesh_and_creates_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "nothing-here"
    made = run("token", "alice", "--data-dir", str(empty))
    assert made.returncode == 2
    assert made.stdout == ""
    assert len(made.stderr.strip().splitlines()) == 1 and "holds no mesh" in made.stderr
    assert not empty.exists()


def test_the_data_dir_defaults_the_same_way_for_every_command(up: Up, tmp_path: Path) -> None:
    """No --data-dir: $CHAT_DATA_DIR (as `up` reads it), and the current folder's .chatmesh otherwise."""
    assert run("token", "carol", env=clean_env(CHAT_DATA_DIR=str(up.data_dir))).returncode == 0
    (tmp_path / ".chatmesh").mkdir()  # a ./.chatmesh in the working folder, as `up` leaves it
    shutil.copy(up.data_dir / "jwt_secret", tmp_path / ".chatmesh" / "jwt_secret")
    made = subprocess.run(
        [*CHATMESH, "token", "carol"], env=clean_env(), cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert made.returncode == 0, made.stderr


def test_a_service_token_is_signed_with_that_services_key(up: Up) -> None:
    """`--service message` may ask the conversation service for a membership; `--service edge` may not."""
    tokens = {}
    for service in ("message", "edge"):
        made = run("token", "--service", service, "--data-dir", str(up.data_dir))
        assert made.returncode == 0, made.stderr
        tokens[service] = made.stdout.strip()
    with grpc.insecure_channel(f"127.0.0.1:{up.ports['conversation']}") as channel:
        stub = conversation_pb2_grpc.ConversationServiceStub(channel)
        request = conversation_pb2.GetMembershipRequest(conversation_id=str(uuid.uuid4()))
        for service, allowed in (("message", True), ("edge", False)):
            try:
                stub.GetMembership(request, metadata=(("authorization", f"Bearer {tokens[service]}"),), timeout=10)
                code = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                code = exc.code()
            assert code not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNAVAILABLE), service
            assert (code != grpc.StatusCode.PERMISSION_DENIED) == allowed, (service, code)


def test_dead_letter_and_migrate_meet_the_running_mesh(up: Up) -> None:
    listed = run("dead-letter", "list", "--data-dir", str(up.data_dir))
    assert listed.returncode == 0 and listed.stderr == "", listed.stderr
    migrated = run("migrate", "--data-dir", str(up.data_dir))
    assert migrated.returncode == 0, migrated.stderr
    assert "0 migration(s) applied" in migrated.stdout  # the services applied them when they started


@pytest.mark.parametrize(
    "command", [["dead-letter", "list"], ["migrate"], ["status"], ["bench", "--quick"], ["serve", "presence"]]
)
def test_tools_without_a_mesh_say_so_in_one_line(tmp_path: Path, command: list[str]) -> None:
    failed = run(*command, "--data-dir", str(tmp_path))
    assert failed.returncode == 2
    assert "Traceback" not in failed.stderr and len(failed.stderr.strip().splitlines()) == 1, failed.stderr
    assert str(tmp_path) in failed.stderr


def test_a_server_that_does_not_answer_is_one_line_too(tmp_path: Path) -> None:
    env = clean_env(
        CHAT_REDIS_URL=f"redis://127.0.0.1:{free_port()}",
        CHAT_DATABASE_URL=(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"),
    )
    for command in (["dead-letter", "list"], ["migrate"]):
        failed = run(*command, "--data-dir", str(tmp_path), env=env)
        assert failed.returncode == 1, failed.stderr
        assert "Traceback" not in failed.stderr and len(failed.stderr.strip().splitlines()) == 1, failed.stderr


def test_status_shows_health_backlog_pending_and_dead_letters(up: Up) -> None:
    shown = run("status", "--data-dir", str(up.data_dir))
    assert shown.returncode == 0, shown.stdout + shown.stderr
    for name, port in up.ports.items():
        assert re.search(rf"^{name}\s+SERVING\s+\S*127\.0\.0\.1:{port}", shown.stdout, re.M), shown.stdout
    assert re.search(r"^outbox backlog: conversation \d+, message \d+$", shown.stdout, re.M), shown.stdout
    assert re.search(r"^fan-out pending: \d+$", shown.stdout, re.M), shown.stdout
    assert re.search(r"^dead letters: 0$", shown.stdout, re.M), shown.stdout


def test_keygen_defaults_to_the_data_folders_keyring(tmp_path: Path) -> None:
    made = run("keygen", "--data-dir", str(tmp_path))
    assert made.returncode == 0, made.stderr
    assert sorted(p.name for p in (tmp_path / "service-keys").glob("*.key")) == [
        "conversation.key",
        "edge.key",
        "message.key",
        "presence.key",
        "push.key",
    ]


def test_a_service_served_by_hand_with_the_data_dir_joins_the_mesh(up: Up, tmp_path: Path) -> None:
    """`chatmesh serve presence --data-dir D` with nothing but a listen address: a second presence replica."""
    port = free_port()
    with open(tmp_path / "presence.log", "wb") as log:
        replica = subprocess.Popen(
            [*CHATMESH, "serve", "presence", "--data-dir", str(up.data_dir)],
            env=clean_env(CHAT_LISTEN_ADDR=f"127.0.0.1:{port}"),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            while True:
                assert replica.poll() is None, (tmp_path / "presence.log").read_text()
                try:
                    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                assert time.monotonic() < deadline, (tmp_path / "presence.log").read_text()
                time.sleep(0.2)
    finally:
        replica.send_signal(signal.SIGTERM)
        replica.wait(30)
