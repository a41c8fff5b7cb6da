"""Conversation settings through the Python client (clients/python): an admin renames and archives,
the other participant's store follows by events and keeps their own mute and pin, a send into the
archived group fails with CONVERSATION_ARCHIVED, and the last admin leaving is told to hand over."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from chatmesh_client import ChatError, Client, ConversationEvent
from chatmesh_tools.launcher import Mesh
from tests.helpers import new_user_id, register


async def next_conversation_event(client: Client, kind: str, timeout: float = 10) -> ConversationEvent:
    async with asyncio.timeout(timeout):
        async for event in client.events():
            if isinstance(event, ConversationEvent) and event.type == kind:
                return event
    raise AssertionError(f"no {kind}")


async def test_settings_round_trip_through_the_client(
    http: httpx.AsyncClient, mesh: Mesh, make_token, clients: list[Client]
) -> None:
    ann_id, bob_id = new_user_id("ann"), new_user_id("bob")
    for user in (ann_id, bob_id):
        await register(http, make_token(user))
    ann, bob, bob_again = Client(mesh.edge_url), Client(mesh.edge_url), Client(mesh.edge_url)  # bob twice
    clients += [ann, bob, bob_again]
    for client, user in ((ann, ann_id), (bob, bob_id), (bob_again, bob_id)):
        await client.connect(make_token(user))
    group = await ann.create_group("before", [bob_id])
    cid = group.conversation_id
    for client in (bob, bob_again):  # subscribed (the edge says ready just before it subscribes)
        await next_conversation_event(client, "conversation:created")

    # Bob's own mute and pin: on the answer, in his store, and on his other device by event.
    mine = await bob.set_preferences(cid, muted=True, pinned=True)
    assert (mine.muted, mine.pinned) == (True, True)
    changed = await next_conversation_event(bob_again, "conversation:preferences_changed")
    assert changed.preferences == {"muted": True, "pinned": True} and changed.conversation is None
    assert (bob_again.store.conversations[cid].muted, bob_again.store.conversations[cid].pinned) == (True, True)

    # Ann renames: bob's store takes the new name and keeps his own mute and pin.
    renamed = await ann.update_conversation(cid, title="after", description="about things")
    assert (renamed.title, renamed.description) == ("after", "about things")
    event = await next_conversation_event(bob, "conversation:updated")
    assert event.conversation is not None and event.conversation.title == "after"
    stored = bob.store.conversations[cid]
    assert (stored.title, stored.description, stored.muted, stored.pinned) == ("after", "about things", True, True)
    with pytest.raises(ChatError) as refused:
        await bob.update_conversation(cid, title="mine")
    assert (refused.value.code, refused.value.status) == ("INSUFFICIENT_ROLE", 403)

    # Ann archives: bob hears it, and his send fails with the clear code (not retried, not stored).
    assert (await ann.archive(cid)).archived is True
    await next_conversation_event(bob, "conversation:archived")
    assert bob.store.conversations[cid].archived is True
    with pytest.raises(ChatError) as archived:
        await bob.send(cid, "into the archive")
    assert archived.value.code == "CONVERSATION_ARCHIVED"
    assert (await ann.archive(cid, archived=False)).archived is False
    assert (await bob.send(cid, "open again")).seq == 1

    # The last admin leaving is told to hand over, or closes the group.
    with pytest.raises(ChatError) as last_admin:
        await ann.leave(cid)
    assert last_admin.value.code == "LAST_ADMIN"
    closed = await ann.leave(cid, close_group=True)
    assert closed.active is False
    assert (await next_conversation_event(bob, "conversation:closed")).conversation is not None
    assert bob.store.conversations[cid].active is False
