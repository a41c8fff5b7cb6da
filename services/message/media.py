"""What the server determines about an uploaded file from its bytes: type, image size and thumbnail,
audio duration, and a harmless file name. Nothing here trusts what the client declared.

Every function is blocking (file reads, Pillow's decoding): callers run `analyze` in a thread
(`asyncio.to_thread`), never on the event loop.
"""

from __future__ import annotations

import hashlib
import io
import unicodedata
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import filetype
from PIL import Image, ImageOps, UnidentifiedImageError
from tinytag import TinyTag, TinyTagException

from chatmesh import errors
from services.message import webm

THUMBNAIL_EDGE = 320  # px, the longer side
THUMBNAIL_TYPE = "image/jpeg"
SNIFF_BYTES = 8192
MAX_FILENAME = 255
# Pillow decodes these into thumbnails; other image types are kept as files.
THUMBNAILED = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp", "image/tiff"})


@dataclass(frozen=True)
class Analysis:
    content_type: str
    size: int
    sha256: str
    width: int = 0
    height: int = 0
    duration_ms: int = 0
    thumbnail: bytes | None = None


def safe_filename(name: str) -> str:
    """The last path segment, without control or format characters, trimmed to MAX_FILENAME.

    Stored as the client named it otherwise (it is only ever shown, or sent in a quoted and encoded
    Content-Disposition), so "résumé.pdf" stays readable while "../../etc/passwd" becomes "passwd".
    """
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C")  # Cc, Cf, Cs, Co, Cn
    name = name.strip().strip(".") or "file"
    return name[:MAX_FILENAME]


def type_allowed(content_type: str, allowed: tuple[str, ...]) -> bool:
    family = content_type.split("/", 1)[0] + "/*"
    return content_type in allowed or family in allowed


def sniff(head: bytes, path: Path) -> str:
    """The MIME type the bytes show: magic numbers, then WebM refined to audio when it has no video
    track, then UTF-8 text; anything else is application/octet-stream."""
    kind = filetype.guess(head)
    if kind is not None:
        mime = str(kind.mime)
        if mime in ("video/webm", "video/x-matroska") and not webm.has_video(path):
            return "audio/webm"
        return mime
    return "text/plain" if _looks_like_text(head) else "application/octet-stream"


def _looks_like_text(head: bytes) -> bool:
    if not head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # only a character cut at the end of the sample is forgiven
            return False
        text = head[: exc.start].decode("utf-8")
    return not any(ord(c) < 32 and c not in "\t\n\r\f" for c in text)


def analyze(path: Path, max_pixels: int) -> Analysis:
    """Blocking: sniff the file at `path`; images get size and thumbnail, audio and video a duration."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        head = f.read(SNIFF_BYTES)
        f.seek(0)
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
    content_type = sniff(head, path)
    found = Analysis(content_type, size, digest.hexdigest())
    if content_type in THUMBNAILED:
        return _image(path, found, max_pixels)
    if content_type.startswith(("audio/", "video/")):
        return replace(found, duration_ms=_duration_ms(path, content_type))
    return found


def _image(path: Path, found: Analysis, max_pixels: int) -> Analysis:
    """Size from the header before any decoding, so a decompression bomb (a small file that
    decodes to billions of pixels) is refused without decoding it; Pillow's own check is kept as a
    second line, its warning turned into a refusal."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise _too_many_pixels(width, height, max_pixels)
                image.draft("RGB", (THUMBNAIL_EDGE * 2, THUMBNAIL_EDGE * 2))  # JPEG: decode at a reduced scale
                oriented = ImageOps.exif_transpose(image)
                width, height = oriented.size
                oriented.thumbnail((THUMBNAIL_EDGE, THUMBNAIL_EDGE))
                thumbnail = _jpeg(oriented)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _too_many_pixels(0, 0, max_pixels) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise errors.invalid("IMAGE_INVALID", f"the image cannot be decoded: {exc}") from None
    return replace(found, width=width, height=height, thumbnail=thumbnail)


def _too_many_pixels(width: int, height: int, max_pixels: int) -> errors.ChatError:
    size = f" ({width}x{height})" if width else ""
    return errors.invalid("IMAGE_TOO_LARGE", f"the image{size} has more than {max_pixels} pixels")


def _jpeg(image: Image.Image) -> bytes:
    """A JPEG of the image, transparency flattened onto white."""
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        image = Image.new("RGB", rgba.size, (255, 255, 255))
        image.paste(rgba, mask=rgba.getchannel("A"))
    elif image.mode != "RGB":
        image = image.convert("RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=80)
    return out.getvalue()


def _duration_ms(path: Path, content_type: str) -> int:
    """The duration the container states (0 when it states none, or cannot be read)."""
    if content_type.endswith(("/webm", "/x-matroska")):
        return webm.duration_ms(path)
    try:
        seconds = TinyTag.get(str(path)).duration
    except (TinyTagException, OSError, ValueError, KeyError, IndexError, EOFError):
        return 0
    return round(seconds * 1000) if seconds and seconds > 0 else 0
