"""The projection of the message service's events: last_message_at, the preview (first 100
characters; none for a deleted message) and unread counts, kept from the events stream through the
"conversation-projection" consumer group; idempotent and order-safe under replays and reordering."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from google.protobuf.timestamp_pb2 import Timestamp

from chatmesh.gen.chat.v1 import common_pb2
from chatmesh.redis_conn import Keys
from chatmesh_tools.embedded import free_port
from chatmesh_tools.launcher import Mesh
from services.conversation.projection import GROUP
from tests.helpers import send
from tests.test_conversation_support import create_group, eventually, people, settles


async def test_messages_update_preview_activity_and_unread(http: httpx.AsyncClient, make_token) -> None:
    ann, bob = await people(http, make_token, "ann", "bob")
    cid = (await create_group(http, ann, [bob]))["conversation_id"]
    await send(http, ann.token, cid, "one")
    await send(http, bob.token, cid, "two")
    long_text = "x" * 99 + "é" + "y" * 50
    last = await send(http, ann.token, cid, long_text)
    seen = await settles(http, bob, cid, {"last_message.message_id": last["message_id"], "unread_count": "2"})
    assert seen["last_message"]["text"] == long_text[:100]
    assert seen["last_message"]["sender_id"] == ann.id and seen["last_message"]["seq"] == "3"
    assert seen["last_message"]["sent_at"] == last["created_at"] == seen["last_message_at"]
    # Ann's own two messages are not unread for her; bob's one is.
    await settles(http, ann, cid, {"unread_count": "1"})
    listed = (await http.get("/api/conversations", headers=bob.auth)).json()["conversations"]
    assert [c["unread_count"] for c in listed if c["conversation_id"] == cid] == ["2"]


async def test_reading_clears_unread_and_own_messages_never_count(http: httpx.AsyncClient, make_token) -> None:
    ann, bob = await people(http, make_token, "ann", "bob")
    cid = (await create_group(http, ann, [bob]))["conversation_id"]
    for text in ("a", "b"):  # seq 1, 2
        last = await send(http, ann.token, cid, text)
    await settles(http, bob, cid, {"unread_count": "2"})
    read = await http.post(
        f"/api/messages/{last['message_id']}/status", json={"status": "MESSAGE_STATUS_READ"}, headers=bob.auth
    )
    assert read.status_code == 200, read.text
    await settles(http, bob, cid, {"unread_count": "0"})
    await send(http, bob.token, cid, "bob writes")  # seq 3: his own, after his read position
    await send(http, ann.token, cid, "ann answers")  # seq 4
    # bob: 4 - read 2 - own 1 = 1; ann (never read): 4 - 0 - own 3 = 1.
    await settles(http, bob, cid, {"unread_count": "1", "last_message.text": "ann answers"})
    await settles(http, ann, cid, {"unread_count": "1"})


async def test_edits_and_deletes_reach_the_preview(http: httpx.AsyncClient, make_token) -> None:
    ann, bob = await people(http, make_token, "ann", "bob")
    cid = (await create_group(http, ann, [bob]))["conversation_id"]
    await send(http, ann.token, cid, "older")
    last = await send(http, ann.token, cid, "typo")
    older_edit = await http.patch(f"/api/messages/{last['message_id']}", json={"content": "fixed"}, headers=ann.auth)
    assert older_edit.status_code == 200, older_edit.text
    await settles(http, bob, cid, {"last_message.text": "fixed", "last_message.deleted": False})
    deleted = await http.delete(f"/api/messages/{last['message_id']}", headers=ann.auth)
    assert deleted.status_code == 200, deleted.text
    gone = await settles(http, bob, cid, {"last_message.deleted": True})
    assert gone["last_message"]["text"] == "" and gone["last_message"]["message_id"] == last["message_id"]


# Events injected straight onto the events stream, as the message service's relay would publish them
# (replayed and out of order), into a conversation where no real message is sent.


@pytest.fixture
async def events_stream(redis_server: str, redis_prefix: str) -> AsyncIterator[Any]:
    client = aioredis.Redis.from_url(redis_server)

    async def publish(*events: common_pb2.Event) -> None:
        for event in events:
            await client.xadd(Keys(redis_prefix).events_of(event.conversation_id), {b"e": event.SerializeToString()})

    yield publish
    await client.aclose()


def _ts(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def message_event(
    kind: str,
    cid: str,
    seq: int,
    sender: str,
    content: str,
    message_id: str = "",
    edited: datetime | None = None,
    deleted: bool = False,
) -> common_pb2.Event:
    sent = datetime(2030, 1, 1, tzinfo=UTC) + timedelta(seconds=seq)
    message = common_pb2.Message(
        message_id=message_id or str(uuid.UUID(int=seq)),
        conversation_id=cid,
        seq=seq,
        sender_id=sender,
        content="" if deleted else content,
        created_at=_ts(sent),
        deleted=deleted,
        edited_at=_ts(edited) if edited else None,
    )
    return common_pb2.Event(event_id=uuid.uuid4().hex, type=kind, conversation_id=cid, message=message)


def read_event(cid: str, user: str, seq: int) -> common_pb2.Event:
    return common_pb2.Event(
        event_id=uuid.uuid4().hex,
        type="chat:message_read",
        conversation_id=cid,
        receipt=common_pb2.ReceiptEvent(
            conversation_id=cid, user_id=user, seq=seq, status=common_pb2.MESSAGE_STATUS_READ
        ),
    )


async def test_replayed_and_reordered_events_change_nothing(http: httpx.AsyncClient, make_token, events_stream) -> None:
    ann, bob = await people(http, make_token, "ann", "bob")
    cid = (await create_group(http, ann, [bob]))["conversation_id"]
    received = "chat:message_received"
    # Newer before older, and each twice.
    await events_stream(
        message_event(received, cid, 2, bob.id, "second"),
        message_event(received, cid, 1, ann.id, "first"),
        message_event(received, cid, 2, bob.id, "second"),
        message_event(received, cid, 1, ann.id, "first"),
    )
    state = await settles(http, ann, cid, {"last_message.seq": "2", "unread_count": "1"})
    assert state["last_message"]["text"] == "second" and state["last_message_at"] == "2030-01-01T00:00:02Z"
    await settles(http, bob, cid, {"unread_count": "1"})

    # A read position never moves back; a replayed own message is counted once.
    await events_stream(
        read_event(cid, ann.id, 2),
        read_event(cid, ann.id, 1),
        message_event(received, cid, 3, ann.id, "third"),
        message_event(received, cid, 3, ann.id, "third"),
        read_event(cid, bob.id, 1),
    )
    await settles(http, ann, cid, {"last_message.seq": "3", "unread_count": "0"})
    await settles(http, bob, cid, {"unread_count": "1"})  # 3 - read 1 - own (seq 2) 1

    # An older edit arriving after a newer one never wins; a deletion sticks.
    t = datetime(2030, 1, 2, tzinfo=UTC)
    mid = str(uuid.UUID(int=3))
    await events_stream(
        message_event("chat:message_updated", cid, 3, ann.id, "newest", mid, edited=t + timedelta(1)),
        message_event("chat:message_updated", cid, 3, ann.id, "stale", mid, edited=t),
    )
    await settles(http, bob, cid, {"last_message.text": "newest"})
    await events_stream(
        message_event("chat:message_deleted", cid, 3, ann.id, "", mid, deleted=True),
        message_event("chat:message_updated", cid, 3, ann.id, "undead", mid, edited=t + timedelta(2)),
        message_event("chat:message_updated", cid, 2, bob.id, "old message edited", edited=t),
    )
    gone = await settles(http, bob, cid, {"last_message.deleted": True})
    assert gone["last_message"]["text"] == "" and gone["last_message"]["seq"] == "3"


async def test_unreadable_entries_do_not_stop_the_projection(
    http: httpx.AsyncClient, make_token, events_stream, redis_server: str, redis_prefix: str
) -> None:
    ann, bob = await people(http, make_token, "ann", "bob")
    cid = (await create_group(http, ann, [bob]))["conversation_id"]
    client = aioredis.Redis.from_url(redis_server)
    try:
        await client.xadd(Keys(redis_prefix).events_of(cid), {b"e": b"\xff\x00 not a protobuf"})
        await client.xadd(Keys(redis_prefix).events_of(cid), {b"other": b"no e field"})
    finally:
        await client.aclose()
    await events_stream(message_event("chat:message_received", cid, 1, ann.id, "after the junk"))
    await settles(http, bob, cid, {"last_message.text": "after the junk", "unread_count": "1"})


async def test_a_stopped_replica_leaves_the_consumer_group(
    mesh: Mesh, mesh_env: dict[str, str], workdir: Path, redis_server: str, redis_prefix: str
) -> None:
    """A clean stop removes the replica's consumer (it holds nothing pending), so restarts do not pile up."""
    client = aioredis.Redis.from_url(redis_server)
    stream = Keys(redis_prefix).event_partition(0)  # where an event without a conversation goes
    # An event nobody acts on: no recipients for fan-out, nothing for the projection.
    noop = common_pb2.Event(event_id=uuid.uuid4().hex, type="test:noop", conversation=common_pb2.ConversationEvent())

    async def has(name: bytes) -> bool:
        await client.xadd(stream, {b"e": noop.SerializeToString()})  # Redis 7.0 adds a consumer once served
        return name in {c["name"] for c in await client.xinfo_consumers(stream, GROUP)}

    extra = Mesh(
        env=mesh_env,
        ports={"conversation": free_port(), "message": mesh.ports["message"]},
        log_dir=workdir / "projection-replica",
    )
    try:
        extra.start("conversation")
        name = f"{socket.gethostname()}-{extra.processes['conversation'].pid}".encode()
        await eventually(lambda: has(name))
    finally:
        extra.stop()
    try:
        assert name not in {c["name"] for c in await client.xinfo_consumers(stream, GROUP)}
    finally:
        await client.aclose()
