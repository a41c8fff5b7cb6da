"""Reactions: one emoji each, several per user, each once, aggregated; participants only."""

from __future__ import annotations

import urllib.parse

import httpx

from tests.helpers import send
from tests.test_message_support import api, code_of, group, new_user_id, outbox_events


async def test_reactions_aggregate_and_are_idempotent(http: httpx.AsyncClient, make_token, database_url: str) -> None:
    alice, bob, carol = new_user_id("alice"), new_user_id("bob"), new_user_id("carol")
    cid = await group(database_url, {alice: "admin", bob: "member", carol: "member"})
    mid = (await send(http, make_token(alice), cid, "vote"))["message_id"]
    path = f"/api/messages/{mid}/reactions"
    for user, emoji in ((bob, "👍"), (carol, "👍"), (bob, "👨‍👩‍👧"), (bob, "👍"), (carol, "👍🏽")):
        reply = await api(http, make_token(user), "POST", path, {"emoji": emoji})
        assert reply.status_code == 200, reply.text
    summary = {r["emoji"]: (r["count"], r["user_ids"]) for r in reply.json()["message"]["reactions"]}
    assert summary == {"👍": (2, [bob, carol]), "👨‍👩‍👧": (1, [bob]), "👍🏽": (1, [carol])}

    removed = await api(http, make_token(bob), "DELETE", f"{path}/{urllib.parse.quote('👍')}")
    again = await api(http, make_token(bob), "DELETE", f"{path}/{urllib.parse.quote('👍')}")
    assert removed.status_code == again.status_code == 200
    summary = {r["emoji"]: r["user_ids"] for r in again.json()["message"]["reactions"]}
    assert summary == {"👍": [carol], "👨‍👩‍👧": [bob], "👍🏽": [carol]}
    history = (await api(http, make_token(alice), "GET", f"/api/messages/{cid}")).json()["messages"]
    assert {r["emoji"]: r["count"] for r in history[0]["reactions"]} == {"👍": 1, "👨‍👩‍👧": 1, "👍🏽": 1}

    events = [
        (e.type, e.reaction.user_id, e.reaction.emoji)
        for e in outbox_events(database_url, cid)
        if e.HasField("reaction")
    ]
    assert events == [
        ("chat:reaction_added", bob, "👍"),
        ("chat:reaction_added", carol, "👍"),
        ("chat:reaction_added", bob, "👨‍👩‍👧"),
        ("chat:reaction_added", carol, "👍🏽"),
        ("chat:reaction_removed", bob, "👍"),
    ]


async def test_only_single_emoji_are_accepted(http: httpx.AsyncClient, make_token, database_url: str) -> None:
    alice = new_user_id("alice")
    cid = await group(database_url, {alice: "admin"})
    mid = (await send(http, make_token(alice), cid, "hi"))["message_id"]
    path = f"/api/messages/{mid}/reactions"
    for bad in ("", "a", ":)", "👍👍", "👍 ", "ok👍", "1", "\u200d", "x" * 500):
        assert code_of(await api(http, make_token(alice), "POST", path, {"emoji": bad})) == (400, "INVALID_EMOJI"), (
            repr(bad)
        )
    assert code_of(await api(http, make_token(alice), "DELETE", f"{path}/abc")) == (400, "INVALID_EMOJI")
    for good in ("❤️", "🇫🇷", "#️⃣", "🫠"):
        assert (await api(http, make_token(alice), "POST", path, {"emoji": good})).status_code == 200, good


async def test_reactions_need_a_participant_and_a_live_message(
    http: httpx.AsyncClient, make_token, database_url: str
) -> None:
    alice, eve = new_user_id("alice"), new_user_id("eve")
    cid = await group(database_url, {alice: "admin"})
    mid = (await send(http, make_token(alice), cid, "hi"))["message_id"]
    assert code_of(await api(http, make_token(eve), "POST", f"/api/messages/{mid}/reactions", {"emoji": "👍"})) == (
        403,
        "NOT_PARTICIPANT",
    )
    assert code_of(await api(http, make_token(alice), "POST", "/api/messages/bad/reactions", {"emoji": "👍"})) == (
        400,
        "INVALID_ID",
    )
    assert code_of(
        await api(
            http,
            make_token(alice),
            "POST",
            "/api/messages/00000000-0000-0000-0000-00000000000a/reactions",
            {"emoji": "👍"},
        )
    ) == (404, "MESSAGE_NOT_FOUND")
    await api(http, make_token(alice), "DELETE", f"/api/messages/{mid}")
    assert code_of(await api(http, make_token(alice), "POST", f"/api/messages/{mid}/reactions", {"emoji": "👍"})) == (
        400,
        "MESSAGE_DELETED",
    )
