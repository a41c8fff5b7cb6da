"""A minimal HTTP/1.1 keep-alive GET client for the history readers: httpx spends more CPU per request
than the edge does to answer it, and on a 2-core machine the load generator's CPU is the mesh's loss."""

from __future__ import annotations

import asyncio
from urllib.parse import urlencode, urlsplit


class LeanHTTP:
    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(base_url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def get(self, path: str, params: dict[str, object], token: str = "") -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        assert self._reader is not None
        target = f"{path}?{urlencode(params)}" if params else path
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self._writer.write(f"GET {target} HTTP/1.1\r\nHost: {self._host}\r\n{auth}{self._extra}\r\n".encode())
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length, chunked = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if not chunked:
            return status, await self._reader.readexactly(length)
        body = bytearray()
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            chunk = await self._reader.readexactly(size + 2)
            if size == 0:
                return status, bytes(body)
            body += chunk[:-2]

    async def close(self) -> None:
        if self._writer:
            self._writer.close()
