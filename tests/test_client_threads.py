"""Threads in the Python client (clients/python) against the real mesh: a thread read into the store,
replies sent into it, and the live ThreadEvent keeping an open thread and its root's count current."""

from __future__ import annotations

import asyncio

import httpx

from chatmesh_client import Client, ThreadEvent
from chatmesh_tools.launcher import Mesh
from tests.helpers import new_user_id
from tests.test_message_support import group


async def _thread_event(client: Client, reply_count: int, timeout: float = 10) -> ThreadEvent:
    """The first ThreadEvent that brings the thread to `reply_count`."""
    async with asyncio.timeout(timeout):
        async for event in client.events():
            if isinstance(event, ThreadEvent) and event.reply_count == reply_count:
                return event
    raise AssertionError("the client closed")


async def test_an_open_thread_stays_current(
    mesh: Mesh, http: httpx.AsyncClient, make_token, database_url: str, clients: list[Client]
) -> None:
    alice_id, bob_id = new_user_id("alice"), new_user_id("bob")
    cid = await group(database_url, {alice_id: "admin", bob_id: "member"})
    alice, bob = Client(mesh.edge_url), Client(mesh.edge_url)
    clients += [alice, bob]
    await alice.connect(make_token(alice_id))
    await bob.connect(make_token(bob_id))
    root = await alice.send(cid, "where do we meet?")
    first = await alice.reply(root, "I say the station")

    page = await bob.thread(root.message_id)  # bob opens the thread
    assert [m.content for m in page.messages] == ["I say the station"] and not page.has_more
    assert page.root.reply_count == 1 and page.root.last_reply_at == first.created_at
    assert bob.store.messages[root.message_id].reply_count == 1

    second = await alice.reply(root, "at noon")
    event = await _thread_event(bob, 2)
    assert event.root_message_id == root.message_id and event.conversation_id == cid and not event.durable
    assert event.reply is not None and event.reply.message_id == second.message_id
    assert event.last_reply_at == second.created_at
    assert [m.content for m in bob.store.thread_messages(root.message_id)] == ["I say the station", "at noon"]
    assert bob.store.messages[root.message_id].reply_count == 2
    assert bob.store.messages[root.message_id].last_reply_at == second.created_at

    # The replier's own client hears it too, and a deletion brings the count down.
    await _thread_event(alice, 2)
    await alice.delete(first.message_id)
    deleted = await _thread_event(bob, 1)
    assert deleted.reply is not None and deleted.reply.deleted and deleted.last_reply_at == second.created_at
    assert bob.store.messages[root.message_id].reply_count == 1
    assert [m.message_id for m in bob.store.thread_messages(root.message_id)] == [first.message_id, second.message_id]
    assert bob.store.messages[first.message_id].deleted

    # Paging older replies, as history pages.
    for text in ("a", "b", "c"):
        await bob.reply(root, text)
    newest = await bob.thread(root.message_id, limit=2)
    older = await bob.thread(root.message_id, limit=2, before_seq=newest.messages[0].seq)
    assert [m.content for m in newest.messages] == ["b", "c"] and newest.has_more
    assert [m.content for m in older.messages] == ["at noon", "a"] and older.has_more
    assert newest.root.reply_count == 4
