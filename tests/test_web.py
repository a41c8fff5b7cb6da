"""The browser page (clients/web) in Debian's Chromium, driven by Playwright: two people chat live,
ticks turn read, typing shows and goes, and an edge restart loses and doubles nothing.

Runs on a private mesh (its own database and Redis prefix) at time scale 0.2, so the 3 s typing
expiry is 0.6 s and the edge can be restarted without disturbing other tests.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from chatmesh_tools.launcher import Mesh

playwright_api = pytest.importorskip("playwright.async_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FAKE_MEDIA = [
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]
TIME_SCALE = 0.2
TYPING_EXPIRY_S = 3.0 * TIME_SCALE
WAIT_MS = 15_000
# Set CHAT_WEB_SCREENSHOT=docs/screenshot.png to refresh the README's picture.
SCREENSHOT = os.environ.get("CHAT_WEB_SCREENSHOT", "")

# A missing browser fails these tests (scripts/test.sh installs it); CHAT_SKIP_BROWSER=1 skips them instead.
pytestmark = pytest.mark.skipif(os.environ.get("CHAT_SKIP_BROWSER") == "1", reason="CHAT_SKIP_BROWSER=1")


def test_chromium_is_installed() -> None:
    assert Path(CHROMIUM).exists() or shutil.which("chromium"), "apt-get install chromium (scripts/test.sh does)"


@pytest.fixture
def web_mesh(isolated_env, private_meshes) -> Mesh:  # type: ignore[no-untyped-def]
    return private_meshes(isolated_env(CHAT_TIME_SCALE=str(TIME_SCALE), CHAT_DEV_LOGIN="1"))


@asynccontextmanager
async def chromium(*extra_args: str) -> AsyncIterator[object]:
    """Debian's Chromium, headless, with CHROMIUM_ARGS and `extra_args`; closed on the way out."""
    async with playwright_api.async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[*CHROMIUM_ARGS, *extra_args])
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    async with chromium() as launched:
        yield launched


@pytest.fixture
async def media_browser() -> AsyncIterator[object]:
    """A browser with Chromium's stand-ins for a microphone and its permission prompt (a 440 Hz beep,
    granted at once), and media that may play without a click."""
    async with chromium(*FAKE_MEDIA) as launched:
        yield launched


async def open_page(browser, url: str, viewport: tuple[int, int] = (1000, 640)):  # type: ignore[no-untyped-def]
    """A page of its own (a new context: its own storage) at `url`."""
    context = await browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    await page.goto(url)
    return page


async def sign_in(browser, url: str, user: str):  # type: ignore[no-untyped-def]
    page = await open_page(browser, url)
    await page.get_by_label("User name (development sign-in)").fill(user)
    await page.get_by_role("button", name="Sign in").click()
    await page.locator("#conn[data-state=connected]").wait_for()
    return page


async def two_pages(browser, mesh: Mesh):  # type: ignore[no-untyped-def]
    """(alice's id, bob's id, alice's page, bob's page): two new users signed in, bob first."""
    url = mesh.edge_url + "/"
    alice_id, bob_id = f"alice-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"
    bob = await sign_in(browser, url, bob_id)
    alice = await sign_in(browser, url, alice_id)
    return alice_id, bob_id, alice, bob


async def start_chat(page, other_id: str) -> None:  # type: ignore[no-untyped-def]
    """The direct conversation with `other_id`, from the page's keyboard, open with its composer."""
    await page.get_by_label("Start a chat with (user name)").fill(other_id)
    await page.keyboard.press("Enter")
    await page.get_by_label("Message", exact=True).wait_for()


async def contents(page) -> list[str]:  # type: ignore[no-untyped-def]
    return list(await page.locator("#messages li.message .content").all_inner_texts())


async def wait_contents(page, expected: list[str]) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + WAIT_MS / 1000
    while (got := await contents(page)) != expected:
        assert time.monotonic() < deadline, f"{got} != {expected}"
        await asyncio.sleep(0.05)


