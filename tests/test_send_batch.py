"""The batched send (SendMessages): the edge coalesces its sockets' sends into it; each send is
answered exactly as SendMessage answers it, acting only as the user whose token it carries; only the
edge may call it. On the session's mesh of real processes."""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from chatmesh.errors import error_code_of
from chatmesh.gen.chat.v1 import message_pb2, message_pb2_grpc
from chatmesh_tools.launcher import Mesh
from tests.helpers import Socket, collect, direct_conversation, new_user_id, register

Metadata = tuple[tuple[str, str], ...]


@pytest.fixture
async def stub(mesh: Mesh) -> AsyncIterator[message_pb2_grpc.MessageServiceStub]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{mesh.ports['message']}")
    yield message_pb2_grpc.MessageServiceStub(channel)
    await channel.close()


def _edge_batches(mesh: Mesh) -> tuple[float, float]:
    """(SendMessages calls, sends in them) the edge has made so far, from its /metrics."""
    with urllib.request.urlopen(f"{mesh.edge_url}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    samples = {
        s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels.get("le")
    }
    return samples.get("chat_edge_send_batch_size_count", 0.0), samples.get("chat_edge_send_batch_size_sum", 0.0)


async def _unary(stub: message_pb2_grpc.MessageServiceStub, token: str, request: message_pb2.SendMessageRequest) -> Any:
    """What SendMessage answers: the reply, or (status code, error code, details)."""
    try:
        return await stub.SendMessage(request, metadata=(("authorization", f"Bearer {token}"),), timeout=5)
    except grpc.aio.AioRpcError as exc:
        return exc.code().value[0], error_code_of(exc), exc.details()


def _outcome(result: message_pb2.BatchedSendResult) -> Any:
    if result.HasField("error"):
        return result.error.code, result.error.reason, result.error.message
    return result.response


async def test_each_send_is_answered_as_send_message_answers_it(
    stub: message_pb2_grpc.MessageServiceStub,
    http: httpx.AsyncClient,
    make_token: Callable[..., str],
    service_metadata: Callable[[str], Metadata],
) -> None:
    alice, bob, carol = new_user_id("alice"), new_user_id("bob"), new_user_id("carol")
    for user in (bob, carol):
        await register(http, make_token(user))
    ours = await direct_conversation(http, make_token(alice), bob)
    theirs = await direct_conversation(http, make_token(bob), carol)
    token = make_token(alice)

    def req(cid: str, content: str, **extra: str) -> message_pb2.SendMessageRequest:
        return message_pb2.SendMessageRequest(conversation_id=cid, content=content, **extra)

    failing = [
        (token, req(theirs, "not mine")),  # NOT_PARTICIPANT
        (token, req("nope", "bad id")),  # INVALID_ID
        (token, req(ours, "   ")),  # EMPTY_CONTENT
        (token, req(ours, "reply", reply_to_id=str(uuid.uuid4()))),  # REPLY_TO_NOT_FOUND, in the statement
        ("not-a-token", req(ours, "forged")),  # UNAUTHENTICATED
        (service_metadata("edge")[0][1].removeprefix("Bearer "), req(ours, "as the edge")),  # no service as a user
    ]
    sends = [
        message_pb2.BatchedSend(user_token=token, request=req(ours, "one", client_message_id="b-1")),
        *(message_pb2.BatchedSend(user_token=t, request=r) for t, r in failing),
        message_pb2.BatchedSend(user_token=token, request=req(ours, "one", client_message_id="b-1")),  # a resend
        message_pb2.BatchedSend(user_token=token, request=req(ours, "two")),
    ]
    reply = await stub.SendMessages(
        message_pb2.SendMessagesRequest(sends=sends), metadata=service_metadata("edge"), timeout=10
    )
    outcomes = [_outcome(r) for r in reply.results]
    assert len(outcomes) == len(sends)
    first, resent, second = outcomes[0], outcomes[-2], outcomes[-1]
    assert (first.created, resent.created, second.created) == (True, False, True)
    assert resent.message.message_id == first.message.message_id  # the same id twice: stored once
    assert (first.message.seq, second.message.seq) == (1, 2)  # the failures took no seq
    assert first.message.sender_id == alice
    # Every failure is the one SendMessage answers the same user with, code, reason and message.
    expected = [await _unary(stub, t, r) for t, r in failing]
    assert outcomes[1:-2] == expected
    assert [reason for _, reason, _ in expected] == [
        "NOT_PARTICIPANT",
        "INVALID_ID",
        "EMPTY_CONTENT",
        "REPLY_TO_NOT_FOUND",
        "UNAUTHENTICATED",
        "CALLER_NOT_ALLOWED",
    ]


@pytest.mark.parametrize("caller", ["user", "presence"])
async def test_only_the_edge_may_call_it(
    stub: message_pb2_grpc.MessageServiceStub,
    make_token: Callable[..., str],
    service_metadata: Callable[[str], Metadata],
    caller: str,
) -> None:
    metadata = (("authorization", f"Bearer {make_token('someone')}"),) if caller == "user" else service_metadata(caller)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.SendMessages(message_pb2.SendMessagesRequest(), metadata=metadata, timeout=5)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_code_of(refused.value) == ("INTERNAL_ONLY" if caller == "user" else "CALLER_NOT_ALLOWED")


SOCKETS, EACH = 12, 5


async def test_the_edge_sends_many_sockets_sends_in_few_calls(
    mesh: Mesh, http: httpx.AsyncClient, make_token: Callable[..., str]
) -> None:
    bob = new_user_id("bob")
    await register(http, make_token(bob))
    senders = [new_user_id("alice") for _ in range(SOCKETS)]
    conversations = [await direct_conversation(http, make_token(a), bob) for a in senders]
    reader = await Socket.open(mesh.edge_url, make_token(bob))
    sockets = [await Socket.open(mesh.edge_url, make_token(a)) for a in senders]
    before = _edge_batches(mesh)
    for n in range(EACH):  # every socket sends its five at once, with the other sockets
        for socket, cid in zip(sockets, conversations, strict=True):
            frame = {"type": "chat:message_send", "id": f"s{n}", "data": {"conversation_id": cid, "content": f"m{n}"}}
            await socket.ws.send(json.dumps(frame))

    async def answers(socket: Socket) -> list[dict[str, Any]]:
        frames: list[dict[str, Any]] = []
        while len(frames) < EACH:
            frame = await socket.recv()
            if frame.get("id") is not None:  # answers only (its own messages' events come too)
                frames.append(frame)
        return frames

    async with asyncio.timeout(20):
        replies = await asyncio.gather(*(answers(s) for s in sockets))
    for frames in replies:  # each socket's sends answered in its order, with seqs in that order
        assert [(f["type"], f["id"]) for f in frames] == [("ack", f"s{n}") for n in range(EACH)], frames
        assert [int(f["data"]["message"]["seq"]) for f in frames] == list(range(1, EACH + 1))
    calls, sent = (a - b for a, b in zip(_edge_batches(mesh), before, strict=True))
    assert sent == SOCKETS * EACH
    assert calls < sent, (calls, sent)  # sends of different sockets shared calls
    received = await collect(reader, "chat:message_received", SOCKETS * EACH, timeout=20)
    assert len({f["data"]["message_id"] for f in received}) == SOCKETS * EACH
