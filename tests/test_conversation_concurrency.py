"""Membership changes racing each other: the conversation's row lock makes each one decide against
the membership the previous one left, so a group never ends without an admin, never passes its
size limit, and is deactivated exactly once."""

from __future__ import annotations

import asyncio

import httpx
import psycopg

from tests.helpers import send
from tests.test_conversation_support import create_group, people, roles_of, settles


async def test_everyone_leaving_at_once_deactivates_exactly_once(
    http: httpx.AsyncClient, make_token, database_url: str
) -> None:
    admin, *members = await people(http, make_token, "admin", "m1", "m2", "m3", "m4", "m5")
    cid = (await create_group(http, admin, members))["conversation_id"]
    replies = await asyncio.gather(
        *(http.delete(f"/api/conversations/{cid}/participants/{p.id}", headers=p.auth) for p in (admin, *members))
    )
    assert [r.status_code for r in replies] == [200] * 6, [r.text for r in replies]
    with psycopg.connect(database_url) as conn:
        active, count, version = conn.execute(
            "SELECT active, participant_count, membership_version FROM conversation.conversations"
            " WHERE conversation_id = %s",
            (cid,),
        ).fetchone() or (None, None, None)
        deactivations = conn.execute(
            "SELECT count(*) FROM conversation.audit_log WHERE conversation_id = %s"
            " AND action = 'conversation.deactivated'",
            (cid,),
        ).fetchone()
    assert (active, count, deactivations) == (False, 0, (1,))
    assert version is not None and version >= 7  # created at 1, then six removals (and any promotions)


async def test_two_admins_demoting_each_other_leave_one_admin(http: httpx.AsyncClient, make_token) -> None:
    ann, bob, cat = await people(http, make_token, "ann", "bob", "cat")
    cid = (await create_group(http, ann, [bob, cat]))["conversation_id"]
    await http.patch(f"/api/conversations/{cid}/participants/{bob.id}", json={"role": "ROLE_ADMIN"}, headers=ann.auth)
    replies = await asyncio.gather(
        http.patch(f"/api/conversations/{cid}/participants/{bob.id}", json={"role": "ROLE_MEMBER"}, headers=ann.auth),
        http.patch(f"/api/conversations/{cid}/participants/{ann.id}", json={"role": "ROLE_MEMBER"}, headers=bob.auth),
    )
    assert sorted(r.status_code for r in replies) == [200, 403]  # the loser is no longer an admin
    final = await http.get(f"/api/conversations/{cid}", headers=cat.auth)
    assert list(roles_of(final.json()["conversation"]).values()).count("ROLE_ADMIN") == 1


async def test_concurrent_adds_are_each_applied_once(http: httpx.AsyncClient, make_token) -> None:
    admin, *newcomers = await people(http, make_token, "admin", "n1", "n2", "n3", "n4")
    cid = (await create_group(http, admin, []))["conversation_id"]
    adds = [
        http.post(f"/api/conversations/{cid}/participants", json={"user_id": p.id}, headers=admin.auth)
        for p in newcomers
        for _ in range(2)
    ]
    replies = await asyncio.gather(*adds)
    assert sorted(r.status_code for r in replies) == [200] * 4 + [409] * 4
    final = await http.get(f"/api/conversations/{cid}", headers=admin.auth)
    assert final.json()["conversation"]["participant_count"] == 5


async def test_a_newcomer_starts_with_nothing_unread(http: httpx.AsyncClient, make_token) -> None:
    ann, bob, cat = await people(http, make_token, "ann", "bob", "cat")
    cid = (await create_group(http, ann, [bob]))["conversation_id"]
    for text in ("before", "cat", "joined"):
        await send(http, bob.token, cid, text)
    await settles(http, ann, cid, {"unread_count": "3"})
    await http.post(f"/api/conversations/{cid}/participants", json={"user_id": cat.id}, headers=ann.auth)
    await settles(http, cat, cid, {"unread_count": "0", "last_message.text": "joined"})
    await send(http, bob.token, cid, "welcome")
    await settles(http, cat, cid, {"unread_count": "1"})
