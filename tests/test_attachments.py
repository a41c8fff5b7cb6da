"""Attachments on the filesystem backend, through the edge: upload, check, attach, download (ranges,
caching, thumbnails), durations, and every bad input the issue lists. One mesh of its own, with a
2 MiB limit, a 4-megapixel image limit, and short (scaled) link and collection times."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from chatmesh_tools.launcher import Mesh
from tests.attachment_support import chat_pair, create_upload, get_attachment, png, raw_request, upload, wav, webm
from tests.conftest import new_mesh
from tests.helpers import Socket, bearer, new_user_id, register, send

MAX_BYTES = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def files_dir(workdir: Path) -> Path:
    return workdir / f"attachments-{secrets.token_hex(4)}"


@pytest.fixture(scope="module")
def attachment_mesh(
    mesh_env: dict[str, str], make_database: Callable[[], str], workdir: Path, files_dir: Path, redis_prefix: str
) -> Iterator[Mesh]:
    env = {
        **mesh_env,
        "CHAT_DATABASE_URL": make_database(),
        "CHAT_REDIS_PREFIX": f"{redis_prefix}:files",
        "CHAT_ATTACHMENT_DIR": str(files_dir),
        "CHAT_ATTACHMENT_MAX_BYTES": str(MAX_BYTES),
        "CHAT_ATTACHMENT_MAX_PIXELS": "4000000",
        "CHAT_ATTACHMENT_TTL_S": "100",  # 5 s at the tests' time scale
        "CHAT_ATTACHMENT_URL_TTL_S": "60",
    }  # 3 s
    running = new_mesh(env, workdir / "logs-attachments")
    running.start()
    yield running
    running.stop()


@pytest.fixture
async def client(attachment_mesh: Mesh) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=attachment_mesh.edge_url, timeout=10) as http:
        yield http


@pytest.fixture
async def pair(client: httpx.AsyncClient, make_token) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return await chat_pair(client, make_token)


async def settled(check: Callable[[], bool], timeout: float = 3.0) -> None:
    """Wait for what another process finishes after it has answered (a cancelled upload's cleanup)."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)


def stored_files(files_dir: Path, conversation_id: str) -> list[str]:
    folder = files_dir / conversation_id
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


async def test_an_image_is_sniffed_thumbnailed_attached_and_downloaded(
    client: httpx.AsyncClient, pair: dict[str, str], attachment_mesh: Mesh
) -> None:
    data = png(1200, 600)
    # The declared type lies and the name is path-like: the sniffed type and the last segment are stored.
    image = await upload(client, pair["alice"], pair["cid"], data, "../../etc/ca\x07t.png", "text/plain")
    assert (image["content_type"], image["width"], image["height"]) == ("image/png", 1200, 600)
    assert image["filename"] == "cat.png" and image["size_bytes"] == str(len(data))
    assert image["sha256"] == hashlib.sha256(data).hexdigest() and image["has_thumbnail"]
    assert image["state"] == "ATTACHMENT_STATE_READY" and not image["download_url"]  # links only on GetAttachment

    bob = await Socket.open(attachment_mesh.edge_url, pair["bob"])
    sent = await send(client, pair["alice"], pair["cid"], "", attachment_ids=[image["attachment_id"]])
    assert [a["attachment_id"] for a in sent["attachments"]] == [image["attachment_id"]]
    event = await bob.next_of("chat:message_received")
    carried = event["data"]["attachments"][0]
    assert (carried["filename"], carried["content_type"], carried["width"]) == ("cat.png", "image/png", 1200)
    history = (await client.get(f"/api/messages/{pair['cid']}", headers=bearer(pair["bob"]))).json()
    assert history["messages"][-1]["attachments"][0]["sha256"] == image["sha256"]

    found = (await get_attachment(client, pair["bob"], image["attachment_id"])).json()["attachment"]
    assert found["state"] == "ATTACHMENT_STATE_ATTACHED" and found["urls_expire_at"]
    full = await client.get(found["download_url"])
    assert full.status_code == 200 and full.content == data
    assert full.headers["content-type"] == "image/png"
    assert full.headers["etag"] == f'"{image["sha256"]}"'
    assert full.headers["cache-control"].startswith("private, max-age=")
    assert full.headers["content-disposition"].startswith('inline; filename="cat.png"')
    assert full.headers["x-content-type-options"] == "nosniff"
    thumbnail = await client.get(found["thumbnail_url"])
    assert thumbnail.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(thumbnail.content)) as small:
        assert small.format == "JPEG" and small.size == (320, 160)


