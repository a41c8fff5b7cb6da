"""REST at the edge: request ids across hops, enums by short name, the one error body for every
failure, CORS, and authorization on every resource id (a walk of the whole route table)."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from chatmesh import logs
from chatmesh.auth import TokenVerifier, sign
from chatmesh.config import Settings
from chatmesh.gen.chat.v1 import conversation_pb2, message_pb2, presence_pb2
from chatmesh.grpc_server import MeshInterceptor
from chatmesh.logs import request_id_var
from chatmesh.service_keys import keyring_env
from chatmesh_tools.launcher import Mesh
from services.edge.app import create_app
from services.edge.transcoder import routes_from
from tests.helpers import bearer, direct_conversation, new_user_id, register, send

ROUTES = routes_from([conversation_pb2, message_pb2, presence_pb2])


# request ids


async def test_request_id_is_accepted_returned_and_in_the_edge_log(
    http: httpx.AsyncClient, mesh: Mesh, make_token
) -> None:
    token = make_token(new_user_id("alice"))
    reply = await http.get("/api/conversations", headers={**bearer(token), "X-Request-Id": "rid-abc.123"})
    assert reply.status_code == 200 and reply.headers["x-request-id"] == "rid-abc.123"
    failed = await http.get("/api/conversations/nope", headers={**bearer(token), "X-Request-Id": "rid-failed-1"})
    assert failed.headers["x-request-id"] == failed.json()["error"]["request_id"] == "rid-failed-1"
    made = await http.get("/api/conversations", headers=bearer(token))
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    hostile = await http.get("/api/conversations", headers={**bearer(token), "X-Request-Id": "a b\tc" + "x" * 200})
    assert hostile.status_code == 200 and re.fullmatch(r"[0-9a-f]{32}", hostile.headers["x-request-id"])
    lines = [json.loads(line) for line in (mesh.log_dir / "edge.log").read_text().splitlines() if "rid-abc.123" in line]
    assert lines and all(line["request_id"] == "rid-abc.123" for line in lines)


async def test_the_request_id_reaches_the_service_and_its_calls(settings: Settings, service_metadata) -> None:
    """The edge's metadata carries the id; a service's interceptor binds it for its JSON log lines;
    calls the service makes while serving carry it on (service credentials)."""
    seen: dict[str, Any] = {}
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs._JsonFormatter("probe"))
    probe_log = logging.getLogger("probe")
    probe_log.addHandler(handler)
    probe_log.setLevel(logging.INFO)

    async def call(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        probe_log.info("served")
        seen["onward"] = dict(service_metadata("message"))
        return b""

    server = grpc.aio.server(interceptors=[MeshInterceptor(TokenVerifier(settings))])
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("probe.Probe", {"Call": grpc.unary_unary_rpc_method_handler(call)})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            token = sign(settings, "alice")
            await channel.unary_unary("/probe.Probe/Call")(
                b"", metadata=(("authorization", f"Bearer {token}"), ("x-request-id", "rid-hop-7")), timeout=5
            )
    finally:
        await server.stop(None)
        probe_log.removeHandler(handler)
    assert json.loads(stream.getvalue().splitlines()[0])["request_id"] == "rid-hop-7"
    assert seen["onward"]["x-request-id"] == "rid-hop-7"
    assert request_id_var.get() != "rid-hop-7"


# enums


async def test_enums_by_short_name(http: httpx.AsyncClient, make_token) -> None:
    alice, bob, carol = new_user_id("alice"), new_user_id("bob"), new_user_id("carol")
    alice_token, bob_token = make_token(alice), make_token(bob)
    for token in (bob_token, make_token(carol)):
        await register(http, token)
    conversation_id = await direct_conversation(http, alice_token, bob)
    sent = await send(http, alice_token, conversation_id, "read me")
    read = await http.post(
        f"/api/messages/{sent['message_id']}/status", json={"status": "read"}, headers=bearer(bob_token)
    )
    assert read.status_code == 200, read.text
    again = await http.post(
        f"/api/messages/{sent['message_id']}/status", json={"status": "MESSAGE_STATUS_READ"}, headers=bearer(bob_token)
    )
    assert again.status_code == 200, again.text
    group = await http.post(
        "/api/conversations/group", json={"title": "g", "participant_ids": [bob, carol]}, headers=bearer(alice_token)
    )
    assert group.status_code == 200, group.text
    group_id = group.json()["conversation"]["conversation_id"]
    promoted = await http.patch(
        f"/api/conversations/{group_id}/participants/{bob}", json={"role": "moderator"}, headers=bearer(alice_token)
    )
    assert promoted.status_code == 200, promoted.text
    roles = {p["user_id"]: p["role"] for p in promoted.json()["conversation"]["participants"]}
    assert roles[bob] == "ROLE_MODERATOR"  # responses use the proto name
    wrong = await http.patch(
        f"/api/conversations/{group_id}/participants/{bob}", json={"role": "emperor"}, headers=bearer(alice_token)
    )
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "INVALID_ARGUMENT"
    upper_short = await http.patch(
        f"/api/conversations/{group_id}/participants/{bob}", json={"role": "MODERATOR"}, headers=bearer(alice_token)
    )
    assert upper_short.status_code == 400  # the short form is lowercase only, as documented


# one error body


def _is_error(reply: httpx.Response, status: int) -> None:
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["status"] == status and error["code"] and error["message"] and error["request_id"]


async def test_every_failure_has_the_error_body(http: httpx.AsyncClient, make_token) -> None:
    token = make_token(new_user_id("alice"))
    _is_error(await http.get("/nowhere"), 404)
    _is_error(await http.get("/api/nowhere", headers=bearer(token)), 404)
    _is_error(await http.post("/api/users/me", json={}, headers=bearer(token)), 405)
    _is_error(await http.post("/healthz"), 405)
    big = await http.post(
        "/api/messages",
        content=b'{"content": "' + b"x" * 70_000 + b'"}',
        headers={**bearer(token), "content-type": "application/json"},
    )
    _is_error(big, 413)
    _is_error(await http.post("/api/messages", content=b"{oops", headers=bearer(token)), 400)
    _is_error(await http.post("/api/messages", json=[1, 2], headers=bearer(token)), 400)
    _is_error(await http.get("/api/messages/search", params={"nope": "1"}, headers=bearer(token)), 400)


async def test_cors_when_configured(keyring: Path) -> None:
    settings = Settings.from_env(
        {
            "CHAT_JWT_SECRET": "s" * 32,
            "CHAT_CORS_ORIGINS": "https://app.example",
            **keyring_env(keyring, "edge", verifies=False),
        }
    )
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://edge.test") as client:
        allowed = await client.options(
            "/api/messages",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        foreign = await client.options(
            "/api/messages", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
        )
        assert "access-control-allow-origin" not in foreign.headers


# authorization on every resource id


@pytest.fixture
async def others_world(http: httpx.AsyncClient, make_token) -> dict[str, Any]:
    """Alice's group with bob, and a message in it: everything eve must not reach."""
    alice, bob = new_user_id("alice"), new_user_id("bob")
    alice_token = make_token(alice)
    await register(http, make_token(bob))
    group = await http.post(
        "/api/conversations/group", json={"title": "secret", "participant_ids": [bob]}, headers=bearer(alice_token)
    )
    assert group.status_code == 200, group.text
    conversation_id = group.json()["conversation"]["conversation_id"]
    target = (
        await http.post(
            "/api/attachments",
            headers=bearer(alice_token),
            json={"conversation_id": conversation_id, "filename": "plan.txt", "size_bytes": "5"},
        )
    ).json()
    assert (await http.put(target["upload_url"], content=b"plan\n")).status_code == 200
    attachment_id = target["attachment"]["attachment_id"]
    message = await send(http, alice_token, conversation_id, "the secret plan", attachment_ids=[attachment_id])
    reacted = await http.post(
        f"/api/messages/{message['message_id']}/reactions", json={"emoji": "👍"}, headers=bearer(alice_token)
    )
    assert reacted.status_code == 200, reacted.text
    call = await http.post(
        "/api/calls",
        headers=bearer(alice_token),
        json={"conversation_id": conversation_id, "callee_id": bob, "sdp_offer": "v=0\r\n"},
    )
    assert call.status_code == 200, call.text
    return {
        "conversation_id": conversation_id,
        "message_id": message["message_id"],
        "user_id": bob,
        "emoji": "👍",
        "alice": alice,
        "attachment_id": attachment_id,
        "call_id": call.json()["call"]["call_id"],
    }


