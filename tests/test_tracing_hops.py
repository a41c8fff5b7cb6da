"""Tracing across the asynchronous hops, in-process with the SDK's InMemorySpanExporter: a traced
send's outbox row carries its traceparent, the relay publishes it in a child span and puts that
span's traceparent beside the event in the stream, and fan-out continues the same trace. An untraced
send carries nothing anywhere. And log lines written inside a span carry its trace id.

The domain, the relay and fan-out run here against a real PostgreSQL database of their own and a real
Redis; only membership is stood in for (as in test_message_send_path.py). The whole mesh, as separate
processes exporting OTLP, is tests/test_tracing.py."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import psycopg
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Tracer

from chatmesh import logs, tracing
from chatmesh.outbox import OutboxRelay
from chatmesh.roles import Role
from services.message import store
from services.message.delivery.fanout import GROUP, Fanout
from services.message.store import NewMessage
from tests.message_domain import DomainEnv, Roles, domain_env, new_message

ALICE, BOB = "tr-alice", "tr-bob"
ROLES = Roles({ALICE: Role.MEMBER, BOB: Role.MEMBER})


@pytest.fixture
async def env(make_database: Callable[[], str], redis_server: str) -> AsyncIterator[DomainEnv]:
    async with domain_env(make_database(), redis_server, ROLES) as env:
        yield env


@dataclass
class _Traced:
    exporter: InMemorySpanExporter
    tracer: Tracer  # stands for the instrumentation's server span


@pytest.fixture
def traced() -> Iterator[_Traced]:
    """Tracing on for chatmesh.tracing's users in this process (`use`), with finished spans kept in
    memory; off again after the test."""
    exporter = InMemorySpanExporter()
    provider = tracing.new_provider("message")
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    yield _Traced(exporter, provider.get_tracer("test"))
    tracing.use(None)
    provider.shutdown()


def _new(cid: str, content: str) -> NewMessage:
    return new_message(cid, content, sender=ALICE)


def _one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


async def _fan_out(env: DomainEnv) -> None:
    """Relay what the outbox holds to the stream, then fan it out as the worker does."""
    assert await OutboxRelay(env.pool, env.url, store.SCHEMA, env.redis, env.keys).publish_once() == 2
    fanout = Fanout(env.redis, env.keys, ROLES, "test-consumer", stream=env.stream)  # type: ignore[arg-type]
    await env.redis.xgroup_create(env.stream, GROUP, id="0", mkstream=True)
    reply = await env.redis.xreadgroup(GROUP, "test-consumer", {env.stream: ">"}, count=10)
    await fanout.process([entry for _, batch in reply for entry in batch])


async def test_a_traced_send_is_one_trace_through_outbox_relay_and_fan_out(env: DomainEnv, traced: _Traced) -> None:
    cid = str(uuid.uuid4())
    with traced.tracer.start_as_current_span("/chat.v1.MessageService/SendMessage", kind=SpanKind.SERVER):
        sent, _ = await env.messages.send(ALICE, _new(cid, "traced"))
    untraced, _ = await env.messages.send(ALICE, _new(cid, "untraced"))  # no span: nothing is carried

    with psycopg.connect(env.url) as conn:
        carried = conn.execute("SELECT traceparent FROM message.outbox ORDER BY id").fetchall()
    server = _one(traced.exporter.get_finished_spans(), "/chat.v1.MessageService/SendMessage")
    context = server.context
    assert carried == [(f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}",), (None,)]

    await _fan_out(env)
    entries = await env.redis.xrange(env.stream)
    assert [b"t" in fields for _, fields in entries] == [True, False]  # the untraced entry is as before

    finished = traced.exporter.get_finished_spans()
    publish, fanned = _one(finished, "outbox publish"), _one(finished, "fan-out")  # none for the untraced send
    assert {s.context.trace_id for s in (server, publish, fanned)} == {server.context.trace_id}
    assert publish.parent is not None and publish.parent.span_id == server.context.span_id
    assert fanned.parent is not None and fanned.parent.span_id == publish.context.span_id
    assert (publish.kind, fanned.kind) == (SpanKind.PRODUCER, SpanKind.CONSUMER)
    assert fanned.attributes is not None
    assert fanned.attributes["chat.event_id"] == f"received:{sent.message_id}"
    assert fanned.attributes["chat.recipients"] == 2
    # Both events reached both inboxes: tracing changed nothing of the delivery itself.
    for user in (ALICE, BOB):
        inbox = await env.redis.xrange(env.keys.inbox(user))
        assert [fields[b"i"].decode() for _, fields in inbox] == [
            f"received:{sent.message_id}",
            f"received:{untraced.message_id}",
        ]


async def test_with_tracing_off_nothing_is_carried(env: DomainEnv) -> None:
    cid = str(uuid.uuid4())
    for content in ("one", "two"):
        await env.messages.send(ALICE, _new(cid, content))
    with psycopg.connect(env.url) as conn:
        assert conn.execute("SELECT traceparent FROM message.outbox").fetchall() == [(None,), (None,)]
    await _fan_out(env)
    assert [sorted(fields) for _, fields in await env.redis.xrange(env.stream)] == [[b"e"], [b"e"]]


def test_log_lines_carry_the_trace_id_inside_a_span(traced: _Traced) -> None:
    formatter = logs._JsonFormatter("message")

    def line(message: str) -> dict[str, str]:
        record = logging.LogRecord("chatmesh.test", logging.INFO, __file__, 1, message, None, None)
        return dict(json.loads(formatter.format(record)))

    with traced.tracer.start_as_current_span("request", kind=SpanKind.SERVER) as span:
        inside = line("inside")
    outside = line("outside")
    assert inside["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert inside["span_id"] == f"{span.get_span_context().span_id:016x}"
    assert "trace_id" not in outside and "span_id" not in outside
