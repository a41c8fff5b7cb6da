"""Identity: JWTs signed and verified with PyJWT, and how an identity travels through the mesh.

Trust model: the edge verifies a client's JWT and forwards the token itself as `authorization`
metadata on every gRPC call; each service verifies it again, so a caller that reaches a service
directly without a valid token gets UNAUTHENTICATED. The acting user is always the verified `sub`,
never a field of a request.

Two kinds of token, from two kinds of key that never stand in for each other:
- User tokens: HS256 with CHAT_JWT_SECRET when no JWKS is set (development, the base manifests), or
  the identity provider's keys from CHAT_JWT_JWKS_URL (production). A user token is never a service
  token: one that claims `typ: service` is refused, so an identity provider (or whoever holds the
  development secret) cannot mint service identities.
- Service tokens (services calling services, the edge's own streams): EdDSA, signed by the calling
  process with its own Ed25519 key (CHAT_SERVICE_KEY_FILE, chatmesh/service_keys.py), `kid`
  `chatmesh:<service>`, and accepted only if that service's public key verifies it. So a token is a
  service's exactly when the service's key signed it, and no pod holds a key that speaks as another
  service: the edge holds `edge.key` only. What each service may call is allow-listed in
  chatmesh/grpc_server.py.

With a JWKS, user tokens are verified with the key their `kid` names and only the configured
asymmetric algorithms. The fetch is blocking I/O, so async callers use `averify`/`averify_bearer`,
which run it in a thread.

Every RPC carries the user's token again, so a service sees the same token many times a second. A
verified token is remembered (a bounded LRU keyed by the token string) and a repeat skips the
signature check; only successes are remembered, and none beyond its `exp`. A JWKS-verified token is
remembered no longer than the key set it was verified with is trusted (JWKS_CACHE_S after that set was
fetched): then it is checked against a fresh set, so a key the provider withdraws is refused, cached
tokens included, at most JWKS_CACHE_S after it left the JWKS.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt

from chatmesh import service_keys
from chatmesh.config import Settings
from chatmesh.logs import request_id_var

MAX_USER_ID_LENGTH = 128
# Tokens longer than this are refused unread (no header parse, no signature check). Every call carries
# the user's token as gRPC metadata, whose default soft limit is 8 KiB (past it, calls fail at random
# with RESOURCE_EXHAUSTED): 6 KiB leaves room for the rest of a call's headers. Real tokens are 1-2 KB.
MAX_TOKEN_BYTES = 6 * 1024
# Short, so a service token copied off the wire (without mTLS) or by a compromised callee is soon
# worthless; each process signs a new one every half of it (one Ed25519 signature).
SERVICE_TOKEN_TTL_S = 300
SERVICE_KID_PREFIX = "chatmesh:"  # `kid` of a service token: chatmesh:<service>
SERVICE_ALGORITHM = "EdDSA"
LEEWAY_S = 30  # clock skew allowed on exp, nbf and iat
JWKS_CACHE_S = 300  # how long a fetched JWKS is trusted before it is fetched again
JWKS_TIMEOUT_S = 5
VERIFIED_CACHE_SIZE = 10_000  # tokens remembered as verified; about 1 KB each with their identity


def _clock() -> float:
    """The cache's clock (a seam for tests that move time past a token's exp)."""
    return time.time()


class AuthError(Exception):
    """The token is missing, malformed, expired or not signed by a key we trust."""


def user_id_problem(value: object) -> str | None:
    """Why `value` is not a user id, or None: the one rule for a token's `sub` (checked here, so REST
    and WebSocket refuse it alike) and for user ids that callers name (the services' validation).

    1 to MAX_USER_ID_LENGTH characters, no surrounding whitespace, no control characters (NUL cannot
    be stored in PostgreSQL text) and no lone surrogates (not encodable in UTF-8, so not in a proto)."""
    if not isinstance(value, str) or not value or len(value) > MAX_USER_ID_LENGTH:
        return f"a user id is a string of 1 to {MAX_USER_ID_LENGTH} characters"
    if value != value.strip():
        return "a user id has no surrounding whitespace"
    if any(ord(c) < 32 or 127 <= ord(c) < 160 or 0xD800 <= ord(c) < 0xE000 for c in value):
        return "a user id has no control characters"
    return None


@dataclass(frozen=True)
class Identity:
    user_id: str
    token: str
    display_name: str = ""
    expires_at: float = 0.0
    service: str = ""  # the calling service, for a token its service key verified; "" for a user

    @property
    def is_service(self) -> bool:
        return bool(self.service)


class _Jwks(jwt.PyJWKClient):
    """PyJWKClient that tells how long the set a key came from is trusted (its fetch + lifespan).

    Keys come from the cached set (refetched every `lifespan`), not from a per-kid cache that never
    forgets, and a token verified with a key is remembered only while that key's set is trusted."""

    def __init__(self, url: str, lifespan: float) -> None:
        super().__init__(url, cache_keys=False, lifespan=lifespan, timeout=JWKS_TIMEOUT_S)
        self._lifespan = lifespan
        self._trusted_until = 0.0
        self._lock = threading.Lock()

    def fetch_data(self) -> Any:
        data = super().fetch_data()
        self._trusted_until = _clock() + self._lifespan
        return data

    def key_for(self, token: str) -> tuple[Any, float]:
        """(the key named by the token's kid, until when the set holding it is trusted)."""
        with self._lock:
            return self.get_signing_key_from_jwt(token).key, self._trusted_until


class TokenVerifier:
    """Verifies tokens with pinned algorithms; `exp` is required, `none` is never accepted.

    `CHAT_SERVICE_PUBLIC_KEYS` unset: no service token is accepted (the edge takes none)."""

    def __init__(self, settings: Settings) -> None:
        self._secret = settings.jwt_secret
        self._algorithms = list(settings.jwt_algorithms)
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._jwks = _Jwks(settings.jwt_jwks_url, JWKS_CACHE_S) if settings.jwt_jwks_url else None
        self._asymmetric = [a for a in self._algorithms if not a.startswith("HS")]
        self._service_keys = (
            service_keys.load_public_keys(settings.service_public_keys) if settings.service_public_keys else {}
        )
        self._verified: OrderedDict[str, tuple[Identity, float]] = OrderedDict()

    @property
    def service_callers(self) -> frozenset[str]:
        """The services whose tokens this verifier accepts (those it holds public keys of)."""
        return frozenset(self._service_keys)

    def _cached(self, token: str) -> Identity | None:
        """The identity of a token verified before and still trusted; an entry past its bound is dropped."""
        entry = self._verified.get(token)
        if entry is None:
            return None
        if _clock() >= entry[1]:
            del self._verified[token]
            return None
        self._verified.move_to_end(token)
        return entry[0]

    def _remember(self, identity: Identity, trusted_until: float = float("inf")) -> Identity:
        until = min(identity.expires_at, trusted_until)
        if _clock() < until:
            self._verified[identity.token] = (identity, until)
            self._verified.move_to_end(identity.token)
            while len(self._verified) > VERIFIED_CACHE_SIZE:
                self._verified.popitem(last=False)
        return identity

    def _service_of(self, token: str) -> str | None:
        """The service a token claims to come from (by its kid), or None for a user token."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise AuthError(str(exc)) from exc
        return (
            kid.removeprefix(SERVICE_KID_PREFIX)
            if isinstance(kid, str) and kid.startswith(SERVICE_KID_PREFIX)
            else None
        )

    def _user_key(self, token: str) -> tuple[Any, list[str], float]:
        """(key, algorithms, trusted until). The algorithm lists are pinned here, never the header's."""
        if self._jwks is None:
            return self._secret, self._algorithms, float("inf")
        try:
            key, trusted_until = self._jwks.key_for(token)
        except (jwt.PyJWTError, jwt.PyJWKClientError) as exc:
            raise AuthError(f"no trusted signing key: {exc}") from exc
        return key, self._asymmetric, trusted_until

    def verify(self, token: str) -> Identity:
        """Blocking when a JWKS must be fetched; async code uses `averify`."""
        _check_size(token)
        if (identity := self._cached(token)) is not None:
            return identity
        if (service := self._service_of(token)) is not None:
            return self._remember(self._decode_service(token, service))
        key, algorithms, trusted_until = self._user_key(token)
        return self._remember(self._decode_user(token, key, algorithms), trusted_until)

    async def averify(self, token: str) -> Identity:
        _check_size(token)
        if self._jwks is None:
            return self.verify(token)
        if (identity := self._cached(token)) is not None:
            return identity
        if (service := self._service_of(token)) is not None:
            return self._remember(self._decode_service(token, service))
        key, algorithms, trusted_until = await asyncio.to_thread(self._user_key, token)
        return self._remember(self._decode_user(token, key, algorithms), trusted_until)

    async def averify_bearer(self, header: str | None) -> Identity:
        return await self.averify(_bearer_token(header))

    def verify_bearer(self, header: str | None) -> Identity:
        return self.verify(_bearer_token(header))

    def _decode_service(self, token: str, service: str) -> Identity:
        """A service token: only that service's own public keys (and EdDSA alone) may verify it."""
        keys = self._service_keys.get(service)
        if not keys:
            raise AuthError(f"service tokens of {service!r} are not accepted here")
        claims: dict[str, Any] | None = None
        for key in keys:  # more than one only while the service's key is being rotated
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[SERVICE_ALGORITHM],
                    leeway=LEEWAY_S,
                    options={"require": ["exp", "iat", "sub"], "verify_aud": False},
                )
                break
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as exc:
                raise AuthError(str(exc)) from exc
        if claims is None:
            raise AuthError(f"not signed by a key of the service {service!r}")
        if claims["sub"] != f"service:{service}" or claims.get("typ") != "service":
            raise AuthError(f"a token of the service {service!r} must name it as its subject")
        return Identity(user_id=claims["sub"], token=token, expires_at=float(claims["exp"]), service=service)

    def _decode_user(self, token: str, key: Any, algorithms: list[str]) -> Identity:
        if not algorithms:
            raise AuthError("no algorithm is accepted for this key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                issuer=self._issuer,
                audience=self._audience,
                leeway=LEEWAY_S,
                options={
                    "require": ["exp", "sub"],
                    "verify_exp": True,
                    "verify_nbf": True,
                    "verify_iat": True,
                    "verify_aud": self._audience is not None,
                },
            )
        except jwt.PyJWTError as exc:
            raise AuthError(str(exc)) from exc
        if claims.get("typ") == "service":  # a user token key never vouches for a service
            raise AuthError("service tokens must be signed with a service key")
        sub = claims["sub"]
        if (problem := user_id_problem(sub)) is not None:
            raise AuthError(f"the token's sub is not a valid user id: {problem}")
        name = claims.get("name")
        return Identity(
            user_id=sub,
            token=token,
            display_name=name if isinstance(name, str) else "",
            expires_at=float(claims["exp"]),
        )


