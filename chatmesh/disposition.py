"""How a downloaded attachment is presented to a browser, decided in one place for both backends: the
edge's own responses (filesystem) and the headers S3 is told to send with a presigned URL.

Only types a browser shows without running anything are `inline` (raster images, audio, video);
everything else is `attachment`, so an uploaded HTML or SVG file is saved, never rendered on the
mesh's origin. The file name goes out twice (RFC 6266): an ASCII fallback with anything outside
letters, digits and `._-` replaced, and the exact name percent-encoded as UTF-8 in `filename*`, so
quotes, semicolons, CR/LF or path separators in a name can never break out of the header.
"""

from __future__ import annotations

import re
from urllib.parse import quote

INLINE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def is_inline(content_type: str) -> bool:
    return content_type in INLINE_TYPES or content_type.startswith(("audio/", "video/"))


def content_disposition(filename: str, content_type: str) -> str:
    kind = "inline" if is_inline(content_type) else "attachment"
    fallback = _UNSAFE.sub("_", filename).strip("._") or "file"
    return f"{kind}; filename=\"{fallback[:150]}\"; filename*=UTF-8''{quote(filename, safe='')}"
