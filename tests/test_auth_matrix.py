"""Every REST endpoint × every kind of bad token → 401 in the one error body, and nothing reaches the
services.

The matrix runs against the edge app in process without its lifespan: it has no upstream channels
and no rate limiter, so any request that got past authentication would fail with a 500 instead of a
401 — a 401 everywhere proves nothing was called. The real mesh is checked too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from chatmesh.config import Settings
from chatmesh.gen.chat.v1 import conversation_pb2, message_pb2, notification_pb2, presence_pb2
from chatmesh.service_keys import keyring_env
from chatmesh_tools.launcher import Mesh
from services.edge.app import create_app
from services.edge.transcoder import routes_from

SECRET = secrets.token_urlsafe(32)
AUDIENCE, ISSUER = "chatmesh-api", "https://id.example.test"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PUBLIC_PEM = RSA_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
ENDPOINTS = [
    (r.http_method, re.sub(r"\{[^}]*\}", "x1", r.template), bool(r.body))
    for r in routes_from([conversation_pb2, message_pb2, presence_pb2, notification_pb2])
]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "alice", "iat": now, "exp": now + 600, "aud": AUDIENCE, "iss": ISSUER, **overrides}


def _hand_signed(header: dict[str, Any], claims: dict[str, Any], key: bytes) -> str:
    """HS256 by hand (PyJWT refuses to HMAC with a PEM key, which is the point of the attack)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())}"


def bad_headers() -> dict[str, dict[str, str]]:
    """Authorization headers that must all be refused (an empty dict: no header at all)."""
    unsigned = f"{_b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{_b64(json.dumps(_claims()).encode())}."
    return {
        "no token": {},
        "malformed": {"Authorization": "Bearer not-a-jwt"},
        "bearer without a token": {"Authorization": "Bearer"},
        "other scheme": {"Authorization": f"Basic {_b64(b'alice:pw')}"},
        "expired": {"Authorization": "Bearer " + jwt.encode(_claims(exp=int(time.time()) - 120), SECRET, "HS256")},
        "no exp": {
            "Authorization": "Bearer " + jwt.encode({k: v for k, v in _claims().items() if k != "exp"}, SECRET, "HS256")
        },
        "not yet valid": {
            "Authorization": "Bearer " + jwt.encode(_claims(nbf=int(time.time()) + 600), SECRET, "HS256")
        },
        "issued in the future": {
            "Authorization": "Bearer " + jwt.encode(_claims(iat=int(time.time()) + 600), SECRET, "HS256")
        },
        "wrong signature": {"Authorization": "Bearer " + jwt.encode(_claims(), "another-secret-" + SECRET, "HS256")},
        "alg none": {"Authorization": f"Bearer {unsigned}"},
        "RS256 when HS256 is pinned": {"Authorization": "Bearer " + jwt.encode(_claims(), RSA_KEY, "RS256")},
        "HS256 keyed with the RSA public key": {
            "Authorization": "Bearer " + _hand_signed({"alg": "HS256", "typ": "JWT"}, _claims(), RSA_PUBLIC_PEM)
        },
        "wrong audience": {"Authorization": "Bearer " + jwt.encode(_claims(aud="someone-else"), SECRET, "HS256")},
        "wrong issuer": {"Authorization": "Bearer " + jwt.encode(_claims(iss="https://evil.test"), SECRET, "HS256")},
        "service token": {"Authorization": "Bearer " + jwt.encode(_claims(typ="service"), SECRET, "HS256")},
    }


@pytest.fixture
async def edge_without_upstreams(keyring: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings.from_env(
        {
            "CHAT_JWT_SECRET": SECRET,
            "CHAT_JWT_AUDIENCE": AUDIENCE,
            "CHAT_JWT_ISSUER": ISSUER,
            **keyring_env(keyring, "edge", verifies=False),
        }
    )
    transport = httpx.ASGITransport(app=create_app(settings), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://edge.test") as client:
        yield client


async def test_valid_token_gets_past_authentication(edge_without_upstreams: httpx.AsyncClient) -> None:
    """The control: a good token is not refused (it fails later, here, for want of upstreams)."""
    good = {"Authorization": "Bearer " + jwt.encode(_claims(), SECRET, "HS256")}
    reply = await edge_without_upstreams.get("/api/conversations", headers=good)
    assert reply.status_code == 500
    assert reply.json()["error"]["code"] == "INTERNAL" and "Traceback" not in reply.text


@pytest.mark.parametrize("kind", list(bad_headers()))
async def test_every_endpoint_refuses(edge_without_upstreams: httpx.AsyncClient, kind: str) -> None:
    headers = bad_headers()[kind]
    for method, path, has_body in ENDPOINTS:
        reply = await edge_without_upstreams.request(method, path, headers=headers, json={} if has_body else None)
        assert reply.status_code == 401, (kind, method, path, reply.text)
        error = reply.json()["error"]
        assert error["code"] == "UNAUTHENTICATED" and error["status"] == 401 and error["request_id"]
        assert reply.headers["www-authenticate"] == "Bearer"


async def test_the_mesh_refuses_too(http: httpx.AsyncClient, mesh: Mesh) -> None:
    """Against the real edge (HS256, no audience): the kinds that apply to its configuration."""
    refused = {k: v for k, v in bad_headers().items() if k not in ("wrong audience", "wrong issuer")}
    for kind, headers in refused.items():
        for method, path, has_body in ENDPOINTS:
            reply = await http.request(method, path, headers=headers, json={} if has_body else None)
            assert reply.status_code == 401, (kind, method, path, reply.text)
