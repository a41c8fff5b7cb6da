"""Group commit (services/message/group_commit.py): sends arriving together commit in one
transaction, each acknowledged after it, each failing alone with the error it fails with by itself;
seqs stay gapless and a conversation's events stay in seq order. The domain runs in-process against
a real database of its own; only the conversation service's membership answer is stood in for."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import psycopg
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Tracer
from prometheus_client import REGISTRY

from chatmesh import errors, tracing
from chatmesh.gen.chat.v1 import common_pb2
from chatmesh.roles import Role
from services.message.messages import Messages
from services.message.store import MessageRow, NewMessage
from tests.message_domain import Roles, message_pool, messages_on, new_message, refuse_events_mentioning

ALICE, BOB = "gc-alice", "gc-bob"
ROLES = Roles({ALICE: Role.MEMBER, BOB: Role.MEMBER})


@dataclass
class _Env:
    url: str
    messages: Messages


@pytest.fixture
async def env(make_database: Callable[[], str]) -> AsyncIterator[_Env]:
    url = make_database()
    async with message_pool(url) as pool:
        yield _Env(url, messages_on(pool, ROLES))


def _new(
    cid: str, content: str, sender: str = ALICE, client_id: str | None = None, reply_to: str | None = None
) -> NewMessage:
    return new_message(cid, content, sender=sender, client_id=client_id, reply_to=reply_to)


def _batches() -> tuple[float, float]:
    """(batches committed, sends in them) so far in this process."""
    count = REGISTRY.get_sample_value("chat_message_send_batch_size_count") or 0.0
    total = REGISTRY.get_sample_value("chat_message_send_batch_size_sum") or 0.0
    return count, total


def _stored(url: str, cid: str) -> list[tuple[int, str]]:
    with psycopg.connect(url) as conn:
        return [
            (int(r[0]), str(r[1]))
            for r in conn.execute(
                "SELECT seq, content FROM message.messages WHERE conversation_id = %s ORDER BY seq", (cid,)
            )
        ]


def _events(url: str) -> list[common_pb2.Event]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT payload FROM message.outbox ORDER BY id").fetchall()
    events = []
    for (payload,) in rows:
        event = common_pb2.Event()
        event.ParseFromString(payload)
        events.append(event)
    return events


async def test_concurrent_sends_commit_together_with_gapless_seqs_in_order(env: _Env) -> None:
    one, other = str(uuid.uuid4()), str(uuid.uuid4())
    await env.messages.send(ALICE, _new(one, "first"))  # a lone send: a batch of one, at once
    before = _batches()
    # Forty sends arrive together, interleaving two conversations and two senders.
    sends = [
        env.messages.send(sender, _new(cid, f"{cid[:4]}-{i}", sender))
        for i in range(20)
        for cid, sender in ((one, ALICE), (other, BOB))
    ]
    results = await asyncio.gather(*sends)
    batches, sent = (after - b for after, b in zip(_batches(), before, strict=True))
    assert sent == 40
    assert batches <= 2, batches  # one transaction (two at most), not forty
    assert all(created for _, created in results)
    # Each conversation's seqs are gapless and follow the order its sends arrived in.
    assert _stored(env.url, one) == [(1, "first")] + [(i + 2, f"{one[:4]}-{i}") for i in range(20)]
    assert _stored(env.url, other) == [(i + 1, f"{other[:4]}-{i}") for i in range(20)]
    assert [row.seq for row, _ in results[::2]] == list(range(2, 22))  # each answered with its own row
    # The outbox holds one event per message, a conversation's in seq order.
    events = _events(env.url)
    assert len(events) == 41
    for cid in (one, other):
        seqs = [e.message.seq for e in events if e.message.conversation_id == cid]
        assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))


async def test_a_failing_send_fails_alone_with_its_usual_error(env: _Env) -> None:
    cid, elsewhere = str(uuid.uuid4()), str(uuid.uuid4())
    stranger, _ = await env.messages.send(BOB, _new(elsewhere, "in another conversation", BOB))
    root, _ = await env.messages.send(ALICE, _new(cid, "root"))
    before = _batches()
    outcomes = await asyncio.gather(
        env.messages.send(ALICE, _new(cid, "one")),
        env.messages.send(ALICE, _new(cid, "reply elsewhere", reply_to=stranger.message_id)),
        env.messages.send(BOB, _new(cid, "a reply", BOB, reply_to=root.message_id)),
        env.messages.send(ALICE, _new(cid, "two")),
        return_exceptions=True,
    )
    assert _batches()[1] - before[1] == 4  # all four went in the batch
    failed = outcomes[1]
    assert isinstance(failed, errors.ChatError) and failed.code == "REPLY_TO_NOT_FOUND", failed
    sent = [o for i, o in enumerate(outcomes) if i != 1]
    assert all(isinstance(o, tuple) and o[1] for o in sent), sent
    # The others committed with gapless seqs: the failed one gave its seq back.
    assert _stored(env.url, cid) == [(1, "root"), (2, "one"), (3, "a reply"), (4, "two")]
    with psycopg.connect(env.url) as conn:
        counts = conn.execute(
            "SELECT reply_count FROM message.messages WHERE message_id IN (%s, %s) ORDER BY seq",
            (root.message_id, stranger.message_id),
        ).fetchall()
    assert sorted(counts) == [(0,), (1,)]  # the thread counted its reply; the stranger's message nothing
    assert len(_events(env.url)) == 5


async def test_an_unforeseen_error_fails_its_send_alone_as_it_would_by_itself(env: _Env) -> None:
    """A send the database refuses for a reason the service does not map (here a trigger on the
    outbox) fails with the database's exception, as a single send does, and the batch commits."""
    refuse_events_mentioning(env.url, "boom")
    cid = str(uuid.uuid4())
    outcomes = await asyncio.gather(
        *(env.messages.send(ALICE, _new(cid, text)) for text in ("one", "boom", "two")), return_exceptions=True
    )
    assert isinstance(outcomes[1], psycopg.errors.RaiseException), outcomes
    assert _stored(env.url, cid) == [(1, "one"), (2, "two")]