async def test_downloads_serve_ranges_and_revalidate(client: httpx.AsyncClient, pair: dict[str, str]) -> None:
    data = secrets.token_bytes(1000)
    attachment = await upload(client, pair["alice"], pair["cid"], data, "noise.bin")
    assert attachment["content_type"] == "application/octet-stream"  # not text, no magic number
    await send(client, pair["alice"], pair["cid"], "raw bytes", attachment_ids=[attachment["attachment_id"]])
    url = (await get_attachment(client, pair["bob"], attachment["attachment_id"])).json()["attachment"]["download_url"]

    part = await client.get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == "bytes 100-199/1000" and part.headers["content-length"] == "100"
    tail = await client.get(url, headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == data[-10:]
    rest = await client.get(url, headers={"Range": "bytes=990-"})
    assert rest.content == data[990:]
    outside = await client.get(url, headers={"Range": "bytes=5000-"})
    assert outside.status_code == 416 and outside.headers["content-range"] == "bytes */1000"
    several = await client.get(url, headers={"Range": "bytes=0-1,5-6"})  # not served as ranges: the whole file
    assert several.status_code == 200 and several.content == data
    head = await client.head(url)
    assert head.status_code == 200 and head.headers["content-length"] == "1000" and head.content == b""
    cached = await client.get(url, headers={"If-None-Match": part.headers["etag"]})
    assert cached.status_code == 304 and cached.content == b""
    assert part.headers["content-disposition"].startswith("attachment;")  # not a type shown inline


async def test_voice_and_audio_durations(client: httpx.AsyncClient, pair: dict[str, str]) -> None:
    # A MediaRecorder-style WebM states no Duration: its last block's timestamp is the length.
    recorded = await upload(client, pair["alice"], pair["cid"], webm(blocks_ms=list(range(0, 2400, 20))), "voice")
    assert (recorded["content_type"], recorded["duration_ms"]) == ("audio/webm", "2380")
    stated = await upload(client, pair["alice"], pair["cid"], webm(blocks_ms=[0, 20], stated_duration_ms=4321.0))
    assert stated["duration_ms"] == "4321"
    clip = await upload(client, pair["alice"], pair["cid"], webm(blocks_ms=[0, 500], video=True), "clip.webm")
    assert clip["content_type"] == "video/webm"
    memo = await upload(client, pair["alice"], pair["cid"], wav(1.5), "memo.wav")
    assert (memo["content_type"], memo["duration_ms"]) == ("audio/x-wav", "1500")
    message = await send(
        client, pair["alice"], pair["cid"], "listen", attachment_ids=[recorded["attachment_id"], memo["attachment_id"]]
    )
    assert [a["duration_ms"] for a in message["attachments"]] == ["2380", "1500"]  # in the order given


async def test_over_the_limit_is_413_before_the_body_is_read(
    client: httpx.AsyncClient, pair: dict[str, str], attachment_mesh: Mesh, files_dir: Path
) -> None:
    too_big = await create_upload(client, pair["alice"], pair["cid"], MAX_BYTES + 1)
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "ATTACHMENT_TOO_LARGE"

    target = (await create_upload(client, pair["alice"], pair["cid"], 1000)).json()
    path = target["upload_url"]
    # A declared length over the limit: answered without a byte of body sent.
    reply = await raw_request(
        attachment_mesh.edge_url, f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_BYTES + 1}", []
    )
    assert reply.startswith(b"HTTP/1.1 413")
    # A chunked body that runs past the upload's size: answered while the body is still unfinished
    # (the client never ends it), so the edge stopped reading past the limit.
    chunk = b"x" * 4096
    reply = await raw_request(
        attachment_mesh.edge_url,
        f"PUT {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked",
        [b"%x\r\n%s\r\n" % (len(chunk), chunk)],
    )
    assert reply.startswith(b"HTTP/1.1 413")
    assert b"ATTACHMENT_TOO_LARGE" in reply
    await settled(lambda: stored_files(files_dir, pair["cid"]) == [])  # nothing kept, not even a partial file
    short = await client.put(path, content=b"y" * 999)
    assert (short.status_code, short.json()["error"]["code"]) == (400, "SIZE_MISMATCH")
    # Nothing left, the refused chunked upload's partial file included: the message service removes it
    # when the edge cancels its stream, which may come after the 413 was answered.
    await settled(lambda: stored_files(files_dir, pair["cid"]) == [])
    # The upload is still pending: the right bytes are taken afterwards.
    assert (await client.put(path, content=b"z" * 1000)).status_code == 200


