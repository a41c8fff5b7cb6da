"""Outages answer UNAVAILABLE or DEADLINE_EXCEEDED, never INTERNAL (issue 14).

Clients retry UNAVAILABLE and DEADLINE_EXCEEDED and give up on INTERNAL, so a lost PostgreSQL or a
conversation service that is down or stalled must never reach a caller as INTERNAL: here on real
service processes whose dependency a test kills or stops, and on an in-process server with the real
interceptor for the table of exception → status (bugs stay INTERNAL and are counted).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from chatmesh.auth import TokenVerifier, sign
from chatmesh.config import Settings
from chatmesh.db import POOL_TIMEOUT_S
from chatmesh.errors import ChatError, error_code_of
from chatmesh.gen.chat.v1 import message_pb2, message_pb2_grpc
from chatmesh.grpc_server import MeshInterceptor
from chatmesh_tools.embedded import EmbeddedPostgres, free_port
from chatmesh_tools.launcher import Mesh
from tests.conftest import dump_logs
from tests.helpers import new_user_id
from tests.test_message_support import group

OUTAGE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
MEMBERSHIP_DEADLINE_S = 5.0  # chatmesh/membership.py's timeout on GetMembership


@pytest.fixture
def meshes(request: pytest.FixtureRequest) -> Iterator[list[Mesh]]:
    """Service processes a test starts; killed (and their logs shown on failure) at the end."""
    started: list[Mesh] = []
    failed_before = request.session.testsfailed
    yield started
    for mesh in started:
        for process in mesh.processes.values():
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)  # a SIGSTOPped one must be able to die
        mesh.stop(sig=signal.SIGKILL, timeout_s=5)
        if request.session.testsfailed > failed_before:
            dump_logs(mesh.log_dir)


def start_split(
    meshes: list[Mesh], conversation_env: dict[str, str], message_env: dict[str, str], log_dir: Path
) -> tuple[Mesh, Mesh]:
    """The conversation and message services as two meshes over the same ports, so each has an
    environment of its own (its database, its metrics port) and a test can stop one of them."""
    ports = {"conversation": free_port(), "message": free_port()}
    conversation = Mesh(env=conversation_env, ports=ports, log_dir=log_dir)
    message = Mesh(env=message_env, ports=ports, log_dir=log_dir)
    meshes.extend([conversation, message])
    conversation.start("conversation")
    message.start("message")
    return conversation, message


async def send(port: int, token: str, conversation_id: str, timeout_s: float = 15) -> message_pb2.SendMessageResponse:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        return await message_pb2_grpc.MessageServiceStub(channel).SendMessage(
            message_pb2.SendMessageRequest(conversation_id=conversation_id, content="hello"),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=timeout_s,
        )


async def failed_send(port: int, token: str, conversation_id: str) -> tuple[grpc.aio.AioRpcError, float]:
    """The error a send answered, and how long it took."""
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await send(port, token, conversation_id)
    return caught.value, time.monotonic() - started


def assert_outage(error: grpc.aio.AioRpcError) -> None:
    """Answered by the service (its trailer is there, so not our own deadline) as a retryable outage."""
    assert error.code() in OUTAGE, (error.code(), error.details())
    assert error_code_of(error) == error.code().name and error.details().endswith("; retry")


def internal_errors(metrics_port: int, method: str) -> float:
    """chat_grpc_internal_errors_total for a MessageService method, read from the service's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    labels = {"service": "chat.v1.MessageService", "method": method}
    values = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "chat_grpc_internal_errors_total" and sample.labels == labels
    ]
    assert len(values) == 1, f"no chat_grpc_internal_errors_total{labels}"  # exported from the first call on
    return values[0]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "stalled"])
async def test_a_send_answers_an_outage_while_the_conversation_service_is_down(
    isolated_env, tmp_path: Path, meshes: list[Mesh], make_token, sig: signal.Signals
) -> None:
    env = isolated_env()
    metrics_port = free_port()
    conversation, message = start_split(meshes, env, {**env, "CHAT_METRICS_PORT": str(metrics_port)}, tmp_path / "logs")
    alice, bob = new_user_id("alice"), new_user_id("bob")
    warm, cold = [await group(env["CHAT_DATABASE_URL"], {alice: "admin", bob: "member"}) for _ in range(2)]
    token = make_token(alice)
    assert (await send(message.ports["message"], token, warm)).created  # the mesh works

    os.kill(conversation.processes["conversation"].pid, sig)
    # `cold` was never asked about, so its membership is not cached: the send must ask and wait.
    error, took = await failed_send(message.ports["message"], token, cold)
    assert_outage(error)
    assert took < MEMBERSHIP_DEADLINE_S + 3
    assert internal_errors(metrics_port, "SendMessage") == 0