def _check_size(token: str) -> None:
    if len(token) > MAX_TOKEN_BYTES:
        raise AuthError(f"tokens are limited to {MAX_TOKEN_BYTES} bytes")


def _bearer_token(header: str | None) -> str:
    if not header:
        raise AuthError("missing bearer token")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("authorization must be 'Bearer <token>'")
    return token.strip()


def sign(settings: Settings, user_id: str, *, ttl_s: int = 24 * 3600, name: str | None = None) -> str:
    """A user token for development (HS256 with CHAT_JWT_SECRET): `chatmesh token`, the dev sign-in."""
    now = int(time.time())
    claims: dict[str, object] = {"sub": user_id, "iat": now, "exp": now + ttl_s}
    if name:
        claims["name"] = name
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")


class ServiceCredentials:
    """A service's own token, signed with its own key (CHAT_SERVICE_KEY_FILE, read here, so a
    missing key fails at start) and re-signed before it expires; passed as call metadata."""

    def __init__(self, settings: Settings, service: str) -> None:
        self._key = service_keys.load_private_key(settings.service_key_file)
        self._service = service
        self._token = ""
        self._renew_at = 0.0

    def token(self) -> str:
        now = time.time()
        if now >= self._renew_at:
            claims = {
                "sub": f"service:{self._service}",
                "typ": "service",
                "iat": int(now),
                "exp": int(now) + SERVICE_TOKEN_TTL_S,
            }
            self._token = jwt.encode(
                claims, self._key, algorithm=SERVICE_ALGORITHM, headers={"kid": f"{SERVICE_KID_PREFIX}{self._service}"}
            )
            self._renew_at = now + SERVICE_TOKEN_TTL_S / 2
        return self._token

    def metadata(self) -> tuple[tuple[str, str], ...]:
        token = self.token()
        if request_id := request_id_var.get():  # a call made while serving a request carries its id on
            return (("authorization", f"Bearer {token}"), ("x-request-id", request_id))
        return (("authorization", f"Bearer {token}"),)
