"""Identity: JWTs signed and verified with PyJWT, and how an identity travels through the mesh.

Trust model: the edge verifies a client's JWT and forwards the token itself as `authorization`
metadata on every gRPC call; each service verifies it again with the same key source, so a caller
that reaches a service directly without a valid token gets UNAUTHENTICATED. Services calling each
other (and the edge's own streams) use short-lived service tokens (`typ: service`) signed with the
same key. The acting user is always the verified `sub`, never a field of a request.

Keys: with CHAT_JWT_JWKS_URL unset (development), user and service tokens are HS256 with
CHAT_JWT_SECRET. With it set (production), user tokens are verified with the JWKS key named by their
`kid` (PyJWKClient: the set is cached for JWKS_CACHE_S and refetched on an unknown kid, so keys rotate
without a restart and a withdrawn key stops being trusted at the next refetch) and only
the configured asymmetric algorithms; an HS256 token is then accepted only as a service token
(`typ: service`) signed with the shared secret. The JWKS fetch is blocking I/O, so async callers use
`averify`/`averify_bearer`, which run it in a thread.

Every RPC carries the user's token again, so a service sees the same token many times a second.
A verified token is remembered (a bounded LRU keyed by the token string) until its `exp`, and a
repeat skips the signature check. Only successes are remembered, and nothing past `exp`: an expired
token goes through the full check (with its leeway) and is refused exactly as without the cache.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt

from chatmesh.config import Settings
from chatmesh.logs import request_id_var

MAX_USER_ID_LENGTH = 128
SERVICE_TOKEN_TTL_S = 3600
LEEWAY_S = 30  # clock skew allowed on exp, nbf and iat
JWKS_CACHE_S = 300  # how long a fetched JWKS is trusted before it is fetched again
JWKS_TIMEOUT_S = 5
VERIFIED_CACHE_SIZE = 10_000  # tokens remembered as verified; about 1 KB each with their identity


def _clock() -> float:
    """The cache's clock (a seam for tests that move time past a token's exp)."""
    return time.time()


class AuthError(Exception):
    """The token is missing, malformed, expired or not signed by a key we trust."""


@dataclass(frozen=True)
class Identity:
    user_id: str
    token: str
    is_service: bool = False
    display_name: str = ""
    expires_at: float = 0.0


class TokenVerifier:
    """Verifies tokens with pinned algorithms; `exp` is required, `none` is never accepted."""

    def __init__(self, settings: Settings) -> None:
        self._secret = settings.jwt_secret
        self._algorithms = list(settings.jwt_algorithms)
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        # Keys come from the cached set (refetched every JWKS_CACHE_S), not from a per-kid cache that
        # never forgets: a key the provider withdraws stops being trusted at the next refetch.
        self._jwks = (jwt.PyJWKClient(settings.jwt_jwks_url, cache_keys=False, lifespan=JWKS_CACHE_S,
                                      timeout=JWKS_TIMEOUT_S) if settings.jwt_jwks_url else None)
        self._asymmetric = [a for a in self._algorithms if not a.startswith("HS")]
        self._verified: OrderedDict[str, Identity] = OrderedDict()

    def _cached(self, token: str) -> Identity | None:
        """The identity of a token verified before and not yet at its exp; an expired entry is dropped."""
        identity = self._verified.get(token)
        if identity is None:
            return None
        if _clock() >= identity.expires_at:
            del self._verified[token]
            return None
        self._verified.move_to_end(token)
        return identity

    def _remember(self, identity: Identity) -> Identity:
        if _clock() < identity.expires_at:
            self._verified[identity.token] = identity
            self._verified.move_to_end(identity.token)
            while len(self._verified) > VERIFIED_CACHE_SIZE:
                self._verified.popitem(last=False)
        return identity

    def _key(self, token: str) -> tuple[Any, list[str], bool]:
        """(key, algorithms, service only). The algorithm lists are pinned here; the header only
        picks between the two key sources, and each source accepts its own algorithms alone."""
        if self._jwks is None:
            return self._secret, self._algorithms, False
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthError(str(exc)) from exc
        if header.get("alg") == "HS256":
            return self._secret, ["HS256"], True
        try:
            return self._jwks.get_signing_key_from_jwt(token).key, self._asymmetric, False
        except (jwt.PyJWTError, jwt.PyJWKClientError) as exc:
            raise AuthError(f"no trusted signing key: {exc}") from exc

    def verify(self, token: str) -> Identity:
        """Blocking when a JWKS must be fetched; async code uses `averify`."""
        if (identity := self._cached(token)) is not None:
            return identity
        return self._remember(self._decode(token, *self._key(token)))

    async def averify(self, token: str) -> Identity:
        if self._jwks is None:
            return self.verify(token)
        if (identity := self._cached(token)) is not None:
            return identity
        return self._remember(self._decode(token, *await asyncio.to_thread(self._key, token)))

    async def averify_bearer(self, header: str | None) -> Identity:
        return await self.averify(_bearer_token(header))

    def _decode(self, token: str, key: Any, algorithms: list[str], service_only: bool) -> Identity:
        if not algorithms:
            raise AuthError("no algorithm is accepted for this key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                issuer=self._issuer if not service_only else None,
                audience=self._audience if not service_only else None,
                leeway=LEEWAY_S,
                options={"require": ["exp", "sub"], "verify_exp": True, "verify_nbf": True, "verify_iat": True,
                         "verify_aud": self._audience is not None and not service_only},
            )
        except jwt.PyJWTError as exc:
            raise AuthError(str(exc)) from exc
        if service_only and claims.get("typ") != "service":
            raise AuthError("user tokens must be signed by a key of the JWKS")
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub or len(sub) > MAX_USER_ID_LENGTH:
            raise AuthError(f"sub must be a string of 1 to {MAX_USER_ID_LENGTH} characters")
        name = claims.get("name")
        return Identity(
            user_id=sub,
            token=token,
            is_service=claims.get("typ") == "service",
            display_name=name if isinstance(name, str) else "",
            expires_at=float(claims["exp"]),
        )

    def verify_bearer(self, header: str | None) -> Identity:
        return self.verify(_bearer_token(header))


def _bearer_token(header: str | None) -> str:
    if not header:
        raise AuthError("missing bearer token")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("authorization must be 'Bearer <token>'")
    return token.strip()


def sign(settings: Settings, user_id: str, *, ttl_s: int = 24 * 3600, name: str | None = None,
         service: bool = False) -> str:
    """A token for development and for service-to-service calls (HS256 with the configured secret)."""
    now = int(time.time())
    claims: dict[str, object] = {"sub": user_id, "iat": now, "exp": now + ttl_s}
    if name:
        claims["name"] = name
    if service:
        claims["typ"] = "service"
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")


class ServiceCredentials:
    """A service's own token, re-signed before it expires; passed as call metadata."""

    def __init__(self, settings: Settings, service: str) -> None:
        self._settings = settings
        self._service = service
        self._token = ""
        self._renew_at = 0.0

    def metadata(self) -> tuple[tuple[str, str], ...]:
        now = time.time()
        if now >= self._renew_at:
            self._token = sign(self._settings, f"service:{self._service}", ttl_s=SERVICE_TOKEN_TTL_S, service=True)
            self._renew_at = now + SERVICE_TOKEN_TTL_S / 2
        if request_id := request_id_var.get():  # a call made while serving a request carries its id on
            return (("authorization", f"Bearer {self._token}"), ("x-request-id", request_id))
        return (("authorization", f"Bearer {self._token}"),)
