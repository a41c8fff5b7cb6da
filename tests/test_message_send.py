"""Sending: gapless seq under concurrency, idempotent resend, replies, encrypted payloads, limits."""

from __future__ import annotations

import asyncio
import base64

import httpx
import psycopg

from tests.helpers import bearer, new_user_id, send
from tests.test_message_support import api, code_of, group


async def test_fifty_concurrent_senders_get_gapless_seqs(
    http: httpx.AsyncClient, make_token, database_url: str
) -> None:
    users = [new_user_id(f"s{i}") for i in range(50)]
    cid = await group(database_url, {u: "member" for u in users})
    replies = await asyncio.gather(
        *(
            http.post(
                "/api/messages",
                json={"conversation_id": cid, "content": f"hello from {u}"},
                headers=bearer(make_token(u)),
            )
            for u in users
        )
    )
    assert [r.status_code for r in replies] == [200] * 50
    seqs = sorted(int(r.json()["message"]["seq"]) for r in replies)
    assert seqs == list(range(1, 51))
    with psycopg.connect(database_url) as conn:
        stored = [
            r[0]
            for r in conn.execute(
                "SELECT seq FROM message.messages WHERE conversation_id = %s ORDER BY seq", (cid,)
            ).fetchall()
        ]
        events = conn.execute(
            "SELECT count(*) FROM message.outbox o WHERE position(%s::bytea in o.payload) > 0", (cid.encode(),)
        ).fetchone()
    assert stored == list(range(1, 51))
    assert events == (50,)


async def test_resend_with_same_client_id_returns_the_original(
    http: httpx.AsyncClient, make_token, database_url: str
) -> None:
    alice, bob = new_user_id("alice"), new_user_id("bob")
    cid = await group(database_url, {alice: "admin", bob: "member"})
    token = make_token(alice)
    body = {"conversation_id": cid, "content": "once", "client_message_id": "tmp-1"}
    first, *again = await asyncio.gather(*(api(http, token, "POST", "/api/messages", body) for _ in range(5)))
    assert first.status_code == 200
    ids = {first.json()["message"]["message_id"], *(r.json()["message"]["message_id"] for r in again)}
    assert len(ids) == 1
    assert sorted(r.json()["created"] for r in [first, *again]) == [False] * 4 + [True]
    # The seq a losing duplicate took was given back: the next message is 2.
    assert (await send(http, token, cid, "next"))["seq"] == "2"
    # The same client id in another conversation is a conflict, not a silent mix-up.
    other = await group(database_url, {alice: "admin", bob: "member"})
    reused = await api(http, token, "POST", "/api/messages", body | {"conversation_id": other})
    assert code_of(reused) == (409, "CLIENT_MESSAGE_ID_REUSED")


async def test_reply_must_be_a_message_of_the_same_conversation(
    http: httpx.AsyncClient, make_token, database_url: str
) -> None:
    alice, bob = new_user_id("alice"), new_user_id("bob")
    cid = await group(database_url, {alice: "admin", bob: "member"})
    other = await group(database_url, {alice: "admin", bob: "member"})
    token = make_token(alice)
    original = await send(http, token, cid, "question?")
    elsewhere = await send(http, token, other, "elsewhere")
    reply = await send(http, make_token(bob), cid, "answer", reply_to_id=original["message_id"])
    assert reply["reply_to_id"] == original["message_id"]
    cross = await api(
        http,
        token,
        "POST",
        "/api/messages",
        {"conversation_id": cid, "content": "x", "reply_to_id": elsewhere["message_id"]},
    )
    unknown = await api(
        http,
        token,
        "POST",
        "/api/messages",
        {"conversation_id": cid, "content": "x", "reply_to_id": "00000000-0000-0000-0000-000000000001"},
    )
    malformed = await api(
        http, token, "POST", "/api/messages", {"conversation_id": cid, "content": "x", "reply_to_id": "not-an-id"}
    )
    assert code_of(cross) == (404, "REPLY_TO_NOT_FOUND")
    assert code_of(unknown) == (404, "REPLY_TO_NOT_FOUND")
    assert code_of(malformed) == (400, "INVALID_ID")


async def test_encrypted_payload_is_stored_and_relayed_untouched(
    http: httpx.AsyncClient, make_token, database_url: str
) -> None:
    alice, bob = new_user_id("alice"), new_user_id("bob")
    cid = await group(database_url, {alice: "admin", bob: "member"})
    ciphertext = bytes(range(256))
    body = {
        "conversation_id": cid,
        "content_encrypted": base64.b64encode(ciphertext).decode(),
        "encryption": {"algorithm": "x25519-aes256gcm", "key_id": "k-7"},
    }
    sent = (await api(http, make_token(alice), "POST", "/api/messages", body)).json()["message"]
    assert base64.b64decode(sent["content_encrypted"]) == ciphertext and sent["content"] == ""
    history = (await api(http, make_token(bob), "GET", f"/api/messages/{cid}")).json()["messages"]
    assert base64.b64decode(history[0]["content_encrypted"]) == ciphertext
    assert history[0]["encryption"] == {"algorithm": "x25519-aes256gcm", "key_id": "k-7"}
    with psycopg.connect(database_url) as conn:
        stored = conn.execute(
            "SELECT content_encrypted, search_vector FROM message.messages WHERE message_id = %s", (sent["message_id"],)
        ).fetchone()
    assert stored == (ciphertext, None)
    both = await api(http, make_token(alice), "POST", "/api/messages", body | {"content": "plain too"})
    no_algorithm = await api(http, make_token(alice), "POST", "/api/messages", body | {"encryption": {}})
    assert code_of(both) == (400, "INVALID_ARGUMENT")
    assert code_of(no_algorithm) == (400, "ENCRYPTION_REQUIRED")


async def test_content_is_required_and_bounded(http: httpx.AsyncClient, make_token, database_url: str) -> None:
    alice, bob = new_user_id("alice"), new_user_id("bob")
    cid = await group(database_url, {alice: "admin", bob: "member"})
    token = make_token(alice)
    at_limit = await api(http, token, "POST", "/api/messages", {"conversation_id": cid, "content": "x" * 4000})
    over = await api(http, token, "POST", "/api/messages", {"conversation_id": cid, "content": "x" * 4001})
    blank = await api(http, token, "POST", "/api/messages", {"conversation_id": cid, "content": " \n\t "})
    missing = await api(http, token, "POST", "/api/messages", {"conversation_id": cid})
    assert at_limit.status_code == 200
    assert code_of(over) == (400, "CONTENT_TOO_LONG")
    assert code_of(blank) == (400, "EMPTY_CONTENT")
    assert code_of(missing) == (400, "EMPTY_CONTENT")


async def test_nul_characters_are_bad_input_not_a_server_error(
    http: httpx.AsyncClient, make_token, database_url: str
) -> None:
    alice = new_user_id("alice")
    cid = await group(database_url, {alice: "admin"})
    token = make_token(alice)
    mid = (await send(http, token, cid, "fine"))["message_id"]
    replies = [
        await api(http, token, "POST", "/api/messages", {"conversation_id": cid, "content": "a\u0000b"}),
        await api(
            http,
            token,
            "POST",
            "/api/messages",
            {"conversation_id": cid, "content": "a", "client_message_id": "c\u0000"},
        ),
        await api(http, token, "PATCH", f"/api/messages/{mid}", {"content": "\u0000"}),
        await api(http, token, "GET", "/api/messages/search", params={"q": "a\u0000", "conversation_id": cid}),
    ]
    assert [code_of(r) for r in replies] == [(400, "INVALID_TEXT")] * 4
