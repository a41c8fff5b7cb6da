"""Threads in the browser page (clients/web/chat-threads.js), in Debian's Chromium through Playwright:
bob answers alice's message in a thread, alice sees its count turn up live and opens it, both
panels follow each other's replies and a deletion. Shared mesh, host-token sign-in (as tests/test_web.py)."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest

from chatmesh_tools.launcher import Mesh
from tests.helpers import send as rest_send
from tests.test_message_support import group, new_user_id
from tests.test_web import browser, open_page, wait_contents  # noqa: F401 (fixture)

# Set CHAT_WEB_THREADS_SCREENSHOT=path.png to see the page with a thread open.
SCREENSHOT = os.environ.get("CHAT_WEB_THREADS_SCREENSHOT", "")
pytestmark = pytest.mark.skipif(os.environ.get("CHAT_SKIP_BROWSER") == "1", reason="CHAT_SKIP_BROWSER=1")


async def _open(browser: Any, mesh: Mesh, token: str, title: str) -> Any:  # noqa: F811
    page = await open_page(browser, f"{mesh.edge_url}/#token={token}", (1200, 700))
    await page.locator("#conn[data-state=connected]").wait_for()
    await page.locator("#conversations button.conversation", has_text=title).click()
    return page


async def _replies(page: Any) -> list[str]:
    return list(await page.locator("#thread .thread-replies li.message .content").all_inner_texts())


async def test_a_thread_between_two_pages(
    mesh: Mesh,
    http: httpx.AsyncClient,
    browser,
    make_token,  # noqa: F811
    database_url: str,
) -> None:
    alice_id, bob_id = new_user_id("alice"), new_user_id("bob")
    title = f"trip-{alice_id}"
    cid = await group(database_url, {alice_id: "admin", bob_id: "member"}, title=title)
    await rest_send(http, make_token(alice_id), cid, "where shall we go?")
    await rest_send(http, make_token(alice_id), cid, "something else")
    alice = await _open(browser, mesh, make_token(alice_id), title)
    bob = await _open(browser, mesh, make_token(bob_id), title)
    await wait_contents(bob, ["where shall we go?", "something else"])

    # Bob opens the first message's thread (empty) and answers in it.
    root_on_bob = bob.locator("#messages li.message", has_text="where shall we go?")
    await root_on_bob.get_by_role("button", name="Reply in thread").click()
    await bob.locator("#thread .thread-count", has_text="0 replies").wait_for()
    await bob.get_by_label("Reply", exact=True).fill("the mountains")
    await bob.get_by_role("button", name="Reply", exact=True).click()
    await bob.locator("#thread .thread-count", has_text="1 reply").wait_for()
    assert await _replies(bob) == ["the mountains"]

    # Alice's page shows the count under her message live, and opens the thread from it.
    root_on_alice = alice.locator("#messages li.message", has_text="where shall we go?")
    await root_on_alice.get_by_role("button", name="💬 1 reply").click()
    await alice.locator("#thread .thread-root", has_text="where shall we go?").wait_for()
    await alice.locator("#thread .thread-replies li.message", has_text="the mountains").wait_for()

    # Each open panel follows the other's replies.
    await alice.get_by_label("Reply", exact=True).fill("the sea")
    await alice.keyboard.press("Enter")
    await bob.locator("#thread .thread-count", has_text="2 replies").wait_for()
    await bob.locator("#thread .thread-replies li.message", has_text="the sea").wait_for()
    assert await _replies(bob) == ["the mountains", "the sea"]
    await root_on_bob.get_by_role("button", name="💬 2 replies").wait_for()

    # Bob deletes his reply: a placeholder in both panels, and one reply left on the count.
    mine = bob.locator("#messages li.message.mine", has_text="the mountains")
    await mine.get_by_role("button", name="Delete").click()
    await alice.locator("#thread .thread-count", has_text="1 reply").wait_for()
    await alice.locator("#thread .thread-replies li.message.deleted").wait_for()
    assert await _replies(alice) == ["This message was deleted", "the sea"]
    await root_on_alice.get_by_role("button", name="💬 1 reply").wait_for()
    if SCREENSHOT:
        await alice.screenshot(path=SCREENSHOT)
    # The replies are in the conversation too, each pointing at its thread.
    await alice.locator("#messages li.message", has_text="the sea").get_by_role("button", name="↪ in thread").wait_for()
    await alice.get_by_role("button", name="Close thread").click()
    await alice.locator("#thread").wait_for(state="hidden")
    for page in (alice, bob):
        await page.context.close()
