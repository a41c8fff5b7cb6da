"""Search: full text over the caller's conversations only, newest first, plaintext and live only."""

from __future__ import annotations

import base64

import httpx
import pytest

from tests.helpers import send
from tests.test_message_support import api, code_of, group, new_user_id


async def _search(http: httpx.AsyncClient, token: str, **params: str | int) -> httpx.Response:
    return await api(http, token, "GET", "/api/messages/search", params=params)


async def test_search_in_one_conversation_is_for_its_participants(
    http: httpx.AsyncClient, make_token, database_url: str
) -> None:
    alice, bob, eve = new_user_id("alice"), new_user_id("bob"), new_user_id("eve")
    ours = await group(database_url, {alice: "admin", bob: "member"})
    theirs = await group(database_url, {eve: "admin"})
    word = f"kumquat{new_user_id('w').split('-')[1]}"  # unique to this test
    older = await send(http, make_token(alice), ours, f"who likes {word} jam")
    newer = await send(http, make_token(bob), ours, f"{word} season soon!")
    await send(http, make_token(alice), ours, "nothing to see")
    await send(http, make_token(eve), theirs, f"secret {word} recipe")
    hits = (await _search(http, make_token(alice), q=word, conversation_id=ours)).json()["messages"]
    assert [m["message_id"] for m in hits] == [newer["message_id"], older["message_id"]]
    assert code_of(await _search(http, make_token(eve), q=word, conversation_id=ours)) == (403, "NOT_PARTICIPANT")
    assert code_of(await _search(http, make_token(alice), q=word, conversation_id="x")) == (400, "INVALID_ID")
    assert code_of(await _search(http, make_token(alice), q="  ")) == (400, "EMPTY_QUERY")
    assert code_of(await _search(http, make_token(alice), q="a" * 300)) == (400, "QUERY_TOO_LONG")
    limited = (await _search(http, make_token(alice), q=word, conversation_id=ours, limit=1)).json()["messages"]
    assert [m["message_id"] for m in limited] == [newer["message_id"]]


async def test_search_skips_deleted_and_encrypted_messages(
    http: httpx.AsyncClient, make_token, database_url: str
) -> None:
    alice = new_user_id("alice")
    cid = await group(database_url, {alice: "admin"})
    word = f"quince{new_user_id('w').split('-')[1]}"
    token = make_token(alice)
    gone = await send(http, token, cid, f"{word} one")
    await api(http, token, "DELETE", f"/api/messages/{gone['message_id']}")
    await api(
        http,
        token,
        "POST",
        "/api/messages",
        {
            "conversation_id": cid,
            "content_encrypted": base64.b64encode(word.encode()).decode(),
            "encryption": {"algorithm": "test"},
        },
    )
    kept = await send(http, token, cid, f"{word} two")
    edited = await send(http, token, cid, "typo")
    await api(http, token, "PATCH", f"/api/messages/{edited['message_id']}", {"content": f"{word} three"})
    hits = (await _search(http, token, q=word, conversation_id=cid)).json()["messages"]
    assert [m["message_id"] for m in hits] == [edited["message_id"], kept["message_id"]]


async def test_search_across_my_conversations_never_returns_anothers(
    http: httpx.AsyncClient, make_token, database_url: str
) -> None:
    alice, bob, eve = new_user_id("alice"), new_user_id("bob"), new_user_id("eve")
    first = await group(database_url, {alice: "admin", bob: "member"})
    second = await group(database_url, {bob: "admin", alice: "member"})
    foreign = await group(database_url, {eve: "admin", bob: "member"})
    word = f"durian{new_user_id('w').split('-')[1]}"
    a = await send(http, make_token(alice), first, f"{word} a")
    b = await send(http, make_token(bob), second, f"{word} b")
    await send(http, make_token(eve), foreign, f"{word} not for alice")
    reply = await _search(http, make_token(alice), q=word)
    if reply.status_code == 503:  # not landed yet: ListConversations is another engineer's issue
        pytest.skip("the conversation service does not list conversations yet")
    assert [m["message_id"] for m in reply.json()["messages"]] == [b["message_id"], a["message_id"]]
    bobs = (await _search(http, make_token(bob), q=word)).json()["messages"]
    assert len(bobs) == 3
    assert (await _search(http, make_token(new_user_id("nobody")), q=word)).json()["messages"] == []
