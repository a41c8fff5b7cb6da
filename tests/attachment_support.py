"""Helpers the attachment tests share (no tests here): media made on the spot, the three-step upload
over REST, and raw HTTP for what a well-behaved client cannot do (stop mid-body, lie about sizes)."""

from __future__ import annotations

import asyncio
import io
import struct
import wave
from typing import Any
from urllib.parse import urlsplit

import httpx
from PIL import Image

from tests.helpers import bearer, direct_conversation, new_user_id, register


def png(width: int = 800, height: int = 400, mode: str = "RGB") -> bytes:
    image = Image.new(mode, (width, height), "white" if mode != "1" else 1)
    if mode == "RGB":
        for x in range(0, width, 8):
            image.putpixel((x, height // 2), (200, 30, 30))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def sunset(width: int = 640, height: int = 360) -> bytes:
    """A picture worth showing (the README's screenshot): a sky gradient, a sun, the sea."""
    image = Image.new("RGB", (width, height))
    for y in range(height):
        t = y / height
        colour = (
            (int(40 + 215 * t), int(60 + 90 * t), int(140 - 60 * t))
            if y < height * 0.65
            else (int(20 + 30 * t), int(60 + 40 * t), int(110 + 40 * t))
        )
        for x in range(width):
            image.putpixel((x, y), colour)
    sun = Image.new("RGB", (width // 6, width // 6), (255, 214, 90))
    mask = Image.new("L", sun.size, 0)
    from PIL import ImageDraw

    ImageDraw.Draw(mask).ellipse((0, 0, *sun.size), fill=255)
    image.paste(sun, (width // 2 - sun.width // 2, int(height * 0.65) - sun.height // 2), mask)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def wav(seconds: float, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * int(seconds * rate))
    return out.getvalue()


def _element(element_id: bytes, body: bytes | None) -> bytes:
    """An EBML element; body None opens a master of unknown size (as MediaRecorder writes them)."""
    if body is None:
        return element_id + b"\x01\xff\xff\xff\xff\xff\xff\xff"
    if len(body) < 127:  # the one-byte size a muxer writes for small elements (`B0 82 84 webm`, say)
        return element_id + bytes([0x80 | len(body)]) + body
    return element_id + b"\x01" + len(body).to_bytes(7, "big") + body


def _uint(element_id: bytes, value: int) -> bytes:
    return _element(element_id, value.to_bytes(4, "big"))


def webm(*, blocks_ms: list[int], stated_duration_ms: float | None = None, video: bool = False) -> bytes:
    """A small WebM as a browser's MediaRecorder writes it: unknown-size Segment and Clusters, one
    Opus track (plus a video track when asked), and no Duration unless `stated_duration_ms`."""
    header = _element(
        b"\x1a\x45\xdf\xa3",
        _uint(b"\x42\x86", 1) + _element(b"\x42\x82", b"webm") + _uint(b"\x42\x87", 4) + _uint(b"\x42\x85", 2),
    )
    info = _uint(b"\x2a\xd7\xb1", 1_000_000)
    if stated_duration_ms is not None:
        info += _element(b"\x44\x89", struct.pack(">d", stated_duration_ms))
    tracks = _element(b"\xae", _uint(b"\xd7", 1) + _uint(b"\x83", 2) + _element(b"\x86", b"A_OPUS"))
    if video:
        tracks += _element(b"\xae", _uint(b"\xd7", 2) + _uint(b"\x83", 1) + _element(b"\x86", b"V_VP8"))
    body = _element(b"\x15\x49\xa9\x66", info) + _element(b"\x16\x54\xae\x6b", tracks)
    for cluster_start in range(0, max(blocks_ms) + 1, 1000):
        body += _element(b"\x1f\x43\xb6\x75", None) + _uint(b"\xe7", cluster_start)
        for at in (t for t in blocks_ms if cluster_start <= t < cluster_start + 1000):
            body += _element(b"\xa3", b"\x81" + struct.pack(">h", at - cluster_start) + b"\x80" + b"\xfc" * 40)
    return header + _element(b"\x18\x53\x80\x67", None) + body


async def create_upload(
    http: httpx.AsyncClient,
    token: str,
    conversation_id: str,
    size: int,
    filename: str = "file.bin",
    content_type: str = "",
) -> httpx.Response:
    return await http.post(
        "/api/attachments",
        headers=bearer(token),
        json={
            "conversation_id": conversation_id,
            "filename": filename,
            "size_bytes": str(size),
            "content_type": content_type,
        },
    )


async def upload(
    http: httpx.AsyncClient,
    token: str,
    conversation_id: str,
    data: bytes,
    filename: str = "file.bin",
    content_type: str = "",
) -> dict[str, Any]:
    """Create, send the bytes, complete: the ready attachment."""
    created = await create_upload(http, token, conversation_id, len(data), filename, content_type)
    assert created.status_code == 200, created.text
    target = created.json()
    sent = await http.request(
        target["upload_method"], target["upload_url"], content=data, headers=target["upload_headers"]
    )
    assert sent.status_code == 200, sent.text
    completed = await http.post(
        f"/api/attachments/{target['attachment']['attachment_id']}:complete", headers=bearer(token), json={}
    )
    assert completed.status_code == 200, completed.text
    return dict(completed.json()["attachment"])


async def get_attachment(http: httpx.AsyncClient, token: str, attachment_id: str) -> httpx.Response:
    return await http.get(f"/api/attachments/{attachment_id}", headers=bearer(token))


async def raw_request(
    edge_url: str, head: str, body_parts: list[bytes], *, close_after: bool = False, timeout: float = 10
) -> bytes:
    """Send a request by hand (head without the final blank line) and read what comes back; with
    `close_after` the connection is dropped after the body parts, answered or not."""
    url = urlsplit(edge_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(head.encode() + b"\r\n\r\n")
        for part in body_parts:
            writer.write(part)
            await writer.drain()
        if close_after:
            return b""
        async with asyncio.timeout(timeout):
            return await _read_response(reader)
    finally:
        writer.close()


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    """One response: its head, then as much body as its Content-Length says (a server may write the
    two apart, so one read can return the head alone), or what came before the connection closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        if not (chunk := await reader.read(4096)):
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lengths = [line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    want = int(lengths[0]) if lengths else len(body)
    while len(body) < want and (chunk := await reader.read(4096)):
        body += chunk
    return head + b"\r\n\r\n" + body


async def chat_pair(http: httpx.AsyncClient, make_token: Any) -> dict[str, str]:
    """Alice and bob, registered, in a direct conversation: their tokens and ids, and its id (`cid`)."""
    alice, bob = new_user_id("alice"), new_user_id("bob")
    tokens = {"alice": make_token(alice), "bob": make_token(bob)}
    for token in tokens.values():
        await register(http, token)
    return {**tokens, "alice_id": alice, "bob_id": bob, "cid": await direct_conversation(http, tokens["alice"], bob)}
