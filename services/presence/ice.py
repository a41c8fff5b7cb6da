"""STUN/TURN servers for a client's calls, with time-limited TURN credentials.

The mesh relays no media: two peers connect directly, through STUN-found addresses, or through a
TURN relay when neither can reach the other. A TURN server must not be open to anyone, and clients
must not hold a long-lived password, so when CHAT_TURN_SECRET is set each client gets credentials of
its own that expire (the "TURN REST API" scheme, draft-uberti-behave-turn-rest, which coturn
implements as `use-auth-secret` / `static-auth-secret`): username `<expiry unix time>:<user id>`,
password base64(HMAC-SHA1(secret, username)). The TURN server checks the HMAC and the expiry with the
same secret; nothing is stored on either side.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from google.protobuf import timestamp_pb2

from chatmesh.config import Settings
from chatmesh.gen.chat.v1 import call_pb2


def turn_credentials(secret: str, user_id: str, ttl_s: float, now: float | None = None) -> tuple[str, str, int]:
    """(username, password, expires at as a unix time) valid for `ttl_s` from `now`."""
    expires = int((time.time() if now is None else now) + ttl_s)
    username = f"{expires}:{user_id}"
    password = base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()
    return username, password, expires


def call_config(
    settings: Settings, user_id: str, ring_timeout_s: float, max_sdp_bytes: int
) -> call_pb2.GetCallConfigResponse:
    """The configured servers as they are, plus the TURN URLs with credentials made for this user."""
    reply = call_pb2.GetCallConfigResponse(ring_timeout_ms=int(ring_timeout_s * 1000), max_sdp_bytes=max_sdp_bytes)
    for urls, username, credential in settings.ice_servers:
        reply.ice_servers.append(call_pb2.IceServer(urls=urls, username=username, credential=credential))
    if settings.turn_secret and settings.turn_urls:
        username, password, expires = turn_credentials(settings.turn_secret, user_id, settings.turn_ttl_s)
        reply.ice_servers.append(call_pb2.IceServer(urls=settings.turn_urls, username=username, credential=password))
        reply.credentials_expire_at.CopyFrom(timestamp_pb2.Timestamp(seconds=expires))
    return reply
