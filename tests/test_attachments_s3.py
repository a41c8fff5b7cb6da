"""Attachments on the S3 backend: presigned upload and download URLs, so the bytes go between the client
and the object store, never through the mesh; CompleteUpload checks them from the store.

The object store is moto's standalone server (`moto[server]`), started here as a real process that
speaks the S3 protocol on a local port: the stand-in for S3 or any S3-compatible store. moto checks
neither SigV4 signatures nor their expiry, so the tests check what the URLs state (the signed
Content-Length, X-Amz-Expires); real S3 enforces both.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx
import pytest

from chatmesh_tools.embedded import free_port
from chatmesh_tools.launcher import Mesh
from tests.attachment_support import chat_pair, create_upload, get_attachment, png, upload, webm
from tests.conftest import new_mesh
from tests.helpers import bearer, new_user_id, register, send

BUCKET = "chatmesh-test"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


@pytest.fixture(scope="module")
def s3_endpoint(workdir: Path) -> Iterator[str]:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with open(workdir / "moto.log", "ab") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("moto's server did not start; see moto.log") from None
                time.sleep(0.1)
        boto3.client("s3", endpoint_url=endpoint, **CREDENTIALS).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture(scope="module")
def bucket(s3_endpoint: str):  # type: ignore[no-untyped-def]
    return boto3.resource("s3", endpoint_url=s3_endpoint, **CREDENTIALS).Bucket(BUCKET)


@pytest.fixture(scope="module")
def s3_mesh(
    mesh_env: dict[str, str], make_database: Callable[[], str], workdir: Path, s3_endpoint: str, redis_prefix: str
) -> Iterator[Mesh]:
    env = {
        **mesh_env,
        "CHAT_DATABASE_URL": make_database(),
        "CHAT_REDIS_PREFIX": f"{redis_prefix}:s3",
        "CHAT_ATTACHMENT_BACKEND": "s3",
        "CHAT_S3_ENDPOINT_URL": s3_endpoint,
        "CHAT_S3_BUCKET": BUCKET,
        "CHAT_S3_ACCESS_KEY_ID": "testing",
        "CHAT_S3_SECRET_ACCESS_KEY": "testing",
        "CHAT_ATTACHMENT_MAX_BYTES": str(1024 * 1024),
        "CHAT_ATTACHMENT_MAX_PIXELS": "4000000",
        "CHAT_ATTACHMENT_TTL_S": "100",
        "CHAT_ATTACHMENT_URL_TTL_S": "200",
    }  # 5 s and 10 s, scaled
    running = new_mesh(env, workdir / "logs-attachments-s3")
    running.start()
    yield running
    running.stop()


@pytest.fixture
async def client(s3_mesh: Mesh) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=s3_mesh.edge_url, timeout=10) as http:
        yield http


@pytest.fixture
async def pair(client: httpx.AsyncClient, make_token) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return await chat_pair(client, make_token)


def keys(bucket, conversation_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(o.key.split("/", 1)[1] for o in bucket.objects.filter(Prefix=f"{conversation_id}/"))


async def test_bytes_go_to_the_store_and_come_back_from_it(
    client: httpx.AsyncClient, pair: dict[str, str], s3_endpoint: str, bucket
) -> None:  # type: ignore[no-untyped-def]
    data = png(640, 480)
    created = (await create_upload(client, pair["alice"], pair["cid"], len(data), "cat.png", "text/plain")).json()
    upload_url = created["upload_url"]
    assert upload_url.startswith(f"{s3_endpoint}/{BUCKET}/{pair['cid']}/")  # straight to the store
    query = parse_qs(urlsplit(upload_url).query)
    assert query["X-Amz-Expires"] == ["10"] and "content-length" in query["X-Amz-SignedHeaders"][0]
    async with httpx.AsyncClient() as store_client:
        assert (await store_client.put(upload_url, content=data)).status_code == 200
    attachment_id = created["attachment"]["attachment_id"]
    done = (await client.post(f"/api/attachments/{attachment_id}:complete", headers=bearer(pair["alice"]))).json()
    image = done["attachment"]
    assert (image["content_type"], image["width"], image["height"], image["has_thumbnail"]) == (
        "image/png",
        640,
        480,
        True,
    )
    assert keys(bucket, pair["cid"]) == [attachment_id, f"{attachment_id}.thumb"]

    sent = await send(client, pair["alice"], pair["cid"], "", attachment_ids=[attachment_id])
    assert sent["attachments"][0]["sha256"] == image["sha256"]
    links = (await get_attachment(client, pair["bob"], attachment_id)).json()["attachment"]
    for url in (links["download_url"], links["thumbnail_url"]):
        assert url.startswith(s3_endpoint) and parse_qs(urlsplit(url).query)["X-Amz-Expires"] == ["10"]
    assert "inline" in parse_qs(urlsplit(links["download_url"]).query)["response-content-disposition"][0]
    async with httpx.AsyncClient() as store_client:
        full = await store_client.get(links["download_url"])
        thumbnail = await store_client.get(links["thumbnail_url"])
    assert full.content == data and full.headers["content-disposition"].startswith('inline; filename="cat.png"')
    assert thumbnail.headers["content-type"] == "image/jpeg" and thumbnail.content[:3] == b"\xff\xd8\xff"
    # The mesh serves no bytes of its own here: its /files links are refused.
    assert (await client.get(f"/files/{attachment_id}?v=file&u=x&e=9999999999&s=x")).status_code == 403


async def test_voice_duration_from_the_store(client: httpx.AsyncClient, pair: dict[str, str]) -> None:
    voice = await upload(client, pair["alice"], pair["cid"], webm(blocks_ms=list(range(0, 1500, 20))), "voice.webm")
    assert (voice["content_type"], voice["duration_ms"]) == ("audio/webm", "1480")


async def test_refused_objects_are_deleted(client: httpx.AsyncClient, pair: dict[str, str], bucket) -> None:  # type: ignore[no-untyped-def]
    async def complete_after(body: bytes, declared: int) -> tuple[int, str]:
        created = (await create_upload(client, pair["alice"], pair["cid"], declared, "x")).json()
        if body:
            async with httpx.AsyncClient() as store_client:
                await store_client.put(created["upload_url"], content=body)
        reply = await client.post(
            f"/api/attachments/{created['attachment']['attachment_id']}:complete", headers=bearer(pair["alice"])
        )
        return reply.status_code, reply.json()["error"]["code"]

    assert await complete_after(b"", 10) == (400, "UPLOAD_INCOMPLETE")
    # moto does not check the signed Content-Length, as S3 would: CompleteUpload measures it again.
    assert await complete_after(b"y" * 20, 10) == (400, "SIZE_MISMATCH")
    assert await complete_after(b"y" * (1024 * 1024 + 1), 10) == (413, "ATTACHMENT_TOO_LARGE")
    bomb = png(3000, 3000, "1")
    assert await complete_after(bomb, len(bomb)) == (400, "IMAGE_TOO_LARGE")
    assert keys(bucket, pair["cid"]) == []  # nothing refused is kept


async def test_unattached_objects_are_collected(client: httpx.AsyncClient, pair: dict[str, str], bucket) -> None:  # type: ignore[no-untyped-def]
    kept = await upload(client, pair["alice"], pair["cid"], b"kept\n", "kept.txt")
    await send(client, pair["alice"], pair["cid"], "kept", attachment_ids=[kept["attachment_id"]])
    dropped = await upload(client, pair["alice"], pair["cid"], png(20, 20), "dropped.png")
    assert len(keys(bucket, pair["cid"])) == 3
    async with asyncio.timeout(15):  # CHAT_ATTACHMENT_TTL_S 100 at time scale 0.05: about 5 s
        while (await get_attachment(client, pair["alice"], dropped["attachment_id"])).status_code != 404:
            await asyncio.sleep(0.2)
    assert keys(bucket, pair["cid"]) == [kept["attachment_id"]]


async def test_a_removed_participant_gets_no_more_links(client: httpx.AsyncClient, make_token) -> None:  # type: ignore[no-untyped-def]
    alice, carol = new_user_id("alice"), new_user_id("carol")
    tokens = {"alice": make_token(alice), "carol": make_token(carol)}
    for token in tokens.values():
        await register(client, token)
    created = await client.post(
        "/api/conversations/group", headers=bearer(tokens["alice"]), json={"title": "pics", "participant_ids": [carol]}
    )
    gid = created.json()["conversation"]["conversation_id"]
    photo = await upload(client, tokens["alice"], gid, png(40, 40), "p.png")
    await send(client, tokens["alice"], gid, "pic", attachment_ids=[photo["attachment_id"]])
    assert (await get_attachment(client, tokens["carol"], photo["attachment_id"])).status_code == 200
    removed = await client.delete(f"/api/conversations/{gid}/participants/{carol}", headers=bearer(tokens["alice"]))
    assert removed.status_code == 200, removed.text
    # No new link; one already presigned lasts until it expires (X-Amz-Expires), as S3 cannot revoke it.
    refused = await get_attachment(client, tokens["carol"], photo["attachment_id"])
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "NOT_PARTICIPANT")
