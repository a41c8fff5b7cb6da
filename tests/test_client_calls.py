"""The Python client's call signaling against the real mesh: place, ring, answer, trickle, hang up,
and the codes it raises."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from chatmesh_client import CallEvent, ChatError, Client
from chatmesh_tools.launcher import Mesh
from tests.helpers import direct_conversation, new_user_id, register

OFFER = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
ANSWER = OFFER.replace("o=- 1 2", "o=- 3 4")


async def next_call_event(client: Client, kind: str, timeout: float = 10) -> CallEvent:
    async with asyncio.timeout(timeout):
        async for event in client.events():
            if isinstance(event, CallEvent) and event.type == kind:
                return event
    raise AssertionError("the event stream ended")


async def test_a_call_placed_answered_and_hung_up_from_python(
    http: httpx.AsyncClient, mesh: Mesh, make_token, clients: list[Client]
) -> None:
    alice, bob = new_user_id("alice"), new_user_id("bob")
    await register(http, make_token(bob))
    conversation_id = await direct_conversation(http, make_token(alice), bob)
    a, b = Client(mesh.edge_url), Client(mesh.edge_url)
    clients += [a, b]
    await a.connect(make_token(alice))
    await b.connect(make_token(bob))

    config = await a.calls.config()
    assert config["ice_servers"] == [] and int(config["ring_timeout_ms"]) > 0
    call = await a.calls.start(conversation_id, OFFER)
    assert (call.state, call.caller_id, call.callee_id) == ("ringing", alice, bob)
    incoming = await next_call_event(b, "call:incoming")
    assert incoming.call.call_id == call.call_id and incoming.sdp == OFFER and incoming.from_user_id == alice
    assert not incoming.durable

    answered = await b.calls.answer(call.call_id, ANSWER)
    assert answered.state == "accepted"
    assert (await next_call_event(a, "call:accepted")).sdp == ANSWER
    await a.calls.candidate(
        call.call_id, {"candidate": "candidate:1 1 udp 1 192.0.2.1 5000 typ host", "sdp_mid": "0", "sdp_mline_index": 0}
    )
    assert (await next_call_event(b, "call:candidate")).candidate["sdp_mid"] == "0"  # type: ignore[index]

    ended = await b.calls.hang_up(call.call_id)
    assert (ended.state, ended.end_reason, ended.ended_by) == ("ended", "hangup", bob)
    assert (await next_call_event(a, "call:ended")).call.end_reason == "hangup"
    assert (await a.calls.get(call.call_id)).end_reason == "hangup"  # over REST: the enum names, read alike
    with pytest.raises(ChatError) as refused:
        await b.calls.answer(call.call_id, ANSWER)
    assert refused.value.code == "CALL_ENDED" and not refused.value.retryable
    with pytest.raises(ChatError) as bad:
        await a.calls.start(conversation_id, "not an sdp")
    assert bad.value.code == "INVALID_SDP"