async def test_the_same_client_message_id_twice_in_one_batch_stores_once(env: _Env) -> None:
    cid = str(uuid.uuid4())
    before = _batches()
    results: list[tuple[MessageRow, bool]] = await asyncio.gather(
        *(env.messages.send(ALICE, _new(cid, "once", client_id="same")) for _ in range(3)),
        env.messages.send(BOB, _new(cid, "other", BOB, client_id="same")),  # another sender's id: its own
    )
    assert _batches()[0] - before[0] == 1  # all in one transaction
    copies = results[:3]
    assert [created for _, created in copies] == [True, False, False]
    assert len({row.message_id for row, _ in copies}) == 1
    assert results[3][1] and results[3][0].message_id != copies[0][0].message_id
    assert _stored(env.url, cid) == [(1, "once"), (2, "other")]
    assert len(_events(env.url)) == 2  # no event for a duplicate
    # The id reused in another conversation, in one batch as well, is a conflict, never a message.
    reused = await asyncio.gather(
        env.messages.send(ALICE, _new(str(uuid.uuid4()), "once", client_id="same")), return_exceptions=True
    )
    assert isinstance(reused[0], errors.ChatError) and reused[0].code == "CLIENT_MESSAGE_ID_REUSED"


@pytest.fixture
def tracer() -> Iterator[tuple[Tracer, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = tracing.new_provider("message")
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    yield provider.get_tracer("test"), exporter
    tracing.use(None)
    provider.shutdown()


async def test_each_send_of_a_batch_carries_its_own_trace(
    env: _Env, tracer: tuple[Tracer, InMemorySpanExporter]
) -> None:
    tracer_, exporter = tracer
    cid = str(uuid.uuid4())

    async def traced(name: str) -> None:
        with tracer_.start_as_current_span(name, kind=SpanKind.SERVER):
            await env.messages.send(ALICE, _new(cid, name))

    await asyncio.gather(traced("a"), traced("b"), env.messages.send(ALICE, _new(cid, "untraced")))
    spans = {s.name: s.context for s in exporter.get_finished_spans()}
    expected = [
        f"00-{spans[n].trace_id:032x}-{spans[n].span_id:016x}-{int(spans[n].trace_flags):02x}" for n in ("a", "b")
    ]
    with psycopg.connect(env.url) as conn:
        carried = [r[0] for r in conn.execute("SELECT traceparent FROM message.outbox ORDER BY id")]
    assert carried == [*expected, None]
