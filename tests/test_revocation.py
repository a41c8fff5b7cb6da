"""Immediate revocation: once a removal has returned, no replica acts on the old membership.

Every message and presence replica caches membership for a few seconds; the conversation service
publishes each change's membership version to Redis before the change returns, and a cache entry is
used only while no newer version is published. Two message replicas and two edges, caches warm on
both, and the removed participant's every next action is refused, whichever replica it reaches.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.helpers import bearer, new_user_id, register, send
from tests.test_delivery_faults import REPLICATED, private_mesh, running  # noqa: F401 - the fixture

TRIES_PER_EDGE = 6  # round-robin over two message replicas: each sees several


async def test_a_removed_participant_is_refused_at_once_on_every_replica(
    isolated_env, tmp_path: Path, running, make_token
) -> None:
    mesh = private_mesh(isolated_env(CHAT_RATE_REST="0", CHAT_RATE_MESSAGES="0"), tmp_path / "logs", REPLICATED)
    running.append(mesh)
    mesh.start()
    alice, carol = new_user_id("alice"), new_user_id("carol")
    edges = [httpx.AsyncClient(base_url=mesh.url_of(name), timeout=10) for name in ("edge", "edge-2")]
    try:
        for user in (alice, carol):
            await register(edges[0], make_token(user))
        reply = await edges[0].post(
            "/api/conversations/group",
            headers=bearer(make_token(alice)),
            json={"title": "team", "participant_ids": [carol]},
        )
        conversation_id = reply.json()["conversation"]["conversation_id"]
        first = await send(edges[0], make_token(alice), conversation_id, "hello")
        # Warm every replica's cache with carol's membership: sends, history, typing through both edges.
        for edge in edges:
            for n in range(TRIES_PER_EDGE):
                await send(edge, make_token(carol), conversation_id, f"carol {n}")
                assert (
                    await edge.get(f"/api/messages/{conversation_id}", headers=bearer(make_token(carol)))
                ).status_code == 200
                assert (
                    await edge.post(
                        f"/api/conversations/{conversation_id}/typing",
                        json={"is_typing": True},
                        headers=bearer(make_token(carol)),
                    )
                ).status_code == 200

        removed = await edges[0].delete(
            f"/api/conversations/{conversation_id}/participants/{carol}", headers=bearer(make_token(alice))
        )
        assert removed.status_code == 200, removed.text

        carol_auth = bearer(make_token(carol))
        accepted: list[str] = []
        for index, edge in enumerate(edges):
            for n in range(TRIES_PER_EDGE):
                attempts = {
                    "send": edge.post(
                        "/api/messages",
                        headers=carol_auth,
                        json={"conversation_id": conversation_id, "content": f"after {index}.{n}"},
                    ),
                    "history": edge.get(f"/api/messages/{conversation_id}", headers=carol_auth),
                    "search": edge.get(
                        "/api/messages/search",
                        params={"q": "hello", "conversation_id": conversation_id},
                        headers=carol_auth,
                    ),
                    "typing": edge.post(
                        f"/api/conversations/{conversation_id}/typing", json={"is_typing": True}, headers=carol_auth
                    ),
                    "reaction": edge.post(
                        f"/api/messages/{first['message_id']}/reactions", json={"emoji": "👍"}, headers=carol_auth
                    ),
                    "receipt": edge.post(
                        f"/api/messages/{first['message_id']}/status",
                        json={"status": "MESSAGE_STATUS_READ"},
                        headers=carol_auth,
                    ),
                }
                for action, request in attempts.items():
                    reply = await request
                    if reply.status_code != 403:
                        accepted.append(f"{action} via edge {index + 1}: {reply.status_code} {reply.text[:120]}")
        assert accepted == []
    finally:
        for edge in edges:
            await edge.aclose()
