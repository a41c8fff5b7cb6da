"""Listing conversations: newest activity first, keyset pages that stay stable while messages arrive,
participant counts, and clear 400s for bad limits and cursors."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from tests.helpers import send
from tests.test_conversation_support import Person, create_group, error_of, eventually, people


async def listed(http: httpx.AsyncClient, person: Person, **params: Any) -> dict[str, Any]:
    reply = await http.get("/api/conversations", params=params, headers=person.auth)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


async def all_pages(http: httpx.AsyncClient, person: Person, limit: int) -> list[list[str]]:
    pages, cursor = [], ""
    while True:
        page = await listed(http, person, limit=limit, **({"cursor": cursor} if cursor else {}))
        pages.append([c["conversation_id"] for c in page["conversations"]])
        cursor = page["next_cursor"]
        if not cursor:
            return pages


async def test_newest_activity_first(http: httpx.AsyncClient, make_token) -> None:
    ann, bob = await people(http, make_token, "ann", "bob")
    a, b, c = [(await create_group(http, ann, [bob], title=t))["conversation_id"] for t in ("a", "b", "c")]
    assert [x["conversation_id"] for x in (await listed(http, ann))["conversations"]] == [c, b, a]
    await send(http, ann.token, a, "wake up")

    async def a_first() -> list[str] | None:
        ids = [x["conversation_id"] for x in (await listed(http, bob))["conversations"]]
        return ids if ids == [a, c, b] else None

    await eventually(a_first)


async def test_list_items_carry_counts_and_only_direct_participants(http: httpx.AsyncClient, make_token) -> None:
    ann, bob, cat = await people(http, make_token, "ann", "bob", "cat")
    group = await create_group(http, ann, [bob, cat])
    direct = (await http.post("/api/conversations/direct", json={"user_id": bob.id}, headers=ann.auth)).json()
    items = {c["conversation_id"]: c for c in (await listed(http, ann))["conversations"]}
    listed_group = items[group["conversation_id"]]
    assert listed_group["participant_count"] == 3 and listed_group["participants"] == []
    assert listed_group["title"] == "team" and listed_group["unread_count"] == "0"
    listed_direct = items[direct["conversation"]["conversation_id"]]
    assert listed_direct["participant_count"] == 2
    assert {p["user_id"] for p in listed_direct["participants"]} == {ann.id, bob.id}


async def test_pages_cover_everything_once(http: httpx.AsyncClient, make_token) -> None:
    (ann,) = await people(http, make_token, "ann")
    created = [(await create_group(http, ann, [], title=f"g{i}"))["conversation_id"] for i in range(5)]
    pages = await all_pages(http, ann, limit=2)
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [cid for page in pages for cid in page] == created[::-1]


async def test_pages_stay_stable_while_messages_arrive(http: httpx.AsyncClient, make_token) -> None:
    (ann,) = await people(http, make_token, "ann")
    created = [(await create_group(http, ann, [], title=f"g{i}"))["conversation_id"] for i in range(6)]
    first = await listed(http, ann, limit=2)
    seen = [c["conversation_id"] for c in first["conversations"]]
    assert seen == created[:-3:-1]
    # Activity on an already seen conversation and on one not yet seen, between pages.
    await send(http, ann.token, seen[1], "seen one moves up")
    await send(http, ann.token, created[0], "unseen one moves up")

    async def moved() -> bool:
        top = [c["conversation_id"] for c in (await listed(http, ann, limit=2))["conversations"]]
        return set(top) == {seen[1], created[0]}

    await eventually(moved)
    cursor, rest = first["next_cursor"], []
    while cursor:
        page = await listed(http, ann, limit=2, cursor=cursor)
        rest += [c["conversation_id"] for c in page["conversations"]]
        cursor = page["next_cursor"]
    everything = seen + rest
    assert len(everything) == len(set(everything)), everything  # nothing twice
    unchanged = set(created) - {seen[1], created[0]}
    assert unchanged <= set(everything)  # nothing whose activity did not change is skipped


async def test_default_limit_is_20_and_100_is_allowed(http: httpx.AsyncClient, make_token) -> None:
    (ann,) = await people(http, make_token, "ann")
    for i in range(21):
        await create_group(http, ann, [], title=f"g{i}")
    default = await listed(http, ann)
    assert len(default["conversations"]) == 20 and default["next_cursor"]
    assert len((await listed(http, ann, limit=100))["conversations"]) == 21


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"limit": "-1"}, "INVALID_LIMIT"),
        ({"limit": "101"}, "INVALID_LIMIT"),
        ({"limit": "ten"}, "INVALID_ARGUMENT"),
        ({"cursor": "%%%not-base64"}, "INVALID_CURSOR"),
        ({"cursor": base64.urlsafe_b64encode(b"not json").decode()}, "INVALID_CURSOR"),
        ({"cursor": base64.urlsafe_b64encode(b"[1, 2]").decode()}, "INVALID_CURSOR"),
        (
            {"cursor": base64.urlsafe_b64encode(json.dumps({"a": 1, "t": 2, "i": 3}).encode()).decode()},
            "INVALID_CURSOR",
        ),
        (
            {
                "cursor": base64.urlsafe_b64encode(
                    json.dumps(
                        {"a": "2026-01-01T00:00:00+00:00", "t": "2026-01-01T00:00:00+00:00", "i": "nope"}
                    ).encode()
                ).decode()
            },
            "INVALID_CURSOR",
        ),
        (
            {
                "cursor": base64.urlsafe_b64encode(
                    json.dumps(
                        {
                            "a": "2026-01-01T00:00:00",
                            "t": "2026-01-01T00:00:00",
                            "i": "00000000-0000-0000-0000-000000000000",
                        }
                    ).encode()
                ).decode()
            },
            "INVALID_CURSOR",
        ),  # timestamps without a zone
    ],
)
async def test_bad_limits_and_cursors_are_400(
    http: httpx.AsyncClient, make_token, params: dict[str, str], code: str
) -> None:
    (ann,) = await people(http, make_token, "ann")
    reply = await http.get("/api/conversations", params=params, headers=ann.auth)
    assert error_of(reply) == (400, code)