async def send(page, text: str) -> None:  # type: ignore[no-untyped-def]
    await page.get_by_label("Message", exact=True).fill(text)
    await page.keyboard.press("Enter")


async def test_two_people_chat_live_through_an_edge_restart(web_mesh: Mesh, browser, tmp_path: Path) -> None:
    alice_id, bob_id, alice, bob = await two_pages(browser, web_mesh)

    # Alice starts a chat with bob (keyboard only) and sends; bob sees it live in his list.
    await start_chat(alice, bob_id)
    await send(alice, "hello bob")
    mine = alice.locator("#messages li.message.mine").last
    await mine.wait_for()
    assert await mine.locator(".content").inner_text() == "hello bob"  # the optimistic bubble, at once
    await alice.locator("li.message.mine[data-status=delivered]").wait_for()  # bob's page acknowledged it
    conversation = bob.locator("#conversations button.conversation")
    await conversation.locator(".unread", has_text="1").wait_for()
    assert "hello bob" in await conversation.locator(".preview").inner_text()

    # Bob opens it: he reads it, and alice's ticks turn read.
    await conversation.click()
    await wait_contents(bob, ["hello bob"])
    await alice.locator("li.message.mine[data-status=read]").wait_for()
    assert await alice.locator("li.message.mine .ticks").get_attribute("aria-label") == "read"

    # A stranger's chat is a request: alice sees nothing of bob's presence until he accepts it.
    assert await alice.locator("#conversations .dot").get_attribute("data-status") == "unknown"
    assert "wants to chat with you" in await bob.locator("#request").inner_text()
    await bob.get_by_role("button", name="Accept").click()
    await bob.locator("#request").wait_for(state="hidden")
    await alice.locator("#conversations .dot[data-status=online]").wait_for()  # bob's presence dot

    # Bob types: alice sees it, and it vanishes 3 s (scaled) after his last keystroke.
    typed = time.monotonic()
    await bob.get_by_label("Message", exact=True).press_sequentially("typ")
    typing = alice.locator("#typing")
    await typing.filter(has_text=f"{bob_id} is typing").wait_for()
    await typing.wait_for(state="hidden")
    gone_after = time.monotonic() - typed  # the page throttles: its one `true` went with the first key
    assert TYPING_EXPIRY_S * 0.9 <= gone_after <= TYPING_EXPIRY_S + 4, gone_after
    await bob.get_by_label("Message", exact=True).fill("")

    # Reactions, edits and deletes travel too.
    await bob.locator("li.message", has_text="hello bob").get_by_role("button", name="React 👍").click()
    await alice.locator("li.message.mine .reactions button", has_text="👍 1").wait_for()
    await send(alice, "typo mesage")
    await wait_contents(bob, ["hello bob", "typo mesage"])
    await alice.locator("li.message.mine", has_text="typo mesage").get_by_role("button", name="Edit").click()
    await alice.get_by_label("Message", exact=True).fill("typo message")
    await alice.keyboard.press("Enter")
    await wait_contents(bob, ["hello bob", "typo message"])
    await alice.locator("li.message.mine", has_text="typo message").get_by_role("button", name="Delete").click()
    await wait_contents(bob, ["hello bob", "This message was deleted"])

    # The edge restarts mid-conversation: both pages say so, recover, and nothing is lost or doubled.
    await send(alice, "before restart")
    await wait_contents(bob, ["hello bob", "This message was deleted", "before restart"])
    await asyncio.to_thread(web_mesh.stop, "edge")
    await alice.locator("#conn[data-state=reconnecting]").wait_for()
    await bob.locator("#conn[data-state=reconnecting]").wait_for()
    assert await alice.locator("#conn").inner_text() == "Reconnecting…"
    await send(alice, "during restart")  # pending until the edge is back, then sent once
    await alice.locator("li.message.mine[data-status=pending]", has_text="during restart").wait_for()
    await asyncio.to_thread(web_mesh.start, "edge")
    await alice.locator("#conn[data-state=connected]").wait_for()
    await bob.locator("#conn[data-state=connected]").wait_for()
    await send(alice, "after restart")
    expected = ["hello bob", "This message was deleted", "before restart", "during restart", "after restart"]
    await wait_contents(bob, expected)
    await wait_contents(alice, expected)
    await alice.locator("li.message.mine[data-status=read]", has_text="after restart").wait_for()
    await asyncio.sleep(1.0)  # redeliveries and replays would show up by now
    assert await contents(bob) == expected and await contents(alice) == expected

    async with httpx.AsyncClient(base_url=web_mesh.edge_url) as http:
        token = (await http.post("/dev/token", json={"user_id": alice_id})).json()["token"]
        cid = await alice.locator("#conversations button.conversation").get_attribute("data-id")
        stored = (await http.get(f"/api/messages/{cid}", headers={"Authorization": f"Bearer {token}"})).json()
    assert [m.get("content", "") for m in stored["messages"]] == [
        "hello bob",
        "",
        "before restart",
        "during restart",
        "after restart",
    ]

    await send(bob, "all here 👋")
    await wait_contents(alice, [*expected, "all here 👋"])
    await alice.screenshot(path=str(tmp_path / "screenshot.png"))
    if SCREENSHOT:
        await alice.screenshot(path=SCREENSHOT)


