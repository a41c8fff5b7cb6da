"""Receipts as positions: one-way, idempotent, concurrency-safe, and announced once per move."""

from __future__ import annotations

import asyncio
import random

import httpx
import psycopg

from tests.helpers import send
from tests.test_message_support import api, code_of, group, mark, new_user_id, outbox_events


def position(database_url: str, cid: str, user: str) -> tuple[int, int] | None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT delivered_seq, read_seq FROM message.positions WHERE conversation_id = %s AND user_id = %s",
            (cid, user),
        ).fetchone()
    return None if row is None else (int(row[0]), int(row[1]))


async def test_status_only_moves_forward_and_is_idempotent(
    http: httpx.AsyncClient, make_token, database_url: str
) -> None:
    alice, bob = new_user_id("alice"), new_user_id("bob")
    cid = await group(database_url, {alice: "admin", bob: "member"})
    sent = [await send(http, make_token(alice), cid, f"m{i}") for i in range(1, 5)]
    bob_token = make_token(bob)

    delivered = await mark(http, bob_token, sent[1]["message_id"], "delivered")
    assert delivered.json() == {"delivered_seq": "2", "read_seq": "0"}
    read = await mark(http, bob_token, sent[2]["message_id"], "read")  # read implies delivered
    assert read.json() == {"delivered_seq": "3", "read_seq": "3"}
    for older, status in ((sent[0], "read"), (sent[1], "delivered"), (sent[2], "read"), (sent[2], "delivered")):
        reply = await mark(http, bob_token, older["message_id"], status)
        assert reply.json() == {"delivered_seq": "3", "read_seq": "3"}, (older["seq"], status)
    assert (await mark(http, bob_token, sent[3]["message_id"], "delivered")).json() == {
        "delivered_seq": "4",
        "read_seq": "3",
    }
    assert position(database_url, cid, bob) == (4, 3)

    receipts = [
        (e.type, e.receipt.seq, e.receipt.user_id, e.receipt.message_id)
        for e in outbox_events(database_url, cid)
        if e.HasField("receipt")
    ]
    assert receipts == [
        ("chat:message_delivered", 2, bob, sent[1]["message_id"]),
        ("chat:message_read", 3, bob, sent[2]["message_id"]),
        ("chat:message_delivered", 4, bob, sent[3]["message_id"]),
    ]


async def test_concurrent_delivered_and_read_updates_never_go_backwards(
    http: httpx.AsyncClient, make_token, database_url: str
) -> None:
    alice, bob = new_user_id("alice"), new_user_id("bob")
    cid = await group(database_url, {alice: "admin", bob: "member"})
    sent = [await send(http, make_token(alice), cid, f"m{i}") for i in range(1, 11)]
    bob_token = make_token(bob)
    rng = random.Random(7)
    updates = [(rng.choice(sent), rng.choice(["delivered", "read"])) for _ in range(60)]
    replies = await asyncio.gather(*(mark(http, bob_token, m["message_id"], s) for m, s in updates))
    assert all(r.status_code == 200 for r in replies)
    want_read = max((int(m["seq"]) for m, s in updates if s == "read"), default=0)
    want_delivered = max(int(m["seq"]) for m, _ in updates)
    assert position(database_url, cid, bob) == (want_delivered, want_read)
    # Each answer is a position at least as far as what that call asked for.
    for (m, s), reply in zip(updates, replies, strict=True):
        assert int(reply.json()["delivered_seq"]) >= int(m["seq"])
        if s == "read":
            assert int(reply.json()["read_seq"]) >= int(m["seq"])
    # Announced positions only ever grow, per kind, in commit order.
    for kind in ("chat:message_delivered", "chat:message_read"):
        seqs = [e.receipt.seq for e in outbox_events(database_url, cid) if e.type == kind]
        assert seqs == sorted(set(seqs))


async def test_invalid_statuses_and_ids_are_4xx(http: httpx.AsyncClient, make_token, database_url: str) -> None:
    alice, bob, eve = new_user_id("alice"), new_user_id("bob"), new_user_id("eve")
    cid = await group(database_url, {alice: "admin", bob: "member"})
    message_id = (await send(http, make_token(alice), cid, "hi"))["message_id"]
    token = make_token(bob)
    path = f"/api/messages/{message_id}/status"
    for status in ("MESSAGE_STATUS_UNSPECIFIED", "MESSAGE_STATUS_SENT", 0, 1, 99):
        assert code_of(await api(http, token, "POST", path, {"status": status})) == (400, "INVALID_STATUS"), status
    assert code_of(await api(http, token, "POST", path, {})) == (400, "INVALID_STATUS")
    assert code_of(await api(http, token, "POST", path, {"status": "bogus"})) == (400, "INVALID_ARGUMENT")
    assert code_of(await mark(http, token, "nope", "read")) == (400, "INVALID_ID")
    assert code_of(await mark(http, token, "00000000-0000-0000-0000-000000000009", "read")) == (
        404,
        "MESSAGE_NOT_FOUND",
    )
    assert code_of(await mark(http, make_token(eve), message_id, "read")) == (403, "NOT_PARTICIPANT")
    assert position(database_url, cid, bob) is None


async def test_history_shows_each_readers_view_of_status(
    http: httpx.AsyncClient, make_token, database_url: str
) -> None:
    alice, bob, carol = new_user_id("alice"), new_user_id("bob"), new_user_id("carol")
    cid = await group(database_url, {alice: "admin", bob: "member", carol: "member"})
    sent = [await send(http, make_token(alice), cid, f"m{i}") for i in range(1, 4)]
    await mark(http, make_token(bob), sent[1]["message_id"], "read")
    await mark(http, make_token(carol), sent[2]["message_id"], "delivered")

    mine, bobs, carols = [
        (await api(http, make_token(u), "GET", f"/api/messages/{cid}")).json()["messages"] for u in (alice, bob, carol)
    ]
    assert [m["status"] for m in mine] == [
        "MESSAGE_STATUS_DELIVERED",
        "MESSAGE_STATUS_DELIVERED",
        "MESSAGE_STATUS_SENT",
    ]
    assert {r["user_id"]: r["status"] for r in mine[1]["recipients"]} == {
        bob: "MESSAGE_STATUS_READ",
        carol: "MESSAGE_STATUS_DELIVERED",
    }
    assert {r["user_id"]: r["status"] for r in mine[2]["recipients"]} == {
        bob: "MESSAGE_STATUS_SENT",
        carol: "MESSAGE_STATUS_DELIVERED",
    }
    assert [m["status"] for m in bobs] == ["MESSAGE_STATUS_READ", "MESSAGE_STATUS_READ", "MESSAGE_STATUS_SENT"]
    assert [m["status"] for m in carols] == ["MESSAGE_STATUS_DELIVERED"] * 3
    assert all(m["recipients"] == [] for m in bobs + carols)  # others do not watch each other read
