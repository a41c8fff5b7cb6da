"""The verified-token cache: a repeat of a token skips the signature check, but never outlives the
token's exp, never remembers a refusal and stays bounded."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest

from chatmesh import auth
from chatmesh.auth import LEEWAY_S, AuthError, TokenVerifier, sign
from chatmesh.config import Settings

SECRET = "cache-secret-for-tests-only-0123456789"


def _settings() -> Settings:
    return Settings.from_env({"CHAT_JWT_SECRET": SECRET})


def _move_clock_to(monkeypatch: pytest.MonkeyPatch, at: float) -> None:
    """Move both clocks that judge a token, the cache's and PyJWT's exp check, to `at`."""

    class _At(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return datetime.fromtimestamp(at, tz or UTC)

    monkeypatch.setattr(auth, "_clock", lambda: at)
    monkeypatch.setattr(jwt.api_jwt, "datetime", _At)


def _count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = jwt.decode

    def counting(token: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(token)
        return real(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting)
    return seen


async def test_a_repeated_token_is_verified_once(monkeypatch: pytest.MonkeyPatch) -> None:
    verifier = TokenVerifier(_settings())
    decodes = _count_decodes(monkeypatch)
    token = sign(_settings(), "alice", ttl_s=600, name="Alice")
    first = await verifier.averify(token)
    for _ in range(5):
        again = await verifier.averify_bearer(f"Bearer {token}")
        assert again == first
    assert (first.user_id, first.display_name) == ("alice", "Alice")
    assert decodes == [token]


async def test_an_expired_cached_token_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    verifier = TokenVerifier(_settings())
    token = sign(_settings(), "alice", ttl_s=60)
    identity = await verifier.averify(token)  # now cached
    # Inside the leeway past exp the token is still accepted, as it was before the cache existed.
    _move_clock_to(monkeypatch, identity.expires_at + LEEWAY_S - 5)
    assert (await verifier.averify(token)).user_id == "alice"
    _move_clock_to(monkeypatch, identity.expires_at + LEEWAY_S + 1)
    with pytest.raises(AuthError):
        await verifier.averify(token)
    with pytest.raises(AuthError):
        verifier.verify(token)


async def test_a_refusal_is_not_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    """A token refused for a reason that can pass later (not yet valid) is checked again each time."""
    verifier = TokenVerifier(_settings())
    now = int(time.time())
    early = jwt.encode({"sub": "bob", "nbf": now + 120, "iat": now, "exp": now + 600}, SECRET, "HS256")
    with pytest.raises(AuthError):
        await verifier.averify(early)
    _move_clock_to(monkeypatch, now + 121)
    assert (await verifier.averify(early)).user_id == "bob"
    forged = jwt.encode({"sub": "bob", "exp": now + 600}, "not-the-secret-0123456789-0123456789", "HS256")
    for _ in range(2):
        with pytest.raises(AuthError):
            await verifier.averify(forged)


async def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "VERIFIED_CACHE_SIZE", 3)
    verifier = TokenVerifier(_settings())
    decodes = _count_decodes(monkeypatch)
    tokens = [sign(_settings(), f"user-{i}", ttl_s=600) for i in range(5)]
    for token in tokens:
        await verifier.averify(token)
    await verifier.averify(tokens[-1])  # the most recent stays
    await verifier.averify(tokens[0])  # the oldest was evicted: verified again
    assert decodes == [*tokens, tokens[0]]
    assert len(verifier._verified) == 3
