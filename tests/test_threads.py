"""Threads through the mesh: a message's replies paged (GET /api/threads/{message_id}), the root's
reply count and last reply time kept by sends and deletes, the live chat:thread_updated frame on
members' sockets, and the bad input that must leave nothing behind."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import psycopg

from chatmesh import db
from services.message import store
from tests.helpers import Socket, send
from tests.test_message_support import api, code_of, group, new_user_id, outbox_events


async def _thread(http: httpx.AsyncClient, token: str, root_id: str, **params: Any) -> dict[str, Any]:
    reply = await api(http, token, "GET", f"/api/threads/{root_id}", params=params)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def _contents(page: dict[str, Any]) -> list[str]:
    return [m["content"] for m in page["messages"]]


async def test_a_thread_pages_like_history_and_its_root_counts_the_replies(
    http: httpx.AsyncClient, make_token, database_url: str
) -> None:
    alice, bob, carol = new_user_id("alice"), new_user_id("bob"), new_user_id("carol")
    cid = await group(database_url, {alice: "admin", bob: "member", carol: "member"})
    root = await send(http, make_token(alice), cid, "lunch?")
    other = await send(http, make_token(alice), cid, "unrelated")
    replies = []
    for i, user in enumerate((bob, carol, bob, alice, carol)):
        replies.append(await send(http, make_token(user), cid, f"r{i}", reply_to_id=root["message_id"]))
    await send(http, make_token(bob), cid, "not in the thread", reply_to_id=other["message_id"])

    latest = await _thread(http, make_token(carol), root["message_id"], limit=2)
    assert _contents(latest) == ["r3", "r4"] and latest["has_more"] is True
    assert latest["root"]["message_id"] == root["message_id"] and latest["root"]["content"] == "lunch?"
    assert latest["root"]["reply_count"] == 5
    assert latest["root"]["last_reply_at"] == replies[-1]["created_at"]
    older = await _thread(http, make_token(carol), root["message_id"], limit=2, before_seq=latest["messages"][0]["seq"])
    oldest = await _thread(http, make_token(carol), root["message_id"], limit=2, before_seq=older["messages"][0]["seq"])
    assert (_contents(older), older["has_more"]) == (["r1", "r2"], True)
    assert (_contents(oldest), oldest["has_more"]) == (["r0"], False)
    forward = await _thread(http, make_token(bob), root["message_id"], limit=3, after_seq=replies[0]["seq"])
    assert (_contents(forward), forward["has_more"]) == (["r1", "r2", "r3"], True)
    whole = await _thread(http, make_token(bob), root["message_id"])  # limit 0: the default page
    assert _contents(whole) == ["r0", "r1", "r2", "r3", "r4"] and whole["has_more"] is False
    assert all(m["reply_to_id"] == root["message_id"] for m in whole["messages"])

    # Replies are messages of the conversation like any other; history shows the root's count too.
    history = (await api(http, make_token(bob), "GET", f"/api/messages/{cid}")).json()["messages"]
    assert [m["content"] for m in history][:2] == ["lunch?", "unrelated"] and len(history) == 8
    assert [m["reply_count"] for m in history[:2]] == [5, 1]
    assert history[2]["reply_count"] == 0 and "last_reply_at" not in history[2]
    # A message without replies is a thread with none.
    empty = await _thread(http, make_token(bob), replies[0]["message_id"])
    assert empty["messages"] == [] and empty["root"]["reply_count"] == 0 and empty["has_more"] is False


async def test_a_deleted_reply_no_longer_counts_but_stays_a_placeholder(
    http: httpx.AsyncClient, make_token, database_url: str
) -> None:
    alice, bob = new_user_id("alice"), new_user_id("bob")
    cid = await group(database_url, {alice: "admin", bob: "member"})
    root = await send(http, make_token(alice), cid, "root")
    first, second, third = [
        await send(http, make_token(bob), cid, text, reply_to_id=root["message_id"]) for text in ("one", "two", "three")
    ]

    async def root_now() -> dict[str, Any]:
        return dict((await _thread(http, make_token(alice), root["message_id"]))["root"])

    assert (await api(http, make_token(bob), "DELETE", f"/api/messages/{second['message_id']}")).status_code == 200
    assert (await root_now())["reply_count"] == 2
    assert (await root_now())["last_reply_at"] == third["created_at"]
    # Deleting the latest reply moves the last reply time back to the latest live one.
    assert (await api(http, make_token(alice), "DELETE", f"/api/messages/{third['message_id']}")).status_code == 200
    assert (await api(http, make_token(alice), "DELETE", f"/api/messages/{third['message_id']}")).status_code == 200
    after = await root_now()
    assert (after["reply_count"], after["last_reply_at"]) == (1, first["created_at"])
    page = await _thread(http, make_token(bob), root["message_id"])
    assert [(m["content"], m["deleted"]) for m in page["messages"]] == [("one", False), ("", True), ("", True)]
    # The last one gone: no count, no time; a new reply counts from there.
    assert (await api(http, make_token(bob), "DELETE", f"/api/messages/{first['message_id']}")).status_code == 200
    gone = await root_now()
    assert gone["reply_count"] == 0 and "last_reply_at" not in gone
    fourth = await send(http, make_token(bob), cid, "four", reply_to_id=root["message_id"])
    assert ((await root_now())["reply_count"], (await root_now())["last_reply_at"]) == (1, fourth["created_at"])
    # A deleted root keeps its thread: the placeholder still says how many replies it has.
    await api(http, make_token(alice), "DELETE", f"/api/messages/{root['message_id']}")
    placeholder = await root_now()
    assert placeholder["deleted"] is True and placeholder["content"] == "" and placeholder["reply_count"] == 1


async def test_concurrent_replies_are_each_counted_once(http: httpx.AsyncClient, make_token, database_url: str) -> None:
    alice, bob = new_user_id("alice"), new_user_id("bob")
    cid = await group(database_url, {alice: "admin", bob: "member"})
    root = await send(http, make_token(alice), cid, "count us")
    sent = await asyncio.gather(
        *(
            send(http, make_token(user), cid, f"c{i}", reply_to_id=root["message_id"], client_message_id=f"c{i}")
            for i, user in enumerate([alice, bob] * 8)
        )
    )
    # A resend of one of them (same client_message_id) is the same message, not another reply.
    await send(http, make_token(alice), cid, "c0", reply_to_id=root["message_id"], client_message_id="c0")
    page = await _thread(http, make_token(bob), root["message_id"], limit=200)
    assert page["root"]["reply_count"] == 16 == len(page["messages"])
    newest = max(sent, key=lambda m: int(m["seq"]))
    assert page["root"]["last_reply_at"] == newest["created_at"]


async def test_bad_thread_requests_and_replies_are_refused_and_leave_nothing(
    http: httpx.AsyncClient, make_token, database_url: str
) -> None:
    alice, bob, eve = new_user_id("alice"), new_user_id("bob"), new_user_id("eve")
    cid = await group(database_url, {alice: "admin", bob: "member"})
    elsewhere = await group(database_url, {alice: "admin", eve: "member"})
    root = await send(http, make_token(alice), cid, "root")
    foreign = await send(http, make_token(alice), elsewhere, "foreign")
    path = f"/api/threads/{root['message_id']}"

    # Not a participant: 403 as for history; unknown or malformed ids as for every message route.
    assert code_of(await api(http, make_token(eve), "GET", path)) == (403, "NOT_PARTICIPANT")
    assert code_of(await api(http, make_token(eve), "GET", f"/api/messages/{cid}")) == (403, "NOT_PARTICIPANT")
    assert code_of(await api(http, make_token(alice), "GET", "/api/threads/00000000-0000-0000-0000-00000000000a")) == (
        404,
        "MESSAGE_NOT_FOUND",
    )
    assert code_of(await api(http, make_token(alice), "GET", "/api/threads/not-an-id")) == (400, "INVALID_ID")
    for params, code in (
        ({"limit": 201}, "INVALID_LIMIT"),
        ({"limit": -1}, "INVALID_LIMIT"),
        ({"before_seq": -1}, "INVALID_ARGUMENT"),
        ({"before_seq": 5, "after_seq": 1}, "INVALID_ARGUMENT"),
        ({"limit": "many"}, "INVALID_ARGUMENT"),
    ):
        assert code_of(await api(http, make_token(alice), "GET", path, params=params)) == (400, code), params

    # A reply into another conversation's message: refused as unknown (404, as before threads: the
    # message's existence elsewhere is not told), with no seq taken, no count, no event.
    events_before = len(outbox_events(database_url, cid))
    for target in (foreign["message_id"], "00000000-0000-0000-0000-00000000000b"):
        refused = await api(
            http,
            make_token(alice),
            "POST",
            "/api/messages",
            {"conversation_id": cid, "content": "x", "reply_to_id": target},
        )
        assert code_of(refused) == (404, "REPLY_TO_NOT_FOUND")
    assert len(outbox_events(database_url, cid)) == events_before
    assert (await _thread(http, make_token(alice), foreign["message_id"]))["root"]["reply_count"] == 0
    after = await send(http, make_token(alice), cid, "next")
    assert int(after["seq"]) == int(root["seq"]) + 1  # the refused sends took no seq


async def test_a_reply_event_carries_its_thread_and_store_names_the_participants(
    http: httpx.AsyncClient, make_token, database_url: str
) -> None:
    """The stored event of a reply parses with the thread the send's statement appended (the root's
    new count after the seq), and `store.thread_participants` is what push notifications ask."""
    alice, bob, carol = new_user_id("alice"), new_user_id("bob"), new_user_id("carol")
    cid = await group(database_url, {alice: "admin", bob: "member", carol: "member"})
    root = await send(http, make_token(alice), cid, "root")
    replies = [
        await send(http, make_token(user), cid, "re", reply_to_id=root["message_id"]) for user in (carol, bob, carol)
    ]
    received = [e for e in outbox_events(database_url, cid) if e.type == "chat:message_received"]
    assert not received[0].HasField("thread")
    for event, reply, count in zip(received[1:], replies, (1, 2, 3), strict=True):
        assert event.message.message_id == reply["message_id"] and event.message.seq == int(reply["seq"])
        assert event.thread.root_message_id == root["message_id"] and event.thread.reply_count == count
        assert event.thread.last_reply_at.ToJsonString() == reply["created_at"]
    await api(http, make_token(carol), "DELETE", f"/api/messages/{replies[2]['message_id']}")
    deleted = [e for e in outbox_events(database_url, cid) if e.type == "chat:message_deleted"][-1]
    assert (deleted.thread.root_message_id, deleted.thread.reply_count) == (root["message_id"], 2)
    assert deleted.thread.last_reply_at.ToJsonString() == replies[1]["created_at"]

    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        assert await store.thread_participants(conn, root["message_id"]) == [alice, carol, bob]
        assert await store.thread_participants(conn, replies[0]["message_id"]) == [carol]
        assert await store.thread_participants(conn, "00000000-0000-0000-0000-00000000000c") == []


async def test_members_sockets_hear_thread_updates_live(
    http: httpx.AsyncClient, make_token, mesh, database_url: str
) -> None:
    alice, bob, carol = new_user_id("alice"), new_user_id("bob"), new_user_id("carol")
    cid = await group(database_url, {alice: "admin", bob: "member", carol: "member"})
    root = await send(http, make_token(alice), cid, "root")
    watcher = await Socket.open(mesh.edge_url, make_token(bob))  # bob has the thread open, not in it yet
    author = await Socket.open(mesh.edge_url, make_token(alice))
    for socket in (watcher, author):
        # The root, from the offline buffer of a socket opened without a token. Waited for before the
        # reply: a reply committed while the buffer is read comes from PostgreSQL, without the live
        # event's thread (the frame is live state; a client re-reads open threads after a replay).
        assert (await socket.next_of("chat:message_received"))["data"]["message_id"] == root["message_id"]

    reply = await send(http, make_token(carol), cid, "first!", reply_to_id=root["message_id"])
    for socket in (watcher, author):
        assert (await socket.next_of("chat:message_received"))["data"]["message_id"] == reply["message_id"]
        frame = await socket.next_of("chat:thread_updated")  # behind the reply it tells of
        assert frame["type"] == "chat:thread_updated" and frame["conversation_id"] == cid
        assert "event_id" not in frame and "resume_token" not in frame  # live state, nothing to acknowledge
        assert frame["data"]["root_message_id"] == root["message_id"]
        assert (frame["data"]["reply_count"], frame["data"]["last_reply_at"]) == (1, reply["created_at"])
        assert frame["data"]["reply"]["message_id"] == reply["message_id"]
        assert frame["data"]["reply"]["content"] == "first!"

    await api(http, make_token(carol), "DELETE", f"/api/messages/{reply['message_id']}")
    frame = await watcher.next_of("chat:thread_updated")
    assert frame["data"]["root_message_id"] == root["message_id"] and frame["data"]["reply_count"] == 0
    assert "last_reply_at" not in frame["data"] and frame["data"]["reply"]["deleted"] is True
    # A plain message makes no thread frame: the next one is the next reply's.
    await send(http, make_token(carol), cid, "plain")
    again = await send(http, make_token(carol), cid, "again", reply_to_id=root["message_id"])
    frame = await watcher.next_of("chat:thread_updated")
    assert frame["data"]["reply"]["message_id"] == again["message_id"] and frame["data"]["reply_count"] == 1


async def test_the_migration_counts_replies_sent_before_it(make_database, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A database that had replies before 0004: each root gets its live replies' count and latest time."""
    migrations = Path(store.__file__).parent / "migrations"
    before = tmp_path / "before"
    before.mkdir()
    for path in sorted(migrations.glob("000[123]_*.sql")):
        (before / path.name).write_text(path.read_text())
    url = make_database()
    await db.migrate(url, store.SCHEMA, before, shared_ddl=store.SHARED_DDL)
    cid, root, other = (
        "00000000-0000-0000-0000-0000000000c1",
        "00000000-0000-0000-0000-0000000000a1",
        "00000000-0000-0000-0000-0000000000a2",
    )
    rows = [
        (root, 1, None, "2026-01-01T10:00:00Z", None),
        (other, 2, None, "2026-01-01T10:01:00Z", None),
        ("00000000-0000-0000-0000-0000000000b1", 3, root, "2026-01-01T10:02:00Z", None),
        ("00000000-0000-0000-0000-0000000000b2", 4, root, "2026-01-01T10:03:00Z", None),
        ("00000000-0000-0000-0000-0000000000b3", 5, root, "2026-01-01T10:04:00Z", "2026-01-01T11:00:00Z"),
    ]
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for message_id, seq, reply_to, at, deleted in rows:
            await conn.execute(
                """INSERT INTO message.messages (message_id, conversation_id, seq, sender_id, content, reply_to_id,
                       created_at, deleted_at) VALUES (%s, %s, %s, 'u', 'x', %s, %s, %s)""",
                (message_id, cid, seq, reply_to, at, deleted),
            )
    applied = await db.migrate(url, store.SCHEMA, migrations, shared_ddl=store.SHARED_DDL)
    assert applied[0] == "0004_threads.sql"  # then any later ones
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute("""SELECT message_id::text, reply_count,
                                           to_char(last_reply_at AT TIME ZONE 'UTC', 'HH24:MI')
                                    FROM message.messages WHERE seq <= 2 ORDER BY seq""")
        assert await cur.fetchall() == [(root, 2, "10:03"), (other, 0, None)]