async def test_an_interrupted_upload_leaves_nothing(
    client: httpx.AsyncClient, pair: dict[str, str], attachment_mesh: Mesh, files_dir: Path
) -> None:
    target = (await create_upload(client, pair["alice"], pair["cid"], 100_000)).json()
    await raw_request(
        attachment_mesh.edge_url,
        f"PUT {target['upload_url']} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000",
        [b"a" * 40_000],
        close_after=True,
    )
    attachment_id = target["attachment"]["attachment_id"]
    # The edge notices the dropped connection and cancels the upload; the service removes its part.
    await settled(lambda: stored_files(files_dir, pair["cid"]) == [])
    incomplete = await client.post(f"/api/attachments/{attachment_id}:complete", headers=bearer(pair["alice"]))
    assert (incomplete.status_code, incomplete.json()["error"]["code"]) == (400, "UPLOAD_INCOMPLETE")
    refused = await client.post(
        "/api/messages",
        headers=bearer(pair["alice"]),
        json={"conversation_id": pair["cid"], "content": "x", "attachment_ids": [attachment_id]},
    )
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "ATTACHMENT_NOT_READY")


@pytest.mark.parametrize(
    ("data", "name", "expected"),
    [
        (lambda: png(3000, 3000, "1"), "bomb.png", (400, "IMAGE_TOO_LARGE")),  # 9 Mpx in a few KB
        (lambda: b"\x7fELF\x02\x01\x01" + b"\x00" * 100, "tool", (415, "UNSUPPORTED_MEDIA_TYPE")),
        (lambda: png(40, 40)[:60], "cut.png", (400, "IMAGE_INVALID")),
    ],
)
async def test_refused_bytes_leave_nothing_behind(
    client: httpx.AsyncClient,
    pair: dict[str, str],
    files_dir: Path,
    data: Callable[[], bytes],
    name: str,
    expected: tuple[int, str],
) -> None:
    body = data()
    target = (await create_upload(client, pair["alice"], pair["cid"], len(body), name)).json()
    reply = await client.put(target["upload_url"], content=body)
    assert (reply.status_code, reply.json()["error"]["code"]) == expected
    assert stored_files(files_dir, pair["cid"]) == []
    state = (await get_attachment(client, pair["alice"], target["attachment"]["attachment_id"])).json()
    assert state["attachment"]["state"] == "ATTACHMENT_STATE_PENDING"


async def test_hostile_names_are_stored_harmlessly(client: httpx.AsyncClient, pair: dict[str, str]) -> None:
    name = '..\\r\u00e9sum\u00e9";\r\nX-Evil: 1;.txt'
    attachment = await upload(client, pair["alice"], pair["cid"], b"plain words\n", name)
    assert attachment["filename"] == 'r\u00e9sum\u00e9";X-Evil: 1;.txt'
    assert attachment["content_type"] == "text/plain"
    await send(client, pair["alice"], pair["cid"], "cv", attachment_ids=[attachment["attachment_id"]])
    url = (await get_attachment(client, pair["bob"], attachment["attachment_id"])).json()["attachment"]["download_url"]
    reply = await client.get(url)
    assert "x-evil" not in reply.headers
    assert reply.headers["content-disposition"] == (
        "attachment; filename=\"r_sum_X-Evil_1_.txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9%22%3BX-Evil%3A%201%3B.txt"
    )