async def test_page_and_dev_login_follow_configuration(mesh: Mesh, http: httpx.AsyncClient) -> None:
    """The shared mesh runs with defaults: the page is served, development sign-in is not."""
    page = await http.get("/")
    assert page.status_code == 200 and "<title>chatmesh</title>" in page.text
    for name in (
        "app.js",
        "chat.js",
        "chat-socket.js",
        "chat-store.js",
        "chat-wire.js",
        "privacy.js",
    ):  # the page's modules
        script = await http.get(f"/{name}")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"], name
    assert (await http.post("/dev/token", json={"user_id": "mallory"})).status_code in (404, 405)
    assert (await http.get("/api/nope")).status_code == 404  # the API's own 404s are untouched


async def test_history_loads_older_pages_on_scroll_with_a_host_token(
    mesh: Mesh, http: httpx.AsyncClient, browser, make_token
) -> None:
    """Production sign-in (the host hands the page a token in the URL fragment) and paged history."""
    from tests.helpers import direct_conversation, new_user_id, register
    from tests.helpers import send as rest_send

    alice, bob = new_user_id("alice"), new_user_id("bob")
    await register(http, make_token(bob))
    conversation_id = await direct_conversation(http, make_token(alice), bob)
    for i in range(110):
        last = await rest_send(http, make_token(alice), conversation_id, f"m{i}")
    # Delivered to another device of bob's already, so this page gets no offline buffer: only history.
    delivered = await http.post(
        f"/api/messages/{last['message_id']}/status",
        json={"status": "MESSAGE_STATUS_DELIVERED"},
        headers={"Authorization": f"Bearer {make_token(bob)}"},
    )
    assert delivered.status_code == 200, delivered.text

    context = await browser.new_context(viewport={"width": 900, "height": 600})
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    await page.goto(f"{mesh.edge_url}/#token={make_token(bob)}")
    await page.locator("#conn[data-state=connected]").wait_for()
    assert "token" not in page.url  # taken out of the address bar
    conversation = page.locator("#conversations button.conversation")
    await conversation.locator(".unread", has_text="110").wait_for()
    await conversation.click()
    await page.locator("#messages li.message").nth(49).wait_for()
    assert len(await contents(page)) == 50  # the latest page first
    deadline = time.monotonic() + WAIT_MS / 1000
    while len(await contents(page)) < 110:
        assert time.monotonic() < deadline, len(await contents(page))
        await page.locator("#messages").evaluate("list => { list.scrollTop = 0; }")
        await asyncio.sleep(0.1)
    assert await contents(page) == [f"m{i}" for i in range(110)]
    await conversation.locator(".unread").wait_for(state="hidden")  # opened and read
    await context.close()


