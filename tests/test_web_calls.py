"""A one-to-one audio call between two pages (clients/web/chat-calls.js) in Debian's Chromium with
its fake microphone: alice rings bob, bob answers, both RTCPeerConnections reach `connected` through
the mesh's signaling, and a hang-up ends it on both pages.

Runs on a private mesh at time scale 0.2 (a call rings 150 s × 0.2 = 30 s: a loaded machine answers
in time, and nothing here waits for the ringing timeout, which tests/test_calls.py covers).
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from chatmesh_tools.embedded import free_port
from chatmesh_tools.launcher import SERVICES, Mesh
from tests.conftest import dump_logs
from tests.test_web import CHROMIUM, CHROMIUM_ARGS, sign_in

playwright_api = pytest.importorskip("playwright.async_api")

pytestmark = pytest.mark.skipif(os.environ.get("CHAT_SKIP_BROWSER") == "1", reason="CHAT_SKIP_BROWSER=1")

# Chromium's stand-ins for a microphone and its permission prompt (a 440 Hz beep, granted at once).
FAKE_MEDIA = [
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]


@pytest.fixture
def call_mesh(request: pytest.FixtureRequest, isolated_env, tmp_path: Path) -> Iterator[Mesh]:  # type: ignore[no-untyped-def]
    env = isolated_env(CHAT_TIME_SCALE="0.2", CHAT_DEV_LOGIN="1", CHAT_CALL_RING_TIMEOUT_S="150")
    mesh = Mesh(env=env, ports={name: free_port() for name in SERVICES}, log_dir=tmp_path / "logs")
    failed_before = request.session.testsfailed
    mesh.start()
    yield mesh
    mesh.stop(sig=signal.SIGKILL, timeout_s=5)
    if request.session.testsfailed > failed_before:
        dump_logs(mesh.log_dir)


@pytest.fixture
async def media_browser() -> AsyncIterator[object]:
    async with playwright_api.async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS + FAKE_MEDIA)
        yield launched
        await launched.close()


async def test_two_pages_ring_answer_and_connect_an_audio_call(call_mesh: Mesh, media_browser) -> None:  # type: ignore[no-untyped-def]
    url = call_mesh.edge_url + "/"
    alice_id, bob_id = f"alice-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"
    bob = await sign_in(media_browser, url, bob_id)
    alice = await sign_in(media_browser, url, alice_id)
    await alice.get_by_label("Start a chat with (user name)").fill(bob_id)
    await alice.keyboard.press("Enter")
    await alice.get_by_label("Message", exact=True).wait_for()

    # Alice calls; bob's page rings with her name whichever conversation he has open (none yet).
    await alice.get_by_role("button", name="📞 Call").click()
    await alice.locator("#call[data-state=calling]").wait_for()
    ringing = bob.locator("#call[data-state=ringing]")
    await ringing.wait_for()
    assert f"{alice_id} is calling" in await bob.locator("#call-status").inner_text()

    # Bob answers: offer, answer and ICE candidates cross the mesh and the peers connect directly.
    await bob.get_by_role("button", name="Answer").click()
    await bob.locator("#call[data-state=connected]").wait_for()
    await alice.locator("#call[data-state=connected]").wait_for()
    for page, other in ((alice, bob_id), (bob, alice_id)):
        assert await page.locator("#call").get_attribute("data-connection") == "connected"
        assert f"In a call with {other}" in await page.locator("#call-status").inner_text()
    # Bob hears alice: his audio element plays her stream (Chromium's fake microphone).
    assert await bob.evaluate("() => document.getElementById('call-audio').srcObject?.getAudioTracks().length") == 1

    # Bob hangs up: both pages end the call, and alice may call again.
    await bob.get_by_role("button", name="Hang up").click()
    await alice.locator("#call[data-state=ended]").wait_for()
    assert "Call ended" in await alice.locator("#call-status").inner_text()
    assert await alice.get_by_role("button", name="📞 Call").is_visible()
