"""A one-to-one audio call between two pages (clients/web/chat-calls.js) in Debian's Chromium with
its fake microphone: alice rings bob, bob answers, both RTCPeerConnections reach `connected` through
the mesh's signaling, and a hang-up ends it on both pages.

Runs on a private mesh at time scale 0.2 (a call rings 150 s × 0.2 = 30 s: a loaded machine answers
in time, and nothing here waits for the ringing timeout, which tests/test_calls.py covers).
"""

from __future__ import annotations

import os

import pytest

from chatmesh_tools.launcher import Mesh
from tests.test_web import media_browser, start_chat, two_pages  # noqa: F401 (fixture)

playwright_api = pytest.importorskip("playwright.async_api")

pytestmark = pytest.mark.skipif(os.environ.get("CHAT_SKIP_BROWSER") == "1", reason="CHAT_SKIP_BROWSER=1")


@pytest.fixture
def call_mesh(isolated_env, private_meshes) -> Mesh:  # type: ignore[no-untyped-def]
    return private_meshes(isolated_env(CHAT_TIME_SCALE="0.2", CHAT_DEV_LOGIN="1", CHAT_CALL_RING_TIMEOUT_S="150"))


async def test_two_pages_ring_answer_and_connect_an_audio_call(call_mesh: Mesh, media_browser) -> None:  # type: ignore[no-untyped-def]
    alice_id, bob_id, alice, bob = await two_pages(media_browser, call_mesh)
    await start_chat(alice, bob_id)

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
