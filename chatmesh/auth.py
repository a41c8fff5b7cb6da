"""Identity: JWTs signed and verified with PyJWT, and how an identity travels through the mesh.

Trust model: the edge verifies a client's JWT and forwards the token itself as `authorization`
metadata on every gRPC call; each service verifies it again with the same key source, so a caller
that reaches a service directly without a valid token gets UNAUTHENTICATED. Services calling each
other (and the edge's own streams) use short-lived service tokens (`typ: service`) signed with the
same key. The acting user is always the verified `sub`, never a field of a request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

from chatmesh.config import Settings

MAX_USER_ID_LENGTH = 128
SERVICE_TOKEN_TTL_S = 3600
LEEWAY_S = 30


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
        self._key = settings.jwt_secret
        self._algorithms = list(settings.jwt_algorithms)
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience

    def verify(self, token: str) -> Identity:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                issuer=self._issuer,
                audience=self._audience,
                leeway=LEEWAY_S,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
        except jwt.PyJWTError as exc:
            raise AuthError(str(exc)) from exc
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
        if not header:
            raise AuthError("missing bearer token")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("authorization must be 'Bearer <token>'")
        return self.verify(token.strip())


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
        return (("authorization", f"Bearer {self._token}"),)
