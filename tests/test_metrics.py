"""Every service serves Prometheus metrics: after real traffic through the edge, a scrape of each
service's /metrics finds the named series with non-zero values."""

from __future__ import annotations

import asyncio
import secrets
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from chatmesh import metrics
from chatmesh.redis_conn import Keys
from chatmesh_tools.embedded import free_port
from chatmesh_tools.launcher import Mesh
from services.edge import metrics as edge_metrics
from services.message.delivery import metrics as stream_metrics
from tests.conftest import dump_logs, new_mesh
from tests.helpers import Socket, bearer, direct_conversation, new_user_id, register, send
from tests.test_k8s_support import private_database

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class MetricsMesh(Mesh):
    """A private mesh whose gRPC services serve metrics, each on a port of its own."""

    metrics_ports: dict[str, int]

    def service_env(self, name: str) -> dict[str, str]:
        env = super().service_env(name)
        if name in self.metrics_ports:
            env["CHAT_METRICS_PORT"] = str(self.metrics_ports[name])
        return env


@pytest.fixture(scope="module")
def metrics_mesh(
    request: pytest.FixtureRequest, mesh_env: dict[str, str], postgres_server: str, workdir: Path
) -> Iterator[MetricsMesh]:
    with private_database(postgres_server) as database_url:
        base = new_mesh(
            {**mesh_env, "CHAT_DATABASE_URL": database_url, "CHAT_REDIS_PREFIX": f"metrics-{secrets.token_hex(4)}"},
            workdir / "metrics-logs",
        )
        running = MetricsMesh(env=base.env, ports=base.ports, log_dir=base.log_dir)
        running.metrics_ports = {name: free_port() for name in ("conversation", "message", "presence")}
        running.start()
        yield running
        running.stop()
        if request.session.testsfailed:
            dump_logs(running.log_dir)


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=5) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of a series' samples whose labels include `labels` (0 when there are none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def test_metrics_after_traffic(metrics_mesh: MetricsMesh, make_token, redis_server: str) -> None:
    alice, bob = new_user_id("alice"), new_user_id("bob")
    alice_token, bob_token = make_token(alice), make_token(bob)
    async with httpx.AsyncClient(base_url=metrics_mesh.edge_url, timeout=10) as http:
        await register(http, bob_token)
        conversation_id = await direct_conversation(http, alice_token, bob)
        socket = await Socket.open(metrics_mesh.edge_url, bob_token)
        try:
            for i in range(5):
                await send(http, alice_token, conversation_id, f"m{i}")
            await socket.next_of("chat:message_received")
            # a call the message service refuses: counted as an error by method and code
            missing = await http.post(
                "/api/messages",
                headers=bearer(alice_token),
                json={"conversation_id": "00000000-0000-0000-0000-000000000000", "content": "x"},
            )
            assert missing.status_code == 404
            await http.put("/api/presence", headers=bearer(alice_token), json={})

            edge = scrape(f"{metrics_mesh.edge_url}/metrics")
            assert value(edge, "chat_websocket_connections") >= 1  # bob's socket, open now
        finally:
            await socket.close()

    # the edge: HTTP by route template (never the raw path) and status, with latencies
    assert value(edge, "chat_http_requests_total", method="POST", route="/api/messages", status="200") >= 5
    assert value(edge, "chat_http_requests_total", method="POST", route="/api/messages", status="404") >= 1
    assert value(edge, "chat_http_request_seconds_count", route="/api/messages") >= 6
    assert value(edge, "chat_http_request_seconds_sum", route="/api/messages") > 0
    assert not [ls for (n, ls) in edge if n == "chat_http_requests_total" and ("route", conversation_id) in ls]

    message = scrape(f"http://127.0.0.1:{metrics_mesh.metrics_ports['message']}/metrics")
    service = "chat.v1.MessageService"
    assert value(message, "chat_grpc_server_requests_total", service=service, method="SendMessage", code="OK") >= 5
    assert value(message, "chat_grpc_server_errors_total", service=service, method="SendMessage") >= 1
    assert value(message, "chat_grpc_server_request_seconds_count", method="SendMessage") >= 6
    assert value(message, "chat_grpc_server_request_seconds_sum", method="SendMessage") > 0
    assert (
        value(message, "chat_grpc_server_requests_total", method="StreamEvents") >= 0
    )  # long-lived: counted at its end

    # delivery: the events streams' lengths (sampled every few seconds, per partition: the conversation's
    # holds its events), the outbox backlog gauge, and this replica's fan-out work and partitions
    stream = Keys(metrics_mesh.env["CHAT_REDIS_PREFIX"]).events_of(conversation_id)
    deadline = time.monotonic() + 20
    while value(message, "chat_stream_length", stream=stream) < 5 and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        message = scrape(f"http://127.0.0.1:{metrics_mesh.metrics_ports['message']}/metrics")
    assert value(message, "chat_stream_length", stream=stream) >= 5
    assert ("chat_outbox_backlog", frozenset({("schema", "message")})) in message
    assert ("chat_stream_pending", frozenset({("stream", stream), ("group", "fanout")})) in message
    assert value(message, "chat_fanout_events_total") >= 5
    assert value(message, "chat_fanout_partitions_held") == 8  # the only message replica holds all K

    conversation = scrape(f"http://127.0.0.1:{metrics_mesh.metrics_ports['conversation']}/metrics")
    assert value(conversation, "chat_grpc_server_requests_total", service="chat.v1.ConversationService", code="OK") >= 2
    assert ("chat_outbox_backlog", frozenset({("schema", "conversation")})) in conversation

    presence = scrape(f"http://127.0.0.1:{metrics_mesh.metrics_ports['presence']}/metrics")
    assert value(presence, "chat_grpc_server_requests_total", service="chat.v1.PresenceService") >= 1


def test_delivery_hooks_are_defined_for_the_delivery_path() -> None:
    """The series the delivery path reports into, with the names dashboards use."""
    edge_metrics.DELIVERY_LAG.observe(0.01)
    stream_metrics.DEAD_LETTER.inc(0)
    names = {
        m.describe()[0].name
        for m in (
            edge_metrics.DELIVERY_LAG,
            metrics.OUTBOX_BACKLOG,
            stream_metrics.STREAM_PENDING,
            stream_metrics.DEAD_LETTER,
            edge_metrics.WS_CONNECTIONS,
        )
    }
    assert names == {
        "chat_delivery_lag_seconds",
        "chat_outbox_backlog",
        "chat_stream_pending",
        "chat_dead_letter",
        "chat_websocket_connections",
    }
