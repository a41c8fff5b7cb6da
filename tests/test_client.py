"""The Python client (clients/python) against the real mesh: live delivery and the store, reconnects
across an edge restart, sends retried after a lost acknowledgement, and resync_required."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from chatmesh.redis_conn import Keys
from chatmesh_client import Client, MessageEvent, ReceiptEvent, ResyncEvent, StateEvent
from chatmesh_tools.embedded import free_port
from chatmesh_tools.launcher import Mesh
from tests.helpers import direct_conversation, new_user_id, register, send


@pytest.fixture
def private_edge(mesh: Mesh, tmp_path: Path) -> Iterator[Mesh]:
    """An edge process of its own on the shared services, that a test may stop and start again
    (the edge holds nothing durable, so this is a real edge restart for its sockets)."""
    edge = Mesh(env=mesh.env, ports={**mesh.ports, "edge": free_port()}, log_dir=tmp_path / "logs")
    edge.start("edge")
    yield edge
    edge.stop(sig=signal.SIGKILL, timeout_s=5)


async def chat_pair(http: httpx.AsyncClient, make_token) -> tuple[str, str, str, str, str]:  # type: ignore[no-untyped-def]
    alice, bob = new_user_id("alice"), new_user_id("bob")
    await register(http, make_token(bob))
    conversation_id = await direct_conversation(http, make_token(alice), bob)
    return alice, make_token(alice), bob, make_token(bob), conversation_id


async def messages_of(client: Client, count: int, timeout: float = 15) -> list[MessageEvent]:
    """The next `count` chat:message_received events the caller sees."""
    got: list[MessageEvent] = []
    async with asyncio.timeout(timeout):
        async for event in client.events():
            if isinstance(event, MessageEvent) and event.type == "chat:message_received":
                got.append(event)
                if len(got) == count:
                    return got
    return got


async def nothing_more(client: Client, seconds: float) -> list[MessageEvent]:
    extra: list[MessageEvent] = []
    try:
        async with asyncio.timeout(seconds):
            async for event in client.events():
                if isinstance(event, MessageEvent):
                    extra.append(event)
    except TimeoutError:
        pass
    return extra


def test_client_package_stands_alone() -> None:
    """clients/python imports neither the server library nor the services."""
    code = (
        "import sys, chatmesh_client; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('chatmesh', 'services')]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_send_receive_read_and_store(http, mesh: Mesh, make_token, clients) -> None:
    alice_id, alice_token, bob_id, bob_token, conversation_id = await chat_pair(http, make_token)
    alice, bob = Client(mesh.edge_url), Client(mesh.edge_url)
    clients += [alice, bob]
    await alice.connect(alice_token)
    await bob.connect(bob_token)
    await alice.conversations()

    pending = alice.send_nowait(conversation_id, "hello bob")
    assert pending.message.pending and pending.message.status == "pending"
    assert alice.store.conversation_messages(conversation_id)[-1].content == "hello bob"  # shown at once
    stored = await pending
    assert stored.message_id and stored.seq == 1 and stored.client_message_id == pending.message.client_message_id
    assert [m.message_id for m in alice.store.conversation_messages(conversation_id)] == [stored.message_id]

    (received,) = await messages_of(bob, 1)
    assert received.message.content == "hello bob" and received.message.sender_id == alice_id
    assert bob.store.messages[stored.message_id].content == "hello bob"

    await bob.mark_read(received.message)
    async with asyncio.timeout(10):
        async for event in alice.events():
            if isinstance(event, ReceiptEvent) and event.status == "read" and event.user_id == bob_id:
                break
    assert alice.store.messages[stored.message_id].status == "read"

    edited = await alice.edit(stored.message_id, "hello, bob")
    assert edited.content == "hello, bob" and edited.edited_at
    reacted = await bob.react(stored.message_id, "👍")
    assert [(r.emoji, r.count) for r in reacted.reactions] == [("👍", 1)]
    page = await bob.history(conversation_id)
    assert [m.content for m in page.messages] == ["hello, bob"] and not page.has_more
    assert await bob.typing(conversation_id) is True
    assert await bob.typing(conversation_id) is False  # throttled
    assert await bob.typing(conversation_id, False) is True


async def test_reconnect_across_edge_restart_sees_every_event_once_in_order(
    http, private_edge: Mesh, make_token, clients
) -> None:
    _, alice_token, _, bob_token, conversation_id = await chat_pair(http, make_token)
    bob = Client(private_edge.edge_url, backoff_initial=0.05, backoff_max=0.5)
    clients.append(bob)
    await bob.connect(bob_token)
    for i in range(5):
        await send(http, alice_token, conversation_id, f"m{i}")
    before = await messages_of(bob, 5)

    await asyncio.to_thread(private_edge.stop, "edge")  # SIGTERM: the edge closes its sockets with 1012
    for i in range(5, 10):
        await send(http, alice_token, conversation_id, f"m{i}")  # through the shared edge, while bob's is down
    await asyncio.to_thread(private_edge.start, "edge")
    for i in range(10, 15):
        await send(http, alice_token, conversation_id, f"m{i}")

    after = await messages_of(bob, 10)
    got = before + after + await nothing_more(bob, 1.0)
    assert [e.message.content for e in got] == [f"m{i}" for i in range(15)]
    assert [e.message.seq for e in got] == list(range(1, 16))
    assert 1012 in bob.close_codes and bob.reconnects >= 1 and bob.state == "connected"


async def test_send_retried_after_a_lost_ack_is_stored_once(http, mesh: Mesh, make_token, clients) -> None:
    _, alice_token, _, _, conversation_id = await chat_pair(http, make_token)
    alice = Client(mesh.edge_url, send_timeout=0.5)
    clients.append(alice)
    await alice.connect(alice_token)
    replies: list[dict] = []
    on_reply = alice._connection._on_reply

    def drop_first_ack(frame: dict) -> None:
        if frame.get("type") == "ack" and "message" in (frame.get("data") or {}):
            replies.append(frame["data"])
            if len(replies) == 1:
                return  # the edge stored it, but its acknowledgement is "lost": the send times out
        on_reply(frame)

    alice._connection._on_reply = drop_first_ack  # type: ignore[method-assign]
    stored = await alice.send(conversation_id, "once")
    assert [r.get("created", False) for r in replies] == [True, False]  # the retry found the first
    assert replies[0]["message"]["message_id"] == replies[1]["message"]["message_id"] == stored.message_id
    history = (
        await http.get(f"/api/messages/{conversation_id}", headers={"Authorization": f"Bearer {alice_token}"})
    ).json()["messages"]
    assert [m["content"] for m in history] == ["once"]


async def test_resync_required_is_answered_from_history(
    http, private_edge: Mesh, make_token, clients, redis_server: str, redis_prefix: str
) -> None:
    _, alice_token, bob_id, bob_token, conversation_id = await chat_pair(http, make_token)
    bob = Client(private_edge.edge_url, backoff_initial=0.05, backoff_max=0.5)
    clients.append(bob)
    await bob.connect(bob_token)
    await send(http, alice_token, conversation_id, "m0")
    await messages_of(bob, 1)

    await asyncio.to_thread(private_edge.stop, "edge")
    for i in (1, 2):
        await send(http, alice_token, conversation_id, f"m{i}")
    redis = aioredis.Redis.from_url(redis_server)
    inbox = Keys(redis_prefix).inbox(bob_id)
    async with asyncio.timeout(10):
        while await redis.xlen(inbox) < 3:  # m1 and m2 fanned out
            await asyncio.sleep(0.02)
    await redis.xtrim(inbox, maxlen=1, approximate=False)  # bob's token now points before the inbox
    await redis.aclose()
    await asyncio.to_thread(private_edge.start, "edge")

    events = []
    async with asyncio.timeout(15):
        async for event in bob.events():
            if isinstance(event, (MessageEvent, ResyncEvent)):
                events.append(event)
            if sum(isinstance(e, MessageEvent) for e in events) == 2:
                break
    await send(http, alice_token, conversation_id, "m3")
    events += await messages_of(bob, 1)
    events += await nothing_more(bob, 1.0)
    assert isinstance(events[0], ResyncEvent) and events[0].reason == "token_expired"
    messages = [e for e in events if isinstance(e, MessageEvent)]
    assert [e.message.content for e in messages] == ["m1", "m2", "m3"]  # once each, whichever path
    assert [e.recovered for e in messages] == [True, True, False]
    assert [m.content for m in bob.store.conversation_messages(conversation_id)] == ["m0", "m1", "m2", "m3"]


async def test_state_events_and_bad_token(mesh: Mesh, clients) -> None:
    from chatmesh_client import Unauthenticated

    client = Client(mesh.edge_url)
    clients.append(client)
    with pytest.raises(Unauthenticated):
        await client.connect("not-a-token")
    states = []
    while not client._events.empty():
        event = client._events.get_nowait()
        if isinstance(event, StateEvent):
            states.append(event.state)
    assert states[0] == "connecting"


async def test_dropped_sockets_lose_and_repeat_nothing(http, mesh: Mesh, make_token, clients) -> None:
    """Network drops in the middle of a stream of messages: the client resumes each time."""
    _, alice_token, _, bob_token, conversation_id = await chat_pair(http, make_token)
    bob = Client(mesh.edge_url, backoff_initial=0.02, backoff_max=0.2)
    clients.append(bob)
    await bob.connect(bob_token)

    async def alice_sends() -> None:
        for i in range(30):
            await send(http, alice_token, conversation_id, f"m{i}")
            if i in (8, 19):
                await bob.drop()

    sender = asyncio.create_task(alice_sends())
    got = await messages_of(bob, 30, timeout=30)
    await sender
    got += await nothing_more(bob, 1.0)
    assert [e.message.content for e in got] == [f"m{i}" for i in range(30)]
    assert bob.reconnects >= 2 and bob.close_codes.count(4000) >= 2


async def test_documented_attributes_read_and_set_as_before() -> None:
    """The README's connection attributes and the constructor's tunables stay plain attributes of the
    client (the socket task keeps them on its Connection)."""
    client = Client("http://127.0.0.1:9", backoff_max=1.5, send_timeout=0.25)
    try:
        assert (client.state, client.reconnects, client.close_codes, client.resume_token) == ("idle", 0, [], "")
        assert client.ws_url == "ws://127.0.0.1:9/ws" and not client.connected
        assert (client.backoff_max, client.send_timeout, client.backoff_initial) == (1.5, 0.25, 0.1)
        client.backoff_initial = 0.01
        client.resume_token = "from-an-earlier-run"
        assert (client.backoff_initial, client.resume_token) == (0.01, "from-an-earlier-run")
    finally:
        await client.close()


async def test_requests_blocks_and_settings_through_the_client(http, mesh: Mesh, make_token, clients) -> None:
    """A stranger's direct conversation arrives as a request; the client declines, accepts or blocks
    it, and hides its user's last seen."""
    from chatmesh_client import ChatError

    alice_id, alice_token, bob_id, bob_token, conversation_id = await chat_pair(http, make_token)
    alice, bob = Client(mesh.edge_url), Client(mesh.edge_url)
    clients += [alice, bob]
    await alice.connect(alice_token)
    await bob.connect(bob_token)

    (request,) = [c for c in await bob.conversations() if c.conversation_id == conversation_id]
    assert request.request_state == "pending" and request.is_request_to(bob_id) and not request.is_request_to(alice_id)
    assert [p.status for p in await alice.presence([bob_id])] == ["unknown"]  # a request hides the recipient
    declined = await bob.decline(conversation_id)
    assert (declined.request_state, declined.active) == ("declined", False)
    assert (await alice.create_direct(bob_id)).request_state == "pending"  # asked again
    assert (await bob.accept(conversation_id)).request_state == "accepted"
    assert bob.store.conversations[conversation_id].request_state == "accepted"

    assert (await bob.settings()).hide_last_seen is False
    assert (await bob.update_settings(hide_last_seen=True)).hide_last_seen is True
    assert (await bob.update_settings()).hide_last_seen is True  # nothing given: unchanged

    assert (await bob.block(conversation_id)).request_state == "blocked"
    with pytest.raises(ChatError) as refused:
        await alice.send(conversation_id, "hello?")
    assert refused.value.code == "BLOCKED"