async def test_sends_attach_only_the_senders_ready_uploads_once(
    client: httpx.AsyncClient, pair: dict[str, str], attachment_mesh: Mesh
) -> None:
    mine = await upload(client, pair["alice"], pair["cid"], b"one\n", "one.txt")
    theirs = await upload(client, pair["bob"], pair["cid"], b"two\n", "two.txt")

    async def attempt(token: str, ids: list[str], **extra: Any) -> tuple[int, Any]:
        reply = await client.post(
            "/api/messages",
            headers=bearer(token),
            json={"conversation_id": pair["cid"], "content": "see", "attachment_ids": ids, **extra},
        )
        body = reply.json()
        return reply.status_code, body.get("error", {}).get("code") or body

    assert await attempt(pair["alice"], [theirs["attachment_id"]]) == (404, "ATTACHMENT_NOT_FOUND")
    assert await attempt(pair["alice"], ["nope"]) == (400, "INVALID_ID")
    assert await attempt(pair["alice"], [mine["attachment_id"]] * 2) == (400, "DUPLICATE_ATTACHMENT")
    status, first = await attempt(pair["alice"], [mine["attachment_id"]], client_message_id="c1")
    assert status == 200 and first["created"]
    status, again = await attempt(pair["alice"], [mine["attachment_id"]], client_message_id="c1")  # a resend
    assert status == 200 and not again["created"] and again["message"]["message_id"] == first["message"]["message_id"]
    assert await attempt(pair["alice"], [mine["attachment_id"]]) == (409, "ATTACHMENT_UNAVAILABLE")
    # Over the WebSocket, as over REST.
    socket = await Socket.open(attachment_mesh.edge_url, pair["bob"])
    ack = await socket.request(
        "chat:message_send",
        {"conversation_id": pair["cid"], "content": "", "attachment_ids": [theirs["attachment_id"]]},
    )
    assert ack["type"] == "ack", ack
    assert ack["data"]["message"]["attachments"][0]["filename"] == "two.txt"
    found = await client.get("/api/messages/search", params={"q": "see"}, headers=bearer(pair["bob"]))
    assert found.json()["messages"][0]["attachments"][0]["filename"] == "one.txt"


async def test_access_is_historys_and_ends_with_removal(
    client: httpx.AsyncClient,
    make_token,  # type: ignore[no-untyped-def]
    pair: dict[str, str],
) -> None:
    carol, outsider = new_user_id("carol"), new_user_id("outsider")
    tokens = {"carol": make_token(carol), "outsider": make_token(outsider)}
    for token in tokens.values():
        await register(client, token)
    created = await client.post(
        "/api/conversations/group",
        headers=bearer(pair["alice"]),
        json={"title": "pics", "participant_ids": [pair["bob_id"], carol]},
    )
    gid = created.json()["conversation"]["conversation_id"]
    # Not a participant: no upload into it, no reading from it.
    refused = await create_upload(client, tokens["outsider"], gid, 10)
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "NOT_PARTICIPANT")
    pending = await upload(client, pair["alice"], gid, png(10, 10), "draft.png")
    # Before it is attached, only its uploader sees it.
    assert (await get_attachment(client, pair["bob"], pending["attachment_id"])).status_code == 404
    await send(client, pair["alice"], gid, "for all", attachment_ids=[pending["attachment_id"]])
    link = (await get_attachment(client, tokens["carol"], pending["attachment_id"])).json()["attachment"]
    assert (await client.get(link["download_url"])).status_code == 200
    outsiders = await get_attachment(client, tokens["outsider"], pending["attachment_id"])
    assert (outsiders.status_code, outsiders.json()["error"]["code"]) == (403, "NOT_PARTICIPANT")
    # A link is the user's own: another user id in it breaks the signature.
    forged = link["download_url"].replace(f"u={carol}", f"u={outsider}")
    assert (await client.get(forged)).json()["error"]["code"] == "LINK_INVALID"

    removed = await client.delete(f"/api/conversations/{gid}/participants/{carol}", headers=bearer(pair["alice"]))
    assert removed.status_code == 200, removed.text
    assert (await get_attachment(client, tokens["carol"], pending["attachment_id"])).status_code == 403
    # Her link has not expired, and still does not work: access is checked on every download.
    assert (await client.get(link["download_url"])).json()["error"]["code"] == "NOT_PARTICIPANT"
    assert (await client.get(link["thumbnail_url"])).status_code == 403


