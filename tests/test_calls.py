"""Call signaling through the real mesh: frames on real WebSockets, call states in the presence
service's Redis, events back over its stream to the edge. At CHAT_TIME_SCALE 0.05 a call rings
45 s × 0.05 = 2.25 s before it times out; waits are bounded."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from chatmesh.config import ConfigError, Settings
from chatmesh_tools.launcher import Mesh
from services.presence.ice import call_config
from tests.helpers import Socket, bearer, direct_conversation, new_user_id, register

OFFER = "v=0\r\no=- 46117 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendrecv\r\n"
ANSWER = OFFER.replace("46117", "51234")
CANDIDATE = {
    "candidate": "candidate:1 1 udp 2122260223 192.0.2.7 54321 typ host",
    "sdpMid": "0",
    "sdpMLineIndex": 0,
    "usernameFragment": "abcd",
}
RING_S = 45 * 0.05


class CallSocket(Socket):
    """A socket that keeps the frames it passes over while waiting for an answer: a call's event may
    arrive before the ack of the frame that caused it (they travel different paths)."""

    backlog: list[dict[str, Any]]

    @classmethod
    async def connect(cls, edge_url: str, token: str) -> CallSocket:
        socket = await cls.open(edge_url, token)
        assert isinstance(socket, CallSocket)
        socket.backlog = []
        return socket

    async def request(self, kind: str, data: dict[str, Any], timeout: float = 10) -> dict[str, Any]:
        request_id = uuid.uuid4().hex
        await self.ws.send(json.dumps({"type": kind, "id": request_id, "data": data}))
        async with asyncio.timeout(timeout):
            while (frame := await self.recv(timeout)).get("id") != request_id:
                self.backlog.append(frame)
        return frame

    async def next_of(self, kind: str, timeout: float = 10) -> dict[str, Any]:
        for frame in self.backlog:
            if frame["type"] == kind:
                self.backlog.remove(frame)
                return frame
        async with asyncio.timeout(timeout):
            while (frame := await self.recv(timeout))["type"] != kind:
                self.backlog.append(frame)
        return frame

    async def none_of(self, kind: str, seconds: float) -> bool:
        """True when no frame of a type came (or comes within `seconds`)."""
        try:
            await self.next_of(kind, seconds)
        except TimeoutError:
            return True
        return False


async def pair(http: httpx.AsyncClient, make_token, *names: str) -> tuple[list[str], list[str], str]:  # type: ignore[no-untyped-def]
    """Users (the first opens a direct conversation with the second) and their tokens."""
    users = [new_user_id(n) for n in names]
    tokens = [make_token(u) for u in users]
    for token in tokens[1:]:
        await register(http, token)
    return users, tokens, await direct_conversation(http, tokens[0], users[1])


async def ok(socket: CallSocket, kind: str, data: dict[str, Any]) -> dict[str, Any]:
    frame = await socket.request(kind, data)
    assert frame["type"] == "ack", frame
    return dict(frame["data"])


async def refused(socket: CallSocket, kind: str, data: dict[str, Any]) -> str:
    frame = await socket.request(kind, data)
    assert frame["type"] == "error", frame
    return str(frame["data"]["code"])


async def test_offer_answer_candidates_and_hang_up_are_relayed(http: httpx.AsyncClient, mesh: Mesh, make_token) -> None:
    (alice, bob), (alice_token, bob_token), conversation_id = await pair(http, make_token, "alice", "bob")
    config = await http.get("/api/calls/config", headers=bearer(alice_token))
    assert config.status_code == 200, config.text
    assert config.json()["ring_timeout_ms"] == str(int(RING_S * 1000)) and config.json()["max_sdp_bytes"] == 16384
    a = await CallSocket.connect(mesh.edge_url, alice_token)
    b = await CallSocket.connect(mesh.edge_url, bob_token)
    b2 = await CallSocket.connect(mesh.edge_url, bob_token)  # bob's second tab rings too, and stops when he answers

    call = (await ok(a, "call:invite", {"conversation_id": conversation_id, "sdp": OFFER}))["call"]
    assert call["state"] == "ringing" and call["caller_id"] == alice and call["callee_id"] == bob
    for tab in (b, b2):
        incoming = await tab.next_of("call:incoming")
        assert incoming["data"]["sdp"] == OFFER and incoming["data"]["from_user_id"] == alice
        assert incoming["data"]["call"]["call_id"] == call["call_id"]
        assert incoming["conversation_id"] == conversation_id

    call_id = call["call_id"]
    await ok(a, "call:ice", {"call_id": call_id, "candidate": CANDIDATE})  # trickled while it rings
    relayed = (await b.next_of("call:candidate"))["data"]
    assert relayed["candidate"] == {
        "candidate": CANDIDATE["candidate"],
        "sdp_mid": "0",
        "sdp_mline_index": 0,
        "username_fragment": "abcd",
    }
    accepted = (await ok(b, "call:answer", {"call_id": call_id, "sdp": ANSWER}))["call"]
    assert accepted["state"] == "accepted" and accepted["answered_at"]
    at_caller = (await a.next_of("call:accepted"))["data"]
    assert at_caller["sdp"] == ANSWER and at_caller["call"]["state"] == "accepted"
    at_other_tab = (await b2.next_of("call:accepted"))["data"]
    assert "sdp" not in at_other_tab  # only the caller needs the answer
    assert await refused(b2, "call:answer", {"call_id": call_id, "sdp": ANSWER}) == "CALL_ALREADY_ANSWERED"

    await ok(b, "call:ice", {"call_id": call_id, "candidate": {**CANDIDATE, "candidate": ""}})  # end of candidates
    assert (await a.next_of("call:candidate"))["data"]["candidate"]["candidate"] == ""

    ended = (await ok(a, "call:hangup", {"call_id": call_id}))["call"]
    assert ended["state"] == "ended" and ended["end_reason"] == "hangup" and ended["ended_by"] == alice
    for tab in (a, b, b2):
        assert (await tab.next_of("call:ended"))["data"]["call"]["end_reason"] == "hangup"
    assert await refused(b, "call:answer", {"call_id": call_id, "sdp": ANSWER}) == "CALL_ENDED"
    assert await refused(b, "call:ice", {"call_id": call_id, "candidate": CANDIDATE}) == "CALL_ENDED"
    again = await ok(b, "call:hangup", {"call_id": call_id})  # hanging up twice changes nothing
    assert again["call"]["ended_by"] == alice
    got = await http.get(f"/api/calls/{call_id}", headers=bearer(bob_token))
    assert got.status_code == 200 and got.json()["call"]["end_reason"] == "CALL_END_REASON_HANGUP", got.text
    # Nobody is left busy: bob calls alice back, over REST this time.
    back = await http.post(
        "/api/calls", json={"conversation_id": conversation_id, "sdp_offer": OFFER}, headers=bearer(bob_token)
    )
    assert back.status_code == 200 and back.json()["call"]["state"] == "CALL_STATE_RINGING", back.text
    assert (await a.next_of("call:incoming"))["data"]["from_user_id"] == bob
    declined = await ok(a, "call:hangup", {"call_id": back.json()["call"]["call_id"]})
    assert declined["call"]["end_reason"] == "declined"  # the callee hanging up a ringing call declines it
    assert (await b.next_of("call:ended"))["data"]["call"]["end_reason"] == "declined"


async def test_an_unanswered_call_rings_out(http: httpx.AsyncClient, mesh: Mesh, make_token) -> None:
    (_, bob), (alice_token, bob_token), conversation_id = await pair(http, make_token, "alice", "bob")
    a = await CallSocket.connect(mesh.edge_url, alice_token)
    b = await CallSocket.connect(mesh.edge_url, bob_token)
    call = (await ok(a, "call:invite", {"conversation_id": conversation_id, "callee_id": bob, "sdp": OFFER}))["call"]
    await b.next_of("call:incoming")
    started = asyncio.get_running_loop().time()
    for socket in (a, b):
        ended = (await socket.next_of("call:ended", timeout=RING_S + 10))["data"]["call"]
        assert ended["call_id"] == call["call_id"] and ended["end_reason"] == "timeout" and "ended_by" not in ended
    assert asyncio.get_running_loop().time() - started >= RING_S - 0.5  # it rang for its time, not less
    assert await refused(b, "call:answer", {"call_id": call["call_id"], "sdp": ANSWER}) == "CALL_ENDED"
    again = await ok(a, "call:invite", {"conversation_id": conversation_id, "sdp": OFFER})  # nobody left busy
    assert again["call"]["state"] == "ringing"
    await ok(a, "call:hangup", {"call_id": again["call"]["call_id"]})


async def test_a_callee_in_a_call_answers_busy(http: httpx.AsyncClient, mesh: Mesh, make_token) -> None:
    (alice, bob, carol), tokens, conversation_id = await pair(http, make_token, "alice", "bob", "carol")
    alice_token, bob_token, carol_token = tokens
    carol_bob = await direct_conversation(http, carol_token, bob)
    carol_alice = await direct_conversation(http, carol_token, alice)
    a, b, c = [await CallSocket.connect(mesh.edge_url, t) for t in tokens]
    call = (await ok(a, "call:invite", {"conversation_id": conversation_id, "sdp": OFFER}))["call"]
    await b.next_of("call:incoming")
    await ok(b, "call:answer", {"call_id": call["call_id"], "sdp": ANSWER})

    busy = (await ok(c, "call:invite", {"conversation_id": carol_bob, "sdp": OFFER}))["call"]
    assert busy["state"] == "ended" and busy["end_reason"] == "busy" and busy["callee_id"] == bob
    assert await b.none_of("call:incoming", 0.5)  # bob is not disturbed
    # Ringing counts as in a call too, and a caller in a call cannot place another.
    assert await refused(a, "call:invite", {"conversation_id": carol_alice, "sdp": OFFER}) == "ALREADY_IN_CALL"
    assert (await ok(c, "call:invite", {"conversation_id": carol_alice, "sdp": OFFER}))["call"]["end_reason"] == "busy"

    await ok(b, "call:hangup", {"call_id": call["call_id"]})
    free = (await ok(c, "call:invite", {"conversation_id": carol_bob, "sdp": OFFER}))["call"]
    assert free["state"] == "ringing"
    await ok(c, "call:hangup", {"call_id": free["call_id"]})
    assert (await b.next_of("call:ended"))["data"]["call"]["call_id"] == call["call_id"]


async def test_signaling_to_or_from_a_non_participant_is_refused(
    http: httpx.AsyncClient, mesh: Mesh, make_token, mesh_env: dict[str, str]
) -> None:
    (alice, bob, carol), tokens, conversation_id = await pair(http, make_token, "alice", "bob", "carol")
    alice_token, bob_token, carol_token = tokens
    await register(http, carol_token)
    a, b, c = [await CallSocket.connect(mesh.edge_url, t) for t in tokens]
    invite = {"conversation_id": conversation_id, "sdp": OFFER}
    assert await refused(a, "call:invite", {**invite, "callee_id": carol}) == "CALLEE_NOT_PARTICIPANT"
    assert await refused(a, "call:invite", {**invite, "callee_id": alice}) == "CANNOT_CALL_SELF"
    assert await refused(c, "call:invite", invite) == "NOT_PARTICIPANT"
    assert await refused(c, "call:invite", {**invite, "conversation_id": "no-such"}) in (
        "CONVERSATION_NOT_FOUND",
        "INVALID_ID",
    )
    rest = await http.post(
        "/api/calls",
        json={**{"conversation_id": conversation_id, "sdp_offer": OFFER}, "callee_id": carol},
        headers=bearer(alice_token),
    )
    assert rest.status_code == 403 and rest.json()["error"]["code"] == "CALLEE_NOT_PARTICIPANT", rest.text
    assert await b.none_of("call:incoming", 0.3) and await c.none_of("call:incoming", 0.1)

    call = (await ok(a, "call:invite", invite))["call"]  # refusals left alice free to call
    for kind, data in [("call:answer", {"sdp": ANSWER}), ("call:ice", {"candidate": CANDIDATE}), ("call:hangup", {})]:
        assert await refused(c, kind, {"call_id": call["call_id"], **data}) == "NOT_CALL_PARTICIPANT", kind
    got = await http.get(f"/api/calls/{call['call_id']}", headers=bearer(carol_token))
    assert got.status_code == 403 and got.json()["error"]["code"] == "NOT_CALL_PARTICIPANT"
    assert await refused(a, "call:answer", {"call_id": call["call_id"], "sdp": ANSWER}) == "NOT_CALLEE"
    assert (await b.next_of("call:incoming"))["data"]["call"]["call_id"] == call["call_id"]
    assert await b.none_of("call:candidate", 0.3)  # carol's candidate went nowhere
    await ok(a, "call:hangup", {"call_id": call["call_id"]})
    redis = aioredis.Redis.from_url(mesh_env["CHAT_REDIS_URL"])
    try:  # nothing left behind: no user is marked in a call
        prefix = mesh_env["CHAT_REDIS_PREFIX"]
        assert [k for u in (alice, bob, carol) for k in await redis.keys(f"{prefix}:presence:incall:{{{u}}}")] == []
    finally:
        await redis.aclose()


async def test_malformed_or_oversized_signaling_is_refused(
    http: httpx.AsyncClient, mesh: Mesh, make_token, mesh_env: dict[str, str]
) -> None:
    (alice, bob), (alice_token, bob_token), conversation_id = await pair(http, make_token, "alice", "bob")
    a = await CallSocket.connect(mesh.edge_url, alice_token)
    b = await CallSocket.connect(mesh.edge_url, bob_token)
    invite = {"conversation_id": conversation_id, "sdp": OFFER}
    big = OFFER + "a=x-padding:" + "x" * 16_384 + "\r\n"
    assert await refused(a, "call:invite", {**invite, "sdp": big}) == "SDP_TOO_LARGE"
    assert await refused(a, "call:invite", {**invite, "sdp": "hello"}) == "INVALID_SDP"
    assert await refused(a, "call:invite", {**invite, "sdp": OFFER + "\x00"}) == "INVALID_SDP"
    assert await refused(a, "call:invite", {**invite, "sdp": 42}) == "INVALID_ARGUMENT"
    assert await refused(a, "call:invite", {"sdp": OFFER}) == "INVALID_ARGUMENT"
    assert await refused(a, "call:invite", {**invite, "callee_id": ["x"]}) == "INVALID_ARGUMENT"
    rest = await http.post(
        "/api/calls", json={"conversation_id": conversation_id, "sdp_offer": big}, headers=bearer(alice_token)
    )
    assert rest.status_code == 400 and rest.json()["error"]["code"] == "SDP_TOO_LARGE", rest.text
    assert await b.none_of("call:incoming", 0.3)  # none of it rang

    call_id = (await ok(a, "call:invite", invite))["call"]["call_id"]
    await b.next_of("call:incoming")
    for candidate, code in [
        ({**CANDIDATE, "candidate": "not a candidate"}, "INVALID_CANDIDATE"),
        ({**CANDIDATE, "candidate": CANDIDATE["candidate"] + "\r\na=evil"}, "INVALID_CANDIDATE"),
        ({**CANDIDATE, "candidate": "candidate:" + "1" * 2000}, "CANDIDATE_TOO_LARGE"),
        ({**CANDIDATE, "sdpMLineIndex": "0"}, "INVALID_ARGUMENT"),
        ("candidate:1", "INVALID_ARGUMENT"),
    ]:
        assert await refused(a, "call:ice", {"call_id": call_id, "candidate": candidate}) == code, candidate
    assert await refused(b, "call:answer", {"call_id": call_id, "sdp": "v=1"}) == "INVALID_SDP"
    assert await refused(b, "call:answer", {"call_id": "../../etc", "sdp": ANSWER}) == "INVALID_CALL_ID"
    assert await refused(b, "call:answer", {"call_id": "0" * 32, "sdp": ANSWER}) == "CALL_NOT_FOUND"
    assert await refused(b, "call:hangup", {"call_id": 7}) == "INVALID_ARGUMENT"
    assert await b.none_of("call:candidate", 0.3)  # no bad candidate was relayed
    assert (await a.request("ping", {}))["type"] == "pong"  # the sockets stay open
    still = await http.get(f"/api/calls/{call_id}", headers=bearer(bob_token))
    assert still.json()["call"]["state"] == "CALL_STATE_RINGING"  # a bad answer did not touch the call
    await ok(b, "call:hangup", {"call_id": call_id})


async def test_a_closed_socket_hangs_up_its_call(http: httpx.AsyncClient, mesh: Mesh, make_token) -> None:
    (alice, _), (alice_token, bob_token), conversation_id = await pair(http, make_token, "alice", "bob")
    a = await CallSocket.connect(mesh.edge_url, alice_token)
    b = await CallSocket.connect(mesh.edge_url, bob_token)
    call = (await ok(a, "call:invite", {"conversation_id": conversation_id, "sdp": OFFER}))["call"]
    await b.next_of("call:incoming")
    await ok(b, "call:answer", {"call_id": call["call_id"], "sdp": ANSWER})
    await a.close()  # alice's tab is gone
    ended = (await b.next_of("call:ended"))["data"]["call"]
    assert ended["call_id"] == call["call_id"] and ended["end_reason"] == "hangup" and ended["ended_by"] == alice


def test_ice_servers_and_time_limited_turn_credentials() -> None:
    """CHAT_ICE_SERVERS is served as configured; with CHAT_TURN_SECRET each user gets TURN credentials
    of the TURN REST API scheme: `<expiry>:<user>` and base64(HMAC-SHA1(secret, username))."""
    env = {
        "CHAT_JWT_SECRET": "x",
        "CHAT_ICE_SERVERS": '[{"urls": "stun:stun.example.org:3478"}, '
        '{"urls": ["turn:a.example.org"], "username": "u", "credential": "p"}]',
        "CHAT_TURN_URLS": "turn:turn.example.org:3478?transport=udp,turns:turn.example.org:5349",
        "CHAT_TURN_SECRET": "s3cret",
        "CHAT_TURN_TTL_S": "600",
    }
    before = int(time.time())
    reply = call_config(Settings.from_env(env), "alice", 2.0, 16384)
    stun, static, turn = reply.ice_servers
    assert list(stun.urls) == ["stun:stun.example.org:3478"] and not stun.username
    assert (list(static.urls), static.username, static.credential) == (["turn:a.example.org"], "u", "p")
    assert list(turn.urls) == ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349"]
    expiry, _, user = turn.username.partition(":")
    assert user == "alice" and before + 600 <= int(expiry) <= int(time.time()) + 600
    digest = hmac.new(b"s3cret", turn.username.encode(), hashlib.sha1).digest()
    assert turn.credential == base64.b64encode(digest).decode()
    assert reply.credentials_expire_at.seconds == int(expiry) and reply.ring_timeout_ms == 2000
    plain = call_config(Settings.from_env({"CHAT_JWT_SECRET": "x"}), "alice", 2.0, 16384)
    assert list(plain.ice_servers) == [] and not plain.HasField("credentials_expire_at")  # host candidates only
    for bad in (
        "{",
        '{"urls": "stun:x"}',
        '[{"urls": []}]',
        '[{"urls": "nothing"}]',
        '[{"urls": "stun:x", "username": 1}]',
    ):
        with pytest.raises(ConfigError, match="CHAT_ICE_SERVERS"):
            Settings.from_env({"CHAT_JWT_SECRET": "x", "CHAT_ICE_SERVERS": bad})
