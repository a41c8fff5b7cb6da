"""`Client.close()` sends the acknowledgements still waiting for their batch: a client that reads a
message and closes must not see it again next time (the README's tour.py printed the same old
message on every run, because its one message's acknowledgement never left)."""

from __future__ import annotations

import asyncio

from chatmesh_client import Client, MessageEvent

from chatmesh.launcher import Mesh
from tests.helpers import direct_conversation, new_user_id, register, send


async def _received(client: Client, timeout: float = 15) -> list[str]:
    """Message ids of the chat:message_received events `client` sees until it is quiet for a while."""
    got: list[str] = []
    try:
        async with asyncio.timeout(timeout):
            async for event in client.events():
                if isinstance(event, MessageEvent) and event.type == "chat:message_received":
                    got.append(event.message.message_id)
    except TimeoutError:
        pass
    return got


async def test_close_sends_the_pending_acknowledgements(http, mesh: Mesh, make_token) -> None:
    alice, bob = new_user_id("alice"), new_user_id("bob")
    await register(http, make_token(bob))
    conversation_id = await direct_conversation(http, make_token(alice), bob)

    # A long batch delay: the acknowledgement is certainly still waiting when close() runs.
    first = Client(mesh.edge_url, ack_delay=30)
    await first.connect(make_token(bob))
    sent = await send(http, make_token(alice), conversation_id, "read once")
    async with asyncio.timeout(15):
        async for event in first.events():
            if isinstance(event, MessageEvent) and event.message.message_id == sent["message_id"]:
                break
    await first.close()
    # The acknowledgement moved bob's delivered position: alice's tick says delivered.
    alice_client = Client(mesh.edge_url)
    try:
        await alice_client.connect(make_token(alice))
        async with asyncio.timeout(10):
            while (await alice_client.history(conversation_id)).messages[-1].status != "delivered":
                await asyncio.sleep(0.05)
    finally:
        await alice_client.close()

    # A new client of bob's (no resume token, as a new run of a script): only what comes after.
    second = Client(mesh.edge_url)
    try:
        await second.connect(make_token(bob))
        later = await send(http, make_token(alice), conversation_id, "new")
        assert await _received(second, timeout=2) == [later["message_id"]]
    finally:
        await second.close()