@pytest.fixture
def private_postgres(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path / "postgres", free_port())
    server.start()
    yield server
    server.stop()


async def test_sends_answer_unavailable_while_postgresql_is_down(
    isolated_env, tmp_path: Path, meshes: list[Mesh], make_token, private_postgres: EmbeddedPostgres
) -> None:
    env = isolated_env()
    metrics_port = free_port()
    _, message = start_split(
        meshes,
        env,
        {**env, "CHAT_DATABASE_URL": private_postgres.url, "CHAT_METRICS_PORT": str(metrics_port)},
        tmp_path / "logs",
    )
    alice, bob = new_user_id("alice"), new_user_id("bob")
    cid = await group(env["CHAT_DATABASE_URL"], {alice: "admin", bob: "member"})
    token = make_token(alice)
    assert (await send(message.ports["message"], token, cid)).created  # the mesh works

    private_postgres.stop()  # the message service's database only; the conversation service's lives on
    started = time.monotonic()
    # Several at once: some take a pooled connection the server closed, the rest wait for a new one.
    results = await asyncio.gather(*(failed_send(message.ports["message"], token, cid) for _ in range(4)))
    for error, _ in results:
        assert_outage(error)
        assert error.code() == grpc.StatusCode.UNAVAILABLE and "database" in error.details()
    assert time.monotonic() - started < POOL_TIMEOUT_S + 3
    assert internal_errors(metrics_port, "SendMessage") == 0


# --- the interceptor's table, on an in-process server -------------------------------------------------

METHOD = "/test.v1.Faults/Raise"
RAISED: dict[str, Exception] = {
    "bug": ValueError("a bug"),
    "postgres": psycopg.OperationalError("connection refused"),
    "timeout": TimeoutError(),
    "statement": psycopg.errors.QueryCanceled("canceling statement due to statement timeout"),
    "refused": ConnectionRefusedError(),
    "not-found": ChatError(grpc.StatusCode.NOT_FOUND, "NO_SUCH_THING", "no such thing"),
}


@pytest.fixture
async def faults(settings: Settings) -> AsyncIterator[tuple[grpc.aio.Channel, tuple[tuple[str, str], ...]]]:
    """A server with the mesh's interceptor whose one method raises what it is asked to, or asks
    itself (`relay:<what>`) or a port nobody listens on (`relay-dead`), so downstream errors are real."""
    server = grpc.aio.server(interceptors=[MeshInterceptor(TokenVerifier(settings))])
    port = server.add_insecure_port("127.0.0.1:0")
    metadata = (("authorization", f"Bearer {sign(settings, 'outage-tester')}"),)

    async def handle(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        what = request.decode()
        if what.startswith("relay"):
            target = f"127.0.0.1:{free_port() if what == 'relay-dead' else port}"
            async with grpc.aio.insecure_channel(target) as downstream:
                return bytes(
                    await downstream.unary_unary(METHOD)(
                        what.removeprefix("relay:").encode(), metadata=metadata, timeout=2
                    )
                )
        raise RAISED[what]

    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("test.v1.Faults", {"Raise": grpc.unary_unary_rpc_method_handler(handle)})]
    )
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel, metadata
    await server.stop(None)


@pytest.mark.parametrize(
    ("what", "status", "code"),
    [
        ("bug", grpc.StatusCode.INTERNAL, "INTERNAL"),
        ("postgres", grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE"),
        ("refused", grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE"),
        ("timeout", grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"),
        ("statement", grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"),
        ("relay:not-found", grpc.StatusCode.NOT_FOUND, "NO_SUCH_THING"),  # a downstream answer passes through
        ("relay:postgres", grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE"),
        ("relay:timeout", grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"),
        ("relay-dead", grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE"),  # nobody listens downstream
        ("relay:bug", grpc.StatusCode.INTERNAL, "INTERNAL"),  # a downstream bug is not an outage
    ],
)
async def test_each_exception_gets_its_status_and_only_bugs_count_as_internal(
    faults: tuple[grpc.aio.Channel, tuple[tuple[str, str], ...]], what: str, status: grpc.StatusCode, code: str
) -> None:
    channel, metadata = faults

    def bugs() -> float:
        return (
            REGISTRY.get_sample_value(
                "chat_grpc_internal_errors_total", {"service": "test.v1.Faults", "method": "Raise"}
            )
            or 0.0
        )

    before = bugs()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.unary_unary(METHOD)(what.encode(), metadata=metadata, timeout=10)
    assert (caught.value.code(), error_code_of(caught.value)) == (status, code), caught.value.details()
    assert bugs() - before == (1 if what == "bug" else 2 if what == "relay:bug" else 0)
