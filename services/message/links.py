"""The mesh's own signed links (filesystem backend): `/files/<attachment id>?v=&u=&e=&s=`.

A browser cannot put a bearer token on an `<img src>` or `<audio src>`, so downloads (and uploads,
for symmetry with S3's presigned URLs) go to links that carry their own authority: the attachment,
the variant (`file`, `thumbnail` or `upload`), the user it was issued to, and its expiry, under an
HMAC-SHA256 with a key only the message service holds. The edge passes the parameters through
untouched; this service checks them, then checks the user's access again on every download, so a
participant removed from the conversation loses access at once, even with a link still unexpired.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from urllib.parse import urlencode

from chatmesh import errors
from chatmesh.config import ConfigError, Settings
from chatmesh.gen.chat.v1 import message_pb2

VARIANTS = ("file", "thumbnail", "upload")
PATH = "/files/"


def secret_of(settings: Settings) -> bytes:
    """CHAT_ATTACHMENT_URL_SECRET, or a key derived from CHAT_JWT_SECRET (the development default)."""
    if settings.attachment_url_secret:
        return settings.attachment_url_secret.encode()
    if settings.jwt_secret:
        return hmac.new(settings.jwt_secret.encode(), b"chatmesh attachment links v1", hashlib.sha256).digest()
    raise ConfigError("CHAT_ATTACHMENT_URL_SECRET is not set: the filesystem backend signs its links with it")


class Links:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _signature(self, attachment_id: str, variant: str, user_id: str, expires: int) -> str:
        text = f"v1\n{attachment_id}\n{variant}\n{user_id}\n{expires}".encode()
        return base64.urlsafe_b64encode(hmac.new(self._secret, text, hashlib.sha256).digest()).rstrip(b"=").decode()

    def url(self, attachment_id: str, variant: str, user_id: str, expires: int) -> str:
        query = urlencode(
            {"v": variant, "u": user_id, "e": expires, "s": self._signature(attachment_id, variant, user_id, expires)}
        )
        return f"{PATH}{attachment_id}?{query}"

    def check(self, link: message_pb2.SignedLink, variants: tuple[str, ...]) -> None:
        """403 LINK_INVALID for a link this service did not sign as it is; 403 LINK_EXPIRED after expiry."""
        if link.variant not in variants:
            raise errors.forbidden("LINK_INVALID", "this link is not valid here")
        expected = self._signature(link.attachment_id, link.variant, link.user_id, link.expires)
        if not hmac.compare_digest(expected.encode(), link.signature.encode()):
            raise errors.forbidden("LINK_INVALID", "this link is not valid")
        if link.expires < time.time():
            raise errors.forbidden("LINK_EXPIRED", "this link has expired: ask for a new one")