async def test_links_expire(client: httpx.AsyncClient, pair: dict[str, str]) -> None:
    attachment = await upload(client, pair["alice"], pair["cid"], b"soon gone\n", "note.txt")
    await send(client, pair["alice"], pair["cid"], "note", attachment_ids=[attachment["attachment_id"]])
    url = (await get_attachment(client, pair["bob"], attachment["attachment_id"])).json()["attachment"]["download_url"]
    assert (await client.get(url)).status_code == 200
    tampered = url[:-2] + ("AA" if not url.endswith("AA") else "BB")
    assert (await client.get(tampered)).json()["error"]["code"] == "LINK_INVALID"
    await asyncio.sleep(4)  # CHAT_ATTACHMENT_URL_TTL_S 60 at time scale 0.05: 3 s (and whole seconds in e)
    expired = await client.get(url)
    assert (expired.status_code, expired.json()["error"]["code"]) == (403, "LINK_EXPIRED")
    fresh = (await get_attachment(client, pair["bob"], attachment["attachment_id"])).json()["attachment"]
    assert (await client.get(fresh["download_url"])).status_code == 200


async def test_uploads_never_attached_are_collected(
    client: httpx.AsyncClient, pair: dict[str, str], files_dir: Path
) -> None:
    kept = await upload(client, pair["alice"], pair["cid"], png(20, 20), "kept.png")
    await send(client, pair["alice"], pair["cid"], "kept", attachment_ids=[kept["attachment_id"]])
    dropped = await upload(client, pair["alice"], pair["cid"], png(30, 30), "dropped.png")
    never_sent = (await create_upload(client, pair["alice"], pair["cid"], 10)).json()["attachment"]
    assert len(stored_files(files_dir, pair["cid"])) == 4  # two files, two thumbnails
    # What a message service that died mid-upload left behind goes too, once older than the TTL.
    orphan = files_dir / pair["cid"] / f"{never_sent['attachment_id']}.part-0123456789abcdef"
    orphan.write_bytes(b"half an upload")
    os.utime(orphan, (time.time() - 3600, time.time() - 3600))
    async with asyncio.timeout(15):  # CHAT_ATTACHMENT_TTL_S 100 at time scale 0.05: collected after about 5 s
        for attachment_id in (dropped["attachment_id"], never_sent["attachment_id"]):
            while (await get_attachment(client, pair["alice"], attachment_id)).status_code != 404:
                await asyncio.sleep(0.2)
    assert stored_files(files_dir, pair["cid"]) == sorted([kept["attachment_id"], kept["attachment_id"] + ".thumb"])
    assert (await get_attachment(client, pair["bob"], kept["attachment_id"])).status_code == 200
    late = await client.post(
        "/api/messages",
        headers=bearer(pair["alice"]),
        json={"conversation_id": pair["cid"], "content": "late", "attachment_ids": [dropped["attachment_id"]]},
    )
    assert late.status_code == 404, late.text


async def test_deleting_a_message_hides_its_attachments(client: httpx.AsyncClient, pair: dict[str, str]) -> None:
    attachment = await upload(client, pair["alice"], pair["cid"], png(50, 50), "oops.png")
    message = await send(client, pair["alice"], pair["cid"], "oops", attachment_ids=[attachment["attachment_id"]])
    link = (await get_attachment(client, pair["bob"], attachment["attachment_id"])).json()["attachment"]
    deleted = await client.delete(f"/api/messages/{message['message_id']}", headers=bearer(pair["alice"]))
    assert deleted.status_code == 200 and deleted.json()["message"]["attachments"] == []
    history = (await client.get(f"/api/messages/{pair['cid']}", headers=bearer(pair["bob"]))).json()["messages"]
    assert [m["attachments"] for m in history if m["message_id"] == message["message_id"]] == [[]]
    for token in (pair["alice"], pair["bob"]):
        assert (await get_attachment(client, token, attachment["attachment_id"])).status_code == 404
    assert (await client.get(link["download_url"])).status_code == 404
    assert (await client.get(link["thumbnail_url"])).status_code == 404
