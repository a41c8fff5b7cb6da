"""One send, one trace, across the whole mesh: the edge's span for the WebSocket frame (or the REST
request), its gRPC call (a WebSocket send's: its own span within the edge's batched call), the
message service's SendMessage, the outbox relay's publish and fan-out,
all under one trace id, each span from the process that did the work; and the log lines written
while serving it carry that trace id.

The services run as separate processes (as in production and every other end-to-end test), so an
in-memory exporter inside them is out of reach from here. They export OTLP as configured by the
standard variables (OTEL_TRACES_EXPORTER=otlp, OTEL_EXPORTER_OTLP_ENDPOINT), to an OTLP/gRPC
receiver this test runs in-process with the collector protocol's own service definition
(opentelemetry-proto): the exporter path production uses is the one tested. The hops alone, with the
SDK's InMemorySpanExporter, are tests/test_tracing_hops.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from chatmesh_tools.launcher import Mesh
from tests.conftest import dump_logs, new_mesh
from tests.helpers import Socket, direct_conversation, new_user_id, register, send


@dataclass(frozen=True)
class _Span:
    service: str
    name: str
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]


class _Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver that keeps every span it is sent. It serves from its own threads,
    so the services' exports are answered even while the test's event loop is busy (stopping the
    mesh blocks it, and each service's last export comes then)."""

    def __init__(self) -> None:
        self.spans: list[_Span] = []

    def Export(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,  # noqa: N802 - the RPC's name
        context: grpc.ServicerContext,
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {a.key: _value(a.value) for a in span.attributes}
                    self.spans.append(
                        _Span(
                            resource.get("service.name", ""),
                            span.name,
                            span.kind,
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex(),
                            attributes,
                        )
                    )
        return trace_service_pb2.ExportTraceServiceResponse()

    async def trace_with(
        self, predicate: Callable[[_Span], bool], names: set[str], timeout_s: float = 15
    ) -> list[_Span]:
        """The spans of the trace holding a span that matches `predicate`, once they include every name
        in `names` (spans are exported in batches, a fraction of a second after they end)."""
        async with asyncio.timeout(timeout_s):
            while True:
                found = next((s for s in list(self.spans) if predicate(s)), None)
                if found is not None:
                    spans = [s for s in list(self.spans) if s.trace_id == found.trace_id]
                    if names <= {s.name for s in spans}:
                        return spans
                await asyncio.sleep(0.05)


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[_Receiver, int]]:
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    servicer = _Receiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(None)


@pytest.fixture(scope="module")
def traced_mesh(
    receiver: tuple[_Receiver, int],
    mesh_env: dict[str, str],
    make_database: Callable[[], str],
    workdir: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Mesh]:
    """A mesh of its own with tracing on, exporting OTLP to the receiver (batches every 100 ms)."""
    _, port = receiver
    env = {
        **mesh_env,
        "CHAT_DATABASE_URL": make_database(),
        "CHAT_REDIS_PREFIX": f"{mesh_env['CHAT_REDIS_PREFIX']}-tr",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    running = new_mesh(env, workdir / "logs-tracing")
    running.start()
    yield running
    running.stop()
    if request.session.testsfailed:
        dump_logs(running.log_dir)


def _chain(spans: list[_Span], leaf: _Span) -> list[tuple[str, str]]:
    """(service, name) from the trace's root down to `leaf`, following parent ids."""
    by_id = {s.span_id: s for s in spans}
    chain = [leaf]
    while chain[-1].parent_id in by_id:
        chain.append(by_id[chain[-1].parent_id])
    return [(s.service, s.name) for s in reversed(chain)]


async def _users(http: httpx.AsyncClient, make_token: Callable[..., str]) -> tuple[str, str, str, str]:
    alice, bob = new_user_id("alice"), new_user_id("bob")
    alice_token, bob_token = make_token(alice), make_token(bob)
    await register(http, bob_token)
    return alice, alice_token, bob_token, await direct_conversation(http, alice_token, bob)


SEND = "/chat.v1.MessageService/SendMessage"
ITEM = "SendMessages send"  # a WebSocket send's span: the edge sends them in SendMessages calls


async def test_a_websocket_send_is_one_trace_across_edge_message_service_and_fan_out(
    traced_mesh: Mesh, receiver: tuple[_Receiver, int], make_token: Callable[..., str]
) -> None:
    spans_in, _ = receiver
    async with httpx.AsyncClient(base_url=traced_mesh.edge_url, timeout=10) as http:
        _, alice_token, bob_token, cid = await _users(http, make_token)
    bob = await Socket.open(traced_mesh.edge_url, bob_token)
    alice = await Socket.open(traced_mesh.edge_url, alice_token)
    ack = await alice.request("chat:message_send", {"conversation_id": cid, "content": "traced hello"})
    message_id = ack["data"]["message"]["message_id"]
    received = await bob.next_of("chat:message_received")
    assert received["data"]["content"] == "traced hello"

    spans = await spans_in.trace_with(
        lambda s: s.name == "fan-out" and s.attributes.get("chat.event_id") == f"received:{message_id}",
        {"WS chat:message_send", ITEM, "outbox publish"},
    )
    fan_out = next(s for s in spans if s.name == "fan-out")
    assert _chain(spans, fan_out) == [
        ("edge", "WS chat:message_send"),  # the frame, at the edge
        ("message", ITEM),  # the message service serving it, within a SendMessages call of the edge's
        ("message", "outbox publish"),  # the relay, after the commit
        ("message", "fan-out"),  # into bob's and alice's inboxes
    ]
    assert fan_out.attributes["chat.recipients"] == 2
    # The send's statement is in the trace too, as a PostgreSQL span under the send (a batch's
    # statement is traced under its first traced send: here the send was alone).
    server = next(s for s in spans if s.service == "message" and s.name == ITEM)
    assert any(s.parent_id == server.span_id and s.attributes.get("db.system") == "postgresql" for s in spans)


async def test_a_rest_send_is_one_trace_and_its_log_lines_carry_the_trace_id(
    traced_mesh: Mesh, receiver: tuple[_Receiver, int], make_token: Callable[..., str]
) -> None:
    spans_in, _ = receiver
    async with httpx.AsyncClient(base_url=traced_mesh.edge_url, timeout=10) as http:
        _, alice_token, _, cid = await _users(http, make_token)
        message = await send(http, alice_token, cid, "over REST")

    spans = await spans_in.trace_with(
        lambda s: s.name == "fan-out" and s.attributes.get("chat.event_id") == f"received:{message['message_id']}",
        {"POST /api/messages", SEND},
    )
    fan_out = next(s for s in spans if s.name == "fan-out")
    assert _chain(spans, fan_out) == [
        ("edge", "POST /api/messages"),
        ("edge", SEND),
        ("message", SEND),
        ("message", "outbox publish"),
        ("message", "fan-out"),
    ]
    root = next(s for s in spans if s.name == "POST /api/messages")
    assert root.attributes["http.route"] == "/api/messages"

    # The edge's access log line for the request is written inside its span: trace and span ids.
    edge_log = [
        json.loads(line) for line in (traced_mesh.log_dir / "edge.log").read_text().splitlines() if line.startswith("{")
    ]
    in_trace = [line for line in edge_log if line.get("trace_id") == root.trace_id]
    assert [(line["logger"], line["span_id"]) for line in in_trace if "POST /api/messages" in line["msg"]] == [
        ("uvicorn.access", root.span_id)
    ], edge_log[-5:]
    assert all(line["request_id"] for line in in_trace)  # beside the request id, as before