# Routes that name no other resource in their path, and what eve may get from them instead.
UNSCOPED = {
    ("PUT", "/api/users/me"),
    ("GET", "/api/users/{user_id}"),
    ("POST", "/api/conversations/direct"),
    ("POST", "/api/conversations/group"),
    ("GET", "/api/conversations"),
    ("GET", "/api/presence"),
    ("PUT", "/api/presence"),
    ("GET", "/api/messages/search"),
    ("POST", "/api/messages"),
    ("GET", "/api/users/me/settings"),
    ("PATCH", "/api/users/me/settings"),
    ("GET", "/api/calls/config"),  # the ICE servers: the same for everyone
    ("POST", "/api/calls"),  # names its conversation in the body: refused below
}


async def test_a_non_participant_reaches_nothing(
    http: httpx.AsyncClient, make_token, others_world: dict[str, Any]
) -> None:
    eve = new_user_id("eve")
    eve_token = make_token(eve)
    await register(http, eve_token)
    secret_ids = {others_world["conversation_id"], others_world["message_id"], others_world["attachment_id"]}
    bodies: dict[str, dict[str, Any]] = {
        "CreateUpload": {"conversation_id": others_world["conversation_id"], "filename": "x", "size_bytes": "1"},
        "AddParticipant": {"user_id": eve, "role": "member"},
        "ChangeParticipantRole": {"role": "admin"},
        "EditMessage": {"content": "pwned"},
        "UpdateMessageStatus": {"status": "read"},
        "AddReaction": {"emoji": "👎"},
        "SetTyping": {"is_typing": True},
        "UpdateConversation": {"title": "pwned"},
        "UpdateConversationPreferences": {"muted": True},
    }
    walked = 0
    for route in ROUTES:
        if (route.http_method, route.template) in UNSCOPED:
            continue
        path = re.sub(r"\{([^}=]+)[^}]*\}", lambda m: str(others_world[m.group(1)]), route.template)
        reply = await http.request(
            route.http_method,
            path,
            headers=bearer(eve_token),
            json=bodies.get(route.method.name, {}) if route.body else None,
        )
        assert reply.status_code in (403, 404), (route.http_method, route.template, reply.text)
        assert set(reply.json()) == {"error"}
        assert (
            not secret_ids & set(re.findall(r"[0-9a-f-]{36}", reply.json()["error"]["message"]))
            or reply.status_code == 404
        )
        walked += 1
    assert walked == len(ROUTES) - len(UNSCOPED)
    # The unscoped ones that take an id in the body or query refuse it too, or show nothing of it.
    cid = others_world["conversation_id"]
    sent = await http.post("/api/messages", json={"conversation_id": cid, "content": "hi"}, headers=bearer(eve_token))
    assert sent.status_code == 403
    rung = await http.post(
        "/api/calls",
        json={"conversation_id": cid, "callee_id": others_world["alice"], "sdp_offer": "v=0\r\n"},
        headers=bearer(eve_token),
    )
    assert rung.status_code == 403
    found = await http.get(
        "/api/messages/search", params={"q": "secret", "conversation_id": cid}, headers=bearer(eve_token)
    )
    assert found.status_code in (403, 404) or found.json()["messages"] == []
    everywhere = await http.get("/api/messages/search", params={"q": "secret plan"}, headers=bearer(eve_token))
    assert everywhere.status_code == 200 and all(m["conversation_id"] != cid for m in everywhere.json()["messages"])
    listed = await http.get("/api/conversations", headers=bearer(eve_token))
    assert all(c["conversation_id"] != cid for c in listed.json()["conversations"])
    presence = await http.get("/api/presence", params={"user_ids": others_world["alice"]}, headers=bearer(eve_token))
    assert presence.status_code == 200
    assert all(
        p["status"] in ("PRESENCE_STATUS_UNKNOWN", "PRESENCE_STATUS_UNSPECIFIED") for p in presence.json()["presences"]
    )
    # Nothing changed for the owners.
    history = await http.get(f"/api/messages/{cid}", headers=bearer(make_token(others_world["alice"])))
    assert [m["content"] for m in history.json()["messages"]] == ["the secret plan"]
