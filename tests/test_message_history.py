"""History: ascending keyset pages by seq at every boundary, placeholders for deleted messages."""

from __future__ import annotations

import httpx
import psycopg

from services.message import seed_store
from tests.helpers import send
from tests.test_message_support import api, code_of, group, new_user_id


async def _page(http: httpx.AsyncClient, token: str, cid: str, **params: int) -> tuple[list[int], bool]:
    reply = await api(http, token, "GET", f"/api/messages/{cid}", params=params)
    assert reply.status_code == 200, reply.text
    return [int(m["seq"]) for m in reply.json()["messages"]], reply.json()["has_more"]


async def test_pages_walk_backwards_and_forwards_at_the_boundaries(
    http: httpx.AsyncClient, make_token, database_url: str
) -> None:
    alice, bob = new_user_id("alice"), new_user_id("bob")
    cid = await group(database_url, {alice: "admin", bob: "member"})
    token = make_token(bob)
    assert await _page(http, token, cid) == ([], False)
    for i in range(1, 6):
        await send(http, make_token(alice), cid, f"m{i}")
    assert await _page(http, token, cid) == ([1, 2, 3, 4, 5], False)
    assert await _page(http, token, cid, limit=5) == ([1, 2, 3, 4, 5], False)
    assert await _page(http, token, cid, limit=2) == ([4, 5], True)
    assert await _page(http, token, cid, limit=2, before_seq=4) == ([2, 3], True)
    assert await _page(http, token, cid, limit=2, before_seq=2) == ([1], False)
    assert await _page(http, token, cid, limit=2, before_seq=1) == ([], False)
    assert await _page(http, token, cid, limit=2, after_seq=1) == ([2, 3], True)
    assert await _page(http, token, cid, limit=2, after_seq=3) == ([4, 5], False)
    assert await _page(http, token, cid, limit=2, after_seq=5) == ([], False)
    assert await _page(http, token, cid, limit=2, after_seq=99) == ([], False)
    assert await _page(http, token, cid, before_seq=99) == ([1, 2, 3, 4, 5], False)


async def test_default_page_is_50_and_the_maximum_200(http: httpx.AsyncClient, make_token, database_url: str) -> None:
    alice, bob = new_user_id("alice"), new_user_id("bob")
    cid = await group(database_url, {alice: "admin", bob: "member"})
    async with await psycopg.AsyncConnection.connect(database_url) as conn, conn.transaction():
        await seed_store.seed_history(conn, cid, alice, 250)  # 250 messages without 250 round trips
    token = make_token(bob)
    seqs, more = await _page(http, token, cid)
    assert (seqs, more) == (list(range(201, 251)), True)
    seqs, more = await _page(http, token, cid, limit=1000)
    assert (seqs, more) == (list(range(51, 251)), True)
    seqs, more = await _page(http, token, cid, limit=1000, before_seq=51)
    assert (seqs, more) == (list(range(1, 51)), False)


async def test_bad_paging_input_is_400_and_access_is_checked(
    http: httpx.AsyncClient, make_token, database_url: str
) -> None:
    alice, eve = new_user_id("alice"), new_user_id("eve")
    cid = await group(database_url, {alice: "admin"})
    token = make_token(alice)
    assert code_of(await api(http, token, "GET", f"/api/messages/{cid}", params={"limit": -1})) == (
        400,
        "INVALID_ARGUMENT",
    )
    assert code_of(await api(http, token, "GET", f"/api/messages/{cid}", params={"before_seq": 3, "after_seq": 1})) == (
        400,
        "INVALID_ARGUMENT",
    )
    assert code_of(await api(http, token, "GET", f"/api/messages/{cid}", params={"limit": "x"})) == (
        400,
        "INVALID_ARGUMENT",
    )
    assert code_of(await api(http, token, "GET", "/api/messages/not-a-uuid")) == (400, "INVALID_ID")
    assert code_of(await api(http, token, "GET", "/api/messages/00000000-0000-0000-0000-000000000000")) == (
        404,
        "CONVERSATION_NOT_FOUND",
    )
    assert code_of(await api(http, make_token(eve), "GET", f"/api/messages/{cid}")) == (403, "NOT_PARTICIPANT")


async def test_deleted_messages_stay_as_placeholders(http: httpx.AsyncClient, make_token, database_url: str) -> None:
    alice, bob = new_user_id("alice"), new_user_id("bob")
    cid = await group(database_url, {alice: "admin", bob: "member"})
    token = make_token(alice)
    first = await send(http, token, cid, "keep")
    doomed = await send(http, token, cid, "secret", reply_to_id=first["message_id"])
    await api(http, make_token(bob), "POST", f"/api/messages/{doomed['message_id']}/reactions", {"emoji": "👍"})
    assert (await api(http, token, "DELETE", f"/api/messages/{doomed['message_id']}")).status_code == 200
    messages = (await api(http, make_token(bob), "GET", f"/api/messages/{cid}")).json()["messages"]
    assert [m["seq"] for m in messages] == ["1", "2"]
    placeholder = messages[1]
    assert placeholder["deleted"] is True and placeholder["deleted_at"]
    assert placeholder["message_id"] == doomed["message_id"] and placeholder["sender_id"] == alice
    assert placeholder["content"] == "" and placeholder["reactions"] == [] and placeholder["reply_to_id"] == ""
    assert "secret" not in str(messages)
