"""Production keys: user tokens verified with a JWKS served over HTTP (keys by `kid`, rotation without
a restart, a withdrawn key refused within JWKS_CACHE_S even for tokens already verified), off the
event loop; no HS256 token and no provider token passes as a service's; and a whole mesh runs on it
without CHAT_JWT_SECRET (the services verify the forwarded RS256 token with the same key source, and
their own calls with their service keys)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from chatmesh import auth
from chatmesh.auth import AuthError, TokenVerifier, sign
from chatmesh.config import Settings
from tests.conftest import new_mesh
from tests.helpers import Socket, bearer, new_user_id

SECRET = "service-secret-for-tests-only-0123456789"


class Jwks:
    """RSA keys by kid, and a JWKS endpoint on 127.0.0.1 serving the public halves of the current set."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.fetches = 0
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                jwks.fetches += 1
                body = json.dumps(
                    {
                        "keys": [
                            {
                                **json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(k.public_key())),
                                "kid": kid,
                                "use": "sig",
                                "alg": "RS256",
                            }
                            for kid, k in jwks.keys.items()
                        ]
                    }
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, kid: str) -> None:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def token(self, kid: str, sub: str = "alice", ttl_s: int = 600, **claims: Any) -> str:
        now = int(time.time())
        return jwt.encode(
            {"sub": sub, "iat": now, "exp": now + ttl_s, **claims}, self.keys[kid], "RS256", headers={"kid": kid}
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def jwks() -> Iterator[Jwks]:
    served = Jwks()
    served.add("k1")
    yield served
    served.close()


def _settings(jwks: Jwks, **extra: str) -> Settings:
    return Settings.from_env({"CHAT_JWT_SECRET": SECRET, "CHAT_JWT_JWKS_URL": jwks.url, **extra})


async def test_keys_by_kid_and_rotation(jwks: Jwks) -> None:
    verifier = TokenVerifier(_settings(jwks))
    assert (await verifier.averify(jwks.token("k1"))).user_id == "alice"
    assert jwks.fetches == 1
    await verifier.averify(jwks.token("k1"))
    assert jwks.fetches == 1  # cached
    # PyJWT refetches for an unknown kid at most once per cooldown (30 s), so a flood of made-up kids
    # cannot hammer the provider; the test does not wait for it.
    verifier._jwks.cooldown_duration = 0  # type: ignore[union-attr]
    jwks.add("k2")  # the provider rotates: a token signed by the new key is trusted without a restart
    assert (await verifier.averify(jwks.token("k2", sub="bob"))).user_id == "bob"
    assert jwks.fetches == 2
    with pytest.raises(AuthError):  # a kid the provider never published
        await verifier.averify(
            jwt.encode({"sub": "x", "exp": int(time.time()) + 60}, jwks.keys["k2"], "RS256", headers={"kid": "nope"})
        )


async def test_a_withdrawn_key_is_refused_after_the_set_is_refetched(
    jwks: Jwks, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "JWKS_CACHE_S", 0.2)
    verifier = TokenVerifier(_settings(jwks))
    assert (await verifier.averify(jwks.token("k1"))).user_id == "alice"
    withdrawn = jwks.keys.pop("k1")  # the provider withdraws k1 (a leaked key, say)
    jwks.add("k2")
    await asyncio.sleep(0.3)  # the cached set's lifespan, shortened for the test
    fresh = jwt.encode({"sub": "mallory", "exp": int(time.time()) + 60}, withdrawn, "RS256", headers={"kid": "k1"})
    with pytest.raises(AuthError):
        await verifier.averify(fresh)
    assert (await verifier.averify(jwks.token("k2", sub="bob"))).user_id == "bob"


async def test_a_remembered_token_is_refused_once_its_key_leaves_the_set(
    jwks: Jwks, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The verified-token cache does not outlive the set that vouched for a token: a token verified
    (and remembered) before its key was withdrawn is refused once the set is refetched, well before
    its exp. The bound is JWKS_CACHE_S after the withdrawal (docs/security.md)."""
    monkeypatch.setattr(auth, "JWKS_CACHE_S", 0.3)
    verifier = TokenVerifier(_settings(jwks))
    remembered = jwks.token("k1", sub="alice", ttl_s=3600)
    assert (await verifier.averify(remembered)).user_id == "alice"
    assert (await verifier.averify(remembered)).user_id == "alice"  # from the cache: no second fetch
    assert jwks.fetches == 1
    del jwks.keys["k1"]  # withdrawn
    jwks.add("k2")
    await asyncio.sleep(0.4)
    with pytest.raises(AuthError):
        await verifier.averify(remembered)
    with pytest.raises(AuthError):
        verifier.verify(remembered)
    assert jwks.fetches == 2


async def test_jwks_mode_refusals(jwks: Jwks) -> None:
    verifier = TokenVerifier(_settings(jwks, CHAT_JWT_AUDIENCE="chat", CHAT_JWT_ISSUER="https://id.test"))
    good = jwks.token("k1", aud="chat", iss="https://id.test")
    assert (await verifier.averify(good)).user_id == "alice"
    pem = (
        jwks.keys["k1"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    claims = {"sub": "alice", "exp": int(time.time()) + 60, "aud": "chat", "iss": "https://id.test"}

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'kid': 'k1'}).encode())}.{b64(json.dumps(claims).encode())}"
    confused = f"{signing_input}.{b64(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())}"
    unsigned = f"{b64(json.dumps({'alg': 'none', 'kid': 'k1'}).encode())}.{b64(json.dumps(claims).encode())}."
    refused = {
        "HS/RS confusion": confused,
        "alg none": unsigned,
        "user token signed with the shared secret": jwt.encode(claims, SECRET, "HS256"),
        "service token signed with the shared secret": jwt.encode(
            {**claims, "sub": "service:edge", "typ": "service"}, SECRET, "HS256"
        ),
        "provider token claiming to be a service": jwks.token(
            "k1", aud="chat", iss="https://id.test", sub="service:message", typ="service"
        ),
        "wrong audience": jwks.token("k1", aud="other", iss="https://id.test"),
        "no audience": jwks.token("k1", iss="https://id.test"),
        "wrong issuer": jwks.token("k1", aud="chat", iss="https://evil.test"),
        "expired": jwks.token("k1", ttl_s=-120, aud="chat", iss="https://id.test"),
    }
    for kind, token in refused.items():
        with pytest.raises(AuthError):
            await verifier.averify(token)
            pytest.fail(kind)


async def test_fetch_runs_off_the_event_loop(jwks: Jwks) -> None:
    """A slow JWKS endpoint does not stall the loop: other tasks run while the key is fetched."""
    verifier = TokenVerifier(_settings(jwks))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    original = verifier._jwks.fetch_data  # type: ignore[union-attr]

    def slow_fetch() -> Any:
        time.sleep(0.3)
        return original()

    verifier._jwks.fetch_data = slow_fetch  # type: ignore[union-attr,method-assign]
    task = asyncio.create_task(ticker())
    await verifier.averify(jwks.token("k1"))
    task.cancel()
    assert ticks >= 10


async def test_a_mesh_on_jwks(jwks: Jwks, isolated_env: Callable[..., dict[str, str]], tmp_path: Path) -> None:
    """Edge and services verify RS256 user tokens from the JWKS, with no CHAT_JWT_SECRET anywhere; the
    mesh's own service tokens (the edge's event stream) still work: a message sent over REST reaches a
    WebSocket."""
    # Attachment links on the filesystem backend are signed with their own secret when there is no
    # CHAT_JWT_SECRET to derive one from (production sets it, or uses S3's presigned links).
    env = isolated_env(CHAT_JWT_JWKS_URL=jwks.url, CHAT_ATTACHMENT_URL_SECRET=secrets.token_urlsafe(32))
    del env["CHAT_JWT_SECRET"]
    mesh = new_mesh(env, tmp_path / "logs")
    mesh.start()
    try:
        alice, bob = new_user_id("alice"), new_user_id("bob")
        alice_token, bob_token = jwks.token("k1", sub=alice), jwks.token("k1", sub=bob)
        async with httpx.AsyncClient(base_url=mesh.edge_url, timeout=10) as http:
            assert (await http.put("/api/users/me", json={}, headers=bearer(bob_token))).status_code == 200
            hs_user = sign(Settings.from_env({"CHAT_JWT_SECRET": SECRET}), alice)
            assert (await http.get("/api/conversations", headers=bearer(hs_user))).status_code == 401
            reply = await http.post("/api/conversations/direct", json={"user_id": bob}, headers=bearer(alice_token))
            assert reply.status_code == 200, reply.text
            conversation_id = reply.json()["conversation"]["conversation_id"]
            socket = await Socket.open(mesh.edge_url, bob_token)
            sent = await http.post(
                "/api/messages", json={"conversation_id": conversation_id, "content": "rs"}, headers=bearer(alice_token)
            )
            assert sent.status_code == 200, sent.text
            frame = await socket.next_of("chat:message_received")
            assert frame["data"]["content"] == "rs"
            await socket.close()
    finally:
        mesh.stop()
