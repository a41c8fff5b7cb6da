"""The users and conversations a scenario needs, made through the public REST API (as an app would)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from chatmesh_tools.bench.target import Target

CONCURRENCY = 32


async def _each(items: list[Any], fn: Any) -> list[Any]:
    limit = asyncio.Semaphore(CONCURRENCY)

    async def one(item: Any) -> Any:
        async with limit:
            for attempt in range(5):
                try:
                    return await fn(item)
                except (httpx.TransportError, httpx.HTTPStatusError):
                    if attempt == 4:
                        raise
                    await asyncio.sleep(0.2 * (attempt + 1))

    return list(await asyncio.gather(*(one(i) for i in items)))


async def _users(client: httpx.AsyncClient, target: Target, user_ids: list[str]) -> dict[str, str]:
    tokens = {u: target.token(u) for u in user_ids}

    async def put(user_id: str) -> None:
        r = await client.put(
            "/api/users/me", json={"display_name": user_id}, headers={"Authorization": f"Bearer {tokens[user_id]}"}
        )
        r.raise_for_status()

    await _each(user_ids, put)
    return tokens


async def _groups(client: httpx.AsyncClient, tokens: dict[str, str], members: list[list[str]], title: str) -> list[str]:
    async def create(group: list[str]) -> str:
        if len(group) == 2:
            r = await client.post(
                "/api/conversations/direct",
                json={"user_id": group[1]},
                headers={"Authorization": f"Bearer {tokens[group[0]]}"},
            )
        else:
            r = await client.post(
                "/api/conversations/group",
                json={"title": title, "participant_ids": group[1:]},
                headers={"Authorization": f"Bearer {tokens[group[0]]}"},
            )
        r.raise_for_status()
        return str(r.json()["conversation"]["conversation_id"])

    return await _each(members, create)


def make(
    target: Target, prefix: str, n_users: int, group_size: int, register: bool = True
) -> tuple[list[tuple[str, str]], list[str]]:
    """n_users users (`<prefix>-u<i>`) in consecutive conversations of group_size (2 = direct;
    0 = none); returns [(user, token)] and the conversation each user sends into."""

    async def run() -> tuple[list[tuple[str, str]], list[str]]:
        limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        async with httpx.AsyncClient(base_url=target.url, timeout=60, limits=limits) as client:
            user_ids = [f"{prefix}-u{i}" for i in range(n_users)]
            tokens = await _users(client, target, user_ids) if register else {u: target.token(u) for u in user_ids}
            conversations = [""] * n_users
            if group_size >= 2:
                groups = [user_ids[i : i + group_size] for i in range(0, n_users - group_size + 1, group_size)]
                ids = await _groups(client, tokens, groups, f"bench {prefix}")
                for g, cid in enumerate(ids):
                    for i in range(g * group_size, (g + 1) * group_size):
                        conversations[i] = cid
            return [(u, tokens[u]) for u in user_ids], conversations

    return asyncio.run(run())
