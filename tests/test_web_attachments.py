"""Attachments in the browser page, in Debian's Chromium through Playwright: alice sends an image and a
file (the upload shows its progress) and records a voice message with MediaRecorder (Chromium's fake
microphone); bob sees the thumbnail, opens the full size, gets the file as a download and the voice
message as an <audio> player with its length. Same private mesh and helpers as tests/test_web.py."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from chatmesh_tools.launcher import Mesh
from tests.attachment_support import sunset
from tests.test_web import media_browser, start_chat, two_pages, web_mesh  # noqa: F401 (fixtures)

# Set CHAT_WEB_ATTACHMENTS_SCREENSHOT=docs/attachments.png to refresh the README's picture.
SCREENSHOT = os.environ.get("CHAT_WEB_ATTACHMENTS_SCREENSHOT", "")

pytestmark = pytest.mark.skipif(os.environ.get("CHAT_SKIP_BROWSER") == "1", reason="CHAT_SKIP_BROWSER=1")


async def test_image_file_and_voice_message_between_two_pages(
    web_mesh: Mesh,
    media_browser,  # noqa: F811
    tmp_path: Path,
) -> None:
    alice_id, bob_id, alice, bob = await two_pages(media_browser, web_mesh)
    await alice.context.grant_permissions(["microphone"], origin=web_mesh.edge_url)
    await start_chat(alice, bob_id)
    await bob.locator("#conversations button.conversation").first.click()

    # Alice picks an image and a file: each shows its upload's progress, then is ready to send.
    await alice.evaluate("""() => { window.sawProgress = false;
        new MutationObserver(() => { if (document.querySelector('#uploads progress')) window.sawProgress = true; })
          .observe(document.getElementById('uploads'), { subtree: true, childList: true, attributes: true }); }""")
    await alice.locator("#attach-input").set_input_files(
        [
            {"name": "sunset.png", "mimeType": "image/png", "buffer": sunset(640, 360)},
            {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"bring snacks\n" * 20_000},
        ]
    )
    await alice.locator("#uploads li.upload[data-state=ready]").nth(1).wait_for()
    assert await alice.evaluate("window.sawProgress")
    await alice.get_by_label("Message", exact=True).fill("look at this")
    await alice.keyboard.press("Enter")
    await alice.locator("#uploads").wait_for(state="hidden")

    # Bob sees the thumbnail first, the full size on click, and the file as a download.
    message = bob.locator("li.message", has_text="look at this")
    image = message.locator(".attachment.image img")
    await image.wait_for()
    await bob.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=await image.element_handle())
    assert await image.evaluate("img => img.naturalWidth") == 320  # the thumbnail
    await message.get_by_role("button", name="Show sunset.png full size").click()
    await bob.wait_for_function("img => img.complete && img.naturalWidth === 640", arg=await image.element_handle())
    link = message.locator(".attachment.file a")
    await bob.wait_for_function("a => a.href !== ''", arg=await link.element_handle())
    assert await link.get_attribute("download") == "notes.txt"
    async with httpx.AsyncClient() as http:
        assert (await http.get(await link.evaluate("a => a.href"))).content == b"bring snacks\n" * 20_000

    # Alice records a voice message (the fake microphone's beeps) and it goes at once.
    await alice.get_by_role("button", name="🎤 Record").click()
    await alice.locator("#record[aria-pressed=true]").wait_for()
    await alice.wait_for_timeout(1600)  # the recording itself: real time, not a delay to scale
    await alice.get_by_role("button", name="⏹ Stop").click()
    voice = bob.locator("li.message .attachment.voice")
    await voice.wait_for()
    audio = voice.locator("audio")
    await bob.wait_for_function("a => a.src !== '' && a.readyState >= 1", arg=await audio.element_handle())
    duration = await voice.locator(".duration").inner_text()
    assert duration in ("0:01", "0:02"), duration  # the length the server read from the WebM's blocks

    async with httpx.AsyncClient(base_url=web_mesh.edge_url) as http:
        token = (await http.post("/dev/token", json={"user_id": bob_id})).json()["token"]
        cid = await bob.locator("#conversations button.conversation").first.get_attribute("data-id")
        stored = (await http.get(f"/api/messages/{cid}", headers={"Authorization": f"Bearer {token}"})).json()
    kinds = [(a["filename"], a["content_type"]) for m in stored["messages"] for a in m["attachments"]]
    assert kinds[:2] == [("sunset.png", "image/png"), ("notes.txt", "text/plain")]
    assert kinds[2][1] == "audio/webm" and kinds[2][0].startswith("voice-")
    assert 1000 <= int(stored["messages"][-1]["attachments"][0]["duration_ms"]) <= 3000

    if await bob.locator("#request-accept").is_visible():  # a first direct chat is a request: accepted, out of the way
        await bob.locator("#request-accept").click()
    await bob.screenshot(path=str(tmp_path / "attachments.png"))
    if SCREENSHOT:
        await bob.screenshot(path=SCREENSHOT)
