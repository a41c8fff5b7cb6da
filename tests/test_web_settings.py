"""Conversation settings on the browser page (clients/web/chat-settings.js) in Chromium: an admin
renames and archives a group, and both pages see the composer turned off with a notice until it is
unarchived; a member pins and mutes it for themselves. Same setup as test_web.py (a private mesh)."""

from __future__ import annotations

import os

import pytest

from chatmesh_tools.launcher import Mesh
from tests.test_web import browser, two_pages, web_mesh  # noqa: F401 - fixtures

pytest.importorskip("playwright.async_api")
pytestmark = pytest.mark.skipif(os.environ.get("CHAT_SKIP_BROWSER") == "1", reason="CHAT_SKIP_BROWSER=1")


async def create_group(page, title: str, members: list[str]) -> str:  # type: ignore[no-untyped-def]
    """Through the page's own client, as a host application would."""
    return str(
        await page.evaluate(
            "async ([title, ids]) => (await window.chatmeshClient.createGroup(title, ids)).conversation_id",
            [title, members],
        )
    )


def listed(page, title: str):  # type: ignore[no-untyped-def]
    return page.locator("#conversations button.conversation", has=page.locator(".title", has_text=title))


async def titles(page) -> list[str]:  # type: ignore[no-untyped-def]
    return [t.split("\n")[0] for t in await page.locator("#conversations .title").all_inner_texts()]


async def test_an_admin_archives_a_group_and_its_composer_is_disabled(web_mesh: Mesh, browser) -> None:  # noqa: F811
    alice_id, bob_id, alice, bob = await two_pages(browser, web_mesh)
    await create_group(alice, "team", [bob_id])
    await listed(alice, "team").click()
    await listed(bob, "team").click()  # bob's list got it live
    for page in (alice, bob):
        assert await page.locator("#composer-input").is_enabled()
    assert await bob.get_by_role("button", name="Archive").count() == 0  # a member has no admin buttons

    # Alice renames and describes it: bob's list and settings bar follow.
    await alice.get_by_role("button", name="Edit name").click()
    await alice.get_by_label("Group name").fill("renamed team")
    await alice.get_by_label("Description").fill("where we plan")
    await alice.get_by_role("button", name="Save").click()
    await listed(bob, "renamed team").wait_for()
    await bob.locator("#pane-title", has_text="renamed team").wait_for()
    await bob.locator(".settings-description", has_text="where we plan").wait_for()

    # Alice archives: both composers go off, with the notice, and come back on unarchive.
    await alice.get_by_role("button", name="Archive").click()
    for page in (alice, bob):
        await page.locator("#composer-input:disabled").wait_for()
        assert await page.locator("#send").is_disabled()
        assert "archived" in await page.locator("#archived-notice").inner_text()
    await alice.get_by_role("button", name="Unarchive").click()
    for page in (alice, bob):
        await page.locator("#composer-input:enabled").wait_for()
        await page.locator("#archived-notice").wait_for(state="hidden")

    # Alice, the last admin, is asked to hand over or close; bob leaves, and the group leaves his page.
    await alice.get_by_role("button", name="Leave").click()
    assert "last admin" in await alice.locator(".settings-last-admin").inner_text()
    await bob.get_by_role("button", name="Leave").click()
    await listed(bob, "renamed team").wait_for(state="detached")
    assert await bob.locator("#pane-title").inner_text() == "Pick a conversation"


async def test_a_member_pins_and_mutes_for_themselves(web_mesh: Mesh, browser) -> None:  # noqa: F811
    alice_id, bob_id, alice, bob = await two_pages(browser, web_mesh)
    await create_group(alice, "older", [bob_id])
    await create_group(alice, "newer", [bob_id])
    await listed(bob, "older").wait_for()
    await listed(bob, "newer").wait_for()
    assert await titles(bob) == ["newer", "older"]

    await listed(bob, "older").click()
    await bob.get_by_role("button", name="📌 Pin").click()
    await bob.get_by_role("button", name="🔕 Mute").click()
    await bob.get_by_role("button", name="🔕 Unmute").wait_for()
    assert await titles(bob) == ["older📌🔕", "newer"]
    assert "pinned, muted" in (await listed(bob, "older").get_attribute("aria-label") or "")
    # Alice's list is hers: nothing moved.
    assert await titles(alice) == ["newer", "older"]
