"""Where attachment bytes live, behind one small interface with two backends: this filesystem one (the
embedded default, served through the edge) and S3-compatible object storage (`s3store.py`, presigned
URLs, so the bytes never pass through the mesh).

Keys are `<conversation id>/<attachment id>` (and `.thumb` beside it): made by the service from
uuids, never from anything a client sent, so no key can climb out of the folder or the bucket.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

CHUNK = 256 * 1024  # per read from disk, and per gRPC message towards the edge


class BlobStore(Protocol):
    async def put(self, key: str, data: bytes, content_type: str) -> None: ...

    async def size(self, key: str) -> int | None:
        """The stored object's size, or None when there is none."""

    def local_copy(self, key: str) -> contextlib.AbstractAsyncContextManager[Path]:
        """A local file holding the object's bytes, for the analysis (removed after, if a copy)."""

    async def delete(self, key: str) -> None: ...

    async def presign_upload(self, key: str, size: int, expires_s: int) -> tuple[str, dict[str, str]] | None:
        """(URL, headers) the client sends the bytes to, or None when the mesh takes them itself."""

    async def presign_download(self, key: str, disposition: str, content_type: str, expires_s: int) -> str | None:
        """A URL the client fetches the bytes from, or None when the mesh serves them itself."""


class FileBlobStore:
    """Files under one folder. Writes go to a temporary name and are renamed into place, so a reader
    never sees a partial file and an interrupted upload leaves nothing under the final name."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / key

    def temp_path(self, key: str) -> Path:
        return self.root / f"{key}.part-{secrets.token_hex(8)}"

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        temp = self.temp_path(key)

        def write() -> None:
            temp.parent.mkdir(parents=True, exist_ok=True)
            temp.write_bytes(data)
            os.replace(temp, self.path(key))

        await asyncio.to_thread(write)

    async def commit(self, temp: Path, key: str) -> None:
        """Move a fully written temporary file into place."""
        await asyncio.to_thread(os.replace, temp, self.path(key))

    async def size(self, key: str) -> int | None:
        try:
            return (await asyncio.to_thread(self.path(key).stat)).st_size
        except FileNotFoundError:
            return None

    @contextlib.asynccontextmanager
    async def local_copy(self, key: str) -> AsyncIterator[Path]:
        yield self.path(key)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.path(key).unlink, missing_ok=True)

    async def presign_upload(self, key: str, size: int, expires_s: int) -> tuple[str, dict[str, str]] | None:
        return None

    async def presign_download(self, key: str, disposition: str, content_type: str, expires_s: int) -> str | None:
        return None

    async def remove_stale_parts(self, older_than_s: float) -> int:
        """Temporary files a process left behind when it died mid-upload (a live upload removes its
        own): those untouched for `older_than_s` go. One walk of the folder, in a thread."""

        def sweep() -> int:
            cutoff = time.time() - older_than_s
            removed = 0
            for part in self.root.glob("*/*.part-*"):
                with contextlib.suppress(FileNotFoundError):
                    if part.stat().st_mtime < cutoff:
                        part.unlink()
                        removed += 1
            return removed

        return await asyncio.to_thread(sweep)

    async def read(self, key: str, first: int, length: int) -> AsyncIterator[bytes]:
        """`length` bytes from `first`, in CHUNK pieces, each read in a thread."""
        handle = await asyncio.to_thread(self.path(key).open, "rb")
        try:
            await asyncio.to_thread(handle.seek, first)
            left = length
            while left > 0:
                chunk = await asyncio.to_thread(handle.read, min(CHUNK, left))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk
        finally:
            await asyncio.to_thread(handle.close)


class TempWriter:
    """Streams chunks into a temporary file in a thread per write (batched to ~1 MiB), so a slow disk
    never stalls the event loop. `discard` removes it: an interrupted upload leaves no file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self._buffer = bytearray()
        self._writing: asyncio.Future[None] | None = None  # the write thread, which a cancel cannot stop

    async def write(self, chunk: bytes) -> None:
        self._buffer += chunk
        self.size += len(chunk)
        if len(self._buffer) >= 1024 * 1024:
            await self._flush()

    async def close(self) -> None:
        await self._flush()

    async def _flush(self) -> None:
        data, self._buffer = bytes(self._buffer), bytearray()

        def append() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("ab") as f:
                f.write(data)

        self._writing = asyncio.get_running_loop().run_in_executor(None, append)
        await asyncio.shield(self._writing)

    async def discard(self) -> None:
        """Shielded: it runs in `finally` blocks of uploads that are being cancelled. It waits for a
        write still running in its thread (cancelling the upload does not stop it), or that write
        would create the file again after it was removed."""

        async def remove() -> None:
            if self._writing is not None:
                with contextlib.suppress(Exception):
                    await self._writing
            await asyncio.to_thread(self.path.unlink, missing_ok=True)

        await asyncio.shield(remove())
