"""Attachments from Python: `await client.attachments.upload(conversation_id, path_or_bytes)`, then
`await client.send(conversation_id, "", attachment_ids=[a.attachment_id])`, and
`await client.attachments.download(attachment_id)`.

An upload is three calls, whichever backend the mesh runs: create (the edge answers where to send the
bytes), send them there (the edge itself, or a presigned object-storage URL: then no bearer token goes
with them, the URL is the authority), complete (the server checks the bytes and reports what it found).
Downloads fetch fresh expiring links first, so a stored Attachment never holds a stale one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from chatmesh_client.rest import Rest

CHUNK = 256 * 1024
Progress = Callable[[int, int], None]  # (bytes sent, total)


@dataclass
class Attachment:
    """What the server determined about a file (type sniffed from the bytes, image size, duration)."""

    attachment_id: str
    conversation_id: str = ""
    uploader_id: str = ""
    filename: str = ""
    content_type: str = ""
    size_bytes: int = 0
    sha256: str = ""
    width: int = 0
    height: int = 0
    duration_ms: int = 0
    has_thumbnail: bool = False
    state: str = ""  # pending | ready | attached
    download_url: str = ""  # only on get(): expiring
    thumbnail_url: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Attachment:
        state = str(data.get("state") or "")
        return cls(
            attachment_id=data.get("attachment_id", ""),
            conversation_id=data.get("conversation_id", ""),
            uploader_id=data.get("uploader_id", ""),
            filename=data.get("filename", ""),
            content_type=data.get("content_type", ""),
            size_bytes=int(data.get("size_bytes") or 0),
            sha256=data.get("sha256", ""),
            width=int(data.get("width") or 0),
            height=int(data.get("height") or 0),
            duration_ms=int(data.get("duration_ms") or 0),
            has_thumbnail=bool(data.get("has_thumbnail")),
            state=state.removeprefix("ATTACHMENT_STATE_").lower(),
            download_url=data.get("download_url", ""),
            thumbnail_url=data.get("thumbnail_url", ""),
        )


class Attachments:
    def __init__(self, rest: Rest) -> None:
        self._rest = rest

    async def upload(
        self,
        conversation_id: str,
        source: bytes | str | Path,
        *,
        filename: str = "",
        content_type: str = "",
        progress: Progress | None = None,
    ) -> Attachment:
        """Upload bytes or a file into a conversation; returns the checked attachment, ready to send.
        `content_type` is only a hint: the server stores the type the bytes show."""
        if isinstance(source, bytes):
            data = source
        else:
            data = await asyncio.to_thread(Path(source).read_bytes)
            filename = filename or Path(source).name
        target = await self._rest.call(
            "POST",
            "/api/attachments",
            json={
                "conversation_id": conversation_id,
                "filename": filename or "file",
                "size_bytes": str(len(data)),
                "content_type": content_type,
            },
        )
        attachment_id = target["attachment"]["attachment_id"]
        await self._rest.transfer(
            target.get("upload_method") or "PUT",
            target["upload_url"],
            content=_chunks(data, progress),
            headers={**(target.get("upload_headers") or {}), "Content-Length": str(len(data))},
        )
        done = await self._rest.call("POST", f"/api/attachments/{quote(attachment_id, safe='')}:complete", json={})
        return Attachment.from_json(done["attachment"])

    async def get(self, attachment_id: str) -> Attachment:
        """Metadata with fresh download links (participants of its conversation only)."""
        reply = await self._rest.call("GET", f"/api/attachments/{quote(attachment_id, safe='')}")
        return Attachment.from_json(reply["attachment"])

    async def download(self, attachment_id: str, *, thumbnail: bool = False, to: str | Path | None = None) -> bytes:
        """The file's bytes (or its thumbnail's), also written to `to` when given."""
        links = await self.get(attachment_id)
        url = links.thumbnail_url if thumbnail else links.download_url
        if not url:
            raise ValueError(f"attachment {attachment_id} has no {'thumbnail' if thumbnail else 'content'} yet")
        data = (await self._rest.transfer("GET", url)).content
        if to is not None:
            await asyncio.to_thread(Path(to).write_bytes, data)
        return data


async def _chunks(data: bytes, progress: Progress | None) -> AsyncIterator[bytes]:
    for at in range(0, len(data), CHUNK):
        chunk = data[at : at + CHUNK]
        yield chunk
        if progress is not None:
            progress(at + len(chunk), len(data))
