"""The projection applies a whole batch of events at once: events published in one MULTI reach it
in one read, so these check that a batch ends where applying its events one by one would (the
highest seq wins, reads and own messages interleave correctly) and that re-reading it changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis.asyncio as aioredis

from chatmesh.gen.chat.v1 import common_pb2
from chatmesh.redis_conn import Keys
from tests.test_conversation_projection import message_event, read_event
from tests.test_conversation_support import create_group, people, settles

Publish = Callable[..., Awaitable[None]]
RECEIVED = "chat:message_received"


@pytest.fixture
async def publish_batch(redis_server: str, redis_prefix: str) -> AsyncIterator[Publish]:
    """Add events to the stream atomically (MULTI/EXEC), so the projection reads them as one batch."""
    client = aioredis.Redis.from_url(redis_server)

    async def publish(*events: common_pb2.Event) -> None:
        async with client.pipeline(transaction=True) as pipe:
            for event in events:
                pipe.xadd(Keys(redis_prefix).events_of(event.conversation_id), {b"e": event.SerializeToString()})
            await pipe.execute()

    yield publish
    await client.aclose()


async def test_a_batch_of_one_conversation_ends_at_its_highest_seq(
    http: httpx.AsyncClient, make_token, publish_batch: Publish
) -> None:
    ann, bob, cat = await people(http, make_token, "ann", "bob", "cat")
    cid = (await create_group(http, ann, [bob, cat]))["conversation_id"]
    # Out of order and with repeats: ann 1, bob 2, ann 3, bob 4, ann 5; bob read up to 2, then 4.
    await publish_batch(
        message_event(RECEIVED, cid, 3, ann.id, "three"),
        message_event(RECEIVED, cid, 5, ann.id, "five"),
        message_event(RECEIVED, cid, 1, ann.id, "one"),
        read_event(cid, bob.id, 4),
        message_event(RECEIVED, cid, 4, bob.id, "four"),
        message_event(RECEIVED, cid, 2, bob.id, "two"),
        read_event(cid, bob.id, 2),
        message_event(RECEIVED, cid, 5, ann.id, "five"),
    )
    state = await settles(http, cat, cid, {"last_message.seq": "5", "unread_count": "5"})
    assert state["last_message"]["text"] == "five" and state["last_message"]["sender_id"] == ann.id
    assert state["last_message_at"] == "2030-01-01T00:00:05Z"
    await settles(http, ann, cid, {"unread_count": "2"})  # 5 - own 1, 3, 5
    await settles(http, bob, cid, {"unread_count": "1"})  # 5 - read 4 (his own 2 and 4 covered by it)

    # His own message past his read position is never unread; reading past it stops subtracting it.
    await publish_batch(
        read_event(cid, bob.id, 6),
        message_event(RECEIVED, cid, 6, bob.id, "six"),
        message_event(RECEIVED, cid, 7, bob.id, "seven"),
        message_event(RECEIVED, cid, 8, cat.id, "eight"),
    )
    await settles(http, bob, cid, {"last_message.seq": "8", "unread_count": "1"})  # 8 - read 6 - own 7
    await settles(http, cat, cid, {"unread_count": "7"})  # 8 - own 8


async def test_edits_and_deletes_in_the_batch_of_their_message(
    http: httpx.AsyncClient, make_token, publish_batch: Publish
) -> None:
    ann, bob = await people(http, make_token, "ann", "bob")
    edited_cid, deleted_cid = [(await create_group(http, ann, [bob]))["conversation_id"] for _ in range(2)]
    t = datetime(2030, 1, 2, tzinfo=UTC)
    mid, other = str(uuid.UUID(int=2)), str(uuid.UUID(int=3))
    await publish_batch(
        # The newest edit wins even when an older one comes after it; an edit of an older message is no preview.
        message_event("chat:message_updated", edited_cid, 2, ann.id, "newest", mid, edited=t + timedelta(1)),
        message_event(RECEIVED, edited_cid, 2, ann.id, "original", mid),
        message_event("chat:message_updated", edited_cid, 2, ann.id, "stale", mid, edited=t),
        message_event(RECEIVED, edited_cid, 1, bob.id, "first"),
        message_event("chat:message_updated", edited_cid, 1, bob.id, "first, edited", edited=t + timedelta(2)),
        # A deletion sticks, whatever edit follows it in the batch.
        message_event(RECEIVED, deleted_cid, 3, ann.id, "regret", other),
        message_event("chat:message_deleted", deleted_cid, 3, ann.id, "", other, deleted=True),
        message_event("chat:message_updated", deleted_cid, 3, ann.id, "undead", other, edited=t + timedelta(3)),
    )
    edited = await settles(http, bob, edited_cid, {"last_message.seq": "2", "last_message.text": "newest"})
    assert edited["unread_count"] == "1"  # 2 - own 1
    gone = await settles(http, bob, deleted_cid, {"last_message.seq": "3", "last_message.deleted": True})
    assert gone["last_message"]["text"] == "" and gone["last_message"]["message_id"] == other


async def test_reprocessing_a_batch_changes_nothing(
    http: httpx.AsyncClient, make_token, publish_batch: Publish
) -> None:
    ann, bob = await people(http, make_token, "ann", "bob")
    cid, marker_cid = [(await create_group(http, ann, [bob]))["conversation_id"] for _ in range(2)]
    batch = [
        message_event(RECEIVED, cid, 1, ann.id, "one"),
        message_event(RECEIVED, cid, 2, bob.id, "two"),
        message_event(RECEIVED, cid, 3, bob.id, "three"),
        read_event(cid, ann.id, 2),
        message_event(RECEIVED, cid, 4, ann.id, "four"),
    ]
    await publish_batch(*batch)
    before_ann = await settles(http, ann, cid, {"last_message.seq": "4", "unread_count": "1"})  # 4 - read 2 - own 4
    before_bob = await settles(http, bob, cid, {"unread_count": "2"})  # 4 - own 2, 3

    # The same entries again (as after a crash between commit and XACK), then a marker that shows
    # the projection has read past them.
    await publish_batch(*batch, message_event(RECEIVED, marker_cid, 1, ann.id, "marker"))
    await settles(http, bob, marker_cid, {"last_message.text": "marker"})
    assert await settles(http, ann, cid, {}) == before_ann
    assert await settles(http, bob, cid, {}) == before_bob

    # Counting goes on from the right place: bob reads everything, ann writes once more.
    await publish_batch(read_event(cid, bob.id, 4), message_event(RECEIVED, cid, 5, ann.id, "five"))
    await settles(http, bob, cid, {"last_message.seq": "5", "unread_count": "1"})
    await settles(http, ann, cid, {"unread_count": "1"})  # 5 - read 2 - own 4, 5


async def test_events_of_non_participants_move_no_position(
    http: httpx.AsyncClient, make_token, publish_batch: Publish
) -> None:
    ann, bob, outsider = await people(http, make_token, "ann", "bob", "outsider")
    cid = (await create_group(http, ann, [bob]))["conversation_id"]
    await publish_batch(
        message_event(RECEIVED, cid, 1, ann.id, "one"),
        read_event(cid, outsider.id, 5),
        message_event(RECEIVED, cid, 2, bob.id, "two"),
    )
    await settles(http, bob, cid, {"last_message.seq": "2", "unread_count": "1"})
    await settles(http, ann, cid, {"unread_count": "1"})