async def test_page_answers_resync_required_from_history(
    mesh: Mesh, http: httpx.AsyncClient, browser, make_token
) -> None:
    """A resume token the server cannot use (here: a garbage one) means resync_required: the page
    fetches what it missed over REST, and the replayed offline buffer doubles nothing."""
    from tests.helpers import direct_conversation, new_user_id, register
    from tests.helpers import send as rest_send

    alice, bob = new_user_id("alice"), new_user_id("bob")
    await register(http, make_token(bob))
    conversation_id = await direct_conversation(http, make_token(alice), bob)
    context = await browser.new_context()
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    await page.goto(f"{mesh.edge_url}/#token={make_token(bob)}")
    await page.locator("#conn[data-state=connected]").wait_for()
    await page.locator("#conversations button.conversation").click()
    await rest_send(http, make_token(alice), conversation_id, "m0")
    await wait_contents(page, ["m0"])

    await page.evaluate("""() => { const c = window.chatmeshClient;
        c.resumeToken = "garbage"; c.backoffInitialMs = 1500; c.ws.close(); }""")
    await page.locator("#conn[data-state=reconnecting]").wait_for()
    for text in ("m1", "m2"):
        await rest_send(http, make_token(alice), conversation_id, text)
    await page.locator("#conn[data-state=connected]").wait_for()
    await rest_send(http, make_token(alice), conversation_id, "m3")
    await wait_contents(page, ["m0", "m1", "m2", "m3"])
    await asyncio.sleep(1.0)
    assert await contents(page) == ["m0", "m1", "m2", "m3"]
    assert await page.evaluate("window.chatmeshClient.resyncs") == 1
    await context.close()


def test_web_settings_choose_the_routes() -> None:
    from starlette.routing import Mount, Route

    from chatmesh.config import ConfigError, Settings
    from services.edge.web import web_routes

    def paths(**env: str) -> list[str]:
        routes = web_routes(Settings.from_env({"CHAT_JWT_SECRET": "s", **env}))
        return [r.path if isinstance(r, Route) else "mount:" + r.path for r in routes if isinstance(r, (Route, Mount))]

    assert paths() == ["mount:"]  # defaults: the page, no development sign-in
    assert paths(CHAT_WEB_ENABLED="0") == []
    assert paths(CHAT_DEV_LOGIN="1") == ["/dev/token", "mount:"]
    with pytest.raises(ConfigError):
        paths(CHAT_DEV_LOGIN="maybe")


async def test_a_request_is_declined_or_blocked_from_the_page(web_mesh: Mesh, browser) -> None:
    """Decline makes the request go (asked again, it comes back); Block closes the conversation to
    writing on both pages. The "Hide my last seen" box keeps the server's setting."""
    alice_id, bob_id, alice, bob = await two_pages(browser, web_mesh)

    async def ask() -> None:
        await start_chat(alice, bob_id)
        await send(alice, "hi, remember me?")

    await ask()
    request = bob.locator("#conversations button.conversation", has=bob.locator(".badge", has_text="Request"))
    await request.click()
    await bob.get_by_role("button", name="Decline").click()
    await bob.locator("#conversations button.conversation").wait_for(state="detached")
    await alice.locator("#conversations button.conversation").wait_for(state="detached")

    await ask()  # a declined request may be asked again
    await request.click()
    await bob.get_by_role("button", name="Block").click()
    await bob.locator("#request", has_text="Blocked").wait_for()
    assert await bob.locator("#composer").is_hidden()
    await alice.locator("#conversations .badge", has_text="Blocked").wait_for()
    await alice.locator("#composer").wait_for(state="hidden")

    box = bob.get_by_label("Hide my last seen")
    assert not await box.is_checked()
    await box.check()
    await bob.reload()
    await bob.locator("#conn[data-state=connected]").wait_for()
    await bob.wait_for_function("document.getElementById('hide-last-seen').checked")
