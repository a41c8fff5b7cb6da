"""Helpers for the conversation service's tests (no tests here): users, groups, errors, polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx

from tests.helpers import bearer, new_user_id, register

T = TypeVar("T")


class Person:
    """A registered user with their token, ready to call the edge."""

    def __init__(self, user_id: str, token: str) -> None:
        self.id = user_id
        self.token = token

    @property
    def auth(self) -> dict[str, str]:
        return bearer(self.token)


async def people(http: httpx.AsyncClient, make_token: Callable[..., str], *names: str) -> list[Person]:
    found = []
    for name in names:
        user = new_user_id(name)
        person = Person(user, make_token(user))
        await register(http, person.token)
        found.append(person)
    return found


async def create_group(
    http: httpx.AsyncClient, creator: Person, others: list[Person], title: str = "team"
) -> dict[str, Any]:
    reply = await http.post(
        "/api/conversations/group",
        json={"title": title, "participant_ids": [p.id for p in others]},
        headers=creator.auth,
    )
    assert reply.status_code == 200, reply.text
    return dict(reply.json()["conversation"])


async def staffed_group(http: httpx.AsyncClient, make_token: Callable[..., str]) -> tuple[str, dict[str, Person]]:
    """A group with an admin, two moderators and two members, plus an outsider and a spare user to add."""
    admin, moderator, moderator2, member, member2, outsider, spare = await people(
        http, make_token, "admin", "moderator", "moderator2", "member", "member2", "outsider", "spare"
    )
    group = await create_group(http, admin, [moderator, moderator2, member, member2])
    cid = group["conversation_id"]
    for person in (moderator, moderator2):
        reply = await http.patch(
            f"/api/conversations/{cid}/participants/{person.id}", json={"role": "ROLE_MODERATOR"}, headers=admin.auth
        )
        assert reply.status_code == 200, reply.text
    return cid, {
        "admin": admin,
        "moderator": moderator,
        "moderator2": moderator2,
        "member": member,
        "member2": member2,
        "outsider": outsider,
        "spare": spare,
    }


def error_of(reply: httpx.Response) -> tuple[int, str]:
    return reply.status_code, str(reply.json().get("error", {}).get("code", ""))


def roles_of(conversation: dict[str, Any]) -> dict[str, str]:
    return {p["user_id"]: p["role"] for p in conversation["participants"]}


async def eventually(check: Callable[[], Awaitable[T | None]], timeout: float = 10.0, interval: float = 0.05) -> T:
    """Poll until check returns something truthy; fail with the last value after a bounded wait."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


async def view(http: httpx.AsyncClient, person: Person, conversation_id: str) -> dict[str, Any]:
    reply = await http.get(f"/api/conversations/{conversation_id}", headers=person.auth)
    assert reply.status_code == 200, reply.text
    return dict(reply.json()["conversation"])


async def settles(
    http: httpx.AsyncClient, person: Person, conversation_id: str, expect: dict[str, Any]
) -> dict[str, Any]:
    """Poll the conversation until the listed fields (dotted paths) have the expected values."""
    seen: list[dict[str, Any]] = []

    async def check() -> dict[str, Any] | None:
        seen[:] = [await view(http, person, conversation_id)]
        return seen[0] if all(_at(seen[0], path) == value for path, value in expect.items()) else None

    try:
        return await eventually(check)
    except AssertionError:
        raise AssertionError(f"expected {expect}, last seen {seen}") from None


def _at(data: dict[str, Any], path: str) -> Any:
    for key in path.split("."):
        data = data.get(key, {}) if isinstance(data, dict) else {}
    return data if data != {} else None
