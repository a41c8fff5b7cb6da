"""The Python client's attachments against the real mesh (filesystem backend): upload from a file with
progress, send with attachment ids, the recipient sees the metadata live and downloads the bytes."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from chatmesh_client import ChatError, Client, MessageEvent
from chatmesh_tools.launcher import Mesh
from tests.attachment_support import png
from tests.helpers import direct_conversation, new_user_id, register


@pytest.fixture
async def pair(mesh: Mesh, http: httpx.AsyncClient, make_token) -> AsyncIterator[tuple[Client, Client, str]]:  # type: ignore[no-untyped-def]
    alice, bob = Client(mesh.edge_url), Client(mesh.edge_url)
    bob_id = new_user_id("bob")
    await register(http, make_token(bob_id))
    await alice.connect(make_token(new_user_id("alice")))
    await bob.connect(make_token(bob_id))
    yield alice, bob, await direct_conversation(http, alice.rest.token, bob_id)
    await alice.close()
    await bob.close()


async def test_upload_send_receive_and_download(pair: tuple[Client, Client, str], tmp_path: Path) -> None:
    alice, bob, conversation_id = pair
    photo = tmp_path / "holiday.png"
    photo.write_bytes(png(900, 300))
    seen: list[tuple[int, int]] = []
    uploaded = await alice.attachments.upload(
        conversation_id, photo, progress=lambda sent, total: seen.append((sent, total))
    )
    assert (uploaded.filename, uploaded.content_type, uploaded.width, uploaded.state) == (
        "holiday.png",
        "image/png",
        900,
        "ready",
    )
    assert seen and seen[-1] == (photo.stat().st_size, photo.stat().st_size)
    note = await alice.attachments.upload(conversation_id, b"minutes\n", filename="notes.txt")

    sent = await alice.send(conversation_id, "", attachment_ids=[uploaded.attachment_id, note.attachment_id])
    assert [a.filename for a in sent.attachments] == ["holiday.png", "notes.txt"]
    async with asyncio.timeout(10):
        async for event in bob.events():
            if isinstance(event, MessageEvent) and event.message.attachments:
                received = event.message
                break
    assert [a.attachment_id for a in received.attachments] == [uploaded.attachment_id, note.attachment_id]
    assert received.attachments[0].sha256 == hashlib.sha256(photo.read_bytes()).hexdigest()

    saved = tmp_path / "copy.png"
    data = await bob.attachments.download(uploaded.attachment_id, to=saved)
    assert data == photo.read_bytes() == saved.read_bytes()
    thumbnail = await bob.attachments.download(uploaded.attachment_id, thumbnail=True)
    assert thumbnail[:3] == b"\xff\xd8\xff"  # a JPEG
    assert await bob.attachments.download(note.attachment_id) == b"minutes\n"
    with pytest.raises(ChatError) as refused:  # bob's own send cannot take alice's upload
        await bob.send(conversation_id, "mine now", attachment_ids=[note.attachment_id])
    assert refused.value.code == "ATTACHMENT_NOT_FOUND"
